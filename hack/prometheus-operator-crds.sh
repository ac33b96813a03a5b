#!/usr/bin/env bash
# The prometheus-operator's CRDs for PrometheusRule and ServiceMonitor (what deploy/prometheus/ and the
# per-model rules are), for clusters without the prometheus-operator and for the cluster tests, which
# install them and let the real API server validate modelfleet's rules against their schemas.
#
#   hack/prometheus-operator-crds.sh    prints the directory that holds the two CRD files:
#                                       monitoring.coreos.com_prometheusrules.yaml
#                                       monitoring.coreos.com_servicemonitors.yaml
#   kubectl apply --server-side -f "$(hack/prometheus-operator-crds.sh)"
#                                       (server-side: the CRDs are too large for client-side apply's
#                                       last-applied annotation)
#
# They come from the pinned release's Go module (its example/prometheus-operator-crd/), through the Go module
# proxy: `go mod download` verifies the module against the checksum database (go.sum's h1: hash) before
# anything is copied. Cached outside the repository, keyed by version:
#   ${XDG_CACHE_HOME:-~/.cache}/modelfleet/prometheus-operator-crds-<version>/
# Idempotent: a second run only prints the path. Needs Go on the first run.
set -euo pipefail

VERSION=v0.85.0
MODULE=github.com/prometheus-operator/prometheus-operator
CRDS=(monitoring.coreos.com_prometheusrules.yaml monitoring.coreos.com_servicemonitors.yaml)

dir=${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/prometheus-operator-crds-$VERSION

have_all() {
    local crd
    for crd in "${CRDS[@]}"; do [ -s "$dir/$crd" ] || return 1; done
}

if ! have_all; then
    command -v go >/dev/null || { echo "prometheus-operator-crds.sh: Go is needed (https://go.dev/doc/install)" >&2; exit 1; }
    mkdir -p "$(dirname "$dir")"
    exec 9>"$dir.lock"
    flock 9   # parallel callers wait for one download
    if ! have_all; then
        echo "==> downloading $MODULE@$VERSION from the Go module proxy" >&2
        # Outside any module (a temporary directory), so no go.mod is read or changed.
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        module_dir=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        [ -d "$module_dir/example/prometheus-operator-crd" ] \
            || { echo "prometheus-operator-crds.sh: no example/prometheus-operator-crd in $module_dir" >&2; exit 1; }
        mkdir -p "$tmp/crds"
        for crd in "${CRDS[@]}"; do
            cp "$module_dir/example/prometheus-operator-crd/$crd" "$tmp/crds/"
        done
        chmod 644 "$tmp"/crds/*   # the module cache is read-only
        rm -rf "$dir"
        mv "$tmp/crds" "$dir"
    fi
    exec 9>&-
fi
echo "$dir"
