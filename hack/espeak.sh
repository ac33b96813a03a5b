#!/usr/bin/env bash
# Debian's espeak-ng, the speech synthesizer examples/silero-vad/prepare.py speaks its sentences with (the
# voice activity detector's real data). Installs the package when missing and prints the path:
#
#   hack/espeak.sh          ESPEAK=/usr/bin/espeak-ng
#
# Idempotent: with the package installed it only prints. Needs root (or sudo) and the Debian archive the
# first time; no daemon comes with it.
set -euo pipefail

log() { printf '[espeak.sh] %s\n' "$*" >&2; }

sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v espeak-ng >/dev/null; then
    command -v apt-get >/dev/null || { log "error: apt-get is needed (Debian or Ubuntu); install espeak-ng yourself"; exit 1; }
    exec 9>/tmp/modelfleet-espeak-install.lock
    flock 9   # concurrent callers wait for one install
    if ! command -v espeak-ng >/dev/null; then
        log "installing espeak-ng (apt, --no-install-recommends)"
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends espeak-ng >&2 \
            || { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends espeak-ng >&2; }
    fi
    exec 9>&-
fi
echo "ESPEAK=$(command -v espeak-ng)"
