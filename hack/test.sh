#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite (what .ci/run runs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# A cold run needs room for the venv (~7.5 GB) and, with the cluster tests, the worker image
# (~7.7 GB in docker, as much again in the node's containerd). Say so before a pip error does.
free_gb=$(df -P --block-size=1G . | awk 'NR == 2 {print $4}')
if [ "$free_gb" -lt 25 ]; then
    echo "warning: only ${free_gb} GB free here; a cold run needs about 25 GB (venv, images)." >&2
    echo "         hack/cluster.sh down --purge and docker system prune free the test cluster's images." >&2
fi
MODELFLEET_EXTRAS=worker,torch,triton,operator,agent,gateway,test bash hack/venv.sh
exec .venv/bin/python -m pytest "$@"
