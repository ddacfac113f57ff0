"""Intake: everything between a source and the store (the SQL half of what used to sit in
pipelines/). ``registration``: document references -> rows, and the listings that feed it
(watch's poll, the backlog's scan); ``backlog``: the backlog's claims and pacing. ``pipelines``
stays pure documents -> pages and sources; intake writes rows and hands ids to the
orchestration seam (workers.orchestration)."""
