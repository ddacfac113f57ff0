"""doctriage: the thin application layer (CLI and settings) over workers, pipelines, classifier
and db."""
