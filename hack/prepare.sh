#!/usr/bin/env bash
# Builds or downloads every component the tests run against, in parallel lanes, and records how long
# each step took. Every step is one of hack/'s idempotent scripts (cached outside the repository), so
# a warm run takes seconds; the test fixtures call the same scripts and find their results.
#
#   hack/prepare.sh [TIMINGS]     TIMINGS: a file to append "step<TAB>seconds<TAB>status" lines to
#
# Lanes, chosen for a 2-core machine: the Go and C++ builds are CPU-bound and run one after another;
# the downloads and docker image builds are mostly network and disk, and overlap with them.
#   packages  (first, alone)  Debian packages: the cluster's, Prometheus', espeak-ng (apt takes one install at a time)
#   go        Kubernetes, CNI, crictl, CoreDNS, then the cluster starts; helm, kstatus, MinIO
#   images    dockerd, the Debian base, ncnn's int8 tools, the operator and worker images;
#             each is loaded into the node once the go lane has the cluster up
#   downloads onnx2tf's venv, tritonserver, the prometheus-operator CRDs
# The cluster lanes run only as root (the cluster tests need it); elsewhere they are skipped.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
timings=${1:-/dev/null}
logs=${MODELFLEET_PREPARE_LOGS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/prepare-logs}
mkdir -p "$logs"
# Images the tests load into the node (agent: only bench/images.py builds it).
NODE_IMAGES="operator worker worker-tflite worker-torch"

log() { printf '[prepare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# step NAME COMMAND...: run it with its output in $logs/NAME.log, record its time and outcome. Builds run at
# the lowest priority, so that the unit tier beside them keeps the CPU it needs; steps that start daemons (the
# cluster, dockerd) do not, since their daemons would keep that priority.
step() {
    local name=$1 start=$SECONDS status=ok priority=19
    shift
    case $name in cluster-up | dockerd) priority=0 ;; esac
    log "$name: started"
    if ! nice -n "$priority" "$@" >"$logs/$name.log" 2>&1; then
        status=FAILED
        log "$name: FAILED after $((SECONDS - start))s; last lines of $logs/$name.log:"
        tail -n 15 "$logs/$name.log" >&2
    else
        log "$name: done in $((SECONDS - start))s"
    fi
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$status" >>"$timings"
    [ "$status" = ok ]
}

as_root() { [ "$(id -u)" = 0 ]; }

lane_go() {
    if as_root; then
        step cluster-binaries bash hack/cluster.sh binaries &&
            step cluster-up bash hack/cluster.sh up && touch "$logs/.cluster-up"
    fi
    step helm bash hack/helm.sh
    step kstatus bash hack/kstatus.sh
    step minio bash hack/minio.sh build
}

lane_images() {
    as_root || return 0
    step dockerd bash hack/cluster.sh dockerd || return 1
    step ncnn-tools bash hack/ncnn-tools.sh
    local image tag loaded=""
    for image in $NODE_IMAGES; do
        step "image-$image" bash -c "set -o pipefail; bash hack/images.sh build $image | tail -n 1 >'$logs/.tag-$image'"
    done
    # Loading needs the node's containerd: wait for the go lane's cluster (or its failure).
    while [ ! -e "$logs/.cluster-up" ] && [ ! -e "$logs/.go-done" ]; do sleep 5; done
    [ -e "$logs/.cluster-up" ] || return 1
    for image in $NODE_IMAGES; do
        tag=$(cat "$logs/.tag-$image" 2>/dev/null) && [ -n "$tag" ] || continue
        step "load-$image" bash hack/cluster.sh load-image "$tag"
    done
}

lane_downloads() {
    step onnx2tf-venv bash hack/onnx2tf-venv.sh
    step triton bash hack/triton/install.sh
    step prometheus-operator-crds bash hack/prometheus-operator-crds.sh
}

rm -f "$logs/.cluster-up" "$logs/.go-done" "$logs"/.tag-*
start=$SECONDS
if as_root; then
    step packages bash -c 'bash hack/cluster.sh packages && bash hack/prometheus.sh && bash hack/espeak.sh'
else
    step packages bash -c 'bash hack/prometheus.sh && bash hack/espeak.sh'
fi
{ lane_go; touch "$logs/.go-done"; } &
go_pid=$!
lane_images &
images_pid=$!
lane_downloads &
downloads_pid=$!
failed=0
wait "$go_pid" || failed=1
wait "$images_pid" || failed=1
wait "$downloads_pid" || failed=1
if grep -q $'\tFAILED$' "$timings" 2>/dev/null; then failed=1; fi
log "all lanes done in $((SECONDS - start))s (logs: $logs)"
exit "$failed"
