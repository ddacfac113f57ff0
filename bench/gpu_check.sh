#!/usr/bin/env bash
# GPU check (issue 18): early-exit and batching throughput of a random `base` model in bf16 on
# a CUDA machine, in under 5 minutes. Run from the repository root:
#
#     bash bench/gpu_check.sh [extra `python -m bench.gpu_check` options]
#
# If .whl/ (or $GPU_CHECK_WHEELS) holds wheels (transformers 4.x and what it needs: this project
# requires transformers<5), they are installed into /tmp/site (or $GPU_CHECK_SITE), put first on
# PYTHONPATH, so a machine with other versions installed runs ours. $PYTHON: the interpreter
# (default python3). JSON goes to stdout, and to $OUT/gpu_check.json when $OUT
# is set. GPU_CHECK_TIMEOUT_S (default 280) hard-stops the Python part; its --budget-s (default
# 210) stops it adding batch sizes earlier, and it writes the JSON after each one.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

wheels=${GPU_CHECK_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
    site=${GPU_CHECK_SITE:-/tmp/site}
    mkdir -p "$site"
    if ! "$PY" -m pip install -q --no-index --no-deps --target "$site" --upgrade "$wheels"/*.whl
    then
        # No pip: a wheel is a zip of the files as installed (no scripts needed here).
        for w in "$wheels"/*.whl; do "$PY" -m zipfile -e "$w" "$site" || exit 1; done
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
"$PY" -c 'import torch, transformers, tokenizers, huggingface_hub as h
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| transformers",
      transformers.__version__, "| tokenizers", tokenizers.__version__, "| hub", h.__version__)' \
    || exit 1

out_args=()
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    out_args=(--out "$OUT/gpu_check.json")
fi
timeout "${GPU_CHECK_TIMEOUT_S:-280}" "$PY" -m bench.gpu_check "${out_args[@]}" "$@"
rc=$?
[ "$rc" -eq 124 ] && echo "gpu_check: hard time limit reached; the JSON holds what finished" >&2
exit "$rc"
