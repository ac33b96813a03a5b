"""One reconcile for a CompressedModel: observe (API + artifact store), decide (pure), act.

Called for the resource's own watch events, for events of its Jobs and stuck pods, for retries after a
failure and for the periodic resync, so a restarted operator picks up exactly where the cluster is: Job
names are deterministic, creation is idempotent, and the status is recomputed from what exists (and, for
Jobs Kubernetes already removed, from what the status recorded). Every failure raises; the caller
(modelfleet.workqueue) requeues it and `record_failure` writes it into the status.
"""

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from dataclasses import replace

from pydantic import ValidationError

from modelfleet import metrics
from modelfleet.api.bundle import MANIFEST_FILE, SignedEnvelope
from modelfleet.api.compressedmodel import CompressedModel, CompressedModelStatus, EdgeBundleStatus
from modelfleet.api.edgedevice import EdgeDevice
from modelfleet.api.publication import TritonPublication
from modelfleet.api.result import ResultManifest
from modelfleet.domain import feasibility
from modelfleet.domain.lifecycle import FINALIZER, unhonoured_retry, with_finalizer, without_finalizer
from modelfleet.domain.choice import rejudged, summary
from modelfleet.domain.edge import next_rollouts, wanted_bundles
from modelfleet.domain.plan import (
    BUNDLE, COMPRESS, HASH_LABEL, PUBLISH, STAGE_LABEL, OperatorSettings, bundle_digest, bundles_uri, model_root_uri,
    result_uri, stage_hashes, worker_job,
)
from modelfleet.domain.alerts import Windows, model_rule_for, model_rule_name
from modelfleet.domain.status import (
    Decision, JobState, Observed, Wanted, decide, decide_failure, event_type, merge_conditions, noteworthy,
    progress, recorded_outcome,
)
from modelfleet.errors import RetryableError, error_reason, first_line
from modelfleet.k8s import Cluster
from modelfleet.manifest import format_validation_error
from modelfleet.store import read_text, resolve_local, s3

RESULT_FILE = "result.json"
PUBLICATION_FILE = "triton-publication.json"
log = logging.getLogger("modelfleet.controller")
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
# resourceVersions our own latest writes (finalizer, status) produced, per resource: kopf delivers
# every watch event in order, and the intermediate ones echo those writes, with nothing new to do.
_own_versions: dict[tuple[str, str], set[str]] = {}
# Digest of the SLO PrometheusRule last applied per resource ("": none wanted, and none left): applied again
# only when it changes. Without prometheus-operator's CRDs, looked for again after RULE_KIND_RECHECK_SECONDS.
_slo_rules: dict[tuple[str, str], str] = {}
_no_rule_kind_until = 0.0
RULE_KIND_RECHECK_SECONDS = 300


def settings_from_env() -> OperatorSettings:
    missing = [k for k in ("MODELFLEET_WORKER_IMAGE", "MODELFLEET_ARTIFACTS") if not os.environ.get(k)]
    if missing:
        raise SystemExit(f"modelfleet operator: set {' and '.join(missing)}")
    return OperatorSettings(
        worker_image=os.environ["MODELFLEET_WORKER_IMAGE"],
        torch_worker_image=os.environ.get("MODELFLEET_TORCH_WORKER_IMAGE") or None,
        tflite_worker_image=os.environ.get("MODELFLEET_TFLITE_WORKER_IMAGE") or None,
        artifacts=os.environ["MODELFLEET_ARTIFACTS"],
        image_pull_policy=os.environ.get("MODELFLEET_IMAGE_PULL_POLICY", "IfNotPresent"),
        worker_service_account=os.environ.get("MODELFLEET_WORKER_SERVICE_ACCOUNT") or None,
        artifacts_secret=os.environ.get("MODELFLEET_ARTIFACTS_SECRET") or None,
        triton_servers=tuple(u.strip() for u in os.environ.get("MODELFLEET_TRITON_SERVERS", "").split(",") if u.strip()),
        slo_window_scale=_positive_float("MODELFLEET_SLO_WINDOW_SCALE", "1"),
    )


def _positive_float(variable: str, default: str) -> float:
    text = os.environ.get(variable, default)
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SystemExit(f"modelfleet operator: {variable} must be a positive number, not {text!r}")
    return value


def echoes_own_write(body: dict) -> bool:
    meta = body["metadata"]
    return meta.get("resourceVersion") in _own_versions.get((meta["namespace"], meta["name"]), ())


def reconcile(cluster: Cluster, settings: OperatorSettings, namespace: str, name: str, body: dict | None = None,
              jobs: list[dict] | None = None, pod_problems: dict[str, tuple[str, str]] | None = None,
              devices: list[dict] | None = None) -> float | None:
    """`body`, when the caller has a fresh one (the resource's own watch event), saves a read; so do
    `jobs`, the resource's Jobs as the operator's Job watch knows them (otherwise they are listed), and
    `devices`, the namespace's EdgeDevices as the operator's watch knows them. `pod_problems`: why a Job's
    pod cannot start, by Job name. Returns in how many seconds an edge rollout wants another look (None: not)."""
    started = time.monotonic()
    with metrics.observe_reconcile(), _locks[(namespace, name)]:  # a resource event and a Job event may arrive together
        body = body or cluster.get_model(namespace, name)
        if body is None:
            metrics.forget_model(namespace, name)
            return None
        if body["metadata"].get("deletionTimestamp"):
            if FINALIZER in (body["metadata"].get("finalizers") or []):
                clean_up(cluster, settings, body)
                _update_finalizers(cluster, body, without_finalizer)
            _locks.pop((namespace, name), None)
            _own_versions.pop((namespace, name), None)
            _slo_rules.pop((namespace, name), None)
            metrics.forget_model(namespace, name)
            return None
        jobs = cluster.jobs(namespace, name) if jobs is None else jobs
        ready, look_in = _reconcile(cluster, settings, body, jobs, pod_problems or {}, devices)
    log.info("reconciled %s/%s in %.0f ms: Ready=%s", namespace, name, (time.monotonic() - started) * 1000, ready)
    return look_in


def record_failure(cluster: Cluster, namespace: str, name: str, error: Exception, failures: int,
                   retry_in: float) -> None:
    """After a failed reconcile: conditions that name the error (Reconciled=False, and Ready unless the resource
    is Ready) and a Warning Event when they change. The retry itself is the caller's."""
    body = cluster.get_model(namespace, name)
    if body is None:
        return
    reason = error_reason(error)
    if body["metadata"].get("deletionTimestamp"):
        reason = "CleanupFailed"
    times = "once" if failures == 1 else f"{failures} times in a row"
    message = f"{first_line(error, 1000)} (failed {times}; retrying in {retry_in:.0f} s)"
    status = _status(body)
    ready, _ = _write(cluster, body, status, Decision(decide_failure(status, reason, message)),
                      body["metadata"].get("generation"), partial=True)
    metrics.record_ready(namespace, name, ready)


def _reconcile(cluster: Cluster, settings: OperatorSettings, body: dict, jobs: list[dict],
               pod_problems: dict[str, tuple[str, str]], devices: list[dict] | None) -> tuple[str, float | None]:
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    status = _status(body)
    try:
        model = CompressedModel.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    except ValidationError as e:  # the CRD schema should have refused it; say why rather than crash
        ready = _write(cluster, body, status, decide_invalid(format_validation_error(e)), generation)[0]
        metrics.record_ready(namespace, name, ready)
        return ready, None
    hashes = stage_hashes(model)
    output = result_uri(settings, namespace, name, hashes[COMPRESS])
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for job in sorted(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"])):
        by_stage[job["metadata"].get("labels", {}).get(STAGE_LABEL)].append(job)
    current, superseded = _current_jobs(cluster, namespace, by_stage, hashes, (COMPRESS, PUBLISH))
    retry = unhonoured_retry(body)
    observed = _observe(cluster, current, pod_problems, output, status, hashes, retry, PUBLISH in superseded)
    bundles: list[EdgeBundleStatus] = []
    if observed.result is not None and model.spec.targets.edge:
        # The bundle Job's name follows from the versions, which follow from the result's choices.
        judged = rejudged(observed.result, model.spec)
        if judged.verdict.passed:
            bundles = wanted_bundles(model.spec.targets.edge, judged.choices, hashes[COMPRESS], status.bundles,
                                     status.rollouts)
    if bundles:
        hashes[BUNDLE] = bundle_digest(hashes[COMPRESS], bundles)
    current.update(_current_jobs(cluster, namespace, by_stage, hashes, (BUNDLE,))[0])
    if bundles:
        observed = _observe_bundles(cluster, current, pod_problems, status, hashes, observed, bundles,
                                    bundles_uri(settings, namespace, name))
    decision = decide(model, feasibility.problems(model, settings), observed, output)
    for stage in decision.create:  # first: a Job is what the user waits for
        job = worker_job(model, meta["uid"], stage, settings, decision.attempt, observed.bundles)
        if cluster.create_job(job):
            again = f" (retry {decision.attempt!r})" if decision.attempt is not None else ""
            cluster.event(body, "Normal", "JobCreated", f"{stage} Job {job['metadata']['name']} created{again}")
    # After the first Job, not before it: that Job is owned by the resource, so if the resource is
    # deleted in between, the garbage collector removes it.
    before = meta["resourceVersion"]
    body = _update_finalizers(cluster, body, with_finalizer)
    written = {body["metadata"]["resourceVersion"]} - {before}
    # A retry asked for is honoured once: when nothing had failed, there was nothing to run again.
    recorded = {"specHashes": hashes, **({"retry": retry} if retry is not None else {})}
    if observed.bundles:
        recorded["bundles"] = [b.to_wire() for b in observed.bundles]
    look_in, rollouts = None, []
    if model.spec.targets.edge and (observed.bundles or status.rollouts):
        edge = next_rollouts(namespace, name, model.spec.targets.edge, model.spec.slo,
                             observed.bundles or status.bundles, status.rollouts,
                             _edge_devices(cluster, namespace, devices), _now())
        decision.conditions += edge.conditions
        rollouts = edge.rollouts
        recorded["rollouts"] = [r.to_wire() for r in rollouts]
        if edge.next_look:
            look_in = max(1.0, (edge.next_look - _now()).total_seconds())
    ready, version = _write(cluster, body, status, decision, generation, recorded)
    _sync_slo_rule(cluster, settings, model, body["metadata"]["uid"])
    metrics.record_model(namespace, name, model.spec, observed.result, ready, rollouts)
    if written or version:
        _own_versions[(namespace, name)] = written | ({version} if version else set())
    return ready, look_in


def _current_jobs(cluster: Cluster, namespace: str, by_stage: dict[str, list[dict]], hashes: dict[str, str],
                  stages: tuple[str, ...]) -> tuple[dict[str, dict], set[str]]:
    """Per stage, the Job of the current spec (the newest: a retry's Job comes after the one that failed), and
    the stages that still have an earlier spec's Jobs, which are deleted (their published artifacts stay until
    the new ones pass the gate)."""
    current: dict[str, dict] = {}
    superseded: set[str] = set()
    for stage in stages:
        for job in by_stage.get(stage, []):
            if job["metadata"].get("labels", {}).get(HASH_LABEL) == hashes.get(stage):
                current[stage] = job
                continue
            superseded.add(stage)
            if not job["metadata"].get("deletionTimestamp"):
                # In the foreground: the Job stays until its pod has stopped, and a publish pod rolls back
                # on SIGTERM, so the next publish of the same model never overlaps it.
                cluster.delete_job(namespace, job["metadata"]["name"], foreground=True)
    return current, superseded


def _observe_bundles(cluster: Cluster, jobs: dict[str, dict], pod_problems: dict[str, tuple[str, str]],
                     status: CompressedModelStatus, hashes: dict[str, str], observed: Observed,
                     bundles: list[EdgeBundleStatus], root: str) -> Observed:
    """The bundle Job's state, and each wanted bundle's manifest digest once it is built."""
    state = _stage_state(cluster, jobs, pod_problems, status, hashes, BUNDLE, "Bundled")
    if state.phase == "Succeeded":
        bundles = [b if b.manifest_sha256 else
                   b.model_copy(update={"manifest_sha256": read_manifest_digest(f"{root}/{b.target}/{b.version}")})
                   for b in bundles]
    return replace(observed, bundle=state, bundles=tuple(bundles))


def read_manifest_digest(bundle_uri: str) -> str | None:
    """sha256 of a bundle's signed manifest payload (what desired states pin), or None when absent or invalid.
    The signature is the gateway's to check: it holds the bundle keys."""
    try:
        text = read_text(f"{bundle_uri}/{MANIFEST_FILE}")
    except OSError as e:
        raise RetryableError(f"{bundle_uri}/{MANIFEST_FILE} cannot be read: {first_line(e)}") from e
    if text is None:
        return None
    try:
        payload = base64.b64decode(SignedEnvelope.model_validate_json(text).payload, validate=True)
    except (ValidationError, binascii.Error, ValueError):
        return None
    return hashlib.sha256(payload).hexdigest()


def _edge_devices(cluster: Cluster, namespace: str, devices: list[dict] | None) -> list[EdgeDevice]:
    """The namespace's EdgeDevices as models; one that does not parse is left out (and logged)."""
    parsed = []
    for body in cluster.edge_devices(namespace) if devices is None else devices:
        try:
            parsed.append(EdgeDevice.model_validate(
                {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in body}))
        except ValidationError as e:
            log.warning("EdgeDevice %s/%s left out of rollouts: %s", namespace, body.get("metadata", {}).get("name"),
                        first_line(e))
    return parsed


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _sync_slo_rule(cluster: Cluster, settings: OperatorSettings, model: CompressedModel, uid: str) -> None:
    """The resource's PrometheusRule (serving SLO burn-rate alerts, domain/alerts.py), owned by it so that it goes
    with it; removed when the resource no longer has a Triton target. Skipped where no PrometheusRule kind exists."""
    global _no_rule_kind_until
    namespace, name = model.metadata.namespace, model.metadata.name
    wanted = model_rule_for(model, uid, windows=Windows().scaled(settings.slo_window_scale))
    digest = _digest(wanted) if wanted else ""
    if _slo_rules.get((namespace, name)) == digest or time.monotonic() < _no_rule_kind_until:
        return
    if wanted is None:
        cluster.delete_prometheus_rule(namespace, model_rule_name(name))
    elif not cluster.apply_prometheus_rule(wanted):
        log.info("no PrometheusRule kind in this cluster (prometheus-operator's CRDs): SLO alert rules not applied; "
                 "looking again in %d s", RULE_KIND_RECHECK_SECONDS)
        _no_rule_kind_until = time.monotonic() + RULE_KIND_RECHECK_SECONDS
        return
    _slo_rules[(namespace, name)] = digest


def _digest(value: dict) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _update_finalizers(cluster: Cluster, body: dict, change) -> dict:
    """Apply `change` to the finalizer list under the resource's resourceVersion; re-read on a conflict."""
    for _ in range(5):
        wanted = change(body["metadata"].get("finalizers"))
        if wanted is None:
            return body
        meta = body["metadata"]
        updated = cluster.patch_finalizers(meta["namespace"], meta["name"], wanted, meta["resourceVersion"])
        if updated is not None:
            return updated
        fresh = cluster.get_model(meta["namespace"], meta["name"])
        if fresh is None:  # deleted meanwhile: nothing left to hold
            return body
        body = fresh
    raise RetryableError(f"{meta['namespace']}/{meta['name']}: the finalizers kept changing under us")


def _observe(cluster: Cluster, jobs: dict[str, dict], pod_problems: dict[str, tuple[str, str]], output: str,
             status: CompressedModelStatus, hashes: dict[str, str], retry: str | None,
             previous_publish_stopping: bool) -> Observed:
    def stage(name: str, condition: str) -> JobState:
        return _stage_state(cluster, jobs, pod_problems, status, hashes, name, condition)

    compress, publish = stage(COMPRESS, "Compressed"), stage(PUBLISH, "Published")
    result = read_result(output) if compress.phase == "Succeeded" else None
    publication = read_publication(output) if publish.phase == "Succeeded" else None
    return Observed(compress=compress, result=result, publish=publish, publication=publication, retry=retry,
                    previous_publish_stopping=previous_publish_stopping)


def _stage_state(cluster: Cluster, jobs: dict[str, dict], pod_problems: dict[str, tuple[str, str]],
                 status: CompressedModelStatus, hashes: dict[str, str], stage: str, condition: str) -> JobState:
    if stage not in jobs:  # removed after its TTL, or never created
        return recorded_outcome(status, stage, hashes[stage], condition)
    state = cluster.job_state(jobs[stage])
    metrics.observe_job(stage, jobs[stage], state)
    problem = pod_problems.get(jobs[stage]["metadata"]["name"])
    return JobState("Running", *problem) if state.phase == "Running" and problem else state


def read_result(output: str) -> ResultManifest | None:
    """The result manifest under the result URI (pvc://, file:// or s3://), or None when absent or invalid.

    A store that cannot be read (unreachable, refusing, an I/O error) raises RetryableError: "missing",
    which is final, must not be concluded from "cannot look".
    """
    return _read(f"{output}/{RESULT_FILE}", ResultManifest)


def read_publication(output: str) -> TritonPublication | None:
    """A successful publish Job's outcome beside result.json, or None when absent or invalid."""
    return _read(f"{output}/{PUBLICATION_FILE}", TritonPublication)


def _read(uri: str, model):
    try:
        text = read_text(uri)
    except OSError as e:
        raise RetryableError(f"{uri} cannot be read: {first_line(e)}") from e
    try:
        return model.model_validate_json(text) if text is not None else None
    except ValidationError:
        return None


def _status(body: dict) -> CompressedModelStatus:
    try:
        return CompressedModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return CompressedModelStatus()


def decide_invalid(message: str) -> Decision:
    return Decision([Wanted("SpecValid", "False", "InvalidSpec", message), Wanted("Ready", "False", "InvalidSpec", message)])


def _write(cluster: Cluster, body: dict, status: CompressedModelStatus, decision: Decision,
           generation: int | None, recorded: dict | None = None, partial: bool = False) -> tuple[str, str | None]:
    """Patch the status, post an Event per changed condition; returns the Ready condition's status and
    the resourceVersion the patch produced (None when the status did not change).

    `partial`: only the decision's conditions change (a failure's); the rest of the status stays. Otherwise
    the decision is the whole story (Reconciling and Stalled follow from it), and a Reconciled=False left by
    earlier failures turns True.
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    wanted = list(decision.conditions) if partial else [*decision.conditions, *progress(decision.conditions)]
    if not partial and any(c.type == "Reconciled" for c in status.conditions):
        wanted.append(Wanted("Reconciled", "True", "Reconciled", "the last reconcile succeeded"))
    conditions, changed = merge_conditions(status.conditions, wanted, generation, now, keep_others=partial)
    patch = {"conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]}
    if not partial:
        patch["observedGeneration"] = generation
        patch.update(recorded or {})
    if decision.artifacts is not None:
        patch["artifacts"] = [a.model_dump(mode="json", by_alias=True) for a in decision.artifacts]
        patch["evaluation"] = decision.evaluation.model_dump(mode="json", by_alias=True, exclude_none=True)
        patch["choices"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in decision.choices]
        patch["chosen"] = summary(decision.choices)
    current, version = body.get("status") or {}, None
    if any(current.get(key) != value for key, value in patch.items()):
        version = cluster.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], patch)
    for condition in filter(noteworthy, changed):
        cluster.event(body, event_type(condition), condition.reason,
                      f"{condition.type}={condition.status}: {condition.message}".rstrip(": "))
    return next((c.status for c in conditions if c.type == "Ready"), "Unknown"), version


def clean_up(cluster: Cluster, settings: OperatorSettings, body: dict) -> None:
    """On deletion: remove the Jobs, and the stored artifacts when artifactPolicy is Delete; an Event says
    what was done. Any failure raises, so the finalizer stays until a retry succeeds."""
    meta = body["metadata"]
    jobs = cluster.jobs(meta["namespace"], meta["name"])
    for job in jobs:
        cluster.delete_job(meta["namespace"], job["metadata"]["name"])
    root_uri = model_root_uri(settings, meta["namespace"], meta["name"])
    if (body.get("spec") or {}).get("artifactPolicy") == "Delete":
        if root_uri.startswith(s3.SCHEME):
            s3.delete_prefix(root_uri)
        else:
            root = resolve_local(root_uri)
            if root is not None and root.exists():
                shutil.rmtree(root)
        artifacts = f"artifacts under {root_uri} deleted"
    else:
        artifacts = f"artifacts under {root_uri} retained (artifactPolicy Retain)"
    cluster.event(body, "Normal", "CleanedUp", f"{len(jobs)} Jobs deleted, {artifacts}")
