"""Benchmarks: one script per question, run from the repository root as `python -m bench.NAME`
(bench/harness.py: their common arguments, model resolution and result writer)."""
