#!/usr/bin/env bash
# Create .venv (if needed) and install nerft into it with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip
# torch first, pinned: this resolves to a CPU build; an unpinned `torch` would pull a multi-GB CUDA build.
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e ".[dev]"
