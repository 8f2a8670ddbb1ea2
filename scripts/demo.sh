#!/usr/bin/env bash
# The main job on a fresh machine, offline: set up, then prepare -> train -> evaluate -> predict on the
# embedded demo data with a tiny model (see README: a smoke run, not a real model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
nerft demo --out "${1:-runs/demo}"
