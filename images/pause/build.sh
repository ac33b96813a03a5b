#!/usr/bin/env bash
# Build the pod sandbox image: pause.c compiled with `gcc -static`, FROM scratch.
#   images/pause/build.sh [TAG]     (default: modelfleet/pause:1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TAG=${1:-modelfleet/pause:1}
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "[pause] $TAG present" >&2
    exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/context"
gcc -static -s -O2 -Wall -Wextra -o "$ctx/context/pause" "$here/pause.c"
docker build -q -t "$TAG" -f "$here/Dockerfile" "$ctx/context" >/dev/null 2>"$ctx/build.log" \
    || { cat "$ctx/build.log" >&2; exit 1; }
echo "[pause] built $TAG: $(docker image inspect -f '{{.Size}}' "$TAG") bytes" >&2
