#!/usr/bin/env bash
# kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library Flux's health checks and cli-utils'
# applier read a resource's status with, as a small command (hack/kstatus/main.go): objects on stdin (a
# JSON object or List, or a YAML stream), one `<kind>/<name> <status> <message>` line each on stdout.
#
#   hack/kstatus.sh                              builds it once, prints the binary's path
#   kubectl get compressedmodels -o json | "$(hack/kstatus.sh)"
#
# The version is the one hack/kstatus/go.mod requires; go.sum pins every module, and the build runs
# with -mod=readonly, so it neither resolves nor changes anything (only the Go module proxy is needed,
# on the first run). Cached outside the repository, keyed by version and by the source's digest:
#   ${XDG_CACHE_HOME:-~/.cache}/modelfleet/kstatus-<version>/bin/kstatus
# Idempotent: a second run only prints the path. Needs Go on the first run (about 2 minutes on 2 cores
# with an empty module cache).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/kstatus" && pwd)
version=$(awk '{for (i = 1; i < NF; i++) if ($i == "sigs.k8s.io/cli-utils") {print $(i + 1); exit}}' "$src/go.mod")
[ -n "$version" ] || { echo "kstatus.sh: no sigs.k8s.io/cli-utils requirement in $src/go.mod" >&2; exit 1; }
digest=$(cd "$src" && cat go.mod go.sum main.go | sha256sum | cut -c1-16)
dir=${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/kstatus-$version
bin=$dir/bin/kstatus
stamp=$dir/.modelfleet-kstatus

built() { [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ] && [ -x "$bin" ]; }

if ! built; then
    command -v go >/dev/null || { echo "kstatus.sh: Go is needed (https://go.dev/doc/install)" >&2; exit 1; }
    mkdir -p "$dir/bin"
    exec 9>"$dir.lock"
    flock 9   # parallel callers wait for one build
    if ! built; then
        echo "==> building kstatus (sigs.k8s.io/cli-utils $version)" >&2
        env -C "$src" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "-s -w" -o "$bin.part" . >&2
        mv "$bin.part" "$bin"
        echo "$digest" >"$stamp"
    fi
    exec 9>&-
fi
echo "$bin"
