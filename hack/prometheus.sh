#!/usr/bin/env bash
# Debian's Prometheus and Alertmanager for checking and unit-testing the alert rules (promtool), and for
# trying them against a real Prometheus. Installs the packages when missing and prints the paths:
#
#   hack/prometheus.sh          PROMTOOL=..., PROMETHEUS=..., ALERTMANAGER=..., AMTOOL=... (KEY=VALUE lines,
#                               the last one is PROMTOOL)
#
# Only the binaries are wanted, never the daemons: Debian's postinst would enable and start
# prometheus.service (listening on :9090) and prometheus-alertmanager.service (:9093). During the install
# a policy-rc.d that refuses every start stands in (unless the machine already has one), and afterwards
# any unit or init script the packages brought is stopped and disabled. Idempotent: with the packages
# installed it only prints (well under a second). Needs root (or sudo) and the Debian archive the first
# time; bookworm has prometheus 2.42 and alertmanager 0.25.
set -euo pipefail

packages=(prometheus prometheus-alertmanager)
services=(prometheus prometheus-alertmanager)

log() { printf '[prometheus.sh] %s\n' "$*" >&2; }

installed() {
    command -v promtool >/dev/null && command -v prometheus >/dev/null \
        && command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null
}

stop_daemons() {
    # systemd as init: stop and disable the units. Otherwise (containers): the sysv scripts, if one started.
    local service
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        for service in "${services[@]}"; do
            $sudo systemctl disable --now "$service.service" >/dev/null 2>&1 || true
        done
        return
    fi
    for service in "${services[@]}"; do
        if [ -x "/etc/init.d/$service" ]; then
            $sudo "/etc/init.d/$service" stop >/dev/null 2>&1 || true
            $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
        fi
        # The postinst enables the unit (multi-user.target.wants) even without systemd running; update-rc.d
        # disable removes that on Debian 12, and this makes sure: a later boot with systemd starts nothing.
        if command -v systemctl >/dev/null; then
            $sudo systemctl disable "$service.service" >/dev/null 2>&1 || true
        fi
    done
}

sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! installed; then
    command -v apt-get >/dev/null || { log "error: apt-get is needed (Debian or Ubuntu); install promtool yourself"; exit 1; }
    exec 9>/tmp/modelfleet-prometheus-install.lock
    flock 9   # concurrent callers (parallel test workers) wait for one install
    if ! installed; then
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            # exit 101: "action forbidden by policy"; invoke-rc.d and deb-systemd-invoke then start nothing.
            printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
            $sudo chmod 755 "$policy"
            trap '$sudo rm -f "$policy"' EXIT
        fi
        log "installing ${packages[*]} (apt, --no-install-recommends)"
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${packages[@]}" >&2 \
            || { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${packages[@]}" >&2; }
        stop_daemons
    fi
    exec 9>&-
fi

echo "PROMETHEUS=$(command -v prometheus)"
echo "ALERTMANAGER=$(command -v prometheus-alertmanager)"
echo "AMTOOL=$(command -v amtool)"
echo "PROMTOOL=$(command -v promtool)"
