"""What a CompressedModel's status should say, and which Jobs it still needs, from what was observed.

Conditions, not a phase machine: SpecValid, Compressed, SLOMet, Published (with a Triton target)
and Ready, each with a stable CamelCase reason; `progress` adds Reconciling and Stalled, the conditions
kstatus (and so Flux) reads.
"""

import re
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.api.compressedmodel import (
    REASON_PATTERN,
    Artifact,
    ArtifactEvaluation,
    CompressedModel,
    CompressedModelStatus,
    Condition,
    EdgeBundleStatus,
    Evaluation,
)
from modelfleet.api.publication import TritonPublication
from modelfleet.api.result import ResultManifest, TargetChoice
from modelfleet.domain.choice import rejudged, summary
from modelfleet.domain.plan import BUNDLE, COMPRESS, PUBLISH, RETRY_ANNOTATION, job_worker

INT8_PREFERENCE = ["onnx-int8-static", "onnx-int8-dynamic"]
IN_PROGRESS = {"Compressing", "AwaitingResult", "Publishing", "AwaitingGate", "AwaitingPreviousPublish", "Bundling"}
# RolledOut=False reasons of an edge rollout that moves on by itself (modelfleet.domain.rollout's verdicts).
ROLLING = {"WaveOpened", "WaveBaking", "AwaitingDevices"}
RECONCILING, STALLED = "Reconciling", "Stalled"


def noteworthy(condition: "Wanted") -> bool:
    """Changes worth an Event: an outcome or a stuck pod, not the start of work or a valid spec (JobCreated says that).
    Reconciling and Stalled only restate the others (their Events come from those)."""
    return condition.reason not in IN_PROGRESS | {"Valid"} and condition.type not in (RECONCILING, STALLED)


def event_type(condition: "Wanted") -> str:
    """Warning for a condition that went False, or Unknown because work is stuck, for a reason other than work in progress."""
    return "Warning" if condition.status != "True" and condition.reason not in IN_PROGRESS else "Normal"


@dataclass(frozen=True)
class JobState:
    """A stage's Job as observed. A Running Job's reason and message, when set, say why its pod is stuck
    (Unschedulable, ImagePullBackOff, CreateContainerConfigError, ...)."""

    phase: Literal["Missing", "Running", "Succeeded", "Failed"]
    reason: str = ""
    message: str = ""


MISSING = JobState("Missing")
_REASON = re.compile(REASON_PATTERN)
OOM_KILLED = "WorkerOOMKilled"


def worker_failure(termination_message: str, exit_code: int) -> tuple[str, str]:
    """(reason, message) from a failed worker container's termination message, `Reason: message` when the
    worker wrote it. Anything else (a traceback, the log tail, odd text) is only a message: a condition's
    reason must stay a CamelCase word, or the status write itself would be refused."""
    text = termination_message.strip()
    head, _, rest = text.partition(": ")
    if _REASON.match(head) and len(head) <= 64 and rest.strip():
        return head, f"{rest.strip()} (exit code {exit_code})"
    return "", f"worker exited {exit_code}: {text[-1000:]}" if text else f"worker exited {exit_code}"


def container_failure(terminated: dict, job: dict) -> tuple[str, str]:
    """(reason, message) of a failed worker Job from its last failed worker container (`state.terminated` as
    the API writes it: reason, exitCode, message) and the Job. A container the kernel killed for memory
    (reason OOMKilled) left no message of its own: WorkerOOMKilled names the stage, the model and the memory
    limit it hit. The Job does not retry it (plan.OOM_KILL_EXIT_CODE) and the operator runs the stage again
    only for a new modelfleet.io/retry value, since the limit is not part of the stage's hash. Any other
    container is `worker_failure`'s."""
    exit_code = terminated.get("exitCode") or 0
    if terminated.get("reason") != "OOMKilled":
        return worker_failure(terminated.get("message") or "", exit_code)
    stage, source, limit = job_worker(job)
    if limit:
        what = (f"it used all of its memory limit of {limit} (spec.worker.resources.limits.memory); raise the "
                f"limit, then")
    else:
        what = ("it has no memory limit, so its node ran out of memory; set spec.worker.resources.limits.memory "
                "to what it needs (and requests.memory, so that it goes to a node with that much free), then")
    return OOM_KILLED, (f"the {stage} worker of {source} was killed by the kernel for running out of memory: {what} "
                        f"set the {RETRY_ANNOTATION} annotation to a new value to run it again (exit code {exit_code})")


def recorded_outcome(status: CompressedModelStatus, stage: str, digest: str, condition_type: str) -> JobState:
    """A stage's outcome as the status recorded it for this stage's spec hash: what stands in for a Job that
    Kubernetes removed after `ttlSecondsAfterFinished`, so a finished stage is not run again (also after a
    spec change that does not touch the stage). MISSING when nothing was recorded yet (the Job is then created)."""
    if status.spec_hashes.get(stage) != digest:
        return MISSING
    for condition in status.conditions:
        if condition.type == condition_type:
            if condition.status == "True":
                return JobState("Succeeded")
            if condition.status == "False":
                return JobState("Failed", condition.reason, condition.message)
    return MISSING


@dataclass(frozen=True)
class Observed:
    compress: JobState = MISSING
    result: ResultManifest | None = None  # read once the compress Job succeeded
    publish: JobState = MISSING
    publication: TritonPublication | None = None  # read once the publish Job ended
    retry: str | None = None  # a modelfleet.io/retry value not honoured yet: failed stages run again, once
    previous_publish_stopping: bool = False  # an earlier spec's publish Job has not stopped yet
    bundle: JobState = MISSING
    # Per edge target with a chosen artifact, the bundle it should have; manifestSha256 set once it is built.
    bundles: tuple[EdgeBundleStatus, ...] = ()


@dataclass(frozen=True)
class Wanted:
    """A condition as the reconcile wants it; transition times are filled in by `merge_conditions`."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass
class Decision:
    conditions: list[Wanted]
    create: list[str] = field(default_factory=list)  # stages whose Job must exist
    artifacts: list[Artifact] | None = None  # None: keep what status has
    evaluation: Evaluation | None = None
    choices: list[TargetChoice] | None = None  # per target, what it ships; set with artifacts
    attempt: str | None = None  # the retry value the created Jobs are for (None: a stage's first Job)


def decide(model: CompressedModel, problems: list[tuple[str, str]], observed: Observed, result_uri: str) -> Decision:
    """Pure: the status and Jobs that follow from the spec's problems and the observed Jobs and results."""
    has_triton = model.spec.targets.triton is not None
    if problems:
        reason, message = problems[0]
        return Decision([Wanted("SpecValid", "False", reason, "; ".join(m for _, m in problems)),
                         Wanted("Ready", "False", reason, message)])
    conditions = [Wanted("SpecValid", "True", "Valid")]
    decision = Decision(conditions)

    compress = _retried(observed.compress, COMPRESS, observed.retry, decision)
    if compress.phase in ("Missing", "Running"):
        if compress.phase == "Missing":
            decision.create.append(COMPRESS)
        reason, message = (compress.reason, compress.message) if compress.reason else ("Compressing", "the worker Job is running")
        conditions += [Wanted("Compressed", "Unknown", reason, message), Wanted("SLOMet", "Unknown", "AwaitingResult")]
        return _ready(decision, has_triton, reason, message if compress.reason else "compression in progress")
    if compress.phase == "Failed" or observed.result is None:
        reason = compress.reason or "ResultMissing"
        message = compress.message or f"the compress Job succeeded but {result_uri}/result.json is missing or invalid"
        conditions += [Wanted("Compressed", "False", reason, message), Wanted("SLOMet", "Unknown", "AwaitingResult")]
        return _ready(decision, has_triton, reason, message)

    result = observed.result
    conditions.append(Wanted("Compressed", "True", "Compressed",
                             f"{len(result.artifacts)} artifacts, {len(result.failures)} failures in "
                             f"{result.duration_seconds:.0f} s"))
    decision.artifacts = [_artifact(a, result_uri) for a in result.artifacts]
    decision.evaluation = _evaluation(result)
    # Judged under the current spec: changing the SLOs or a target's precision does not recompress.
    result = rejudged(result, model.spec)
    decision.choices = result.choices
    verdict = result.verdict
    if not verdict.passed:
        message = "; ".join(v.message for v in verdict.violations)
        conditions.append(Wanted("SLOMet", "False", "SLONotMet", message))
        return _ready(decision, has_triton, "SLONotMet", message)
    shipped = f"; ships {summary(result.choices)}" if result.choices else ""
    conditions.append(Wanted("SLOMet", "True", "SLOMet", f"every candidate artifact meets the SLOs{shipped}"))
    if observed.bundles:  # edge bundles go their own way: Ready is about the artifacts and Triton
        conditions.append(_bundled(_retried(observed.bundle, BUNDLE, observed.retry, decision), observed.bundles,
                                   decision))
    if not has_triton:
        return _ready(decision, False, "Ready", "")

    publish = _retried(observed.publish, PUBLISH, observed.retry, decision)
    publication = observed.publication
    if publish.phase == "Missing" and observed.previous_publish_stopping:
        conditions.append(Wanted("Published", "Unknown", "AwaitingPreviousPublish",
                                 "the previous spec's publish Job is stopping (it rolls back what it had not verified)"))
        return _ready(decision, True, "Publishing", "publishing to Triton")
    if publish.phase in ("Missing", "Running"):
        if publish.phase == "Missing":
            decision.create.append(PUBLISH)
        reason, message = (publish.reason, publish.message) if publish.reason else ("Publishing", "the publish Job is running")
        conditions.append(Wanted("Published", "Unknown", reason, message))
        return _ready(decision, True, reason, message if publish.reason else "publishing to Triton")
    if publish.phase == "Succeeded" and publication is not None and publication.state != "Failed":
        conditions.append(Wanted("Published", "True", publication.state, publication.message))
        return _ready(decision, True, "Ready", "")
    # A failed Job's own termination message says why (the worker writes `Reason: message`); the
    # publication file beside the result may be an earlier attempt's.
    if publish.phase == "Failed":
        reason, message = publish.reason or "PublishFailed", publish.message
    else:
        reason, message = "PublicationMissing", f"the publish Job succeeded but {result_uri}/triton-publication.json is missing or invalid"
    conditions.append(Wanted("Published", "False", reason, message))
    return _ready(decision, True, reason, message)


def _bundled(bundle: JobState, bundles: tuple[EdgeBundleStatus, ...], decision: Decision) -> Wanted:
    """The Bundled condition; creates the bundle Job when it is missing."""
    if bundle.phase in ("Missing", "Running"):
        if bundle.phase == "Missing":
            decision.create.append(BUNDLE)
        if bundle.reason:
            return Wanted("Bundled", "Unknown", bundle.reason, bundle.message)
        building = ", ".join(f"{b.target} version {b.version}" for b in bundles)
        return Wanted("Bundled", "Unknown", "Bundling", f"building and signing {building}")
    if bundle.phase == "Failed":
        return Wanted("Bundled", "False", bundle.reason or "BundleFailed", bundle.message)
    missing = [b for b in bundles if not b.manifest_sha256]
    if missing:
        return Wanted("Bundled", "False", "BundleMissing", "the bundle Job succeeded but the signed manifest of "
                      + ", ".join(f"{b.target} version {b.version}" for b in missing) + " is missing or invalid")
    return Wanted("Bundled", "True", "Bundled",
                  ", ".join(f"{b.target} version {b.version} ({b.artifact})" for b in bundles) + " signed")


def _retried(state: JobState, stage: str, retry: str | None, decision: Decision) -> JobState:
    """A failed stage with a retry asked for (and not yet honoured) runs again as a new Job: the failed Job's
    outcome is set aside, the earlier stages' results are kept (a publish retry does not recompress)."""
    if state.phase != "Failed" or retry is None:
        return state
    decision.attempt = retry
    return MISSING


def decide_failure(status: CompressedModelStatus, reason: str, message: str) -> list[Wanted]:
    """The conditions to write when a reconcile itself failed (an API error, an unreadable store, a failed
    clean-up): Reconciled=False names it; Ready turns False with that reason unless the resource is Ready,
    since what it serves stays in service while the operator retries. The operator retries by itself, so
    Reconciling=True with the same reason (Flux's ProgressingWithRetry), and Stalled=False."""
    wanted = [Wanted("Reconciled", "False", reason, message)]
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    if ready is None or ready.status != "True":
        wanted.append(Wanted("Ready", "False", reason, message))
    return [*wanted, Wanted(RECONCILING, "True", reason, message), Wanted(STALLED, "False", "Progressing")]


def progress(conditions: list[Wanted]) -> list[Wanted]:
    """Reconciling and Stalled, from the resource's other conditions (decide's, and the edge rollout's RolledOut
    and RolloutHalted): the conventions of kstatus (sigs.k8s.io/cli-utils/pkg/kstatus), which Flux's health
    checks read. kstatus says InProgress while observedGeneration differs from metadata.generation or
    Reconciling is True, Failed while Stalled is True, and otherwise what Ready says (True: Current, False:
    InProgress; cli-utils v0.37.2, status.go and generic.go). Ready alone would hold Flux on a failure until
    its timeout and miss work after Ready (bundles, rollouts). Both conditions say what the Argo CD check of
    deploy/argocd/ says, Progressing, Degraded or Healthy (and Suspended), so the two tools agree:

    - Reconciling=True, reason what is in flight, while the operator still has work for this generation
      that goes on by itself: a stage's Job to create or running (Compressing, Publishing, waiting for the
      previous publish), edge bundles being built (Bundling), an edge rollout's wave open or baking, or
      waiting for its devices' reports (WaveOpened, WaveBaking, AwaitingDevices; a device that never
      reports counts as failed after the rollout's reportTimeoutSeconds, so this ends).
    - Stalled=True, reason Ready's (or the bundles' or the halt's), when nothing more happens without a
      change by someone: an impossible spec (SpecValid=False); a stage's Job that failed (the operator does
      not run it again unless `modelfleet.io/retry` is set to a new value: also a Retryable failure, which
      already ran out of the Job's own retries); a missing result or publication; SLOs not met (final for
      this spec: the artifacts are judged again only when the SLOs change); a worker pod that cannot start
      (an image that cannot be pulled, a missing Secret, unschedulable past its grace period: it clears when
      the pod starts); a failed bundle build; a halted edge rollout (it stays halted until a new version).
    - Both False (reason Current) when Ready and nothing above holds; also while a rollout is paused by its
      spec (Argo CD's Suspended) or has no devices to go to yet.
    A reconcile that failed and is retried is `decide_failure`'s: Reconciling=True.
    """
    by_type = {c.type: c for c in conditions}
    ready = by_type.get("Ready")
    if ready is None or ready.status != "True":
        if ready is None or ready.status == "Unknown" or ready.reason in IN_PROGRESS:
            return _reconciling(ready.reason if ready else "Reconciling", ready.message if ready else "")
        return _stalled(ready.reason, ready.message)
    halted, bundled, rolled = by_type.get("RolloutHalted"), by_type.get("Bundled"), by_type.get("RolledOut")
    if halted is not None and halted.status == "True":
        return _stalled(halted.reason, f"edge rollout halted: {halted.message}")
    if bundled is not None and bundled.status != "True":
        if bundled.status == "Unknown" and bundled.reason in IN_PROGRESS:
            return _reconciling(bundled.reason, bundled.message)
        return _stalled(bundled.reason, f"edge bundles: {bundled.message}")
    if rolled is not None and rolled.status != "True" and rolled.reason in ROLLING:
        return _reconciling(rolled.reason, f"edge rollout: {rolled.message}")
    return [Wanted(RECONCILING, "False", "Current"), Wanted(STALLED, "False", "Current")]


def _reconciling(reason: str, message: str) -> list[Wanted]:
    return [Wanted(RECONCILING, "True", reason, message), Wanted(STALLED, "False", "Progressing")]


def _stalled(reason: str, message: str) -> list[Wanted]:
    return [Wanted(RECONCILING, "False", "Stalled"), Wanted(STALLED, "True", reason, message)]


def _ready(decision: Decision, has_triton: bool, reason: str, message: str) -> Decision:
    ready = reason == "Ready"
    if has_triton and not any(c.type == "Published" for c in decision.conditions):
        decision.conditions.append(Wanted("Published", "Unknown", "AwaitingGate", "publishing waits for the SLO gate"))
    decision.conditions.append(Wanted("Ready", "True" if ready else "False", reason, message))
    return decision


def _artifact(artifact, result_uri: str) -> Artifact:
    return Artifact(name=artifact.name, runtime=artifact.runtime, precision=artifact.precision,
                    uri=f"{result_uri}/{artifact.name}", sha256=artifact.sha256, size_bytes=artifact.size_bytes)


def _evaluation(result: ResultManifest) -> Evaluation:
    by_name = {a.name: a for a in result.artifacts}
    int8 = next((by_name[n] for n in INT8_PREFERENCE if n in by_name), None)
    return Evaluation(
        baseline_accuracy=result.baseline.accuracy,
        artifacts=[ArtifactEvaluation(name=a.name, accuracy=a.accuracy, accuracy_drop_points=a.accuracy_drop_points,
                                      fidelity_cosine=a.fidelity and a.fidelity.cosine,
                                      fidelity_snr_db=a.fidelity and a.fidelity.snr_db,
                                      latency_p50_ms=round(a.latency.p50_ms, 4), latency_p95_ms=round(a.latency.p95_ms, 4))
                   for a in result.artifacts],
        int8_accuracy_drop_points=int8.accuracy_drop_points if int8 else None,
        int8_size_bytes=int8.size_bytes if int8 else None,
    )


def merge_conditions(current: list[Condition], wanted: list[Wanted], generation: int | None,
                     now: str, keep_others: bool = False) -> tuple[list[Condition], list[Wanted]]:
    """The new condition list and the conditions whose status or reason changed (each one an Event).

    lastTransitionTime moves only when the status changes (Kubernetes API conventions). Conditions not in
    `wanted` are dropped, or kept as they are with `keep_others` (a partial update such as a failure's).
    """
    by_type = {c.type: c for c in current}
    wanted_types = {w.type for w in wanted}
    merged = [c for c in current if c.type not in wanted_types] if keep_others else []
    changed = []
    for want in wanted:
        old = by_type.get(want.type)
        moved = old is None or old.status != want.status
        merged.append(Condition(type=want.type, status=want.status, reason=want.reason, message=want.message[:32768],
                                last_transition_time=now if moved else old.last_transition_time,
                                observed_generation=generation))
        if moved or old.reason != want.reason:
            changed.append(want)
    return merged, changed
