"""Every Prometheus metric modelfleet exports, in one place.

Conventions (the fleet gateway's and the device agent's metrics follow them too):

- Names start with `modelfleet_`, then the thing measured: `modelfleet_<subject>_<quantity>_<unit>`.
- Base units only: seconds, bytes, and ratios from 0 to 1 (`_ratio`; 0.01 is one percentage point). No
  milliseconds, no percent: a figure stored in ms or percent elsewhere is converted here.
- Counters end in `_total`, durations and latencies of things that happen many times are histograms
  (`_seconds`), versions and choices are `_info` gauges of value 1 whose labels carry the text, a
  yes/no is a gauge of 1 or 0.
- Every metric has HELP text written as a sentence: what it counts, its unit, where it comes from.
- Labels come from a bounded set: namespace, name, artifact, runtime, precision, target, stage, reason,
  result, outcome, version. Never a per-request, per-Job or per-device label: a series must not be
  created per event. Reasons are CamelCase words from the code (anything else becomes `Other`).
- The metrics live in their own `CollectorRegistry` (`Metrics.registry`), never prometheus_client's
  global one, so tests and several instances stay apart. The `_created` series prometheus_client adds to
  counters and histograms are left out.

Per-resource series come from the operator's current view of each CompressedModel (`record_model` after
every reconcile, `forget_model` when it is gone), so a deleted resource leaves no stale series and a scrape
costs no API reads. The view is computed when it is recorded, from the spec and the result manifest the
reconcile read, by pure functions (`model_figures`, `model_samples`); like the status, it keeps the last
result's figures while a new generation is being compressed. A Collector in `Metrics.registry` yields it at
scrape time; `/metrics` itself joins text rendered once per record (`render_model`), because
prometheus_client's own rendering takes about 20 µs a series (1.2 s per scrape at 1,000 resources, 62,000
series; `bench/metrics_scrape.py`). A test checks that both say the same.
"""

import datetime
import gzip
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from socketserver import ThreadingMixIn
from typing import Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelfleet import __version__
from modelfleet.api.compressedmodel import CompressedModelSpec, EdgeRolloutStatus
from modelfleet.api.result import ResultManifest
from modelfleet.domain.choice import rejudged
from modelfleet.domain.plan import MODEL_LABEL
from modelfleet.domain.status import JobState
from modelfleet.errors import error_reason
from modelfleet.gate import artifact_violations

__all__ = [
    "DEFAULT_PORT", "FAMILIES", "PORT_ENV", "ArtifactFigures", "Chosen", "JobEnd", "Metrics", "ModelFigures",
    "WithoutCreated",
    "bounded_reason", "forget_model", "job_end", "model_figures", "model_samples", "observe_job", "observe_reconcile",
    "port_from_env", "record_model", "record_ready", "render_model", "serve",
]

PORT_ENV = "MODELFLEET_METRICS_PORT"
DEFAULT_PORT = 8080
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
OTHER = "Other"
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

MODEL = ("namespace", "name")
ARTIFACT = (*MODEL, "artifact", "runtime", "precision")

# The per-resource families: exposed name -> (type, labels, HELP).
FAMILIES: dict[str, tuple[Literal["gauge", "info"], tuple[str, ...], str]] = {
    "modelfleet_artifact_accuracy_ratio": (
        "gauge", ARTIFACT, "Top-1 accuracy of the artifact on the evaluation set, from 0 to 1, as the compression "
                           "pipeline measured it (absent for models judged by output fidelity)."),
    "modelfleet_artifact_accuracy_drop_ratio": (
        "gauge", ARTIFACT, "Accuracy of the fp32 baseline minus the artifact's, from 0 to 1 (0.01 is one percentage "
                           "point; absent for models judged by output fidelity)."),
    "modelfleet_artifact_latency_p50_seconds": (
        "gauge", ARTIFACT, "Median latency of one benchmark batch in the artifact's runtime, in seconds, measured "
                           "by the compression pipeline."),
    "modelfleet_artifact_latency_p95_seconds": (
        "gauge", ARTIFACT, "95th percentile latency of one benchmark batch in the artifact's runtime, in seconds, "
                           "measured by the compression pipeline."),
    "modelfleet_artifact_size_bytes": ("gauge", ARTIFACT, "Total size of the artifact's files, in bytes."),
    "modelfleet_artifact_slo_met": (
        "gauge", ARTIFACT, "1 when the artifact meets the resource's SLOs (quality, its runtime's p95 latency, size) "
                           "under the current spec, 0 when it misses one."),
    "modelfleet_model_slo_met": (
        "gauge", MODEL, "1 when the SLO gate passed (every target has an artifact that meets the SLOs), 0 when it "
                        "failed; absent until the resource has a compression result."),
    "modelfleet_model_ready": ("gauge", MODEL, "1 when the resource's Ready condition is True, 0 when it is False."),
    "modelfleet_model_slo_latency_p95_seconds": (
        "gauge", (*MODEL, "runtime"), "The spec's p95 latency SLO per runtime (spec.slo.latencyP95Ms), in seconds; "
                                      "runtime triton is the serving latency budget."),
    "modelfleet_model_slo_max_accuracy_drop_ratio": (
        "gauge", MODEL, "The spec's largest allowed accuracy drop versus fp32 (spec.slo.maxAccuracyDropPoints), "
                        "from 0 to 1; absent for models judged by output fidelity."),
    "modelfleet_rollout_version": (
        "gauge", (*MODEL, "target"), "The bundle version an edge target is rolling out (or rolled out)."),
    "modelfleet_rollout_wave": (
        "gauge", (*MODEL, "target"), "Index of the last open wave of the edge target's rollout: 0 is the canary, "
                                     "-1 before it opens."),
    "modelfleet_rollout_devices": (
        "gauge", (*MODEL, "target", "state"), "Devices of the edge target's rollout: desired (selected), updated "
                                              "(on the new version), healthy (updated and healthy), failed (in open "
                                              "waves: unhealthy, install failed or silent past the report timeout), "
                                              "measured (updated, with their own p95), slow (measured, p95 over the "
                                              "latency gate), disagreeing (updated, golden-set agreement below the "
                                              "agreement gate)."),
    "modelfleet_rollout_halted": (
        "gauge", (*MODEL, "target", "reason"), "1 while the edge target's rollout is halted by a breach (reason: "
                                               "FailureThreshold, LatencyGate or AgreementGate), 0 otherwise."),
    "modelfleet_rollout_rolled_back": (
        "gauge", (*MODEL, "target"), "1 while the devices of the edge target are pointed back at the previous "
                                     "bundle, 0 otherwise."),
    "modelfleet_rollout_completed": (
        "gauge", (*MODEL, "target"), "1 once every wave of the edge target's rollout opened, baked and passed."),
    "modelfleet_target_chosen_info": (
        "info", (*MODEL, "target", "runtime", "artifact"), "The artifact each delivery target ships (value 1): "
                                                           "the fastest one meeting the SLOs, or the requested one."),
}
MODELS_HELP = "CompressedModels the operator knows (reconciled and not deleted)."


# --- pure: from a spec and a result to the figures and samples of one resource --------------------------------


@dataclass(frozen=True)
class ArtifactFigures:
    name: str
    runtime: str
    precision: str
    p50_seconds: float
    p95_seconds: float
    size_bytes: int
    slo_met: bool
    accuracy_ratio: float | None = None  # None: judged by fidelity, no labels
    accuracy_drop_ratio: float | None = None


@dataclass(frozen=True)
class Chosen:
    target: str
    runtime: str
    artifact: str


@dataclass(frozen=True)
class RolloutFigures:
    target: str
    version: int
    wave: int
    desired: int
    updated: int
    healthy: int
    failed: int
    measured: int
    slow: int
    disagreeing: int
    halted: str | None
    rolled_back: bool
    completed: bool


@dataclass(frozen=True)
class ModelFigures:
    """What the operator knows of one CompressedModel; None means not known (the series is absent)."""

    ready: bool | None = None
    slo_latency_p95_seconds: tuple[tuple[str, float], ...] = ()  # (runtime, seconds)
    slo_max_accuracy_drop_ratio: float | None = None
    slo_met: bool | None = None
    artifacts: tuple[ArtifactFigures, ...] = ()
    chosen: tuple[Chosen, ...] = ()
    rollouts: tuple[RolloutFigures, ...] = ()


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


def model_figures(previous: ModelFigures, spec: CompressedModelSpec | None, result: ResultManifest | None,
                  ready: str, rollouts: Sequence[EdgeRolloutStatus] | None = None) -> ModelFigures:
    """The view after a reconcile: `ready` is the Ready condition's status (True, False, Unknown); a spec,
    result or rollouts the reconcile did not have (None) leave that part as it was, as the status keeps its
    artifacts."""
    figures = replace(previous, ready={"True": True, "False": False}.get(ready))
    if rollouts is not None:
        figures = replace(figures, rollouts=tuple(
            RolloutFigures(r.target, r.version, r.current_wave, r.desired, r.updated, r.healthy, r.failed, r.measured,
                           r.slow, r.disagreeing, bounded_reason(r.halted) if r.halted else None, r.rolled_back,
                           r.completed)
            for r in rollouts))
    if spec is not None:
        budgets = spec.slo.latency_p95_ms.model_dump()
        figures = replace(figures, slo_latency_p95_seconds=tuple((runtime, ms / 1000) for runtime, ms in budgets.items()
                                                                 if ms is not None),
                          slo_max_accuracy_drop_ratio=_ratio(spec.slo.max_accuracy_drop_points)
                          if spec.dataset.metric == "top1" else None)
    if spec is not None and result is not None:
        judged = rejudged(result, spec)  # under the current SLOs, as the status shows it
        metric = result.baseline.metric
        figures = replace(figures, slo_met=judged.verdict.passed, artifacts=tuple(
            ArtifactFigures(name=a.name, runtime=a.runtime, precision=a.precision,
                            p50_seconds=a.latency.p50_ms / 1000, p95_seconds=a.latency.p95_ms / 1000,
                            size_bytes=a.size_bytes, slo_met=not artifact_violations(a, spec.slo, metric),
                            accuracy_ratio=_ratio(a.accuracy) if metric == "top1" else None,
                            accuracy_drop_ratio=_ratio(a.accuracy_drop_points) if metric == "top1" else None)
            for a in result.artifacts),
            chosen=tuple(Chosen(c.target, c.runtime, c.chosen) for c in judged.choices if c.chosen))
    return figures


def model_samples(namespace: str, name: str, figures: ModelFigures) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(family, label values in the family's label order, value) for every series of one resource."""
    model = (namespace, name)
    if figures.ready is not None:
        yield "modelfleet_model_ready", model, float(figures.ready)
    if figures.slo_met is not None:
        yield "modelfleet_model_slo_met", model, float(figures.slo_met)
    for runtime, seconds in figures.slo_latency_p95_seconds:
        yield "modelfleet_model_slo_latency_p95_seconds", (*model, runtime), seconds
    if figures.slo_max_accuracy_drop_ratio is not None:
        yield "modelfleet_model_slo_max_accuracy_drop_ratio", model, figures.slo_max_accuracy_drop_ratio
    for a in figures.artifacts:
        labels = (*model, a.name, a.runtime, a.precision)
        if a.accuracy_ratio is not None:
            yield "modelfleet_artifact_accuracy_ratio", labels, a.accuracy_ratio
        if a.accuracy_drop_ratio is not None:
            yield "modelfleet_artifact_accuracy_drop_ratio", labels, a.accuracy_drop_ratio
        yield "modelfleet_artifact_latency_p50_seconds", labels, a.p50_seconds
        yield "modelfleet_artifact_latency_p95_seconds", labels, a.p95_seconds
        yield "modelfleet_artifact_size_bytes", labels, float(a.size_bytes)
        yield "modelfleet_artifact_slo_met", labels, float(a.slo_met)
    for c in figures.chosen:
        yield "modelfleet_target_chosen_info", (*model, c.target, c.runtime, c.artifact), 1.0
    for r in figures.rollouts:
        target = (*model, r.target)
        yield "modelfleet_rollout_version", target, float(r.version)
        yield "modelfleet_rollout_wave", target, float(r.wave)
        for state, count in (("desired", r.desired), ("updated", r.updated), ("healthy", r.healthy),
                             ("failed", r.failed), ("measured", r.measured), ("slow", r.slow),
                             ("disagreeing", r.disagreeing)):
            yield "modelfleet_rollout_devices", (*target, state), float(count)
        yield "modelfleet_rollout_halted", (*target, r.halted or ""), float(r.halted is not None)
        yield "modelfleet_rollout_rolled_back", target, float(r.rolled_back)
        yield "modelfleet_rollout_completed", target, float(r.completed)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_model(namespace: str, name: str, figures: ModelFigures) -> dict[str, str]:
    """Prometheus text format lines of one resource's series, per family (the lines `/metrics` joins)."""
    lines: dict[str, list[str]] = {}
    for family, values, value in model_samples(namespace, name, figures):
        labels = ",".join(f'{key}="{_escape(v)}"' for key, v in zip(FAMILIES[family][1], values))
        lines.setdefault(family, []).append(f"{family}{{{labels}}} {floatToGoString(value)}\n")
    return {family: "".join(text) for family, text in lines.items()}


# --- pure: a finished Job -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEnd:
    outcome: Literal["succeeded", "failed"]
    reason: str
    ended: float | None  # epoch seconds; None when the Job does not say
    duration_seconds: float | None  # status.startTime to the end; None without a start time


def bounded_reason(reason: str | None) -> str:
    """A CamelCase word of at most 64 characters as it is; anything else (a label must not take free text) `Other`."""
    return reason if reason and _REASON.match(reason) else OTHER


def _epoch(timestamp: str | None) -> float | None:
    return datetime.datetime.fromisoformat(timestamp).timestamp() if timestamp else None


def job_end(job: dict, state: JobState) -> JobEnd | None:
    """How a Job ended, from its body and its observed state (a failure's reason is the worker's own when it left
    one); None while it runs. The end is completionTime, or the Complete/Failed condition's transition."""
    if state.phase not in ("Succeeded", "Failed"):
        return None
    status = job.get("status") or {}
    kind = "Complete" if state.phase == "Succeeded" else "Failed"
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})
    ended = _epoch(status.get("completionTime") if kind == "Complete" else None) or \
        _epoch(condition.get("lastTransitionTime"))
    started = _epoch(status.get("startTime"))
    duration = max(ended - started, 0.0) if ended is not None and started is not None else None
    if state.phase == "Succeeded":
        return JobEnd("succeeded", "Completed", ended, duration)
    return JobEnd("failed", bounded_reason(state.reason or condition.get("reason")), ended, duration)


# --- the registry --------------------------------------------------------------------------------------------


class _Models(Collector):
    def __init__(self, owner: "Metrics"):
        self._owner = owner

    def describe(self) -> list[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        models = self._owner._snapshot()
        for (namespace, name), figures in models:
            for family, labels, value in model_samples(namespace, name, figures):
                metric = families[family]
                if metric.type == "info":
                    metric.add_metric(labels, {})
                else:
                    metric.add_metric(labels, value)
        count = GaugeMetricFamily("modelfleet_models", MODELS_HELP)
        count.add_metric([], len(models))
        yield count
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, Metric]:
        return {name: (InfoMetricFamily(name.removesuffix("_info"), text, labels=labels) if kind == "info"
                       else GaugeMetricFamily(name, text, labels=labels))
                for name, (kind, labels, text) in FAMILIES.items()}


class WithoutCreated(Collector):
    """prometheus_client's counters and histograms, without the `_created` series (a second gauge per series
    that nothing here reads)."""

    def __init__(self, *metrics):
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return [family for metric in self._metrics for family in metric.describe()]

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family


class Metrics:
    """One registry with every operator metric, and the per-resource view it renders at scrape time.
    Thread-safe: reconciles run in a thread pool, scrapes in the HTTP server's threads."""

    def __init__(self, started_at: float | None = None):
        self.registry = CollectorRegistry()
        self.started_at = time.time() if started_at is None else started_at
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], tuple[ModelFigures, dict[str, str]]] = {}  # with its rendered text
        self._jobs_seen: dict[tuple[str, str], set[str]] = {}
        build = Info("modelfleet_build", "The modelfleet version this process runs (value 1).", registry=None)
        build.info({"version": __version__})
        self.reconciles = Counter("modelfleet_reconciles", "Reconciles of CompressedModels by result: ok, or error "
                                  "(retried with backoff).", ["result"], registry=None)
        self.reconcile_errors = Counter("modelfleet_reconcile_errors", "Failed reconciles by reason: the error's "
                                        "CamelCase reason or exception class.", ["reason"], registry=None)
        self.reconcile_duration = Histogram("modelfleet_reconcile_duration_seconds", "Time one reconcile of a "
                                            "CompressedModel took, in seconds, failed ones included.",
                                            buckets=RECONCILE_BUCKETS, registry=None)
        self.jobs = Counter("modelfleet_jobs", "Worker Jobs that ended, by stage (compress, publish), outcome "
                            "(succeeded, failed) and reason; each Job counted once, when the operator first sees "
                            "its end.", ["stage", "outcome", "reason"], registry=None)
        self.stage_duration = Histogram("modelfleet_stage_duration_seconds", "Time from a worker Job's start to "
                                        "its successful completion, in seconds, by stage.", ["stage"],
                                        buckets=STAGE_BUCKETS, registry=None)
        for result in ("ok", "error"):  # present from the start, so rate() sees the first increase
            self.reconciles.labels(result)
        for stage in ("compress", "publish"):
            self.stage_duration.labels(stage)
            self.jobs.labels(stage, "succeeded", "Completed")
        own = WithoutCreated(build, self.reconciles, self.reconcile_errors, self.reconcile_duration, self.jobs,
                              self.stage_duration)
        self.registry.register(own)
        self.registry.register(_Models(self))
        self._process = CollectorRegistry()  # what /metrics renders with prometheus_client; the rest is joined
        self._process.register(own)

    # the per-resource view

    def record_model(self, namespace: str, name: str, spec: CompressedModelSpec | None, result: ResultManifest | None,
                     ready: str, rollouts: Sequence[EdgeRolloutStatus] | None = None) -> None:
        """After a reconcile: the spec (None when it did not validate), the result it read (None when there is
        none now), the Ready condition's status and the edge rollouts (None: unchanged)."""
        key = (namespace, name)
        with self._lock:
            previous = self._models.get(key, (ModelFigures(), {}))[0]
        # outside the lock: reconciles of one resource are serial
        figures = model_figures(previous, spec, result, ready, rollouts)
        rendered = render_model(namespace, name, figures)
        with self._lock:
            self._models[key] = figures, rendered

    def record_ready(self, namespace: str, name: str, ready: str) -> None:
        """After a failed reconcile: only the Ready condition may have changed."""
        self.record_model(namespace, name, None, None, ready)

    def forget_model(self, namespace: str, name: str) -> None:
        """The resource is gone: its series disappear from the next scrape."""
        with self._lock:
            self._models.pop((namespace, name), None)
            self._jobs_seen.pop((namespace, name), None)

    def _snapshot(self) -> list[tuple[tuple[str, str], ModelFigures]]:
        with self._lock:
            return [(key, figures) for key, (figures, _) in self._models.items()]

    def exposition(self) -> bytes:
        """Everything in Prometheus' text format, as `/metrics` serves it (the same as rendering `registry`)."""
        with self._lock:
            rendered = [text for _, text in self._models.values()]
        parts = [generate_latest(self._process).decode(), f"# HELP modelfleet_models {MODELS_HELP}\n",
                 "# TYPE modelfleet_models gauge\n", f"modelfleet_models {floatToGoString(len(rendered))}\n"]
        for family, (_, _, text) in FAMILIES.items():
            parts += [f"# HELP {family} {text}\n", f"# TYPE {family} gauge\n"]
            parts += [lines[family] for lines in rendered if family in lines]
        return "".join(parts).encode()

    # the operator's own work

    @contextmanager
    def observe_reconcile(self) -> Iterator[None]:
        """Around one reconcile: its duration, ok or error, and the error's reason."""
        started = time.monotonic()
        try:
            yield
        except Exception as error:
            self.reconciles.labels("error").inc()
            self.reconcile_errors.labels(bounded_reason(error_reason(error))).inc()
            raise
        else:
            self.reconciles.labels("ok").inc()
        finally:
            self.reconcile_duration.observe(time.monotonic() - started)

    def observe_job(self, stage: str, job: dict, state: JobState) -> None:
        """A reconcile saw one of its stage's Jobs in `state`: an ended Job is counted the first time, unless it
        ended before this process started (the process before counted it, or it is history)."""
        end = job_end(job, state)
        if end is None:
            return
        meta = job["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(MODEL_LABEL, ""))
        with self._lock:
            seen = self._jobs_seen.setdefault(key, set())
            if meta["uid"] in seen:
                return
            seen.add(meta["uid"])
        if end.ended is not None and end.ended < int(self.started_at):  # API times have whole seconds
            return
        self.jobs.labels(stage, end.outcome, end.reason).inc()
        if end.outcome == "succeeded" and end.duration_seconds is not None:
            self.stage_duration.labels(stage).observe(end.duration_seconds)


# --- serving -------------------------------------------------------------------------------------------------


def port_from_env(environ=os.environ) -> int | None:
    """MODELFLEET_METRICS_PORT (default 8080); 0 turns the endpoint off (None)."""
    text = environ.get(PORT_ENV, "").strip() or str(DEFAULT_PORT)
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SystemExit(f"modelfleet operator: {PORT_ENV} must be a port number (0 turns metrics off), not {text!r}")
    return port or None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the standard library's signature
        pass


def _app(metrics: Metrics):
    def app(environ, start_response):
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        body, headers = metrics.exposition(), [("Content-Type", CONTENT_TYPE)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [body]
    return app


def serve(port: int, addr: str = "0.0.0.0", metrics: Metrics | None = None) -> WSGIServer:
    """Serve `/metrics` over HTTP from a daemon thread (gzip when asked); returns the server: `server_port` is the
    port it bound (port 0 binds a free one), `shutdown()` stops it."""
    server = make_server(addr, port, _app(metrics or DEFAULT), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


# The operator process's metrics; the functions below are what the controller calls.
DEFAULT = Metrics()
record_model = DEFAULT.record_model
record_ready = DEFAULT.record_ready
forget_model = DEFAULT.forget_model
observe_reconcile = DEFAULT.observe_reconcile
observe_job = DEFAULT.observe_job
