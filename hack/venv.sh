#!/usr/bin/env bash
# Creates (or refreshes) .venv with modelfleet and the extras named in $MODELFLEET_EXTRAS.
# Idempotent and fast on re-runs: pip's cache (~/.cache/pip) keeps the heavy wheels (torch is ~4 GB
# with its nvidia-* wheels) outside the repository.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=${MODELFLEET_EXTRAS:-worker}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "modelfleet needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "==> creating $root/.venv" >&2
  "$python" -m venv "$root/.venv"
fi
stamp="$root/.venv/.modelfleet-installed"
want="$extras $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing modelfleet[$extras] (first time: a few minutes, torch is large)" >&2
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$root/.venv/bin/python" -m pip install --quiet --progress-bar off -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
