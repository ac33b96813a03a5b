"""The real fleet gateway as its own process (`modelfleet gateway --backend memory`) on loopback, for attacks that
need the whole server: uvicorn's connection handling, the limits in front of the application, the process's
memory. The in-memory backend stands in for the API server (bench/fleet.py uses it the same way); the test puts
the namespace's bootstrap Secret and a CompressedModel with a rollout through its /memory routes."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import requests

from conftest import ServerProcess, free_port
from gateway_world import MODEL, NAMESPACE, TARGET, TOKEN, compressed_model, rollout, write_bundle
from modelfleet import signing
from modelfleet.fleet.gateway import ALLOWED_LABELS_KEY, BOOTSTRAP_KEY, BOOTSTRAP_SECRET


class GatewayProcess(ServerProcess):
    def __init__(self, directory: Path, *flags: str, allowed_labels: dict | None = None):
        self.directory = directory
        self.store = directory / "store"
        self.bundle_key, state_key = signing.generate_private_key(), signing.generate_private_key()
        self.state_keys = signing.KeySet([state_key])
        (directory / "state.pem").write_bytes(signing.private_key_pem(state_key))
        (directory / "bundle.pub").write_bytes(signing.public_key_pem(self.bundle_key))
        now = datetime.now(timezone.utc)
        self.bundles = {v: write_bundle(self.store, self.bundle_key, v, now=now) for v in (1, 2)}
        self.port, self.metrics_port = free_port(), free_port()
        self.url, self.admin = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.metrics_port}"
        self._start([sys.executable, "-m", "modelfleet.cli", "gateway", "--backend", "memory", "--host", "127.0.0.1",
                     "--port", str(self.port), "--metrics-port", str(self.metrics_port),
                     "--artifacts", f"file://{self.store}", "--signing-key", str(directory / "state.pem"),
                     "--bundle-keys", str(directory / "bundle.pub"), *flags],
                    directory / "gateway.log", f"{self.admin}/healthz", timeout_s=60, env=dict(os.environ))
        secret = {BOOTSTRAP_KEY: base64.b64encode(TOKEN.encode()).decode()}
        if allowed_labels is not None:
            secret[ALLOWED_LABELS_KEY] = base64.b64encode(json.dumps(allowed_labels).encode()).decode()
        requests.put(f"{self.admin}/memory/secrets/{NAMESPACE}/{BOOTSTRAP_SECRET}", json=secret,
                     timeout=10).raise_for_status()
        # Version 2 rolling out, every wave open: each enrolled phone should run it.
        requests.put(f"{self.admin}/memory/compressedmodels", json=compressed_model(rollout(2, 1, opened=3)),
                     timeout=10).raise_for_status()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> str:
        return requests.get(f"{self.admin}/metrics", timeout=10).text

    def device_url(self, device: str, rest: str) -> str:
        return f"{self.url}/v1/devices/{NAMESPACE}/{device}/{rest}"

    def bundle_dir(self, version: int, namespace: str = NAMESPACE) -> Path:
        return self.store / namespace / MODEL / "bundles" / TARGET / str(version)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A raw connection to the device port from `source` (any 127.x address is this machine)."""
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", self.port))
        sock.settimeout(30)
        return sock

    @property
    def process(self) -> subprocess.Popen:
        return self._process


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 30 s pass)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
