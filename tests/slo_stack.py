"""A real monitoring stack on loopback for the SLO end-to-end tests (tests/test_slo_alerts_e2e.py and
tests/test_cluster_slo_alerts.py): Debian's Prometheus and Alertmanager (hack/prometheus.sh), a webhook
receiver in this process that records every alert Alertmanager sends, and a bounded request load on a Triton
model. Nothing listens beyond 127.0.0.1."""

import json
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml

from conftest import REPO, ServerProcess, TritonProcess, free_port, wait_until

from modelfleet import rulegen
from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.result import ResultManifest
from modelfleet.domain import alerts
from modelfleet.progress import Progress
from modelfleet.publish.triton import publish

INTERVAL = "1s"  # scrape and rule evaluation interval
FLEET_SCALE = 1 / 60  # the fleet rules' windows and `for`: 5m -> 5s, 1h -> 1m
BURN_SCALE = 1 / 720  # the burn-rate windows: 6h -> 30s, 1h -> 5s
RATE_WINDOW = 5  # seconds: five scrapes per rate(), and no window is shorter


def e2e_windows() -> alerts.Windows:
    """The SRE workbook's windows divided by 720 (6 h -> 30 s, 1 h -> 5 s), none shorter than the rate window:
    page on 5s/5s and 30s/5s, ticket on 2m/10s and 6m/30s. A window of a few evaluations or less would flap."""
    def burn(b: alerts.BurnRate) -> alerts.BurnRate:
        return alerts.BurnRate(max(RATE_WINDOW, round(b.long * BURN_SCALE)),
                               max(RATE_WINDOW, round(b.short * BURN_SCALE)), b.factor)

    workbook = alerts.Windows()
    return alerts.Windows(page=tuple(map(burn, workbook.page)), ticket=tuple(map(burn, workbook.ticket)),
                          rate=RATE_WINDOW, hold=4 * RATE_WINDOW, period=round(workbook.period * BURN_SCALE))


def rule_groups(namespace: str, name: str, triton_model: str, latency_slo_seconds: float) -> list[dict]:
    """The fleet groups and one model's serving-SLO group, windows and `for` scaled to seconds."""
    return [*alerts.fleet_groups(alerts.OPERATOR_JOB, scale=FLEET_SCALE),
            *alerts.model_groups(namespace, name, triton_model, latency_slo_seconds, windows=e2e_windows())]


def serve_digits(directory: Path, digits_result: Path, model: str, owner: str) -> tuple[TritonProcess, np.ndarray]:
    """tritonserver with latency summaries on, serving the digits CNN's fp32 artifact as `model`, published by
    modelfleet's publish step (loaded, verified, measured); and sample inputs for it."""
    (directory / "repository").mkdir(parents=True)
    triton = TritonProcess(directory / "repository", directory / "tritonserver.log",
                           "--metrics-config", "summary_latencies=true")
    try:
        target = TritonTarget.model_validate({"repository": f"file://{directory / 'repository'}", "modelName": model,
                                              "precision": "fp32", "serverUrl": triton.url,
                                              "verification": {"latencyRequests": 20}})
        result = ResultManifest.model_validate_json((digits_result / "result.json").read_text())
        outcome = publish(result, digits_result, target, owner, None, Progress(enabled=False))
        if outcome.state != "Served":
            raise AssertionError(f"publishing {model} to Triton: {outcome.reason}: {outcome.message}")
    except BaseException:
        triton.stop()
        raise
    return triton, np.load(digits_result / "onnx-fp32" / "smoke.npz")["inputs"]


def monitoring_binaries() -> dict[str, str]:
    """PROMETHEUS, ALERTMANAGER, AMTOOL, PROMTOOL: Debian's, installed by hack/prometheus.sh when missing."""
    done = subprocess.run(["bash", str(REPO / "hack" / "prometheus.sh")], check=True, stdout=subprocess.PIPE,
                          text=True, timeout=900)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _get_json(url: str, timeout: float = 5) -> dict | list:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


class Webhook:
    """Alertmanager's webhook receiver: every alert of every notification, with the time it arrived."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []  # (time.monotonic(), alert as Alertmanager sent it)
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner._lock:
                    owner.received += [(time.monotonic(), alert) for alert in body["alerts"]]
                self.send_response(200)
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002 - the standard library's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/alerts"
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()

    def first(self, alertname: str, status: str, since: float = 0.0, **labels: str) -> float | None:
        """When the first alert named `alertname` with `status` (firing, resolved) and these labels arrived after
        `since` (time.monotonic()); None if none has."""
        with self._lock:
            return next((at for at, alert in self.received
                         if at >= since and alert["status"] == status and alert["labels"]["alertname"] == alertname
                         and labels.items() <= alert["labels"].items()), None)

    def all_arrived(self, status: str, since: float, *wanted: tuple[str, dict]) -> list[float] | None:
        """When each (alertname, labels) first arrived with `status` after `since`; None until all have."""
        times = [self.first(name, status, since, **labels) for name, labels in wanted]
        return None if None in times else times

    def names(self, status: str = "firing") -> set[str]:
        with self._lock:
            return {alert["labels"]["alertname"] for _, alert in self.received if alert["status"] == status}

    def stop(self) -> None:
        self._server.shutdown()


class AlertmanagerProcess(ServerProcess):
    """prometheus-alertmanager on a loopback port, clustering off, every alert its own group (so each is
    notified on its own, at once), all sent to `webhook_url`, resolved ones too."""

    def __init__(self, binary: str, directory: Path, webhook_url: str):
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "route": {"receiver": "webhook", "group_by": ["..."], "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        }
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{free_port()}"
        self._start([binary, f"--config.file={directory / 'alertmanager.yml'}", f"--storage.path={directory / 'data'}",
                     f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=warn"],
                    directory / "alertmanager.log", f"http://{self.address}/-/ready", timeout_s=60)

    def alerts(self, **labels: str) -> list[dict]:
        """Alertmanager's active alerts (its API v2) with these labels."""
        return [a for a in _get_json(f"http://{self.address}/api/v2/alerts?active=true&silenced=false&inhibited=false")
                if labels.items() <= a["labels"].items()]


class PrometheusProcess(ServerProcess):
    """prometheus on a loopback port: `scrape` maps job names to target addresses, scraped every second;
    `groups` is the rule file (evaluated every second); alerts go to `alertmanager`.

    The rules are loaded (SIGHUP) only once every target has been scraped: scaled down to seconds, a `for` of
    5 s is shorter than a loaded machine's first scrape can take, and `absent(up)` would fire the *Down alerts
    on startup alone (in production their `for` is minutes)."""

    def __init__(self, binary: str, directory: Path, scrape: dict[str, list[str]], alertmanager: str,
                 groups: list[dict]):
        directory.mkdir(parents=True, exist_ok=True)
        self.rules = directory / "rules.yaml"
        self.rules.write_text(rulegen.dump({"groups": []}))
        config = {
            "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
            "rule_files": [str(self.rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            # honor_labels: the operator's per-model series carry the CompressedModel's own `namespace` label.
            "scrape_configs": [{"job_name": job, "honor_labels": True, "static_configs": [{"targets": targets}]}
                               for job, targets in scrape.items()],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        self._start([binary, f"--config.file={directory / 'prometheus.yml'}",
                     f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={self.address}",
                     # Scaled like the rules' windows (1 min -> 1 s): an alert that fired while the reload below
                     # restarted the notifier's Alertmanager discovery is sent again a second later, not a minute.
                     "--rules.alert.resend-delay=1s", "--log.level=warn"],
                    directory / "prometheus.log", f"{self.url}/-/ready", timeout_s=60)
        wait_until(lambda: self.targets_up() == dict.fromkeys(scrape, "up"),
                   60, f"Prometheus to scrape {sorted(scrape)} once")
        self.rules.write_text(rulegen.dump({"groups": groups}))
        self._process.send_signal(signal.SIGHUP)
        wait_until(lambda: set(self.rule_groups()) == {g["name"] for g in groups}, 30, "the rules to load")

    def _api(self, path: str, **params) -> dict:
        body = _get_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        if body["status"] != "success":
            raise AssertionError(f"Prometheus /api/v1/{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result (a vector's samples), now or at `at` (epoch seconds)."""
        data = self._api("query", query=expr, **({"time": f"{at:.3f}"} if at is not None else {}))
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def targets_up(self) -> dict[str, str]:
        """Scrape pool (job) -> health of its targets (up, down, unknown)."""
        return {t["scrapePool"]: t["health"] for t in self._api("targets", state="active")["activeTargets"]}

    def rule_groups(self) -> dict[str, str]:
        """Loaded rule group -> the worst health of its rules (ok, unknown before the first evaluation, err)."""
        groups = self._api("rules")["groups"]
        order = {"ok": 0, "unknown": 1, "err": 2}
        return {g["name"]: max((r["health"] for r in g["rules"]), key=order.__getitem__, default="ok") for g in groups}


class Load:
    """Single-sample requests to a Triton model from one thread, paced at `per_second`, until stop() or at most
    `limit` requests or `seconds`, whichever comes first. Loopback only."""

    def __init__(self, url: str, model: str, inputs: np.ndarray, per_second: float = 40, limit: int = 8000,
                 seconds: float = 200):
        import tritonclient.http as triton_http

        self._client = triton_http.InferenceServerClient(url.removeprefix("http://"))
        self._make = lambda sample: triton_http.InferInput("input", list(sample.shape), "FP32")
        self.model, self.inputs = model, inputs.astype(np.float32)
        self.interval, self.limit, self.seconds = 1 / per_second, limit, seconds
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while self.sent < self.limit and time.monotonic() < deadline and not self._stop.is_set():
            sample = self.inputs[self.sent % len(self.inputs)][None]
            request = self._make(sample)
            request.set_data_from_numpy(sample)
            try:
                self._client.infer(self.model, [request])
            except Exception:  # counted, and Triton counts it too; the test looks at the counts
                self.failed += 1
            self.sent += 1
            self._stop.wait(self.interval)  # pacing: a steady, modest rate

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.sent
