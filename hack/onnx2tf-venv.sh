#!/usr/bin/env bash
# Creates (or reuses) a private virtual environment with onnx2tf for the worker's ONNX -> TFLite path.
#
# onnx2tf 1.29.x hard-pins its dependencies (tensorflow==2.19.0, numpy==1.26.4, onnx==1.19.1,
# onnxruntime==1.23.0, ai-edge-litert==2.1.0, ...), which conflict with modelfleet's own .venv, so it
# lives in its own venv outside the repository, keyed by version, and the worker runs it as a
# subprocess. Idempotent: a stamp file makes a second run instant. pip resolves onnx2tf's own pins.
# The worker looks for the executable at the default path below, or where MODELFLEET_ONNX2TF points;
# the test suite runs this script from a session fixture (tests/test_pipeline_sources.py).
#
# Environment:
#   MODELFLEET_ONNX2TF_VENV  where the venv goes (default: ~/.cache/modelfleet/onnx2tf-<version>)
#   PYTHON                   interpreter to build it with (default: python3; onnx2tf 1.29 needs 3.10-3.12)
#
# Prints the path of the onnx2tf executable as the last line on stdout; everything else goes to stderr.
# First run: ~1.5 min with an empty pip cache, 2.6 GB on disk (tensorflow is the bulk).
set -euo pipefail
version=1.29.24
venv=${MODELFLEET_ONNX2TF_VENV:-${HOME}/.cache/modelfleet/onnx2tf-${version}}
python=${PYTHON:-python3}
# The packages, shared with the worker-tflite image: onnx2tf==<version> first, then what it imports
# without pinning, spelled out so that a missing transitive dependency fails here rather than in the
# middle of a conversion.
mapfile -t packages < <(grep -v '^[[:space:]]*\(#\|$\)' "$(dirname "${BASH_SOURCE[0]}")/../images/worker-tflite/requirements.in")
[ "${packages[0]}" = "onnx2tf==${version}" ] || { echo "images/worker-tflite/requirements.in must start with onnx2tf==${version}" >&2; exit 1; }
stamp="$venv/.modelfleet-onnx2tf"
want="${version} ${packages[*]}"

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/onnx2tf" ]; then
  if ! "$python" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))'; then
    echo "onnx2tf ${version} needs Python 3.10-3.12 ($python is $("$python" --version 2>&1))" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$venv")"
  # Serialise concurrent first runs (two workers starting at once) on a lock beside the venv.
  exec 9>"${venv}.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/onnx2tf" ]; then
    echo "==> installing onnx2tf ${version} into $venv (first time: ~2 min and 2.6 GB, tensorflow is large)" >&2
    rm -f "$stamp"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --progress-bar off "${packages[@]}" >&2
    # Import check: fails now, not at the first conversion, if a dependency is missing or broken.
    # onnx2tf runs onnxsim as a command (the worker puts this venv's bin/ on PATH): check it too.
    # (tensorflow logs a screenful of harmless CUDA/absl lines on import: shown only on failure)
    if ! log=$("$venv/bin/python" -c 'import onnx2tf, onnx_graphsurgeon, sng4onnx, psutil, tf_keras, ai_edge_litert, onnxruntime, onnxsim' 2>&1) \
        || [ ! -x "$venv/bin/onnxsim" ]; then
      echo "$log" >&2
      echo "onnx2tf ${version} installed into $venv but does not import (see above)" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
  exec 9>&-
fi
echo "$venv/bin/onnx2tf"
