#!/usr/bin/env bash
# Build the Debian base image for modelfleet's images: debootstrap + `docker import`.
# No registry is reachable, so nothing can start FROM debian:bookworm.
#
#   images/base/build.sh [TAG]      (default: modelfleet/base:bookworm-$BASE_REVISION)
#
# The root filesystem is cached as a tarball under
# ${XDG_CACHE_HOME:-~/.cache}/modelfleet/images/, keyed by suite and revision, so
# an image lost with docker's data root comes back with one `docker import`.
# Bump BASE_REVISION when the package list or the cleanup changes.
set -euo pipefail

SUITE=bookworm
BASE_REVISION=1
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip, so images install their wheelhouse with
# `python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index ...`.
PACKAGES=ca-certificates,python3,python3-venv,tzdata
TAG=${1:-modelfleet/base:${SUITE}-${BASE_REVISION}}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/images
TARBALL=$CACHE/base-${SUITE}-${BASE_REVISION}.tar

log() { printf '[base] %s\n' "$*" >&2; }

mkdir -p "$CACHE"
# hack/cluster.sh and hack/images.sh may both need the base at once (hack/prepare.sh): one builds it.
exec 8>"$CACHE/base.lock"
flock 8
if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG present"
    exit 0
fi
if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR; takes a few minutes"
    start=$SECONDS
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 15
        log "debootstrap: $((SECONDS - start))s, $(tail -n 1 "$CACHE/debootstrap.log" | cut -c1-100)"
    done
    if ! wait "$pid"; then
        tail -n 30 "$CACHE/debootstrap.log" >&2
        log "debootstrap failed (log: $CACHE/debootstrap.log)"
        exit 1
    fi
    # Trim what an image never needs; apt lists come back with `apt-get update`.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* \
        "$root"/var/log/* "$root"/tmp/* "$root"/debootstrap
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
    tar --numeric-owner --xattrs -C "$root" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    log "rootfs done in $((SECONDS - start))s: $(du -h "$TARBALL" | cut -f1)"
fi
docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE +$PACKAGES (revision $BASE_REVISION)" \
    "$TARBALL" "$TAG" >/dev/null
log "imported $TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
