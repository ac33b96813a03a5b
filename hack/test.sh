#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite (what .ci/run runs).
#
#   hack/test.sh              the tiers: the venv, then the unit tier (no external component, two workers,
#                             under 2 minutes) while hack/prepare.sh builds the components in the background,
#                             then every other test; ends with the time of each phase
#   hack/test.sh ARGS...      the venv, then `pytest ARGS` (one file, a -k expression, a marker, ...)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# A cold run needs room for the venv (~7.5 GB) and, with the cluster tests, the worker image
# (~7.7 GB in docker, as much again in the node's containerd). Say so before a pip error does.
free_gb=$(df -P --block-size=1G . | awk 'NR == 2 {print $4}')
if [ "$free_gb" -lt 25 ]; then
    echo "warning: only ${free_gb} GB free here; a cold run needs about 25 GB (venv, images)." >&2
    echo "         hack/cluster.sh down --purge and docker system prune free the test cluster's images." >&2
fi
timings=$(mktemp)
trap 'rm -f "$timings"' EXIT
# phase NAME COMMAND...: run it, record its time and outcome; returns its status.
phase() {
    local name=$1 start=$SECONDS status=0
    shift
    echo "==> $name" >&2
    "$@" || status=$?
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$([ "$status" = 0 ] && echo ok || echo "exit $status")" >>"$timings"
    return "$status"
}
breakdown() {
    echo "==> time by phase (seconds; the prepare steps ran in parallel lanes beside the unit tier)" >&2
    awk -F'\t' '{printf "    %-28s %6d  %s\n", $1, $2, $3}' "$timings" >&2
    echo "    total                        $((SECONDS - started))" >&2
}
started=$SECONDS

phase venv env MODELFLEET_EXTRAS=worker,torch,triton,operator,agent,gateway,test bash hack/venv.sh
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi

bash hack/prepare.sh "$timings" &
prepare_pid=$!
status=0
reports=$(mktemp -d)
trap 'rm -rf "$timings" "$reports"' EXIT
phase unit-tier .venv/bin/python -m pytest -q -n 2 -m "not slow and not cluster and not component" \
    --junitxml "$reports/unit.xml" || status=$?
wait "$prepare_pid" || echo "warning: hack/prepare.sh could not build every component; the tests that need it will say which" >&2
# Everything else; pytest's exit 5 (no test selected) cannot happen here: the component tests exist.
phase component-tiers .venv/bin/python -m pytest -q -m "slow or cluster or component" \
    --junitxml "$reports/components.xml" || status=$?
breakdown
# One closing line for both tiers.
.venv/bin/python - "$reports"/*.xml <<'EOF' || true
import sys
import xml.etree.ElementTree as ET

counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
failed = counts["failures"] + counts["errors"]
print(f"total: {counts['tests'] - failed - counts['skipped']} passed, {failed} failed, {counts['skipped']} skipped")
EOF
exit "$status"
