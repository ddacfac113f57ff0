#!/usr/bin/env bash
# Set up doctriage on a fresh Debian machine: system packages, a virtualenv in .venv, the project.
# Idempotent: a second run only checks. Needs root (or sudo) for apt the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v tesseract >/dev/null || need_apt+=(tesseract-ocr tesseract-ocr-eng)
command -v pdftoppm >/dev/null || need_apt+=(poppler-utils)
if [ "${DOCTRIAGE_SETUP_BROWSER:-0}" = 1 ] && ! command -v chromedriver >/dev/null; then
  need_apt+=(chromium chromium-driver)  # only for the HTML-report rendering test
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python_bin="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: 2.13.0 resolves to the CPU build; an unpinned torch pulls CUDA (GBs).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "doctriage set up: $(.venv/bin/doctriage --help >/dev/null && echo ok)"
