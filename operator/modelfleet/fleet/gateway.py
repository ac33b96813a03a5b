"""The fleet gateway's logic, apart from HTTP: enrollment, authentication, desired states, reports, bundle access.

`Gateway` holds the fleet view (`FleetState`), kept current by watches on the backend, and answers from memory:
a poll reads no API and signs nothing new unless its inputs changed. Routes (`modelfleet.fleet.app`) only
translate HTTP to these calls and `Problem`s back to HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from modelfleet import signing
from modelfleet.api.bundle import MANIFEST_FILE, BundleRef, DesiredState
from modelfleet.api.compressedmodel import API_VERSION
from modelfleet.api.edgedevice import EdgeDeviceStatus
from modelfleet.api.fleet import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, AgentReport, EnrollRequest, EnrollResponse
from modelfleet.domain.device import fleet_columns
from modelfleet.fleet.backend import DEVICES, MODELS, Backend, WatchExpired
from modelfleet.fleet.bundles import BundleStore, StoreUnavailable
from modelfleet.fleet.metrics import FleetMetrics, bounded_reason
from modelfleet.fleet.state import (
    CREDENTIAL_ANNOTATION, Device, FleetState, device_bundles, sequence_of, validity,
)
from modelfleet.fleet.writer import StatusWriter, unchanged

__all__ = ["ALLOWED_LABELS_KEY", "BOOTSTRAP_KEY", "BOOTSTRAP_SECRET", "Gateway", "Problem", "Settings"]

log = logging.getLogger("modelfleet.fleet")
BOOTSTRAP_SECRET, BOOTSTRAP_KEY = "modelfleet-bootstrap", "token"
# Optional: a JSON object of label key -> the values a device enrolled with this token may carry, e.g.
# {"modelfleet.io/class": ["phones", "boards"]}. Without it the token enrols any labels (the labels choose which
# bundles a device receives, so bind the token where devices are not all equally trusted).
ALLOWED_LABELS_KEY = "allowedLabels"
TOKEN_TTL_S = 60.0  # a rotated bootstrap token is honoured within a minute, without a Secret read per enrolment
MAX_TOKEN_NAMESPACES = 1024
WATCH_TIMEOUT_S = 300
GC_FREEZE_S = 60.0
# Compared against when the device or the namespace is unknown, so the time taken says nothing about either.
_NOBODY = hashlib.sha256(b"modelfleet: no such credential").digest()


class Problem(Exception):
    """An answer other than success: the HTTP status, a CamelCase reason and a message (a FleetError)."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}


@dataclass(frozen=True)
class Settings:
    period_s: int = 300  # desired-state window: issued/sequence move at least this often, expiry two windows out
    heartbeat_s: float = 300.0  # lastSeen is written this often for a device that reports (see Gateway.heartbeat_s)
    write_rate: float = 20.0  # EdgeDevice status writes per second, at most
    stale_after_s: float = 900.0


async def _freeze_survivors() -> None:
    """Move what survived the last minute (the fleet view: 10,000 devices make some 300,000 objects) out of the
    cyclic GC's reach: a full collection over them stalls the event loop for 150 to 500 ms, every poll
    waiting meanwhile. Per-request garbage is young and still collected; acyclic garbage by reference count."""
    while True:
        gc.freeze()
        await asyncio.sleep(GC_FREEZE_S)


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True)
class _Bootstrap:
    token_sha256: bytes
    allowed: dict[str, frozenset[str]] | None  # None: any labels


def _allowed_labels(raw: bytes) -> dict[str, frozenset[str]]:
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in data.items()):
        raise ValueError(f"{ALLOWED_LABELS_KEY} must be a JSON object of label key -> list of values")
    return {k: frozenset(v) for k, v in data.items()}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Gateway:
    def __init__(self, backend: Backend, bundles: BundleStore, state_key, settings: Settings = Settings(),
                 clock: Callable[[], datetime] = _now):
        self.backend = backend
        self.bundles = bundles
        self.settings = settings
        self.clock = clock
        self.state = FleetState()
        self._key = state_key
        self._signed: dict[tuple[str, str], tuple[tuple, bytes, str]] = {}  # device -> (inputs, body, etag)
        self._tokens: dict[str, tuple[float, _Bootstrap | None]] = {}  # namespace -> (valid until, its token)
        self.writer = StatusWriter(backend.patch_device_status, settings.write_rate,
                                   on_result=lambda result: self.metrics.status_writes.labels(result).inc())
        self.metrics = FleetMetrics(lambda: self.state.devices.values(), lambda: self.writer.pending,
                                    settings.stale_after_s, self.state.bounded_labels)
        self._stopping = threading.Event()
        self._tasks: list[asyncio.Task] = []
        self.ready = False

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """List devices and models (a restarted gateway rebuilds from them), then follow their changes."""
        loop = asyncio.get_running_loop()
        for plural in (DEVICES, MODELS):
            items, version = await asyncio.to_thread(self.backend.list, plural)
            self._replace(plural, items)
            threading.Thread(target=self._follow, args=(loop, plural, version), name=f"watch-{plural}",
                             daemon=True).start()
        self._tasks.append(asyncio.create_task(self.writer.run(), name="status-writer"))
        self._tasks.append(asyncio.create_task(_freeze_survivors(), name="gc-freeze"))
        self.ready = True

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _replace(self, plural: str, items: list[dict]) -> None:
        if plural == DEVICES:
            self.state.replace_devices(items, time.monotonic())
        else:
            self.state.replace_models(items)

    def _apply(self, plural: str, kind: str, obj: dict) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        if plural == DEVICES:
            if kind == "DELETED":
                self.state.delete_device(namespace, meta["name"])
                self._signed.pop((namespace, meta["name"]), None)
            else:
                self.state.apply_device(obj, time.monotonic())
        elif kind == "DELETED":
            self.state.delete_model(namespace, meta["name"])
        else:
            self.state.apply_model(obj)

    def _follow(self, loop: asyncio.AbstractEventLoop, plural: str, version: str) -> None:
        """A watch thread: hands every change to the event loop; lists again when the watch expired."""
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                for kind, obj in self.backend.watch(plural, version, WATCH_TIMEOUT_S):
                    version = obj["metadata"].get("resourceVersion", version)
                    loop.call_soon_threadsafe(self._apply, plural, kind, obj)
                    if self._stopping.is_set():
                        return
                backoff = 1.0
            except WatchExpired:
                try:
                    items, version = self.backend.list(plural)
                    loop.call_soon_threadsafe(self._replace, plural, items)
                except Exception as e:  # noqa: BLE001 - the API server is away: try again
                    log.warning("list %s: %s", plural, e)
                    self._stopping.wait(backoff)
            except RuntimeError:  # the event loop closed: the gateway is gone
                return
            except Exception as e:  # noqa: BLE001 - a watch that broke is started again, with backoff
                log.warning("watch %s: %s; again in %.0f s", plural, e, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    # --- enrollment and authentication --------------------------------------------------------------------

    async def _bootstrap(self, namespace: str) -> _Bootstrap | None:
        """The namespace's bootstrap token (its sha256) and the labels it may enrol, cached for TOKEN_TTL_S."""
        cached = self._tokens.get(namespace)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        data = await asyncio.to_thread(self.backend.secret_data, namespace, BOOTSTRAP_SECRET)
        bootstrap = None
        if data and BOOTSTRAP_KEY in data:
            try:
                digest = hashlib.sha256(base64.b64decode(data[BOOTSTRAP_KEY], validate=True).strip()).digest()
                allowed = _allowed_labels(base64.b64decode(data[ALLOWED_LABELS_KEY], validate=True)) \
                    if ALLOWED_LABELS_KEY in data else None
                bootstrap = _Bootstrap(digest, allowed)
            except (binascii.Error, ValueError) as e:
                # A binding that does not parse must not turn into "any labels": no enrolment until it is fixed.
                log.error("Secret %s/%s: %s; no device can enrol in %s", namespace, BOOTSTRAP_SECRET, e, namespace)
        if len(self._tokens) >= MAX_TOKEN_NAMESPACES:  # enrolments naming made-up namespaces cannot grow it
            self._tokens.pop(next(iter(self._tokens)))
        self._tokens[namespace] = (time.monotonic() + TOKEN_TTL_S, bootstrap)
        return bootstrap

    async def enroll(self, request: EnrollRequest, token: str | None) -> EnrollResponse:
        bootstrap = await self._bootstrap(request.namespace)
        given = hashlib.sha256((token or "").encode()).digest()
        expected = bootstrap.token_sha256 if bootstrap else None
        if not hmac.compare_digest(given, expected or _NOBODY) or expected is None or not token:
            raise Problem(401, "Unauthorized", f"no valid bootstrap token for namespace {request.namespace} "
                                               f"(Secret {BOOTSTRAP_SECRET}, key {BOOTSTRAP_KEY})")
        bad = [f"{k}={v}" for k, v in request.labels.items()
               if not re.match(LABEL_KEY_PATTERN, k) or len(k) > 317 or not re.match(LABEL_VALUE_PATTERN, v)]
        if bad:
            raise Problem(422, "InvalidLabels", f"not Kubernetes labels: {', '.join(bad[:5])}")
        if bootstrap.allowed is not None:
            refused = [f"{k}={v}" for k, v in sorted(request.labels.items()) if v not in bootstrap.allowed.get(k, ())]
            if refused:
                raise Problem(403, "LabelsNotAllowed", f"this namespace's bootstrap token may not enrol devices "
                                                       f"labelled {', '.join(refused[:5])} (Secret "
                                                       f"{BOOTSTRAP_SECRET}, key {ALLOWED_LABELS_KEY})")
        key = (request.namespace, request.device)
        if key in self.state.devices:
            raise Problem(409, "AlreadyEnrolled", f"EdgeDevice {request.namespace}/{request.device} exists")
        credential = secrets.token_urlsafe(32)
        manifest = {
            "apiVersion": API_VERSION, "kind": "EdgeDevice",
            "metadata": {"name": request.device, "namespace": request.namespace, "labels": dict(request.labels),
                         "annotations": {CREDENTIAL_ANNOTATION: credential_hash(credential)}},
            "spec": {},
        }
        created = await asyncio.to_thread(self.backend.create_device, manifest)
        if created is None:
            raise Problem(409, "AlreadyEnrolled", f"EdgeDevice {request.namespace}/{request.device} exists")
        self.state.apply_device(created, time.monotonic())
        device = self.state.devices[key]
        device.status = device.status.model_copy(update={"agent_version": request.agent_version})
        return EnrollResponse(namespace=request.namespace, device=request.device, credential=credential)

    def authenticate(self, namespace: str, name: str, credential: str | None) -> Device:
        """The device the path names, when the credential is its own: 401 for no or an unknown credential,
        403 for another device's."""
        digest = credential_hash(credential or "")
        owner = self.state.by_credential.get(digest) if credential else None
        device = self.state.devices.get((namespace, name))
        stored = bytes.fromhex(device.credential_sha256) if device and device.credential_sha256 else _NOBODY
        if hmac.compare_digest(bytes.fromhex(digest), stored) and device is not None:
            return device
        if owner is None:
            raise Problem(401, "Unauthorized", "no valid device credential", {"WWW-Authenticate": "Bearer"})
        raise Problem(403, "Forbidden", "a device may read and report only for itself")

    # --- desired state --------------------------------------------------------------------------------------

    async def _refs(self, device: Device, now: datetime) -> tuple[list[BundleRef], list[datetime]]:
        wanted, changed = device_bundles(device.name, device.labels, self.state.models_in(device.namespace))
        refs = []
        for w in wanted:
            try:
                manifest = await self.bundles.manifest(device.namespace, w.model, w.target, w.version, now)
            except StoreUnavailable as e:
                raise Problem(503, "StoreUnavailable", f"the artifact store cannot be read: {e}",
                              {"Retry-After": "30"}) from e
            if manifest is None:  # not built, not verifiable or expired: never named to a device
                continue
            refs.append(BundleRef(model=w.model, target=w.target, version=w.version, manifest_sha256=manifest.sha256,
                                  url=f"v1/devices/{device.namespace}/{device.name}/bundles/{w.model}/{w.target}/"
                                      f"{w.version}", rollback=w.rollback))
        return refs, changed

    async def desired_state(self, device: Device) -> tuple[bytes, str]:
        """The signed desired state and its ETag; signed again only when its inputs changed."""
        now = self.clock()
        refs, changed = await self._refs(device, now)
        issued, expires = validity(now, self.settings.period_s, changed)
        inputs = (issued, expires, tuple(r.model_dump_json() for r in refs))
        cached = self._signed.get(device.key)
        if cached and cached[0] == inputs:
            return cached[1], cached[2]
        document = DesiredState(namespace=device.namespace, device=device.name, sequence=sequence_of(issued),
                                issued=issued, expires=expires, bundles=refs)
        body = signing.sign(document, self._key)
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        self._signed[device.key] = (inputs, body, etag)
        return body, etag

    # --- reports ----------------------------------------------------------------------------------------

    def report(self, device: Device, report: AgentReport) -> None:
        previous = {(t.model, t.target): t.last_error for t in device.status.targets}
        for t in report.targets:
            error = t.last_error
            if error and error != previous.get((t.model, t.target)):
                namespace, model, target, _ = self.state.bounded_labels(device.namespace, t.model, t.target, None)
                self.metrics.install_failures.labels(namespace, model, target, bounded_reason(error.reason)).inc()
        old = device.status
        status = fleet_columns(EdgeDeviceStatus(
            observed_generation=old.observed_generation, conditions=old.conditions,
            agent_version=report.agent_version, last_seen=self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            targets=report.targets))
        device.status = status
        if not unchanged(status, device.written):
            self.writer.submit(device, change=True)
        elif time.monotonic() - device.written_at >= self.heartbeat_s:
            self.writer.submit(device, change=False)

    @property
    def heartbeat_s(self) -> float:
        """--heartbeat, stretched for a large fleet so that heartbeats take at most half the write budget
        (10,000 devices at 20 writes/s: every 1,000 s): changes always find room."""
        return max(self.settings.heartbeat_s, 2 * len(self.state.devices) / self.settings.write_rate)

    # --- bundles ---------------------------------------------------------------------------------------------

    async def bundle_file(self, device: Device, model: str, target: str, version: int,
                          path: str) -> bytes | Path | str:
        """The manifest's verified bytes, or a listed file (local path or presigned URL), of a bundle the device's
        desired state names (or the version it falls back to); 404 for anything else, so a device cannot probe
        for other bundles. The manifest comes from memory: the bytes that were verified, never a file that may
        have been swapped on disk since."""
        now = self.clock()
        wanted, _ = device_bundles(device.name, device.labels, self.state.models_in(device.namespace))
        allowed = {v for w in wanted if (w.model, w.target) == (model, target) for v in (w.version, w.previous) if v}
        not_found = Problem(404, "NotFound", f"no bundle {model}/{target} version {version} for this device")
        if version not in allowed:
            raise not_found
        try:
            manifest = await self.bundles.manifest(device.namespace, model, target, version, now)
        except StoreUnavailable as e:
            raise Problem(503, "StoreUnavailable", str(e), {"Retry-After": "30"}) from e
        if manifest is None or (path != MANIFEST_FILE and path not in manifest.files):
            raise not_found
        if path == MANIFEST_FILE:
            return manifest.envelope
        local = self.bundles.local_file(device.namespace, model, target, version, path)
        if local is None:
            return self.bundles.presigned_url(device.namespace, model, target, version, path)
        if not local.is_file():
            raise not_found
        return local
