#!/usr/bin/env bash
# Helm 3, built from its Go module, for the chart's tests (tests/test_chart_helm.py) and for
# installing charts/modelfleet on hack/cluster.sh's cluster.
#
#   hack/helm.sh          build the pinned release unless cached; print the binary's path
#   "$(hack/helm.sh)" template modelfleet charts/modelfleet
#
# Only the Go module proxy is needed (no GitHub release download): `go install` fetches
# helm.sh/helm/v3 at the pinned version, verified against the checksum database, and builds it
# static (CGO off, -s -w) with the ldflags Helm's own Makefile sets, so `helm version` names the
# release. The first build takes a few minutes on 2 cores (the Go build cache makes a rebuild
# fast); the binary is cached outside the repository, keyed by version, like hack/cluster.sh's tools:
#   ${MODELFLEET_HELM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/modelfleet}/helm-<version>/bin/helm
#   .../helm-<version>/build.log      the last build's output
# Concurrent first runs (test workers) wait on a lock beside it for one build; a second run only
# prints the path.
set -euo pipefail

VERSION=v3.22.0   # helm.sh/helm/v3; the newest 3.x on the Go module proxy when pinned
COMMIT=144ca65f8501953fa8b41cd1d37c7223051c85b7   # its tag's commit (`go list -m -json`: Origin.Hash)
CLIENT_GO=v0.37.0   # the k8s.io/client-go its go.mod requires: Kubernetes 1.37
MODULE=helm.sh/helm/v3

CACHE=${MODELFLEET_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet}/helm-$VERSION
BIN=$CACHE/bin/helm

# What Helm's Makefile stamps: the version `helm version` prints, and the Kubernetes version that
# `helm template` and `helm lint` assume without a cluster (.Capabilities.KubeVersion; unstamped it is
# 1.20, which the chart's kubeVersion ">=1.29.0-0" refuses).
k8s_minor=$(cut -d. -f2 <<<"$CLIENT_GO")
LDFLAGS="-s -w -X $MODULE/internal/version.version=$VERSION -X $MODULE/internal/version.gitCommit=$COMMIT"
LDFLAGS+=" -X $MODULE/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
    LDFLAGS+=" -X $MODULE/$pkg.k8sVersionMajor=1 -X $MODULE/$pkg.k8sVersionMinor=$k8s_minor"
done

log() { printf '[helm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Built, and with these flags (a changed pin rebuilds; the Go build cache makes that a link).
built() { [ -x "$BIN" ] && [ "$(cat "$CACHE/ldflags" 2>/dev/null)" = "$LDFLAGS" ]; }

if ! built; then
    mkdir -p "$CACHE"
    exec 9>"$CACHE.lock"
    flock 9   # parallel callers wait for one build
    if ! built; then
        command -v go >/dev/null || { log "error: Go is needed to build Helm (https://go.dev/doc/install)"; exit 1; }
        log "building $MODULE $VERSION with $(go env GOVERSION); a few minutes on first use"
        started=$SECONDS
        # Outside any module (/tmp), so no go.mod is read or changed. GOTOOLCHAIN=local: Helm's
        # go.mod names a Go release that any newer local Go satisfies.
        if ! env -C /tmp GOBIN="$CACHE/bin" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} \
            GOFLAGS="-buildvcs=false -trimpath" go install -ldflags "$LDFLAGS" "$MODULE/cmd/helm@$VERSION" \
            >"$CACHE/build.log" 2>&1; then
            tail -n 30 "$CACHE/build.log" >&2
            log "error: go install failed (log: $CACHE/build.log)"
            exit 1
        fi
        "$BIN" version --short | grep -q "^$VERSION+g${COMMIT:0:7}$" \
            || { log "error: $BIN reports $("$BIN" version --short), not $VERSION"; exit 1; }
        required=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
        grep -q "^[[:space:]]*k8s.io/client-go $CLIENT_GO\$" "$required" \
            || { log "error: $MODULE@$VERSION does not require k8s.io/client-go $CLIENT_GO: update CLIENT_GO"; exit 1; }
        printf '%s' "$LDFLAGS" >"$CACHE/ldflags"
        log "built $("$BIN" version --short) in $((SECONDS - started)) s -> $BIN"
    fi
    exec 9>&-
fi
echo "$BIN"
