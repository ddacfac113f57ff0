"""Intake: everything between a source and the store (the SQL half of what used to sit in
pipelines/). Registration of document references (``registration``), the backlog's claims and
pacing (``backlog``) and its listing of a source (``scan``). ``pipelines`` stays pure documents
-> pages and sources; intake writes rows and hands ids to the orchestration seam
(workers.orchestration)."""
