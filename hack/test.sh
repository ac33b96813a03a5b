#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite (what .ci/run runs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
MODELFLEET_EXTRAS=worker,triton,operator,test bash hack/venv.sh
exec .venv/bin/python -m pytest "$@"
