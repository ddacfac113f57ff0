#!/usr/bin/env bash
# The test command: the default, bounded suite (no `slow`, no `faults`). Extra pytest args pass
# through, e.g. `bash scripts/test.sh -m ""` runs everything, `-m faults` the fault injections.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
