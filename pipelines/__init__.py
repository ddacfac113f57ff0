"""Documents in, work out: page ingestion (text layer / OCR), artifacts, sources, backlog, synth.

The public page-ingestion API is `pipelines.pages` (`iter_pages`, `count_pages`, `IngestOptions`,
`Page`, `DocumentError`). Nothing is imported here so that `import pipelines.x` stays cheap.
"""
