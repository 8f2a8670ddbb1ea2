#!/usr/bin/env bash
# Check the floors in pyproject.toml: a fresh venv with every dependency (project + dev extra) pinned to the
# lowest version its range allows, then the test suite. Dependencies of dependencies resolve as usual.
#   scripts/test-lowest.sh                  # venv in ${NERFT_LOWEST_VENV:-/tmp/nerft-lowest}, then pytest
#   scripts/test-lowest.sh -x tests/test_train.py   # arguments go to pytest
#   NERFT_LOWEST_FLOAT="transformers tokenizers safetensors" scripts/test-lowest.sh   # these unpinned: the
#       newest transformers with every other dependency at its floor
# torch stays at 2.13.0, the CPU build pip finds on this machine: an older pin would pull a multi-GB CUDA build,
# so the torch floor itself is not exercised here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NERFT_LOWEST_VENV:-/tmp/nerft-lowest}
PIP=(python -m pip install -q --disable-pip-version-check)

python3 -m venv --clear "$VENV"
. "$VENV/bin/activate"
"${PIP[@]}" --upgrade pip packaging
"${PIP[@]}" torch==2.13.0  # first: pinned, it resolves to the CPU build

# One '==' pin per dependency, from its '>=' (or '==', '~=') bound; a dependency without a floor is an error.
python - "$VENV/lowest.txt" <<'EOF'
import os
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
floors: dict[str, str] = {}
for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
    req = Requirement(line)
    if req.name == "torch" or req.name in os.environ.get("NERFT_LOWEST_FLOAT", "").split():
        continue
    lows = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
    if not lows:
        sys.exit(f"{line!r} has no lower bound")
    floors[req.name] = max([floors.get(req.name, "0"), *lows], key=Version)
with open(sys.argv[1], "w") as out:
    out.writelines(f"{name}=={version}\n" for name, version in sorted(floors.items()))
EOF
echo "pins ($VENV/lowest.txt):" && tr '\n' ' ' < "$VENV/lowest.txt" && echo
python -m pip install --disable-pip-version-check --progress-bar off -c "$VENV/lowest.txt" -e ".[dev]"
python -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(torch|transformers|tokenizers|peft|accelerate|datasets|safetensors|huggingface.hub|numpy|pydantic|fastapi|starlette|swanlab|tensorboard|protobuf|pyarrow) ' || true

start=$(date +%s)
set +e
python -m pytest -p no:cacheprovider -rfEs "$@"
status=$?
set -e
echo "lowest bounds: pytest exit $status in $(( $(date +%s) - start ))s"
exit $status
