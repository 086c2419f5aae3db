#!/usr/bin/env bash
# One-step setup on a fresh machine: a virtualenv in .venv with the project and its dev extras,
# the CPU build of torch, and Debian's chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: pip takes the local CPU wheel (torch==2.13.0+cpu) here; a bare `torch`
# requirement would pull a multi-GB CUDA build. The project's range (<2.14) is then satisfied.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# The browser end-to-end test drives Debian's chromium (test tools cannot download browsers here);
# fonts-noto-cjk gives Chinese text its real width (the phone-layout test measures it).
if { ! command -v chromium >/dev/null 2>&1 || [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; } \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if $SUDO true 2>/dev/null; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null \
      || echo "setup: could not install chromium and fonts-noto-cjk; the browser tests will not run" >&2
  else
    echo "setup: no root; install chromium yourself for the browser test" >&2
  fi
fi
echo "setup: done (.venv ready; the index is built on first use of 'rag ask')"
