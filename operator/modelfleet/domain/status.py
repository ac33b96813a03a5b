"""What a CompressedModel's status should say, and which Jobs it still needs, from what was observed.

Conditions, not a phase machine: SpecValid, Compressed, SLOMet, Published (with a Triton target)
and Ready, each with a stable CamelCase reason.
"""

from dataclasses import dataclass, field
from typing import Literal

from modelfleet.api.compressedmodel import (
    Artifact,
    ArtifactEvaluation,
    CompressedModel,
    Condition,
    Evaluation,
)
from modelfleet.api.publication import TritonPublication
from modelfleet.api.result import ResultManifest
from modelfleet.domain.plan import COMPRESS, PUBLISH
from modelfleet.gate import evaluate_slo

INT8_PREFERENCE = ["onnx-int8-static", "onnx-int8-dynamic"]
IN_PROGRESS = {"Compressing", "AwaitingResult", "Publishing", "AwaitingGate"}


def noteworthy(condition: "Wanted") -> bool:
    """Changes worth an Event: an outcome, not the start of work or a valid spec (JobCreated says that)."""
    return condition.status != "Unknown" and condition.reason not in IN_PROGRESS | {"Valid"}


def event_type(condition: "Wanted") -> str:
    """Warning for a condition that went False for a reason other than work in progress."""
    return "Warning" if condition.status == "False" and condition.reason not in IN_PROGRESS else "Normal"


@dataclass(frozen=True)
class JobState:
    phase: Literal["Missing", "Running", "Succeeded", "Failed"]
    reason: str = ""
    message: str = ""


MISSING = JobState("Missing")


def recorded_outcome(conditions: list[Condition], generation: int | None, condition_type: str) -> JobState:
    """A stage's outcome as the status recorded it for this generation: what stands in for a Job
    that Kubernetes removed after `ttlSecondsAfterFinished`, so a finished stage is not run again.
    MISSING when nothing was recorded yet (the Job is then created)."""
    for condition in conditions:
        if condition.type == condition_type and condition.observed_generation == generation:
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


def decide(model: CompressedModel, problems: list[tuple[str, str]], observed: Observed, result_uri: str) -> Decision:
    """Pure: the status and Jobs that follow from the spec's problems and the observed Jobs and results."""
    has_triton = model.spec.targets.triton is not None
    if problems:
        reason, message = problems[0]
        return Decision([Wanted("SpecValid", "False", reason, "; ".join(m for _, m in problems)),
                         Wanted("Ready", "False", reason, message)])
    conditions = [Wanted("SpecValid", "True", "Valid")]
    decision = Decision(conditions)

    compress = observed.compress
    if compress.phase in ("Missing", "Running"):
        if compress.phase == "Missing":
            decision.create.append(COMPRESS)
        conditions += [Wanted("Compressed", "Unknown", "Compressing", "the worker Job is running"),
                       Wanted("SLOMet", "Unknown", "AwaitingResult")]
        return _ready(decision, has_triton, "Compressing", "compression in progress")
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
    verdict = evaluate_slo(result.artifacts, result.failures, model.spec.slo)
    if not verdict.passed:
        message = "; ".join(v.message for v in verdict.violations)
        conditions.append(Wanted("SLOMet", "False", "SLONotMet", message))
        return _ready(decision, has_triton, "SLONotMet", message)
    conditions.append(Wanted("SLOMet", "True", "SLOMet", "every candidate artifact meets the SLOs"))
    if not has_triton:
        return _ready(decision, False, "Ready", "")

    publish, publication = observed.publish, observed.publication
    if publish.phase in ("Missing", "Running"):
        if publish.phase == "Missing":
            decision.create.append(PUBLISH)
        conditions.append(Wanted("Published", "Unknown", "Publishing", "the publish Job is running"))
        return _ready(decision, True, "Publishing", "publishing to Triton")
    if publication is not None and publication.state != "Failed":
        conditions.append(Wanted("Published", "True", publication.state, publication.message))
        return _ready(decision, True, "Ready", "")
    reason = publication.reason if publication else (publish.reason or "PublishFailed")
    message = publication.message if publication else publish.message
    conditions.append(Wanted("Published", "False", reason, message))
    return _ready(decision, True, reason, message)


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
                                      latency_p50_ms=round(a.latency.p50_ms, 4), latency_p95_ms=round(a.latency.p95_ms, 4))
                   for a in result.artifacts],
        int8_accuracy_drop_points=int8.accuracy_drop_points if int8 else None,
        int8_size_bytes=int8.size_bytes if int8 else None,
    )


def merge_conditions(current: list[Condition], wanted: list[Wanted], generation: int | None,
                     now: str) -> tuple[list[Condition], list[Wanted]]:
    """The new condition list and the conditions whose status or reason changed (each one an Event).

    lastTransitionTime moves only when the status changes (Kubernetes API conventions).
    """
    by_type = {c.type: c for c in current}
    merged, changed = [], []
    for want in wanted:
        old = by_type.get(want.type)
        moved = old is None or old.status != want.status
        merged.append(Condition(type=want.type, status=want.status, reason=want.reason, message=want.message[:32768],
                                last_transition_time=now if moved else old.last_transition_time,
                                observed_generation=generation))
        if moved or old.reason != want.reason:
            changed.append(want)
    return merged, changed
