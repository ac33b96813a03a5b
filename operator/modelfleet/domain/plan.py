"""From a CompressedModel to the worker Jobs it needs: names, labels, pods, failure policy.

Names are deterministic (resource name + stage + spec hash), so creating a Job twice is a no-op
(the API answers 409) and a restarted operator finds what it already started.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from modelfleet.api.compressedmodel import (
    API_VERSION,
    AUTO,
    CompressedModel,
    EdgeBundleStatus,
    MixedPrecision,
    EdgeRuntime,
    SourceFormat,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "modelfleet"}
RETRY_ANNOTATION = "modelfleet.io/retry"
MODEL_LABEL = "modelfleet.io/compressedmodel"
HASH_LABEL = "modelfleet.io/spec-hash"
STAGE_LABEL = "modelfleet.io/stage"
COMPRESS, PUBLISH, BUNDLE = "compress", "publish", "bundle"
CONTAINER = "worker"
PVC_ROOT = "/mnt/pvc"
SCRATCH = "/tmp"  # the only writable place in a worker pod besides its claims (read-only root filesystem)
TERMINATION_LOG = "/dev/termination-log"
BUNDLE_SIGNING_DIR = "/var/run/modelfleet/bundle-signing"  # the signing Secret, mounted into bundle Jobs only
BUNDLE_SIGNING_KEY = "signing-key.pem"
# Worker exit codes 1-127 are permanent (bad input, unsupported model): retrying cannot help.
PERMANENT_EXIT_CODES = list(range(1, 128))
# 128 + SIGKILL: the kernel's out-of-memory killer at the container's memory limit (the kubelet then writes
# the reason OOMKilled). A retry under the same limit is killed again, so the Job fails at once; a pod killed
# by a disruption (preemption, eviction, node shutdown) matches the Ignore rule before and runs again.
OOM_KILL_EXIT_CODE = 137


@dataclass(frozen=True)
class OperatorSettings:
    worker_image: str  # every Job but those two below: ONNX sources, publish, bundle (no torch in it)
    artifacts: str  # URI under which each resource's results go: pvc://<claim>/<path>, s3://<bucket>/<prefix>, file://
    image_pull_policy: str = "IfNotPresent"
    worker_service_account: str | None = None
    # Secret whose keys (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) become the environment of worker Jobs
    # that read or write s3:// (the artifact store, or inputs).
    artifacts_secret: str | None = None
    # Triton servers a publish Job may reach (base URLs); a serverUrl elsewhere is refused, so a manifest
    # cannot point a Job at an arbitrary internal address.
    triton_servers: tuple[str, ...] = ()
    # Multiplies every window of the generated SLO alert rules (1/60: hours become minutes), for tests and demos.
    slo_window_scale: float = 1.0
    # Secret (in each model's namespace) whose `signing-key.pem` signs that namespace's edge bundles.
    bundle_signing_secret: str = "modelfleet-bundle-signing"
    # The compress Jobs of torch sources (torch is in no other image), and of ONNX sources with a TFLite
    # target (onnx2tf and its TensorFlow); None: worker_image, for a single image that has everything.
    torch_worker_image: str | None = None
    tflite_worker_image: str | None = None


def job_image(model: CompressedModel, stage: str, settings: OperatorSettings) -> str:
    """The image a stage's Job runs: each image carries only what its Jobs run, so an ONNX source never
    pulls torch and its CUDA libraries (gigabytes) onto a node."""
    if stage != COMPRESS:
        return settings.worker_image
    if model.spec.source.format != SourceFormat.onnx:
        return settings.torch_worker_image or settings.worker_image
    if any(target.runtime == EdgeRuntime.tflite for target in model.spec.targets.edge):
        return settings.tflite_worker_image or settings.worker_image
    return settings.worker_image


def _digest(value) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def stage_hashes(model: CompressedModel) -> dict[str, str]:
    """Per stage, a short digest of what its outcome depends on; a new digest means a new Job.

    The compress digest also names the result directory, so only what changes the artifacts is in it:
    the source, the data, the compression, the edge targets (but their rollout) and the benchmark settings.
    Changing the SLOs, the worker's resources, TTL or deadline, artifactPolicy or a rollout does not
    recompress. The publish digest adds the Triton target (verification included) and its latency SLO:
    changing what is published re-publishes the same artifacts. With precision auto it adds the SLOs the
    choice reads too (all but the edge runtimes' latency budgets), since they decide which artifact is
    published.
    """
    spec = model.spec.model_dump(mode="json", by_alias=True)
    # A rollout policy decides when devices get a bundle, not what is built: pausing one recompresses nothing.
    edge = [{k: v for k, v in target.items() if k != "rollout"} for target in spec["targets"]["edge"]]
    compress = _digest({**{k: spec[k] for k in ("source", "dataset", "compression", "benchmark")}, "edge": edge}
                       | _without_later_defaults(spec))
    triton = spec["targets"]["triton"]
    publish_inputs = {"compress": compress, "triton": triton, "latencySLO": spec["slo"]["latencyP95Ms"]["triton"]}
    if triton and triton["precision"] == AUTO:
        publish_inputs["choiceSLO"] = {**spec["slo"], "latencyP95Ms": spec["slo"]["latencyP95Ms"]["onnxruntime"]}
    publish = _digest(publish_inputs)
    return {COMPRESS: compress, PUBLISH: publish}


def _without_later_defaults(spec: dict) -> dict:
    """The source and compression with the fields added after resources existed left out while they hold their
    defaults, so an operator upgrade does not recompress every resource it finds."""
    compression = dict(spec["compression"])
    if compression.get("mixedPrecision") == MixedPrecision().model_dump(mode="json", by_alias=True):
        del compression["mixedPrecision"]
    inputs = [{k: v for k, v in i.items() if not (k == "batched" and v)} for i in spec["source"]["inputs"]]
    return {"source": {**spec["source"], "inputs": inputs}, "compression": compression}


def bundle_digest(compress_digest: str, bundles: Sequence[EdgeBundleStatus]) -> str:
    """What a bundle Job builds: the compress result and each target's version and artifact."""
    return _digest([compress_digest, sorted((b.target, b.version, b.artifact) for b in bundles)])


def bundles_uri(settings: OperatorSettings, namespace: str, name: str) -> str:
    """Where a resource's edge bundles go: `<target>/<version>/` below it, beside its results."""
    return f"{model_root_uri(settings, namespace, name)}/bundles"


def job_name(model_name: str, stage: str, digest: str, attempt: str | None = None) -> str:
    """`<name>-<stage>-<digest>`; a retried stage's Job folds the retry value into the digest, so each retry
    gets a name of its own and the name stays within 63 characters (names are at most MAX_NAME_LENGTH)."""
    return f"{model_name}-{stage}-{digest if attempt is None else _digest([digest, attempt])}"


def result_uri(settings: OperatorSettings, namespace: str, name: str, digest: str) -> str:
    return f"{settings.artifacts.rstrip('/')}/{namespace}/{name}/{digest}"


def model_root_uri(settings: OperatorSettings, namespace: str, name: str) -> str:
    """Every result of one resource, all generations (what artifactPolicy Delete removes)."""
    return f"{settings.artifacts.rstrip('/')}/{namespace}/{name}"


def labels(name: str, stage: str, digest: str) -> dict[str, str]:
    return {**MANAGED_BY, MODEL_LABEL: name, HASH_LABEL: digest, STAGE_LABEL: stage}


def worker_job(model: CompressedModel, uid: str, stage: str, settings: OperatorSettings,
               attempt: str | None = None, bundles: Sequence[EdgeBundleStatus] = ()) -> dict:
    """The Job for one stage: `compress` runs the pipeline, `publish` publishes its result to Triton, `bundle`
    builds and signs the edge targets' `bundles` (with the versions they carry) from it.

    The pod meets the `restricted` Pod Security Standard: non-root, no privilege escalation, no
    capabilities, the RuntimeDefault seccomp profile, a read-only root filesystem with an emptyDir for
    scratch, and no service-account token (the worker never talks to the Kubernetes API).
    """
    meta = model.metadata
    hashes = stage_hashes(model)
    hashes[BUNDLE] = bundle_digest(hashes[COMPRESS], bundles)
    output = result_uri(settings, meta.namespace, meta.name, hashes[COMPRESS])
    if stage == COMPRESS:
        args = ["worker", "compress", "-f", "env:MODELFLEET_MANIFEST", "-o", output]
    elif stage == PUBLISH:
        args = ["publish", "triton", "-f", "env:MODELFLEET_MANIFEST", "-r", output]
    else:
        args = ["worker", "bundle", "-f", "env:MODELFLEET_MANIFEST", "-r", output,
                "-o", bundles_uri(settings, meta.namespace, meta.name),
                "--key", f"{BUNDLE_SIGNING_DIR}/{BUNDLE_SIGNING_KEY}",
                *(part for b in bundles for part in ("--version", f"{b.target}={b.version}"))]
    manifest = {"apiVersion": API_VERSION, "kind": "CompressedModel",
                "metadata": {"name": meta.name, "namespace": meta.namespace, "generation": meta.generation},
                "spec": model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    claims = pvc_claims(model, settings)
    worker = model.spec.worker
    container = {
        "name": CONTAINER,
        "image": job_image(model, stage, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "env": [
            {"name": "MODELFLEET_MANIFEST", "value": json.dumps(manifest, separators=(",", ":"))},
            {"name": "MODELFLEET_PVC_ROOT", "value": PVC_ROOT},
            {"name": "MODELFLEET_TERMINATION_MESSAGE_PATH", "value": TERMINATION_LOG},
            {"name": "HOME", "value": SCRATCH},
            {"name": "TMPDIR", "value": SCRATCH},
            *([{"name": "MODELFLEET_TRITON_SERVERS", "value": ",".join(settings.triton_servers)}]
              if stage == PUBLISH and settings.triton_servers else []),
        ],
        "workingDir": SCRATCH,
        "resources": {kind: quantities for kind, quantities in (
            ("requests", worker.resources.requests.model_dump(exclude_none=True)),
            ("limits", worker.resources.limits.model_dump(exclude_none=True))) if quantities},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH},
                         *({"name": f"pvc-{i}", "mountPath": f"{PVC_ROOT}/{claim}"} for i, claim in enumerate(claims)),
                         *([{"name": "bundle-signing", "mountPath": BUNDLE_SIGNING_DIR, "readOnly": True}]
                           if stage == BUNDLE else [])],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
    }
    secrets = credential_secrets(model, stage, settings)
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": secret}} for secret in secrets]
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}},
                    *({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)),
                    # optional: without the Secret the pod still starts and the worker names what is missing
                    # (SigningKeyMissing), where a missing volume would leave the pod waiting without a word.
                    *([{"name": "bundle-signing", "secret": {"secretName": settings.bundle_signing_secret,
                                                             "defaultMode": 0o440, "optional": True,
                                                             "items": [{"key": BUNDLE_SIGNING_KEY,
                                                                        "path": BUNDLE_SIGNING_KEY}]}}]
                      if stage == BUNDLE else [])],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
    }
    if settings.worker_service_account:
        pod_spec["serviceAccountName"] = settings.worker_service_account
    job_labels = labels(meta.name, stage, hashes[stage])
    annotations = {"modelfleet.io/generation": str(meta.generation), "modelfleet.io/result": output}
    if attempt is not None:
        annotations[RETRY_ANNOTATION] = attempt
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta.name, stage, hashes[stage], attempt),
            "namespace": meta.namespace,
            "labels": job_labels,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "CompressedModel", "name": meta.name, "uid": uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "backoffLimit": worker.backoff_limit,
            "activeDeadlineSeconds": worker.active_deadline_seconds,
            "ttlSecondsAfterFinished": worker.ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": PERMANENT_EXIT_CODES}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": [OOM_KILL_EXIT_CODE]}},
            ]},
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def job_worker(job: dict) -> tuple[str, str, str | None]:
    """What a Job of `worker_job` runs, read back from it: its stage, the model's source URI and the worker
    container's memory limit (None: it has none). "?" for what a Job made otherwise does not say."""
    stage = ((job.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL) or "?"
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == CONTAINER), {})
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    manifest = next((e.get("value") for e in container.get("env") or [] if e.get("name") == "MODELFLEET_MANIFEST"), None)
    try:
        source = json.loads(manifest)["spec"]["source"]["uri"]
    except (TypeError, ValueError, KeyError):
        source = "?"
    return stage, source if isinstance(source, str) else "?", limit


def pvc_claims(model: CompressedModel, settings: OperatorSettings) -> list[str]:
    """Every claim named by a pvc:// URI the worker reads or writes, each mounted once."""
    spec = model.spec
    uris = [settings.artifacts, spec.source.uri, spec.dataset.calibration.uri, spec.dataset.evaluation.uri]
    if spec.targets.triton:
        uris.append(spec.targets.triton.repository)
    claims = [uri.removeprefix("pvc://").split("/", 1)[0] for uri in uris if uri.startswith("pvc://")]
    return list(dict.fromkeys(claims))


def credential_secrets(model: CompressedModel, stage: str, settings: OperatorSettings) -> list[str]:
    """Secrets whose keys become the worker's environment, in envFrom order (a later one wins a shared key).

    The operator's artifacts secret goes to every Job that touches s3://: compress when the artifact
    store or an input is there, publish when the artifact store or the Triton repository is, bundle when
    the artifact store is; the
    Triton target's own credentialsSecret follows it on the publish Job.
    """
    spec, triton = model.spec, model.spec.targets.triton
    if stage == COMPRESS:
        uris = [settings.artifacts, spec.source.uri, spec.dataset.calibration.uri, spec.dataset.evaluation.uri]
    elif stage == PUBLISH:
        uris = [settings.artifacts, triton.repository if triton else ""]
    else:  # bundle: reads the result and writes the bundles, both in the artifact store
        uris = [settings.artifacts]
    secrets = [settings.artifacts_secret] if settings.artifacts_secret and any(u.startswith("s3://") for u in uris) else []
    if stage == PUBLISH and triton and triton.credentials_secret:
        secrets.append(triton.credentials_secret)
    return list(dict.fromkeys(secrets))
