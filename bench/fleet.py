"""10,000 simulated devices against a real `modelfleet gateway` process (in-memory API server) on loopback.

The gateway runs as its own process (`modelfleet gateway --backend memory`): the in-memory stand-in for the
API server counts every write, and its objects are read and written on the metrics port under /memory (what
the operator would do). The devices are asyncio tasks in this process sharing one aiohttp connection pool,
each with its own credential and ETag: real HTTP requests, no shortcuts.

Phases:
  enrol         every device enrols (bootstrap token -> credential; the gateway creates its EdgeDevice)
  first reports every device polls and reports version 1 installed; the writer drains the 10,000 changes
                at --write-rate (the API server never sees more)
  steady state  polls every --interval s (10,000 / 30 s = 333/s, If-None-Match -> 304) and a report every
                fifth poll, as the agent does: poll and report latency p50/p99 (client side), the gateway's
                CPU and RSS, API writes/s
  rollout       version 2 through canary (1 device) and waves 10/50/100% with bake 0: this script plays the
                operator (domain.rollout.decide on the EdgeDevices' statuses, the rollout status written back);
                devices install on the poll that names the new version and report it. Time until complete.

Targets (2-core machine): poll p99 <= 50 ms, gateway RSS <= 300 MB, steady-state writes <= 20/s.
Usage: python bench/fleet.py [--devices 10000] [--interval 30] [--steady 60] [--write-rate 20] [--json PATH]
"""

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_world import write_bundle  # noqa: E402

from modelfleet import signing  # noqa: E402
from modelfleet.api.compressedmodel import RolloutSpec  # noqa: E402
from modelfleet.api.edgedevice import EdgeDeviceStatus  # noqa: E402
from modelfleet.domain.rollout import COMPLETE, DeviceReport, decide, start, to_status  # noqa: E402

NAMESPACE, MODEL, TARGET = "ml", "digits", "phones"
SALT = f"{NAMESPACE}/{MODEL}/{TARGET}"
TOKEN = "bench-bootstrap-token"
REPORT_EVERY_POLLS = 5  # as modelfleet.agent.loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, RSS MB, peak RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def compressed_model(rollout_status: dict) -> dict:
    return {"apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel",
            "metadata": {"name": MODEL, "namespace": NAMESPACE},
            "spec": {"targets": {"edge": [{"name": TARGET, "runtime": "ncnn",
                                           "deviceSelector": {"modelfleet.io/class": "phone"}}]}},
            "status": {"rollouts": [rollout_status]}}


class Device:
    def __init__(self, name: str):
        self.name = name
        self.credential = ""
        self.etag = None
        self.installed = None
        self.polls = random.randrange(REPORT_EVERY_POLLS)  # agents started at different times: reports spread out
        self.report_due = True


class Fleet:
    def __init__(self, base: str, admin: str, session: aiohttp.ClientSession, devices: int):
        self.base, self.admin, self.session = base, admin, session
        self.devices = [Device(f"dev-{i:05d}") for i in range(devices)]
        self.poll_ms: list[float] = []
        self.report_ms: list[float] = []
        self.errors = 0
        self.record = True

    async def enrol(self, device: Device) -> None:
        async with self.session.post(f"{self.base}/v1/enroll", headers={"Authorization": f"Bearer {TOKEN}"}, json={
                "namespace": NAMESPACE, "device": device.name, "labels": {"modelfleet.io/class": "phone"},
                "agentVersion": "0.1.0"}) as response:
            assert response.status == 201, await response.text()
            device.credential = (await response.json())["credential"]

    async def poll(self, device: Device) -> None:
        headers = {"Authorization": f"Bearer {device.credential}"}
        if device.etag:
            headers["If-None-Match"] = device.etag
        started = time.perf_counter()
        try:
            async with self.session.get(f"{self.base}/v1/devices/{NAMESPACE}/{device.name}/desired-state",
                                        headers=headers) as response:
                body = await response.read()
                if self.record:
                    self.poll_ms.append((time.perf_counter() - started) * 1000)
                if response.status == 200:
                    device.etag = response.headers["ETag"]
                    payload = json.loads(base64.b64decode(json.loads(body)["payload"]))
                    versions = [b["version"] for b in payload["bundles"] if b["target"] == TARGET]
                    if versions and versions[0] != device.installed:  # "install" at once (bake 0, no download)
                        device.installed, device.report_due = versions[0], True
                elif response.status != 304:
                    self.errors += 1
        except aiohttp.ClientError:
            self.errors += 1
        device.polls += 1
        if device.report_due or device.polls % REPORT_EVERY_POLLS == 0:
            await self.report(device)

    async def report(self, device: Device) -> None:
        target = {"model": MODEL, "target": TARGET, "health": "Healthy"}
        if device.installed:
            target |= {"installed": {"artifact": "ncnn-int8-phones", "version": device.installed,
                                     "bundleSha256": "a" * 64, "since": "2026-12-01T00:00:00Z"},
                       "latency": {"p50Ms": 3.0, "p95Ms": 4.0}, "lastSmoke": {"agreement": 0.996, "passed": True}}
        started = time.perf_counter()
        try:
            async with self.session.post(f"{self.base}/v1/devices/{NAMESPACE}/{device.name}/report",
                                         headers={"Authorization": f"Bearer {device.credential}"},
                                         json={"agentVersion": "0.1.0", "targets": [target]}) as response:
                await response.read()
                if self.record:
                    self.report_ms.append((time.perf_counter() - started) * 1000)
                if response.status == 204:
                    device.report_due = False
                else:
                    self.errors += 1
        except aiohttp.ClientError:
            self.errors += 1

    async def run_device(self, device: Device, interval: float, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, interval))  # spread the polls evenly over the interval
        next_at = time.monotonic()
        while not stop.is_set():
            await self.poll(device)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def admin_json(self, method: str, path: str, body=None):
        async with self.session.request(method, f"{self.admin}{path}", json=body) as response:
            return await response.json() if response.content_type == "application/json" else None


async def poll_buckets(session, admin: str) -> dict[float, float]:
    """Cumulative bucket counts of the gateway's own histogram for desired-state polls (200 and 304 summed)."""
    async with session.get(f"{admin}/metrics") as response:
        text = await response.text()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("modelfleet_gateway_request_duration_seconds_bucket") and "desired-state" in line:
            le = float(line.split('le="')[1].split('"')[0])
            buckets[le] = buckets.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_quantile(buckets: dict[float, float], q: float) -> str:
    """The histogram bucket the quantile falls in, as 'under X ms' (the gateway's own view of a poll: from the
    request reaching the app to its response)."""
    total = buckets.get(float("inf"), 0)
    for le in sorted(buckets):
        if total and buckets[le] >= q * total:
            return f"<= {le * 1000:g} ms"
    return "n/a"


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


async def bench(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="modelfleet-fleet-bench-"))
    bundle_key, state_key = signing.generate_private_key(), signing.generate_private_key()
    (work / "state.pem").write_bytes(signing.private_key_pem(state_key))
    (work / "bundle.pub").write_bytes(signing.public_key_pem(bundle_key))
    for version in (1, 2):
        write_bundle(work / "store", bundle_key, version, size=1000, now=datetime.now(timezone.utc))
    port, metrics_port = free_port(), free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "modelfleet.cli", "gateway", "--backend", "memory", "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", str(metrics_port), "--artifacts", f"file://{work / 'store'}",
         "--signing-key", str(work / "state.pem"), "--bundle-keys", str(work / "bundle.pub"),
         "--write-rate", str(args.write_rate),
         # The simulated devices share one source address; real ones each have their own. Every other limit
         # (body size and time, header size and time) is the default.
         "--max-connections-per-client", str(args.connections + 16)], cwd=ROOT)
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    figures: dict = {"devices": args.devices, "interval_s": args.interval, "write_rate": args.write_rate}
    connector = aiohttp.TCPConnector(limit=args.connections)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            fleet = Fleet(base, admin, session, args.devices)
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(f"{admin}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit("the gateway did not start")
                await asyncio.sleep(0.2)
            await fleet.admin_json("PUT", f"/memory/secrets/{NAMESPACE}/modelfleet-bootstrap",
                                   {"token": base64.b64encode(TOKEN.encode()).decode()})
            now = datetime.now(timezone.utc)
            spec = RolloutSpec.model_validate({"canary": {"count": 1}, "waves": [10, 50, 100], "bakeSeconds": 0})
            state = start(SALT, 1)
            done = decide(spec, state, [DeviceReport("dev-00000", now)], now)  # a first rollout: version 1
            state = done.state
            while not state.completed:
                state = decide(spec, state, [DeviceReport("dev-00000", now, version=1, health="Healthy",
                                                          reported_at=now)], now).state
            await fleet.admin_json("PUT", "/memory/compressedmodels", compressed_model(
                to_status(TARGET, decide(spec, state, [], now)).to_wire() | {"changedAt": _stamp(now)}))

            # --- enrol
            started = time.monotonic()
            semaphore = asyncio.Semaphore(args.connections)

            async def enrol(device):
                async with semaphore:
                    await fleet.enrol(device)

            await asyncio.gather(*(enrol(d) for d in fleet.devices))
            figures["enrol_s"] = round(time.monotonic() - started, 1)
            print(f"enrolled {args.devices} devices in {figures['enrol_s']} s", flush=True)

            # --- first reports, drained by the writer
            stop = asyncio.Event()
            runners = [asyncio.create_task(fleet.run_device(d, args.interval, stop)) for d in fleet.devices]
            started = time.monotonic()
            while True:
                await asyncio.sleep(5)
                writes = await fleet.admin_json("GET", "/memory/writes")
                reported = sum(1 for d in fleet.devices if d.installed == 1 and not d.report_due)
                print(f"  first reports: {reported} reported, {writes['statusWrites']} status writes "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
                if writes["statusWrites"] >= args.devices:
                    break
            figures["first_reports_written_s"] = round(time.monotonic() - started, 1)

            # --- steady state
            # The simulated devices' own objects (10,000 of them, their sessions and tasks) out of the cyclic GC's
            # reach, as the gateway does with its fleet view: a full collection here would stall every simulated
            # device at once and be measured as gateway latency.
            gc.collect()
            gc.freeze()
            fleet.poll_ms.clear()
            fleet.report_ms.clear()
            cpu0, _, _ = proc_figures(gateway.pid)
            buckets0 = await poll_buckets(session, admin)
            writes0 = (await fleet.admin_json("GET", "/memory/writes"))["statusWrites"]
            errors0 = fleet.errors
            started = time.monotonic()
            rss = []
            while time.monotonic() - started < args.steady:
                await asyncio.sleep(2)
                rss.append(proc_figures(gateway.pid)[1])
            elapsed = time.monotonic() - started
            cpu1, _, peak = proc_figures(gateway.pid)
            writes1 = (await fleet.admin_json("GET", "/memory/writes"))["statusWrites"]
            buckets1 = await poll_buckets(session, admin)
            handled = {le: buckets1[le] - buckets0.get(le, 0) for le in buckets1}
            p50, p99 = percentiles(fleet.poll_ms)
            r50, r99 = percentiles(fleet.report_ms)
            figures["steady"] = {
                "polls_per_s": round(len(fleet.poll_ms) / elapsed, 1),
                "reports_per_s": round(len(fleet.report_ms) / elapsed, 1),
                "poll_p50_ms": round(p50, 2), "poll_p99_ms": round(p99, 2),
                "gateway_handler_poll_p50_ms": bucket_quantile(handled, 0.5),
                "gateway_handler_poll_p99_ms": bucket_quantile(handled, 0.99),
                "report_p50_ms": round(r50, 2), "report_p99_ms": round(r99, 2),
                "gateway_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
                "gateway_rss_mb": round(max(rss), 1), "gateway_peak_rss_mb": round(peak, 1),
                "api_writes_per_s": round((writes1 - writes0) / elapsed, 2),
                "errors": fleet.errors - errors0,
            }
            print("steady state:", json.dumps(figures["steady"]), flush=True)

            # --- rollout of version 2, bake 0; this script is the operator
            if args.skip_rollout:
                stop.set()
                for task in runners:
                    task.cancel()
                await asyncio.gather(*runners, return_exceptions=True)
                return figures
            fleet.poll_ms.clear()
            rollout_started = time.monotonic()
            state = start(SALT, 2, prior=state)
            waves = []
            operator = ProcessPoolExecutor(1)  # parsing 10,000 statuses must not stall the devices' event loop
            while True:
                now = datetime.now(timezone.utc)
                verdict = await asyncio.get_running_loop().run_in_executor(operator, look, admin, spec, state, now)
                if verdict.state != state:
                    state = verdict.state
                    status = to_status(TARGET, verdict).to_wire() | {"changedAt": _stamp(now)}
                    await fleet.admin_json("PUT", "/memory/compressedmodels", compressed_model(status))
                    if verdict.action != COMPLETE:
                        waves.append(round(time.monotonic() - rollout_started, 1))
                print(f"  rollout {time.monotonic() - rollout_started:.0f} s: {verdict.action} {verdict.reason}: "
                      f"{verdict.counts.updated} updated, {verdict.counts.healthy} healthy, wave "
                      f"{verdict.counts.current_wave}", flush=True)
                if verdict.action == COMPLETE:
                    break
                if verdict.action == "halt":
                    raise SystemExit(f"rollout halted: {verdict.message}")
                await asyncio.sleep(args.operator_period)
            operator.shutdown()
            p50, p99 = percentiles(fleet.poll_ms)
            figures["rollout"] = {"complete_s": round(time.monotonic() - rollout_started, 1), "wave_opened_at_s": waves,
                                  "poll_p50_ms": round(p50, 2), "poll_p99_ms": round(p99, 2),
                                  "gateway_peak_rss_mb": round(proc_figures(gateway.pid)[2], 1)}
            print("rollout:", json.dumps(figures["rollout"]), flush=True)
            stop.set()
            for task in runners:
                task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    return figures


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def look(admin: str, spec: RolloutSpec, state, now: datetime):
    """The operator's look at the fleet: every EdgeDevice's status -> decide (in a worker process)."""
    with urllib.request.urlopen(f"{admin}/memory/edgedevices", timeout=60) as response:
        items = json.loads(response.read())["items"]
    return decide(spec, state, [_device_report(o) for o in items], now)


def _device_report(obj: dict) -> DeviceReport:
    meta = obj["metadata"]
    enrolled = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    status = EdgeDeviceStatus.model_validate(obj.get("status") or {})
    target = next((t for t in status.targets if (t.model, t.target) == (MODEL, TARGET)), None)
    seen = datetime.fromisoformat(status.last_seen.replace("Z", "+00:00")) if status.last_seen else None
    if target is None or target.installed is None:
        return DeviceReport(meta["name"], enrolled, reported_at=seen)
    return DeviceReport(meta["name"], enrolled, version=target.installed.version, health=target.health,
                        p95_ms=target.latency.p95_ms if target.latency else None,
                        agreement=target.last_smoke.agreement if target.last_smoke else None, reported_at=seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0, help="poll interval of each device, seconds")
    parser.add_argument("--steady", type=float, default=60.0, help="steady-state window, seconds")
    parser.add_argument("--write-rate", type=float, default=20.0, help="the gateway's --write-rate")
    parser.add_argument("--connections", type=int, default=256, help="HTTP connections the devices share")
    parser.add_argument("--operator-period", type=float, default=5.0, help="seconds between rollout decisions")
    parser.add_argument("--skip-rollout", action="store_true", help="stop after the steady state")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    try:
        import uvloop  # the simulated devices' own CPU competes with the gateway's on two cores

        figures = uvloop.run(bench(args))
    except ImportError:
        figures = asyncio.run(bench(args))
    steady = figures["steady"]
    print(json.dumps(figures, indent=2))
    print("TARGETS")
    for ok, line in ((steady["poll_p99_ms"] <= 50, f"poll p99 {steady['poll_p99_ms']} ms <= 50 ms"),
                     (steady["gateway_peak_rss_mb"] <= 300, f"gateway peak RSS {steady['gateway_peak_rss_mb']} MB "
                                                            "<= 300 MB"),
                     (steady["api_writes_per_s"] <= 20, f"steady-state API writes {steady['api_writes_per_s']}/s "
                                                        "<= 20/s")):
        print(f"  {'PASS' if ok else 'FAIL'} {line}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
