#!/usr/bin/env bash
# Installs a CPU-only NVIDIA Triton Inference Server (2.51) for tests, outside the repository.
#
# The tritonserver binary comes from the nvidia-pytriton wheel (downloaded with --no-deps and
# unzipped: its pip dependencies pin numpy<2, so it is never pip-installed). The wheel carries only
# Triton's Python backend; tests/triton_backend/onnxruntime/model.py, a test-only Python-based
# backend named "onnxruntime", lets unmodified model repositories (backend: "onnxruntime",
# <version>/model.onnx) load. Layout under $TRITON_HOME (default ~/.cache/modelfleet/triton-2.51):
#
#   wheel/                        the downloaded wheel
#   dist/pytriton/tritonserver/   the wheel's server tree (bin/tritonserver, ...)
#   dist/nvidia_pytriton.libs/    its bundled shared libraries (LD_LIBRARY_PATH)
#   backends/python/              libtriton_python.so, triton_python_backend_utils.py, the stub
#   backends/onnxruntime/model.py the test-only onnxruntime stand-in
#   env                           KEY=VALUE lines for callers (also printed on stdout):
#                                 TRITONSERVER, TRITON_BACKEND_DIR, TRITON_LIBS,
#                                 LD_LIBRARY_PATH (prepend it to yours). run-server.sh also puts
#                                 the checkout's venv first on PATH: the stub embeds libpython and
#                                 takes its prefix, hence site-packages, from the `python3` there
#
# Idempotent: a stamp file makes re-runs instant (model.py is re-copied when it changed).
# Needs: network for pip download on first run, apt-get when libpython3.X is missing.
# Env: TRITON_HOME (install dir), TRITON_PYTHON (the python the stub will run models with;
#      default <repo>/.venv/bin/python; its X.Y picks the stub build and libpython3.X).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=0.7.0   # nvidia-pytriton 0.7.0 ships tritonserver 2.51
home=${TRITON_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/triton-2.51}
python=${TRITON_PYTHON:-$root/.venv/bin/python}
if [ ! -x "$python" ]; then
  echo "install.sh: no python at $python (run hack/venv.sh or set TRITON_PYTHON)" >&2
  exit 1
fi
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stamp="$home/.installed"
want="nvidia-pytriton=$version python=$pyver"

mkdir -p "$home"
exec 9>"$home/.lock"
flock 9   # concurrent callers (parallel test workers) wait for one install
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The stub embeds the system libpython (it links libpython$pyver.so.1.0).
  if ! ldconfig -p 2>/dev/null | grep "libpython$pyver\.so\.1\.0" >/dev/null; then
    echo "==> installing libpython$pyver (apt)" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "libpython$pyver" >&2 \
      || { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "libpython$pyver" >&2; }
  fi
  mkdir -p "$home/wheel"
  whl=$(ls "$home"/wheel/nvidia_pytriton-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    echo "==> downloading nvidia-pytriton==$version (~55 MB, --no-deps)" >&2
    "$python" -m pip download --quiet --no-deps --only-binary=:all: \
      --dest "$home/wheel" "nvidia-pytriton==$version" >&2
    whl=$(ls "$home"/wheel/nvidia_pytriton-"$version"-*.whl | head -n1)
  fi
  echo "==> extracting tritonserver from $(basename "$whl")" >&2
  rm -rf "$home/dist" "$home/backends"
  "$python" - "$whl" "$home/dist" <<'EOF'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
            path = z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode)
EOF
  srv="$home/dist/pytriton/tritonserver"
  stub="$srv/python_backend_stubs/$pyver/triton_python_backend_stub"
  if [ ! -f "$stub" ]; then
    echo "install.sh: the wheel has no Python backend stub for Python $pyver" >&2
    exit 1
  fi
  mkdir -p "$home/backends/python" "$home/backends/onnxruntime"
  cp "$srv/backends/python/libtriton_python.so" \
    "$srv/backends/python/triton_python_backend_utils.py" "$stub" "$home/backends/python/"
  chmod +x "$srv/bin/tritonserver" "$home/backends/python/triton_python_backend_stub"
  cat > "$home/env" <<EOF
TRITONSERVER=$srv/bin/tritonserver
TRITON_BACKEND_DIR=$home/backends
TRITON_LIBS=$home/dist/nvidia_pytriton.libs
LD_LIBRARY_PATH=$home/dist/nvidia_pytriton.libs
EOF
  echo "$want" > "$stamp"
fi

# Always refresh the stand-in backend (cheap), so edits to the repository copy take effect.
src="$root/tests/triton_backend/onnxruntime/model.py"
dst="$home/backends/onnxruntime/model.py"
cmp -s "$src" "$dst" 2>/dev/null || { cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"; }
exec 9>&-
cat "$home/env"
