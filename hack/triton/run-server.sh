#!/usr/bin/env bash
# Runs the test Triton server (see install.sh) in the foreground, listening on 127.0.0.1 only.
#
#   hack/triton/run-server.sh MODEL_REPO HTTP_PORT GRPC_PORT METRICS_PORT [extra tritonserver flags]
#
# Models are loaded and unloaded through the model-control API (--model-control-mode=explicit;
# nothing is loaded at start). Extra flags are appended and win over the defaults, e.g.
# `--model-control-mode=poll --repository-poll-secs=1` or `--load-model=NAME`.
# The process execs into tritonserver: SIGTERM/SIGINT stop it (in-flight requests get
# --exit-timeout-secs). Env: TRITON_HOME and TRITON_PYTHON as for install.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 MODEL_REPO HTTP_PORT GRPC_PORT METRICS_PORT [tritonserver flags...]" >&2
  exit 2
fi
repo=$(cd "$1" && pwd); http=$2; grpc=$3; metrics=$4; shift 4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# KEY=VALUE lines: TRITONSERVER, TRITON_BACKEND_DIR, LD_LIBRARY_PATH, ...
while IFS='=' read -r key value; do
  case $key in
    TRITONSERVER) server=$value ;;
    TRITON_BACKEND_DIR) backends=$value ;;
    LD_LIBRARY_PATH) libs=$value ;;
  esac
done < <("$here/install.sh")

export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The Python backend stub embeds libpython and takes its prefix (and so site-packages with
# onnxruntime and numpy) from the `python3` found first on PATH: this checkout's venv, decided
# here rather than cached by install.sh, since each clone has its own.
root=$(cd "$here/../.." && pwd)
export PATH="$(dirname "${TRITON_PYTHON:-$root/.venv/bin/python}"):$PATH"
unset PYTHONHOME

exec "$server" \
  --model-repository="$repo" \
  --backend-directory="$backends" \
  --model-control-mode=explicit \
  --disable-auto-complete-config \
  --exit-on-error=false \
  --strict-readiness=true \
  --http-address=127.0.0.1 --http-port="$http" \
  --grpc-address=127.0.0.1 --grpc-port="$grpc" \
  --metrics-address=127.0.0.1 --metrics-port="$metrics" \
  --allow-gpu-metrics=false \
  --pinned-memory-pool-byte-size=0 \
  --exit-timeout-secs=5 \
  --backend-config="python,shm-region-prefix-name=modelfleet_${http}_$$_" \
  --log-verbose=0 \
  "$@"
