"""Where the gateway reads and writes the fleet: the Kubernetes API, or an in-memory stand-in for it.

Both speak plain Kubernetes JSON (dicts) and are synchronous: the gateway calls them from threads. The
in-memory `InMemoryApiServer` is a small API server of its own (objects, resourceVersions, watches) that
counts every write, for unit tests and `bench/fleet.py`.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Protocol

__all__ = ["DEVICES", "MODELS", "Backend", "InMemoryApiServer", "KubernetesBackend", "WatchExpired"]

DEVICES, MODELS = "edgedevices", "compressedmodels"


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Backend(Protocol):
    def list(self, plural: str) -> tuple[list[dict], str]:
        """Every object of a kind in every namespace, and the list's resourceVersion."""

    def watch(self, plural: str, resource_version: str, timeout_s: int) -> Iterator[tuple[str, dict]]:
        """(ADDED | MODIFIED | DELETED, object) after `resource_version`, until `timeout_s` passed; raises
        WatchExpired when that version is gone."""

    def create_device(self, manifest: dict) -> dict | None:
        """The created EdgeDevice, or None when one of that name exists."""

    def patch_device_status(self, namespace: str, name: str, status: dict) -> None:
        """Merge `status` into the EdgeDevice's status (the status subresource); LookupError when it is gone."""

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (values base64), or None when it does not exist."""


class KubernetesBackend:
    """The real API server, through `modelfleet.k8s.client.Cluster`."""

    def __init__(self, cluster=None):
        from modelfleet.k8s.client import Cluster

        self._cluster = cluster or Cluster()

    def list(self, plural: str) -> tuple[list[dict], str]:
        return self._cluster.list_all(plural)

    def watch(self, plural: str, resource_version: str, timeout_s: int) -> Iterator[tuple[str, dict]]:
        from modelfleet.errors import KubernetesApiError

        try:
            yield from self._cluster.watch_all(plural, resource_version, timeout_s)
        except KubernetesApiError as e:
            if e.status == 410:
                raise WatchExpired(str(e)) from e
            raise

    def create_device(self, manifest: dict) -> dict | None:
        return self._cluster.create_edge_device(manifest)

    def patch_device_status(self, namespace: str, name: str, status: dict) -> None:
        from modelfleet.errors import KubernetesApiError

        try:
            self._cluster.patch_edge_device_status(namespace, name, status)
        except KubernetesApiError as e:
            if e.status == 404:  # deleted meanwhile: nothing to retry
                raise LookupError(str(e)) from e
            raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self._cluster.secret_data(namespace, name)


def _merge(target: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class InMemoryApiServer:
    """An in-memory stand-in for the API server: objects by kind, a resourceVersion per change, watches, and
    a count of the writes the gateway made (`writes`, `status_writes`)."""

    _HISTORY = 10_000  # events kept for watches; an older resourceVersion gets WatchExpired, as a real one would

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], dict]] = {DEVICES: {}, MODELS: {}}
        self._secrets: dict[tuple[str, str], dict[str, str]] = {}
        self._events: list[tuple[int, str, str, dict]] = []  # (resourceVersion, plural, type, object)
        self._version = 0
        self.creates = 0
        self.status_writes = 0

    @property
    def writes(self) -> int:
        """Writes the gateway made: EdgeDevice creates and status patches."""
        return self.creates + self.status_writes

    def _record(self, plural: str, kind: str, obj: dict) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._events.append((self._version, plural, kind, copy.deepcopy(obj)))
        del self._events[:-self._HISTORY]
        self._lock.notify_all()

    # --- what tests and the bench do as the operator or an administrator would ---

    def put(self, plural: str, obj: dict) -> dict:
        """Create or replace an object (a CompressedModel with its status, an EdgeDevice)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self._lock:
            key = (meta["namespace"], meta["name"])
            kind = "MODIFIED" if key in self._objects[plural] else "ADDED"
            meta.setdefault("creationTimestamp", _now())
            self._objects[plural][key] = obj
            self._record(plural, kind, obj)
            return copy.deepcopy(obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects[plural].pop((namespace, name), None)
            if obj is not None:
                self._record(plural, "DELETED", obj)

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._objects[plural].get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def dump(self, plural: str) -> bytes:
        """The list as JSON, as the API server would answer it (serialised without copying first)."""
        with self._lock:
            return json.dumps({"items": list(self._objects[plural].values()),
                               "metadata": {"resourceVersion": str(self._version)}}).encode()

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self._lock:
            self._secrets[(namespace, name)] = dict(data)

    # --- Backend ---

    def list(self, plural: str) -> tuple[list[dict], str]:
        with self._lock:
            return [copy.deepcopy(o) for o in self._objects[plural].values()], str(self._version)

    def watch(self, plural: str, resource_version: str, timeout_s: int) -> Iterator[tuple[str, dict]]:
        seen = int(resource_version or 0)
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            while not deadline.is_set():
                with self._lock:
                    if self._events and seen < self._events[0][0] - 1:
                        raise WatchExpired(f"resourceVersion {seen} is gone")
                    if self._version == seen:
                        self._lock.wait(timeout=0.5)
                    fresh = [e for e in self._events[-(self._version - seen):] if e[0] > seen] \
                        if self._version > seen else []
                for version, kind_plural, kind, obj in fresh:
                    seen = version
                    if kind_plural == plural:
                        yield kind, copy.deepcopy(obj)
        finally:
            timer.cancel()

    def create_device(self, manifest: dict) -> dict | None:
        obj = copy.deepcopy(manifest)
        obj.pop("status", None)  # the status subresource: a create ignores it
        meta = obj["metadata"]
        with self._lock:
            key = (meta["namespace"], meta["name"])
            if key in self._objects[DEVICES]:
                return None
            self.creates += 1
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            self._objects[DEVICES][key] = obj
            self._record(DEVICES, "ADDED", obj)
            return copy.deepcopy(obj)

    def patch_device_status(self, namespace: str, name: str, status: dict) -> None:
        with self._lock:
            obj = self._objects[DEVICES].get((namespace, name))
            if obj is None:
                raise LookupError(f"edgedevices {namespace}/{name} not found")
            self.status_writes += 1
            obj["status"] = _merge(obj.get("status") or {}, status)
            self._record(DEVICES, "MODIFIED", obj)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        with self._lock:
            data = self._secrets.get((namespace, name))
            return dict(data) if data is not None else None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

