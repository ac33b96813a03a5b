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
# ncnn's int8 converter tools (C++, built once from ncnn's source: about 10 minutes on 2 cores, then cached)
# for the ncnn int8 candidate of the edge target.
echo "==> ncnn's int8 tools (hack/ncnn-tools.sh; first time: about 10 minutes)" >&2
MODELFLEET_NCNN_TOOLS=$(bash hack/ncnn-tools.sh)
export MODELFLEET_NCNN_TOOLS
exec .venv/bin/modelfleet run -f examples/digits/compressedmodel.yaml --output out/digits "$@"
