"""A fleet for gateway tests: signed bundles in a file:// store, keys, an in-memory API server holding a
CompressedModel with a rollout, and real gateways (uvicorn on loopback, each in its own thread and loop)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from modelfleet import signing
from modelfleet.api.bundle import BundleManifest
from modelfleet.fleet.backend import MODELS, InMemoryApiServer
from modelfleet.fleet.bundles import BundleStore
from modelfleet.fleet.gateway import BOOTSTRAP_KEY, BOOTSTRAP_SECRET, Gateway, Settings

NOW = datetime(2026, 5, 1, 12, 0, 7, tzinfo=timezone.utc)
NAMESPACE, MODEL, TARGET = "ml", "digits", "phones"
TOKEN = "bootstrap-token-for-ml"
SIGNATURE = {"inputs": [{"name": "in0", "dtype": "float32", "shape": [1, 64]}],
             "outputs": [{"name": "out0", "dtype": "float32", "shape": [1, 10]}]}


def until(condition, timeout: float = 10.0, what: str = "condition"):
    """Wait until `condition()` is truthy (a deadline, never a bare sleep); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def write_bundle(root: Path, key, version: int, *, namespace: str = NAMESPACE, model: str = MODEL,
                 target: str = TARGET, size: int = 300_000, now: datetime = NOW) -> dict[str, bytes]:
    """A signed bundle in the store layout, valid for 30 days from `now`; returns its files (manifest.json
    included)."""
    files = {"model.param": b"7767517\n" + bytes([version]) * 64,
             "model.bin": bytes((i * 7 + version) % 256 for i in range(size)),
             "smoke.npz": b"PK\x03\x04golden" + bytes([version])}
    manifest = BundleManifest(
        namespace=namespace, model=model, target=target, version=version, runtime="ncnn", precision="int8",
        signature=SIGNATURE, model_files=["model.param", "model.bin"],
        files=[{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "sizeBytes": len(b)} for p, b in files.items()],
        smoke={"minCosine": 0.98}, device_selector={"modelfleet.io/class": "phone"},
        created=now - timedelta(days=1), expires=now + timedelta(days=30))
    directory = root / namespace / model / "bundles" / target / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    envelope = signing.sign(manifest, key)
    (directory / "manifest.json").write_bytes(envelope)
    return {**files, "manifest.json": envelope}


def compressed_model(rollout: dict | None, *, name: str = MODEL, selector: dict | None = None) -> dict:
    return {"apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"targets": {"edge": [{"name": TARGET, "runtime": "ncnn",
                                           "deviceSelector": selector or {"modelfleet.io/class": "phone"}}]}},
            "status": {"rollouts": [rollout] if rollout else []}}


def rollout(version: int, previous: int | None = None, *, opened: int = 1, changed_at: str | None = None,
            **changes) -> dict:
    """A rollout entry with the first `opened` waves open (canary 5%, then 50%, 100%)."""
    entry = {"target": TARGET, "version": version, "salt": f"{NAMESPACE}/{MODEL}/{TARGET}",
             "waveBounds": [5.0, 50.0, 100.0],
             "waveOpenedAt": [(NOW - timedelta(hours=3 - i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(opened)],
             "currentWave": opened - 1, **changes}
    if previous:
        entry["previousVersion"] = previous
    if changed_at:
        entry["changedAt"] = changed_at
    return entry


@dataclass
class World:
    root: Path
    state_key: object = field(default_factory=signing.generate_private_key)
    bundle_key: object = field(default_factory=signing.generate_private_key)
    api: InMemoryApiServer = field(default_factory=InMemoryApiServer)
    bundles: dict[int, dict[str, bytes]] = field(default_factory=dict)

    def __post_init__(self):
        for version in (1, 2):
            self.bundles[version] = write_bundle(self.root, self.bundle_key, version)
        self.api.put_secret(NAMESPACE, BOOTSTRAP_SECRET, {BOOTSTRAP_KEY: base64.b64encode(TOKEN.encode()).decode()})
        # Version 2 rolling out, every wave open: each selected device should run it.
        self.api.put(MODELS, compressed_model(rollout(2, 1, opened=3)))

    def gateway(self, clock=lambda: NOW, **settings) -> Gateway:
        store = BundleStore(f"file://{self.root}", signing.KeySet([self.bundle_key]))
        return Gateway(self.api, store, self.state_key, Settings(**settings), clock=clock)


@dataclass
class Running:
    url: str
    gateway: Gateway
    metrics_url: str


@contextmanager
def serve(gateway: Gateway, *, tls: dict | None = None):
    """The gateway's app and metrics app on loopback, in a thread with its own event loop."""
    import uvicorn

    from modelfleet.fleet.app import create_app, metrics_app

    sockets = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    options = {"log_level": "warning", "access_log": False, "lifespan": "off", "timeout_graceful_shutdown": 1}
    api = uvicorn.Server(uvicorn.Config(create_app(gateway), **(tls or {}), **options))
    side = uvicorn.Server(uvicorn.Config(metrics_app(gateway), **options))
    failure = []

    def run():
        async def main():
            await gateway.start()
            try:
                await asyncio.gather(api.serve(sockets=[sockets[0]]), side.serve(sockets=[sockets[1]]))
            finally:
                await gateway.stop()

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to the test
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    until(lambda: (api.started and side.started) or failure, what="the gateway to start")
    if failure:
        raise failure[0]
    try:
        yield Running(f"{scheme}://127.0.0.1:{sockets[0].getsockname()[1]}", gateway,
                      f"http://127.0.0.1:{sockets[1].getsockname()[1]}")
    finally:
        api.should_exit = side.should_exit = True
        thread.join(timeout=10)


def enroll(url: str, device: str, labels: dict | None = None, token: str = TOKEN, **kwargs) -> requests.Response:
    return requests.post(f"{url}/v1/enroll", json={"namespace": NAMESPACE, "device": device,
                                                   "labels": {"modelfleet.io/class": "phone"} if labels is None
                                                   else labels, "agentVersion": "0.1.0"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs)


def credential(url: str, device: str, **kwargs) -> str:
    response = enroll(url, device, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()["credential"]


def device_url(url: str, device: str, rest: str) -> str:
    return f"{url}/v1/devices/{NAMESPACE}/{device}/{rest}"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def report(version: int, *, health: str = "Healthy", p95_ms: float = 4.0, agreement: float = 0.995,
           error: dict | None = None) -> dict:
    target = {"model": MODEL, "target": TARGET, "health": health,
              "installed": {"artifact": "ncnn-int8-phones", "version": version, "bundleSha256": "a" * 64,
                            "since": "2026-05-01T11:00:00Z"},
              "latency": {"p50Ms": p95_ms / 2, "p95Ms": p95_ms},
              "lastSmoke": {"agreement": agreement, "passed": True}}
    if error:
        target["lastError"] = error
    return {"agentVersion": "0.1.0", "targets": [target]}
