#!/usr/bin/env bash
# The operator installed with Helm on the single-node test cluster, and the digits model applied with kubectl:
# what README.md's quick start runs. As root, on a machine like the one hack/cluster.sh describes.
#
#   hack/quickstart.sh          cluster up, images built and loaded, `helm install`, digits applied, wait Ready
#   hack/quickstart.sh clean    `helm uninstall` and the demo namespace (the CRDs stay, as the chart keeps them)
#
# The artifact store is pvc://modelfleet/results: a hostPath directory on this machine (STORE, default
# /var/lib/modelfleet-quickstart/store) behind a claim `modelfleet` in the release namespace (modelfleet-quickstart)
# and in the model's namespace (modelfleet-demo). The digits CNN is trained into it by the torch worker image itself (no host venv needed), and the
# model is examples/gitops/base/compressedmodel.yaml (in-cluster pvc:// inputs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Names of their own, so that the quickstart and the test suite's operator (deploy/, in modelfleet-system) can
# share the test cluster; the quickstart's operator watches only its models' namespace.
RELEASE=modelfleet-quickstart
RELEASE_NAMESPACE=modelfleet-quickstart
MODELS_NAMESPACE=${MODELS_NAMESPACE:-modelfleet-demo}
STORE=${STORE:-/var/lib/modelfleet-quickstart/store}

log() { printf '[quickstart %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bash "$ROOT/hack/cluster.sh" up >&2
eval "$(bash "$ROOT/hack/cluster.sh" env)"
helm=$(bash "$ROOT/hack/helm.sh")

if [ "${1:-}" = clean ]; then
    kubectl delete namespace "$MODELS_NAMESPACE" --ignore-not-found --wait=true
    "$helm" uninstall "$RELEASE" -n "$RELEASE_NAMESPACE" --ignore-not-found --wait
    kubectl delete pv "quickstart-$RELEASE_NAMESPACE" "quickstart-$MODELS_NAMESPACE" --ignore-not-found
    exit 0
fi

# Images: the operator, the torch-free worker (publish and bundle Jobs) and the torch worker (digits is a
# TorchScript source). Each is built once and cached by content; loading an unchanged image is a no-op.
declare -A tags
for image in operator worker worker-torch; do
    log "image $image"
    tags[$image]=$(bash "$ROOT/hack/images.sh" build "$image" | tail -n 1)
    bash "$ROOT/hack/cluster.sh" load-image "${tags[$image]}" >&2
done

# The store: one directory, a ReadWriteMany claim `modelfleet` onto it in each namespace (uid 10001 writes it).
install -d -m 0777 "$STORE" "$STORE/inputs"
for namespace in "$RELEASE_NAMESPACE" "$MODELS_NAMESPACE"; do
    kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: quickstart-$namespace}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $STORE, type: Directory}
  claimRef: {namespace: $namespace, name: modelfleet}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: modelfleet, namespace: $namespace}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: quickstart-$namespace
  resources: {requests: {storage: 10Gi}}
EOF
done
if [ ! -f "$STORE/inputs/digits/evaluation.npz" ]; then
    log "training the digits CNN into $STORE/inputs/digits (in the torch worker image)"
    install -d -o 10001 -g 10001 "$STORE/inputs/digits"
    docker run --rm --network none -v "$ROOT/examples/digits:/src:ro" -v "$STORE/inputs/digits:/out" \
        --entrypoint python "${tags[worker-torch]}" -W ignore /src/train.py --out /out >&2
fi

log "helm install $RELEASE"
repo() { echo "${1%:*}"; }
tag() { echo "${1##*:}"; }
# --take-ownership: hack/cluster.sh applied the CRDs already; the release adopts them (and keeps them).
"$helm" upgrade --install "$RELEASE" "$ROOT/charts/modelfleet" -n "$RELEASE_NAMESPACE" --take-ownership \
    --set operator.image.repository="$(repo "${tags[operator]}")",operator.image.tag="$(tag "${tags[operator]}")" \
    --set operator.image.pullPolicy=Never,operator.worker.pullPolicy=Never \
    --set operator.worker.image.repository="$(repo "${tags[worker]}")",operator.worker.image.tag="$(tag "${tags[worker]}")" \
    --set operator.worker.torchImage.repository="$(repo "${tags[worker-torch]}")",operator.worker.torchImage.tag="$(tag "${tags[worker-torch]}")" \
    --set gateway.enabled=false,operator.watchNamespaces="{$MODELS_NAMESPACE}" \
    --wait --timeout 5m

log "kubectl apply the digits model into $MODELS_NAMESPACE"
kubectl apply -n "$MODELS_NAMESPACE" -f "$ROOT/examples/gitops/base/compressedmodel.yaml"
kubectl wait -n "$MODELS_NAMESPACE" compressedmodel/digits --for=condition=Ready --timeout=20m
kubectl get compressedmodels -n "$MODELS_NAMESPACE"
