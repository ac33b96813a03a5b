"""The fleet gateway's Prometheus metrics (the conventions of `modelfleet.metrics`: base units, `_total`
counters, bounded labels, an own registry, no `_created` series).

Never a per-device label: what devices report is aggregated per (namespace, model, target, version) at scrape
time from the gateway's current view, each device counted once. Device-reported p95 latency and golden-set
agreement are gauge histograms of the devices' current values (`histogram_quantile` works on their buckets:
the 95th percentile of the devices' p95s); a device that stopped reporting keeps its last value, and the
stale-devices gauge says how many those are.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelfleet.api.edgedevice import DEVICE_ERROR_REASONS
from modelfleet.fleet.state import OTHER, Device, LabelBounds
from modelfleet.metrics import WithoutCreated

__all__ = ["FleetMetrics"]

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
AGREEMENT_BUCKETS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
BUNDLE = ("namespace", "model", "target", "version")


def bounded_reason(reason: str | None) -> str:
    """A device's error reason as a label: one of the reasons agents report, else Other."""
    return reason if reason in DEVICE_ERROR_REASONS else OTHER


def _gauge_histogram(name: str, doc: str, bounds: tuple[float, ...],
                     values: dict[tuple[str, ...], list[float]]) -> GaugeHistogramMetricFamily:
    family = GaugeHistogramMetricFamily(name, doc, labels=BUNDLE)
    for labels, observed in sorted(values.items()):
        buckets = [(str(b), float(sum(1 for v in observed if v <= b))) for b in bounds]
        family.add_metric(list(labels), buckets + [("+Inf", float(len(observed)))], sum(observed))
    return family


class _Fleet(Collector):
    def __init__(self, devices: Callable[[], Iterable[Device]], queued: Callable[[], int], stale_after_s: float,
                 bounds: LabelBounds):
        self._devices, self._queued, self._stale_after_s, self._bounds = devices, queued, stale_after_s, bounds

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        enrolled, stale, by_state = Tally(), Tally(), Tally()
        latency: dict[tuple[str, ...], list[float]] = {}
        agreement: dict[tuple[str, ...], list[float]] = {}
        now = time.time()
        for device in list(self._devices()):
            status = device.status
            enrolled[device.namespace] += 1
            seen = status.last_seen and _epoch(status.last_seen)
            if now - (seen or device.enrolled_at.timestamp()) > self._stale_after_s:
                stale[device.namespace] += 1
            for t in status.targets:
                key = self._bounds(device.namespace, t.model, t.target, t.installed.version if t.installed else None)
                by_state[(*key, t.health)] += 1
                if t.latency:
                    latency.setdefault(key, []).append(t.latency.p95_ms / 1000)
                if t.last_smoke:
                    agreement.setdefault(key, []).append(t.last_smoke.agreement)
        yield _gauges("modelfleet_fleet_devices_enrolled", "EdgeDevices the gateway knows, per namespace.",
                      ("namespace",), enrolled)
        yield _gauges("modelfleet_fleet_devices_stale", "Enrolled devices whose last report (or enrolment) is older "
                      "than the gateway's --stale-after, per namespace.", ("namespace",), stale)
        yield _gauges("modelfleet_fleet_devices", "Devices per model, edge target, installed bundle version (empty: "
                      "none installed) and reported health (Healthy, Degraded, Failed, Unknown).",
                      (*BUNDLE, "health"), by_state)
        yield _gauge_histogram("modelfleet_fleet_device_latency_p95_seconds",
                               "The p95 inference latency each device measured with the bundle it runs, in seconds: "
                               "one count per device (its last report).", LATENCY_BUCKETS, latency)
        yield _gauge_histogram("modelfleet_fleet_device_agreement_ratio",
                               "Golden-set agreement (mean cosine, 0 to 1) of each device's last smoke test: one "
                               "count per device.", AGREEMENT_BUCKETS, agreement)
        queue = GaugeMetricFamily("modelfleet_gateway_status_write_queue",
                                  "EdgeDevice status writes waiting for the gateway's rate limit.")
        queue.add_metric([], float(self._queued()))
        yield queue


def _as_reported(namespace: str, model: str, target: str, version: int | None) -> tuple[str, str, str, str]:
    return namespace, model, target, "" if version is None else str(version)


def _gauges(name: str, doc: str, labels: tuple[str, ...], counts: Tally) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], float(value))
    return family


def _epoch(stamp: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class FleetMetrics:
    def __init__(self, devices: Callable[[], Iterable[Device]], queued: Callable[[], int],
                 stale_after_s: float = 900.0, bounds: LabelBounds | None = None):
        """`bounds` maps what a device reported to label values the gateway knows (FleetState.bounded_labels);
        without it, reported names are used as they are (for a fleet view that came from the API server)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram("modelfleet_gateway_request_duration_seconds",
                                  "Time the gateway took to answer a request, in seconds, by route template, method "
                                  "and status code.", ("route", "method", "code"), buckets=REQUEST_BUCKETS,
                                  registry=None)
        self.install_failures = Counter("modelfleet_fleet_install_failures",
                                        "Install failures devices reported (each new lastError once), by model, edge "
                                        "target and reason.", ("namespace", "model", "target", "reason"),
                                        registry=None)
        self.status_writes = Counter("modelfleet_gateway_status_writes",
                                     "EdgeDevice status writes the gateway made, by result (Written, Failed).",
                                     ("result",), registry=None)
        self.registry.register(WithoutCreated(self.requests, self.install_failures, self.status_writes))
        self.registry.register(_Fleet(devices, queued, stale_after_s, bounds or _as_reported))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
