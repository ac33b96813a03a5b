#!/usr/bin/env bash
# The main job: install, train the digits CNN if needed, and compress it end to end.
# Artifacts and result.json land in out/digits; exits non-zero when an SLO is missed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
MODELFLEET_EXTRAS=worker,torch,test bash hack/venv.sh
if [ ! -f examples/digits/data/evaluation.npz ]; then
  echo "==> training the digits CNN (examples/digits/train.py)" >&2
  .venv/bin/python -W ignore examples/digits/train.py
fi
exec .venv/bin/modelfleet run -f examples/digits/compressedmodel.yaml --output out/digits "$@"
