#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, for the tests, CI and people
# trying modelfleet: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, a dedicated containerd, a kubelet, kube-proxy and CoreDNS,
# all as plain processes.
#
#   hack/cluster.sh up              build what is missing, start everything, apply crds/
#   hack/cluster.sh down [--purge]  stop everything, remove pods; --purge also drops
#                                   the cluster's state (etcd, containerd, certificates)
#   hack/cluster.sh env             print shell exports (KUBECONFIG, PATH, ...)
#   hack/cluster.sh status          what runs
#   hack/cluster.sh load-image TAG  copy a docker image into the node's containerd
#   hack/cluster.sh build           only build/download the binaries and images
#   hack/cluster.sh packages        only install the Debian packages it needs
#   hack/cluster.sh binaries        only build the Kubernetes, CNI, crictl and CoreDNS binaries
#   hack/cluster.sh dockerd         start Debian's dockerd unless one answers (to build images)
#
# Must run as root. Details, caches and logs: hack/cluster/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HACK=$ROOT/hack/cluster
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HACK/go.mod")
CNI_VERSION=v1.8.0   # github.com/containernetworking/plugins
CRICTL_VERSION=v1.34.0   # sigs.k8s.io/cri-tools
COREDNS_VERSION=v1.14.7  # github.com/coredns/coredns

CACHE=${MODELFLEET_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet/cluster}
BIN=$CACHE/$K8S_VERSION/bin
CNI_BIN=$CACHE/cni-$CNI_VERSION/bin
TOOLS_BIN=$CACHE/crictl-$CRICTL_VERSION/bin
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin
RUN=${MODELFLEET_CLUSTER_DIR:-/var/lib/modelfleet-cluster}
PKI=$RUN/pki
LOGS=$RUN/logs
PIDS=$RUN/pids
KUBECONFIG_FILE=$RUN/kubeconfig
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
POD_LOGS=$RUN/pod-logs

NODE_NAME=modelfleet-node
# The node IP is the pod bridge's gateway address: the kubelet refuses a loopback
# node IP, and this address exists only inside this machine.
BRIDGE=mfcni0
POD_CIDR=10.244.0.0/16
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=6443
# The API server listens on the node IP only: pods reach it there (Service kubernetes), and so does
# this machine; nothing outside it does.
APISERVER_URL=https://$NODE_IP:$APISERVER_PORT
KUBE_PROXY_HEALTHZ=127.0.0.1:10256
COREDNS_HEALTH=127.0.0.1:10054
COREDNS_READY=127.0.0.1:10181
PAUSE_IMAGE=modelfleet/pause:1
BASE_IMAGE=modelfleet/base:bookworm-1

K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
CNI_PLUGINS=(bridge host-local loopback portmap firewall)
# Start order (down stops kubelet, removes the pods, then stops the rest).
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns)

export PATH=$BIN:$TOOLS_BIN:/usr/local/sbin:/usr/sbin:/sbin:$PATH

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
running() {
    local pid
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

tail_log() {
    local f=$LOGS/$1.log
    [ -f "$f" ] || return 0
    log "last lines of $f:"
    tail -n "${2:-40}" "$f" >&2
}

# wait_for NAME SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds; on
# timeout, or when component NAME dies, print its log's tail and fail.
wait_for() {
    local name=$1 timeout=$2 what=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ -f "$PIDS/$name.pid" ] && ! running "$name"; then
            tail_log "$name"
            die "$name exited while waiting for $what"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail_log "$name"
            die "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.5
    done
}

# start NAME COMMAND...: run in its own session, log to $LOGS/NAME.log. One that runs with
# another command line (an older hack/cluster.sh started it) is restarted with this one.
start() {
    local name=$1 args
    shift
    args=$(printf '%q ' "$@")
    if running "$name"; then
        [ "$(cat "$PIDS/$name.args" 2>/dev/null)" = "$args" ] && return 0
        log "restarting $name: its command line changed"
        stop "$name"
    fi
    log "starting $name"
    printf '==== %s: %s\n' "$(date -Is)" "$*" >>"$LOGS/$name.log"
    # 9>&-: a caller's lock (hack/images.sh holds its build lock on fd 9) must not live on in a daemon.
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$PIDS/$name.pid"
    printf '%s' "$args" >"$PIDS/$name.args"
}

# stop NAME...: SIGTERM to all of them at once, SIGKILL to what is left after 15s.
stop() {
    local name pid pids=() i
    for name in "$@"; do
        pid=$(pid_of "$name")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            log "stopping $name ($pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for i in $(seq 1 150); do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=; done
        [ -z "${pid:-}" ] && break
        sleep 0.1
    done
    for name in "$@"; do
        pid=$(pid_of "$name")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in 15s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDS/$name.pid" "$PIDS/$name.args"
    done
}

# ---------------------------------------------------------------- prerequisites

ensure_packages() {
    local missing=() cmd pkg
    for pair in etcd:etcd-server containerd:docker.io runc:docker.io dockerd:docker.io \
        debootstrap:debootstrap iptables:iptables openssl:openssl gcc:gcc curl:curl; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null || missing+=("$pkg")
    done
    # gcc -static needs libc.a
    [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(find /usr/lib -name libc.a -print -quit 2>/dev/null)" ] \
        || missing+=(libc6-dev)
    [ "${#missing[@]}" -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing Debian packages: ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >"$LOGS/apt.log" 2>&1 || { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
        >>"$LOGS/apt.log" 2>&1 || { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install failed"; }
}

# run_with_progress LABEL LOGFILE COMMAND...: a long step with a line every 30s.
run_with_progress() {
    local label=$1 logfile=$2 start=$SECONDS pid
    shift 2
    "$@" >"$logfile" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && log "$label: $((SECONDS - start))s ..."
    done
    if ! wait "$pid"; then
        tail -n 40 "$logfile" >&2
        die "$label failed (log: $logfile)"
    fi
    log "$label: done in $((SECONDS - start))s"
}

ensure_binaries() {
    command -v go >/dev/null || die "Go is needed to build Kubernetes (https://go.dev/dl)"
    local missing=() c
    for c in "${K8S_COMMANDS[@]}"; do [ -x "$BIN/$c" ] || missing+=("$c"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        mkdir -p "$BIN"
        local pkgs=() v=${K8S_VERSION#v}
        for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
        local ldflags="-s -w"
        for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=${v%%.*}"
            ldflags+=" -X $p.gitMinor=$(cut -d. -f2 <<<"$v") -X $p.gitTreeState=clean"
        done
        log "building Kubernetes $K8S_VERSION (${missing[*]}); cold: ~9 min on 2 cores, warm: seconds"
        run_with_progress "go build kubernetes" "$CACHE/build-$K8S_VERSION.log" \
            env -C "$HACK" CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}"
    fi
    missing=()
    for c in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_BIN/$c" ] || missing+=("$c"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        mkdir -p "$CNI_BIN"
        local pkgs=()
        for c in "${CNI_PLUGINS[@]}"; do
            case $c in
                host-local) pkgs+=("github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_VERSION") ;;
                firewall | portmap) pkgs+=("github.com/containernetworking/plugins/plugins/meta/$c@$CNI_VERSION") ;;
                *) pkgs+=("github.com/containernetworking/plugins/plugins/main/$c@$CNI_VERSION") ;;
            esac
        done
        log "building CNI plugins $CNI_VERSION (${CNI_PLUGINS[*]})"
        run_with_progress "go install cni plugins" "$CACHE/build-cni-$CNI_VERSION.log" \
            env -C /tmp GOBIN="$CNI_BIN" CGO_ENABLED=0 GOFLAGS= go install -ldflags "-s -w" "${pkgs[@]}"
    fi
    if [ ! -x "$TOOLS_BIN/crictl" ]; then
        mkdir -p "$TOOLS_BIN"
        log "building crictl $CRICTL_VERSION"
        run_with_progress "go install crictl" "$CACHE/build-crictl-$CRICTL_VERSION.log" \
            env -C /tmp GOBIN="$TOOLS_BIN" CGO_ENABLED=0 GOFLAGS= go install -ldflags "-s -w" \
            "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    fi
    if [ ! -x "$COREDNS_BIN/coredns" ]; then
        mkdir -p "$COREDNS_BIN"
        log "building CoreDNS $COREDNS_VERSION; cold: ~4 min on 2 cores"
        run_with_progress "go install coredns" "$CACHE/build-coredns-$COREDNS_VERSION.log" \
            env -C /tmp GOBIN="$COREDNS_BIN" CGO_ENABLED=0 GOFLAGS= go install -ldflags "-s -w" \
            "github.com/coredns/coredns@$COREDNS_VERSION"
    fi
}

# ---------------------------------------------------------------- docker and images

docker_ok() { docker info >/dev/null 2>&1; }

# Debian's dockerd, started here when none answers; only for building images
# (docker import/build/save). It keeps running until `down`.
ensure_dockerd() {
    docker_ok && return 0
    start dockerd dockerd --pidfile "$RUN/dockerd.pidfile"
    wait_for dockerd 60 "dockerd" docker_ok
}

ctr_node() { ctr -n k8s.io -a "$CONTAINERD_SOCK" "$@"; }

# docker image names as containerd records them (docker.io/library/... for bare names)
normalized() {
    local ref=$1
    case ${ref%%/*} in
        *.* | *:* | localhost) ;;
        *) case $ref in */*) ref=docker.io/$ref ;; *) ref=docker.io/library/$ref ;; esac ;;
    esac
    case ${ref##*/} in *:* | *@*) ;; *) ref=$ref:latest ;; esac
    printf '%s\n' "$ref"
}

node_has_image() { ctr_node images ls -q 2>/dev/null | grep -qxF "$(normalized "$1")"; }

# load_image TAG: docker save | ctr import. The docker image id is kept as a label,
# so loading an unchanged image again is a no-op.
load_image() {
    local tag=$1 ref id
    ref=$(normalized "$tag")
    id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null) || die "docker has no image $tag"
    if ctr_node images ls "name==$ref" 2>/dev/null | grep -qF "modelfleet.io/docker-id=$id"; then
        log "node already has $tag"
        drop_orphan_id_refs
        return 0
    fi
    # Older tags of the same repository first (a worker image is ~7 GB, twice that in containerd,
    # and the import needs as much again): a full disk makes the kubelet evict images.
    local repo=${ref%:*} old
    for old in $(ctr_node images ls -q 2>/dev/null | grep -F "$repo:" | grep -vxF "$ref"); do
        log "removing $old from the node"
        ctr_node images rm "$old" >/dev/null || true
    done
    log "loading $tag into the node"
    docker save "$tag" | ctr_node images import - >/dev/null
    ctr_node images label "$ref" "modelfleet.io/docker-id=$id" >/dev/null
    drop_orphan_id_refs
}

# The kubelet's CRI names every image it has seen by its id too ("sha256:<id>"). Once the named
# tag is gone that ref alone keeps the old image's layers (gigabytes for a worker) on disk.
drop_orphan_id_refs() {
    local listing orphan
    listing=$(ctr_node images ls 2>/dev/null | tail -n +2) || return 0
    for orphan in $(awk '$1 !~ /^sha256:/ {named[$3] = 1; next}
                         $1 ~ /^sha256:/ {ids[$1] = $3}
                         END {for (r in ids) if (!(ids[r] in named)) print r}' <<<"$listing"); do
        log "removing the orphaned image id $orphan from the node"
        ctr_node images rm "$orphan" >/dev/null || true
    done
}

ensure_images() {
    local need=()
    node_has_image "$PAUSE_IMAGE" || need+=("$PAUSE_IMAGE")
    node_has_image "$BASE_IMAGE" || need+=("$BASE_IMAGE")
    [ "${#need[@]}" -eq 0 ] && return 0
    ensure_dockerd
    export DOCKER_BUILDKIT=0   # Debian's dockerd 20.10 has no buildx; the classic builder suffices
    "$ROOT/images/pause/build.sh" "$PAUSE_IMAGE"
    "$ROOT/images/base/build.sh" "$BASE_IMAGE"
    local t
    for t in "${need[@]}"; do load_image "$t"; done
}

# ---------------------------------------------------------------- certificates

# cert NAME CN O [SANS]: a key and a certificate signed by the cluster CA.
cert() {
    local name=$1 cn=$2 org=$3 sans=${4:-} subj ext
    [ -s "$PKI/$name.crt" ] && return 0
    subj="/CN=$cn"
    [ -n "$org" ] && subj="/O=$org$subj"
    ext=$(mktemp)
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [ -n "$sans" ]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$sans"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$ext" "$PKI/$name.csr"
}

ensure_pki() {
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    if [ ! -s "$PKI/ca.crt" ]; then
        log "generating certificates and service-account keys"
        openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
        openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=modelfleet-cluster-ca" -days 3650 \
            -sha256 -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$PKI/ca.crt" 2>/dev/null
    fi
    cert apiserver kube-apiserver "" \
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    cert admin modelfleet-admin system:masters
    cert controller-manager system:kube-controller-manager ""
    cert scheduler system:kube-scheduler ""
    cert kubelet "system:node:$NODE_NAME" system:nodes
    cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,IP:$NODE_IP"
    # The bootstrap ClusterRoleBinding system:node-proxier gives user system:kube-proxy its rights;
    # cluster_addons gives system:coredns its.
    cert kube-proxy system:kube-proxy ""
    cert coredns system:coredns ""
    if [ ! -s "$PKI/sa.key" ]; then
        openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
        openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    fi
    chmod 600 "$PKI"/*.key
}

# kubeconfig FILE USER: one for USER's certificate; written again when it names another server (an
# older hack/cluster.sh's API server listened on loopback).
kubeconfig() {
    local file=$1 user=$2 server=$APISERVER_URL
    [ -s "$file" ] && grep -qF "server: $server" "$file" && return 0
    local kc=(kubectl --kubeconfig "$file.tmp" config)
    rm -f "$file.tmp"
    "${kc[@]}" set-cluster modelfleet --server "$server" --certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
    "${kc[@]}" set-credentials "$user" --client-certificate "$PKI/$user.crt" --client-key "$PKI/$user.key" --embed-certs >/dev/null
    "${kc[@]}" set-context modelfleet --cluster modelfleet --user "$user" >/dev/null
    "${kc[@]}" use-context modelfleet >/dev/null
    chmod 600 "$file.tmp"
    mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------- configuration files

write_configs() {
    mkdir -p "$RUN/containerd" "$RUN/cni/net.d" "$RUN/cni/networks" "$RUN/kubelet" "$POD_LOGS" "$RUN/etcd"
    kubeconfig "$KUBECONFIG_FILE" admin
    kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
    kubeconfig "$RUN/scheduler.kubeconfig" scheduler
    kubeconfig "$RUN/kubelet.kubeconfig" kubelet
    kubeconfig "$RUN/kube-proxy.kubeconfig" kube-proxy
    kubeconfig "$RUN/coredns.kubeconfig" coredns

    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' \
        "$CONTAINERD_SOCK" "$CONTAINERD_SOCK" >"$RUN/crictl.yaml"

    cat >"$RUN/containerd/config.toml" <<EOF
# Generated by hack/cluster.sh: the node's own containerd, apart from docker's.
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = "$CONTAINERD_SOCK.debug"
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(normalized "$PAUSE_IMAGE")"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # Test-environment stand-in: clamps negative oomScoreAdj, which this sandbox forbids.
        BinaryName = "$HACK/runc-oom-clamp"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$RUN/cni/net.d"
    max_conf_num = 1
EOF

    cat >"$RUN/cni/net.d/10-modelfleet.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "modelfleet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
EOF

    cat >"$RUN/kubelet/config.yaml" <<EOF
# Generated by hack/cluster.sh
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SERVICE_IP]
podLogsDir: $POD_LOGS
# Images come from 'load-image', never from a registry: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Eviction reclaims disk by deleting unused images, which here cannot be pulled back (pause!):
# only when the disk is all but full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 512Mi
  imagefs.available: 512Mi
  nodefs.inodesFree: 1%
EOF

    cat >"$RUN/kube-proxy.yaml" <<EOF
# Generated by hack/cluster.sh
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $RUN/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: $KUBE_PROXY_HEALTHZ
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the bridge's address, which exists only inside this machine.
nodePortAddresses: [$NODE_IP/32]
# This sandbox forbids raising nf_conntrack_max: keep the host's conntrack settings.
conntrack:
  maxPerCore: 0
  min: 0
EOF

    mkdir -p "$RUN/coredns"
    cat >"$RUN/coredns/Corefile" <<EOF
# Generated by hack/cluster.sh: the cluster's DNS on the node IP, behind Service kube-dns ($DNS_SERVICE_IP).
.:53 {
    bind $NODE_IP
    errors
    health $COREDNS_HEALTH
    ready $COREDNS_READY
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $RUN/coredns.kubeconfig modelfleet
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . /etc/resolv.conf
    cache 30
    loop
    loadbalance
}
EOF
}

# ---------------------------------------------------------------- the node's network

ensure_network() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip -4 addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    sysctl -qw net.ipv4.ip_forward=1 || true
    # Bridged traffic through iptables: a reply from one pod to another that reached it through a
    # Service (DNAT) must be un-NATed, though it never leaves the bridge.
    [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
        log "warning: cannot set net.bridge.bridge-nf-call-iptables=1; pod-to-pod Service traffic may fail"
}

# ---------------------------------------------------------------- the components

kctl() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }
api_ready() { kctl get --raw /readyz; }
etcd_ready() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
containerd_ready() { ctr -a "$CONTAINERD_SOCK" version; }
node_ready() {
    [ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
default_sa() { kctl -n default get serviceaccount default; }
secure_healthz() { curl -fsSk "https://127.0.0.1:$1/healthz"; }
kubelet_healthz() { curl -fsS "http://127.0.0.1:10248/healthz"; }
kube_proxy_healthz() { curl -fsS "http://$KUBE_PROXY_HEALTHZ/healthz"; }
coredns_ready() { curl -fsS "http://$COREDNS_READY/ready"; }

# What CoreDNS reads (as user system:coredns), and the Service kube-dns that the kubelet's
# clusterDNS names: without a selector, since CoreDNS runs on the host; its endpoint is the node IP.
cluster_addons() {
    kctl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: system:coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: hack-cluster.modelfleet.io
addressType: IPv4
endpoints:
  - addresses: [$NODE_IP]
    conditions: {ready: true}
    nodeName: $NODE_NAME
ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

start_components() {
    start etcd etcd --name modelfleet --data-dir "$RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "modelfleet=http://127.0.0.1:$ETCD_PEER_PORT" \
        --quota-backend-bytes 4294967296
    start containerd containerd --config "$RUN/containerd/config.toml"
    wait_for etcd 60 "etcd" etcd_ready
    wait_for containerd 60 "containerd" containerd_ready

    start kube-apiserver kube-apiserver \
        --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --anonymous-auth=false \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --allow-privileged=true \
        --client-ca-file "$PKI/ca.crt" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --profiling=false
    wait_for kube-apiserver 120 "kube-apiserver /readyz" api_ready
    cluster_addons

    start kube-controller-manager kube-controller-manager \
        --kubeconfig "$RUN/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
    start kube-scheduler kube-scheduler \
        --kubeconfig "$RUN/scheduler.kubeconfig" \
        --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
        --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false
    start kubelet kubelet \
        --config "$RUN/kubelet/config.yaml" --kubeconfig "$RUN/kubelet.kubeconfig" \
        --root-dir "$RUN/kubelet/root" --cert-dir "$RUN/kubelet/pki" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"

    wait_for kube-controller-manager 60 "kube-controller-manager /healthz" secure_healthz 10257
    wait_for kube-scheduler 60 "kube-scheduler /healthz" secure_healthz 10259
    wait_for kubelet 60 "kubelet /healthz" kubelet_healthz
    wait_for kubelet 120 "node $NODE_NAME Ready" node_ready
    # After the node exists: kube-proxy reads its node's addresses.
    start kube-proxy kube-proxy --config "$RUN/kube-proxy.yaml"
    start coredns "$COREDNS_BIN/coredns" -conf "$RUN/coredns/Corefile"
    wait_for kube-proxy 60 "kube-proxy /healthz" kube_proxy_healthz
    wait_for coredns 60 "CoreDNS /ready" coredns_ready
    wait_for kube-controller-manager 60 "the default ServiceAccount" default_sa
}

all_running() {
    local c
    for c in "${COMPONENTS[@]}"; do running "$c" || return 1; done
    api_ready >/dev/null 2>&1 && node_ready >/dev/null 2>&1
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "must run as root (containerd and the kubelet need it)"
    mkdir -p "$RUN" "$LOGS" "$PIDS" "$CACHE"
    if all_running; then
        # Still make sure the node has its local-only images (disk-pressure eviction may have
        # removed them, and they cannot be pulled back) and the current CRDs.
        ensure_images
        apply_crds
        log "already up (hack/cluster.sh status)"
        return 0
    fi
    local start=$SECONDS
    ensure_packages
    ensure_binaries
    ensure_pki
    write_configs
    ensure_network
    start_components
    ensure_images
    apply_crds
    log "up in $((SECONDS - start))s; run: eval \"\$(hack/cluster.sh env)\""
}

apply_crds() {
    if compgen -G "$ROOT/crds/*.yaml" >/dev/null; then
        kctl apply -f "$ROOT/crds/" >/dev/null
        kctl wait --for condition=Established --timeout 60s -f "$ROOT/crds/" >/dev/null
    fi
}

cmd_build() {
    mkdir -p "$RUN" "$LOGS" "$PIDS" "$CACHE"
    ensure_packages
    ensure_binaries
    ensure_dockerd
    export DOCKER_BUILDKIT=0
    "$ROOT/images/pause/build.sh" "$PAUSE_IMAGE"
    "$ROOT/images/base/build.sh" "$BASE_IMAGE"
}

# Mount points at or below $1, deepest first.
mounts_under() {
    awk -v root="$1" '{ gsub(/\\040/, " ", $5); if ($5 == root || index($5, root "/") == 1) print $5 }' \
        /proc/self/mountinfo | sort -r
}

# Processes whose command line mentions $1 (our containerd's shims, for one).
pids_mentioning() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$1" && echo "${p#/proc/}"
    done
    return 0
}

cmd_down() {
    local purge=0
    [ "${1:-}" = --purge ] && purge=1
    [ -d "$RUN" ] || { log "nothing to stop"; return 0; }
    stop kubelet
    if running containerd; then
        # Remove every pod through the CRI, so CNI releases its addresses and netns.
        log "removing pods"
        crictl --config "$RUN/crictl.yaml" rmp -f -a >/dev/null 2>&1 ||
            log "warning: crictl rmp failed; killing containers directly"
        local t
        for t in $(ctr_node tasks ls -q 2>/dev/null); do ctr_node tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    fi
    stop coredns kube-proxy kube-scheduler kube-controller-manager kube-apiserver containerd dockerd
    stop etcd
    # kube-proxy's iptables chains would outlive it: remove them (Services work again after `up`).
    if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
    # Shims outlive containerd; end ours (they name our socket) by pid.
    local p
    for p in $(pids_mentioning "$CONTAINERD_SOCK"); do kill -KILL "$p" 2>/dev/null || true; done
    local m
    for m in $(mounts_under "$RUN"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [ "$purge" = 1 ]; then
        log "purging $RUN (caches in $CACHE stay)"
        rm -rf "$RUN"
    fi
    log "down"
}

cmd_status() {
    local c pid state
    for c in "${COMPONENTS[@]}" dockerd; do
        pid=$(pid_of "$c")
        if running "$c"; then state="running (pid $pid)"; else state=stopped; fi
        printf '%-24s %s\n' "$c" "$state"
    done
    if running kube-apiserver && api_ready >/dev/null 2>&1; then
        kctl get nodes -o wide 2>/dev/null || true
    fi
    printf 'runtime dir: %s\ncaches:      %s\n' "$RUN" "$CACHE"
}

cmd_env() {
    cat <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export PATH=$BIN:$TOOLS_BIN:\$PATH
export MODELFLEET_CLUSTER_DIR=$RUN
export MODELFLEET_CLUSTER_POD_LOGS=$POD_LOGS
export MODELFLEET_CLUSTER_NODE=$NODE_NAME
export MODELFLEET_CLUSTER_NODE_IP=$NODE_IP
export MODELFLEET_CLUSTER_DNS_IP=$DNS_SERVICE_IP
export MODELFLEET_CLUSTER_BASE_IMAGE=$BASE_IMAGE
export CRI_CONFIG_FILE=$RUN/crictl.yaml
EOF
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down "${2:-}" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    build) cmd_build ;;
    packages)
        mkdir -p "$RUN" "$LOGS" "$PIDS"
        ensure_packages
        ;;
    binaries)
        mkdir -p "$RUN" "$LOGS" "$PIDS" "$CACHE"
        ensure_packages
        ensure_binaries
        ;;
    dockerd)
        mkdir -p "$RUN" "$LOGS" "$PIDS"
        ensure_dockerd
        ;;
    load-image)
        [ -n "${2:-}" ] || die "usage: hack/cluster.sh load-image TAG"
        running containerd || die "the cluster is not up"
        ensure_dockerd
        load_image "$2"
        ;;
    *)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
