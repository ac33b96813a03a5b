"""The agent's own /metrics (prometheus_client, its own registry; the conventions of `modelfleet.metrics`: base
units, `_total` counters): installs, the active version, the last smoke test and latency per target, poll errors.
A few series per target; nothing per request."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["AgentMetrics"]


class AgentMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.installs = Counter("modelfleet_agent_installs", "Install attempts by result (Installed, Failed) and "
                                "reason (Installed, or the failure's reason).",
                                ["model", "target", "result", "reason"], registry=self.registry)
        self.active_version = Gauge("modelfleet_agent_active_version", "Bundle version of the active model.",
                                    ["model", "target"], registry=self.registry)
        self.smoke_agreement = Gauge("modelfleet_agent_smoke_agreement_ratio", "Mean cosine similarity (0 to 1) of "
                                     "the last smoke test of the active model with its golden outputs.",
                                     ["model", "target"], registry=self.registry)
        self.latency_p95 = Gauge("modelfleet_agent_latency_p95_seconds", "p95 latency of the active model measured "
                                 "on the device, in seconds.", ["model", "target"], registry=self.registry)
        self.active_checks = Counter("modelfleet_agent_active_checks", "Checks of the active models' file hashes "
                                     "against their manifests, by result (Intact, Damaged).", ["result"],
                                     registry=self.registry)
        self.polls = Counter("modelfleet_agent_polls", "Desired-state polls.", registry=self.registry)
        self.poll_errors = Counter("modelfleet_agent_poll_errors", "Polls that failed, by reason (Unreachable, "
                                   "an HTTP status, or the refused desired state's reason).", ["reason"],
                                   registry=self.registry)

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
