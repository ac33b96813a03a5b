#!/usr/bin/env bash
# A real MinIO (S3) for tests and for trying the s3:// artifact store, built from its Go module.
#
#   hack/minio.sh build                 build the pinned release unless cached; print the binary's path
#   hack/minio.sh server DIR PORT [HOST]
#                                       build if needed, then exec `minio server DIR` on HOST:PORT
#                                       (HOST defaults to 127.0.0.1)
#
# MinIO's release tags (RELEASE.<date>) are not semver, so the Go module proxy knows a release by
# its pseudo-version: v0.0.0-<commit time, UTC>-<12 hex of the tagged commit>. `go install` builds
# it (CGO off, static) with the ldflags MinIO's own build sets, so `minio --version` names the
# release. The first build takes several minutes on 2 cores (the Go build cache makes a rebuild
# fast); the binary is cached outside the repository, keyed by release:
#   ${MINIO_CACHE:-~/.cache/modelfleet}/minio-<release>/minio
#
# server: credentials from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (MinIO's own variables; defaults
# modelfleet / modelfleet-secret), console on HOST:PORT+1. It listens on loopback unless HOST names
# another local address: pods of hack/cluster.sh's node reach the host at the node IP (10.244.0.1).
set -euo pipefail

RELEASE=RELEASE.2025-09-07T16-13-09Z
COMMIT=07c3a429bfed433e49018cb0f78a52145d4bedeb
MODULE_VERSION=v0.0.0-20250907161309-07c3a429bfed   # the pseudo-version of $COMMIT

CACHE=${MINIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet}/minio-$RELEASE
BIN=$CACHE/minio

log() { printf '[minio %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9   # parallel callers (test workers) wait for one build
    if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$RELEASE"; then
        exec 9>&-
        echo "$BIN"
        return
    fi
    command -v go >/dev/null || { log "error: Go is needed to build MinIO (https://go.dev/doc/install)"; exit 1; }
    log "building github.com/minio/minio $RELEASE ($MODULE_VERSION) with $(go env GOVERSION); several minutes on first use"
    local version=${RELEASE#RELEASE.} pkg=github.com/minio/minio/cmd started=$SECONDS
    version=$(sed -E 's/T([0-9]{2})-([0-9]{2})-([0-9]{2})Z/T\1:\2:\3Z/' <<<"$version")
    local ldflags="-s -w -X $pkg.Version=$version -X $pkg.ReleaseTag=$RELEASE -X $pkg.CommitID=$COMMIT"
    ldflags+=" -X $pkg.ShortCommitID=${COMMIT:0:12} -X $pkg.CopyrightYear=${version:0:4}"
    # -buildvcs=false: there is no VCS checkout (module zip); -trimpath keeps the binary reproducible.
    # GOTOOLCHAIN=local: MinIO's go.mod asks for go1.24.x, which any newer local Go satisfies.
    GOBIN="$CACHE/.gobin" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" \
        go install -v -ldflags "$ldflags" "github.com/minio/minio@$MODULE_VERSION" >"$CACHE/build.log" 2>&1 &
    local go_pid=$! lines
    while kill -0 "$go_pid" 2>/dev/null; do   # progress: go -v prints each package as it builds it
        sleep 15
        lines=$(wc -l <"$CACHE/build.log")
        log "$lines packages built or downloaded ($((SECONDS - started)) s)"
    done
    wait "$go_pid" || { tail -n 30 "$CACHE/build.log" >&2; log "error: go install failed (log: $CACHE/build.log)"; exit 1; }
    mv "$CACHE/.gobin/minio" "$BIN"
    rmdir "$CACHE/.gobin" 2>/dev/null || true
    log "built $("$BIN" --version | head -1) in $((SECONDS - started)) s -> $BIN"
    exec 9>&-   # the server exec'd later must not hold the build lock
    echo "$BIN"
}

case "${1:-}" in
    build)
        build
        ;;
    server)
        [ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: $0 server DIR PORT [HOST]" >&2; exit 2; }
        host=${4:-127.0.0.1}
        bin=$(build)
        mkdir -p "$2"
        export MINIO_ROOT_USER=${MINIO_ROOT_USER:-modelfleet} MINIO_ROOT_PASSWORD=${MINIO_ROOT_PASSWORD:-modelfleet-secret}
        export MINIO_BROWSER=${MINIO_BROWSER:-off} MINIO_UPDATE=off
        exec "$bin" server "$2" --address "$host:$3" --console-address "$host:$(($3 + 1))" --quiet
        ;;
    *)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
