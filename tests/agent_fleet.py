"""What the device agent's tests share: tiny real bundles, a STAND-IN fleet gateway, and agent processes.

Bundles: a real ncnn model (a hand-written .param with Input + InnerProduct and its .bin) or a real TFLite model
(one FULLY_CONNECTED op, built with LiteRT's flatbuffer schema), each with a smoke.npz whose golden outputs come
from running that runtime once; the manifest is signed with `modelfleet.signing`.

`StandInGateway` is NOT the fleet gateway (`modelfleet gateway`, operator/modelfleet/fleet/): a small threaded
HTTP server on loopback that speaks the same routes (api/fleet.py) and serves what a test tells it to, so the
agent can be tested before and apart from the real one (and fed answers the real one would never give).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from modelfleet import signing
from modelfleet.agent.store import manifest_of
from modelfleet.api.bundle import MANIFEST_FILE, BundleManifest, BundleRef, DesiredState
from modelfleet.api.fleet import AgentReport, EnrollResponse

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "edge"
MODEL, TARGET = "digits", "phones"
BOOTSTRAP_TOKEN = "bootstrap-secret"
SIGNATURE = {"inputs": [{"name": "in0", "dtype": "float32", "shape": [1, 8]}],
             "outputs": [{"name": "out0", "dtype": "float32", "shape": [1, 4]}]}


# --- tiny real models ---------------------------------------------------------------------------


def ncnn_model(seed: int) -> dict[str, bytes]:
    """y = W x + b, 8 -> 4, in ncnn's text param format and its weight file (a 0 tag: raw float32 weights)."""
    rng = np.random.default_rng(seed)
    weights, bias = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    param = "7767517\n2 2\nInput in0 0 1 in0 0=8\nInnerProduct fc 1 1 in0 out0 0=4 1=1 2=32\n"
    return {"model.param": param.encode(), "model.bin": struct.pack("<I", 0) + weights.tobytes() + bias.tobytes()}


def tflite_model(seed: int) -> dict[str, bytes]:
    """The same layer as one FULLY_CONNECTED op of a TFLite flatbuffer (batch 1)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(seed)
    weights, bias = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=4).astype(np.float32)

    def buffer(data: bytes | None = None):
        b = schema.BufferT()
        b.data = None if data is None else list(data)
        return b

    def tensor(name: str, shape: tuple, index: int):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), schema.TensorType.FLOAT32, index
        return t

    model = schema.ModelT()
    model.version, model.description = 3, "modelfleet agent test"
    model.buffers = [buffer(), buffer(), buffer(weights.tobytes()), buffer(bias.tobytes()), buffer()]
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("in0", (1, 8), 1), tensor("w", (4, 8), 2), tensor("b", (4,), 3), tensor("out0", (1, 4), 4)]
    graph.inputs, graph.outputs = [0], [3]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.FullyConnectedOptions, \
        schema.FullyConnectedOptionsT()
    graph.operators = [op]
    model.subgraphs, model.operatorCodes = [graph], [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return {"model.tflite": bytes(builder.Output())}


def run_runtime(runtime: str, directory: Path, inputs: np.ndarray) -> np.ndarray:
    """The model in `directory` run on `inputs` by the real runtime (one sample a call)."""
    from modelfleet.runtimes import NcnnRunner, TfliteRunner

    if runtime == "ncnn":
        runner = NcnnRunner(directory / "model.param", directory / "model.bin", 1, fp16=False)
    else:
        runner = TfliteRunner(directory / "model.tflite", 1)
    return np.concatenate([np.asarray(runner.run({"input": inputs[i:i + 1]})[0]).reshape(1, -1) for i in range(len(inputs))])


# --- bundles and desired states -----------------------------------------------------------------


@dataclass
class Bundle:
    manifest: BundleManifest
    envelope: bytes
    files: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return manifest_of(self.envelope)[1]

    @property
    def version(self) -> int:
        return self.manifest.version

    def ref(self, *, rollback: bool = False) -> BundleRef:
        m = self.manifest
        return BundleRef(model=m.model, target=m.target, version=m.version, manifest_sha256=self.sha256,
                         url=f"v1/devices/{NAMESPACE}/DEVICE/bundles/{m.model}/{m.target}/{m.version}",
                         rollback=rollback)


_GOLDEN_CACHE: dict[tuple[str, int], dict[str, bytes]] = {}


def model_files(runtime: str, seed: int, workdir: Path) -> dict[str, bytes]:
    """Model files plus smoke.npz whose outputs the real runtime computed (cached per runtime and seed)."""
    key = (runtime, seed)
    if key not in _GOLDEN_CACHE:
        files = ncnn_model(seed) if runtime == "ncnn" else tflite_model(seed)
        directory = workdir / f"golden-{runtime}-{seed}"
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        inputs = np.random.default_rng(1000 + seed).normal(size=(8, 8)).astype(np.float32)
        outputs = run_runtime(runtime, directory, inputs)
        smoke = io.BytesIO()
        np.savez(smoke, inputs=inputs, outputs=outputs)
        _GOLDEN_CACHE[key] = {**files, "smoke.npz": smoke.getvalue()}
    return dict(_GOLDEN_CACHE[key])


class Signer:
    """The keys a worker (bundles) and the gateway (desired states) would hold, and their public PEM files."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.state_key = signing.generate_private_key()
        self.bundle_key = signing.generate_private_key()
        self.state_keys_file = directory / "state-keys.pem"
        self.bundle_keys_file = directory / "bundle-keys.pem"
        self.state_keys_file.write_bytes(signing.public_key_pem(self.state_key))
        self.bundle_keys_file.write_bytes(signing.public_key_pem(self.bundle_key))
        self.sequence = 0
        self.now = datetime.now(timezone.utc).replace(microsecond=0)  # one instant: the same arguments, the same bytes

    def bundle(self, version: int, *, runtime: str = "ncnn", seed: int | None = None, key=None,
               expires: datetime | None = None, files: dict[str, bytes] | None = None,
               model: str = MODEL, target: str = TARGET) -> Bundle:
        files = files or model_files(runtime, version if seed is None else seed, self.directory)
        now = self.now
        manifest = BundleManifest(
            namespace=NAMESPACE, model=model, target=target, version=version, runtime=runtime, precision="fp32",
            signature=SIGNATURE,
            model_files=["model.param", "model.bin"] if runtime == "ncnn" else ["model.tflite"],
            files=[{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "sizeBytes": len(b)}
                   for p, b in sorted(files.items())],
            smoke={"minCosine": 0.999, "maxAbsDiff": 1e-3},
            created=now - timedelta(days=1), expires=expires or now + timedelta(days=30))
        return Bundle(manifest, signing.sign(manifest, key or self.bundle_key), files)

    def desired(self, device: str, *refs: BundleRef, sequence: int | None = None, key=None,
                issued: datetime | None = None, lifetime: timedelta = timedelta(hours=1)) -> bytes:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        issued = issued or datetime.now(timezone.utc).replace(microsecond=0)
        refs = [r.model_copy(update={"url": r.url.replace("DEVICE", device)}) for r in refs]
        state = DesiredState(namespace=NAMESPACE, device=device, sequence=sequence, issued=issued,
                             expires=issued + lifetime, bundles=refs)
        return signing.sign(state, key or self.state_key)


# --- the stand-in gateway -----------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        import sys as _sys

        if not isinstance(_sys.exc_info()[1], ConnectionError):  # an agent killed mid-answer is the test's point
            super().handle_error(request, client_address)


@dataclass
class _DeviceState:
    credential: str
    desired: bytes | None = None
    reports: list[AgentReport] = field(default_factory=list)
    polls: int = 0
    not_modified: int = 0


class StandInGateway:
    """A loopback HTTP server speaking the gateway's routes; NOT the real gateway (see the module docstring)."""

    def __init__(self, tls=None):
        """`tls`: an ssl.SSLContext with the server's certificate, for https://."""
        self.devices: dict[str, _DeviceState] = {}
        self.bundles: dict[str, dict[str, bytes]] = {}  # "<model>/<target>/<version>" -> path -> bytes
        self.cut_once: set[str] = set()  # file paths whose next download stops half way
        self.range_requests: list[tuple[str, str]] = []
        self.down = False  # True: every request is answered 503 (an unreachable gateway's stand-in)
        self.drip: set[str] = set()  # request paths answered one byte every `drip_seconds` (a slow-drip server)
        self.drip_seconds = 2.0
        self.redirects: dict[str, str] = {}  # request path -> the URL a 307 sends the client to
        self.public = False  # True: bundle files without a credential (a presigned URL's host)
        self.requests_seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.changed = threading.Condition()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                gateway.requests_seen.append(("GET", self.path, self.headers.get("Authorization")))
                gateway._get(self)

            def do_POST(self):
                gateway.requests_seen.append(("POST", self.path, self.headers.get("Authorization")))
                gateway._post(self)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def publish(self, bundle: Bundle) -> None:
        m = bundle.manifest
        self.bundles[f"{m.model}/{m.target}/{m.version}"] = {MANIFEST_FILE: bundle.envelope, **bundle.files}

    def order(self, device: str, desired: bytes) -> None:
        self.device(device).desired = desired

    def device(self, name: str) -> _DeviceState:
        return self.devices.setdefault(name, _DeviceState(credential=f"credential-of-{name}"))

    def reports(self, device: str) -> list[AgentReport]:
        return self.device(device).reports

    def wait_for(self, predicate, timeout: float = 30.0):
        """Wait until predicate() is truthy (re-checked on every request); returns its value."""
        import time

        deadline = time.monotonic() + timeout
        with self.changed:
            while not (value := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the stand-in gateway never saw what the test waits for")
                self.changed.wait(min(left, 0.5))
        return value

    # --- routes ---

    def _send(self, handler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        with self.changed:
            self.changed.notify_all()

    def _error(self, handler, status: int, reason: str) -> None:
        self._send(handler, status, json.dumps({"reason": reason, "message": reason, "kind": "FleetError"}).encode(),
                   {"Content-Type": "application/json"})

    def _authorized(self, handler, device: str) -> bool:
        state = self.devices.get(device)
        if state is None or handler.headers.get("Authorization") != f"Bearer {state.credential}":
            self._error(handler, 401, "Unauthorized")
            return False
        return True

    def _post(self, handler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        if self.down:
            return self._error(handler, 503, "Unavailable")
        if handler.path == "/v1/enroll":
            if handler.headers.get("Authorization") != f"Bearer {BOOTSTRAP_TOKEN}":
                return self._error(handler, 401, "Unauthorized")
            request = json.loads(body)
            device = self.device(request["device"])
            answer = EnrollResponse(namespace=request["namespace"], device=request["device"],
                                    credential=device.credential)
            return self._send(handler, 201, json.dumps(answer.to_wire()).encode(), {"Content-Type": "application/json"})
        match = re.fullmatch(rf"/v1/devices/{NAMESPACE}/([^/]+)/report", handler.path)
        if match and self._authorized(handler, match[1]):
            with self.changed:
                self.device(match[1]).reports.append(AgentReport.model_validate_json(body))
            self._send(handler, 204)
        elif not match:
            self._error(handler, 404, "NotFound")

    def _dripped(self, handler) -> None:
        """Promise a large body and send it one byte at a time, until the client gives up (at most 10 minutes)."""
        import time

        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        with self.changed:
            self.changed.notify_all()
        for _ in range(int(600 / self.drip_seconds)):
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(self.drip_seconds)

    def _get(self, handler) -> None:
        if self.down:
            return self._error(handler, 503, "Unavailable")
        if handler.path in self.drip:
            return self._dripped(handler)
        if handler.path in self.redirects:
            return self._send(handler, 307, headers={"Location": self.redirects[handler.path]})
        match = re.fullmatch(rf"/v1/devices/{NAMESPACE}/([^/]+)/(desired-state|bundles/(.+))", handler.path)
        if not match:
            return self._error(handler, 404, "NotFound")
        if not (self.public and match[3]) and not self._authorized(handler, match[1]):
            return
        state = self.device(match[1])
        if match[2] == "desired-state":
            state.polls += 1
            if state.desired is None:
                return self._error(handler, 404, "NoDesiredState")
            etag = f'"{hashlib.sha256(state.desired).hexdigest()[:20]}"'
            if handler.headers.get("If-None-Match") == etag:
                state.not_modified += 1
                return self._send(handler, 304, headers={"ETag": etag})
            return self._send(handler, 200, state.desired, {"ETag": etag, "Content-Type": "application/json"})
        bundle_path, _, file_path = match[3].rpartition("/")
        data = self.bundles.get(bundle_path, {}).get(file_path)
        if data is None:
            return self._error(handler, 404, "NotFound")
        ranged = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        if ranged:
            self.range_requests.append((file_path, handler.headers["Range"]))
            start = int(ranged[1])
            if start >= len(data):
                return self._error(handler, 416, "RangeNotSatisfiable")
            return self._send(handler, 206, data[start:],
                              {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        if file_path in self.cut_once:  # promise the whole file, send half of it, drop the connection
            self.cut_once.discard(file_path)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        self._send(handler, 200, data)


# --- agent processes ----------------------------------------------------------------------------


def agent_command(gateway: StandInGateway, signer: Signer, directory: Path, device: str, *extra: str) -> list[str]:
    token = signer.directory / "bootstrap-token"
    token.write_text(BOOTSTRAP_TOKEN)
    return [sys.executable, "-m", "modelfleet.cli", "agent", "--gateway", gateway.url, "--dir", str(directory),
            "--namespace", NAMESPACE, "--device", device, "--label", "modelfleet.io/class=pi4",
            "--bootstrap-token-file", str(token), "--state-keys", str(signer.state_keys_file),
            "--bundle-keys", str(signer.bundle_keys_file), "-v", *extra]


def agent_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "operator"))


def run_agent_once(gateway, signer, directory: Path, device: str, *extra: str, timeout: float = 120):
    return subprocess.run(agent_command(gateway, signer, directory, device, "--once", "--poll-seconds", "0.2",
                                        *extra), env=agent_env(), capture_output=True, text=True, timeout=timeout)


def target_dir(directory: Path, model: str = MODEL, target: str = TARGET) -> Path:
    return directory / "models" / model / target


def active_version(directory: Path, model: str = MODEL, target: str = TARGET) -> int | None:
    current = target_dir(directory, model, target) / "current"
    return int(os.readlink(current).rsplit("/", 1)[-1]) if current.is_symlink() else None


def check_active(directory: Path, bundle_keys: signing.KeySet, model: str = MODEL, target: str = TARGET) -> int:
    """The active model is whole and works: `current` resolves, its manifest verifies with the bundle keys,
    every listed file hashes as listed, and the runtime loaded from it reproduces the golden outputs.
    Returns its version."""
    current = target_dir(directory, model, target) / "current"
    assert current.is_symlink() and current.is_dir(), f"{current} is missing or dangling"
    manifest = signing.verify((current / MANIFEST_FILE).read_bytes(), bundle_keys, BundleManifest).payload
    for entry in manifest.files:
        assert hashlib.sha256((current / entry.path).read_bytes()).hexdigest() == entry.sha256, entry.path
    with np.load(current / manifest.smoke.file) as golden:
        outputs = run_runtime(manifest.runtime, current, golden["inputs"])
        assert np.max(np.abs(outputs - golden["outputs"])) < 1e-4
    return manifest.version
