"""The gateway's in-memory view of the fleet, and the pure functions that turn it into a device's desired state.

Devices come from EdgeDevices (labels, the credential's hash, the last status), models from CompressedModels
(each edge target's deviceSelector and `status.rollouts`). Watches keep the view current, so a poll reads
memory only. Everything here runs on the event loop's thread: the watch threads hand their events over with
`loop.call_soon_threadsafe`.

Determinism: every replica, and a restarted gateway, must sign the same bytes for the same inputs (ETags agree,
agents never see one sequence with two contents). So `validity` derives issued, sequence and expires from the
time window and the rollout entries a device reads, never from a counter or the moment of the request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pydantic import ValidationError

from modelfleet.api.compressedmodel import EdgeRolloutStatus
from modelfleet.api.edgedevice import EdgeDeviceStatus
from modelfleet.domain.edge import selects
from modelfleet.domain.rollout import desired_bundle, state_from

__all__ = ["CREDENTIAL_ANNOTATION", "OTHER", "Device", "LabelBounds", "EdgeTargetView", "FleetState", "ModelView", "Wanted",
           "device_bundles", "sequence_of", "validity"]

CREDENTIAL_ANNOTATION = "modelfleet.io/credential-sha256"
OTHER = "Other"  # a label value for anything a device reported that the gateway does not know
log = logging.getLogger("modelfleet.fleet")
# (namespace, model, target, version or None) as reported -> the label values (namespace, model, target, version)
LabelBounds = Callable[[str, str, str, int | None], tuple[str, str, str, str]]


@dataclass
class Device:
    namespace: str
    name: str
    labels: dict[str, str]
    credential_sha256: str
    enrolled_at: datetime
    status: EdgeDeviceStatus = field(default_factory=EdgeDeviceStatus)  # the last report (or the stored status)
    written: EdgeDeviceStatus | None = None  # what the API server holds, as far as this gateway knows
    written_at: float = 0.0  # monotonic time of the last write (or of the restart that read it)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True)
class EdgeTargetView:
    name: str
    selector: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ModelView:
    namespace: str
    name: str
    targets: tuple[EdgeTargetView, ...]
    rollouts: dict[str, EdgeRolloutStatus]  # by target name


@dataclass(frozen=True)
class Wanted:
    """One bundle a device should run (before its manifest is looked up)."""

    model: str
    target: str
    version: int
    rollback: bool
    previous: int | None  # the rollout's fallback version: a device may download it too


# --- pure ---------------------------------------------------------------------------------------------------


def _changed_at(entry: EdgeRolloutStatus) -> datetime | None:
    # changedAt moves on every change a device can see, to the millisecond (the sequence's unit); an entry
    # written before it existed falls back to its last wave's opening.
    stamp = entry.changed_at or (entry.wave_opened_at[-1] if entry.wave_opened_at else None)
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp).astimezone(timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def sequence_of(issued: datetime) -> int:
    """A desired state's sequence: its issue time in Unix milliseconds (exact: issued is whole milliseconds)."""
    return int(issued.timestamp()) * 1000 + issued.microsecond // 1000


def device_bundles(device: str, labels: dict[str, str],
                   models: Iterable[ModelView]) -> tuple[list[Wanted], list[datetime]]:
    """The bundles a device should run, by model and target name, and the change times of the rollout entries
    it read (they bound the desired state's issue time from below)."""
    wanted, changed = [], []
    for model in sorted(models, key=lambda m: m.name):
        for target in model.targets:
            entry = model.rollouts.get(target.name)
            if entry is None or not selects(dict(target.selector), labels):
                continue
            moment = _changed_at(entry)
            if moment:
                changed.append(moment)
            version = desired_bundle(device, state_from(entry))
            if version is None:
                continue
            rollback = entry.rolled_back and version != entry.version
            wanted.append(Wanted(model.name, target.name, version, rollback, entry.previous_version))
    return wanted, changed


def validity(now: datetime, period_s: int, changed: Iterable[datetime]) -> tuple[datetime, datetime]:
    """(issued, expires): issued is the start of the current window of `period_s` seconds, or the latest
    change a device reads when later; it expires two windows after the window's start (and never less than
    one window after issued, should the operator's clock run ahead)."""
    seconds = int(now.timestamp())
    epoch = datetime.fromtimestamp(seconds - seconds % period_s, timezone.utc)
    issued = max([epoch, *changed])
    expires = max(epoch + timedelta(seconds=2 * period_s), issued + timedelta(seconds=period_s))
    return issued, expires


# --- the view -----------------------------------------------------------------------------------------------


def _status(raw: dict | None) -> EdgeDeviceStatus | None:
    if not raw:
        return None
    try:
        return EdgeDeviceStatus.model_validate(raw)
    except ValidationError as e:
        log.warning("ignoring an EdgeDevice status that does not parse: %s", e.errors()[0]["msg"])
        return None


def _model_view(obj: dict) -> ModelView:
    meta = obj["metadata"]
    edge = ((obj.get("spec") or {}).get("targets") or {}).get("edge") or []
    targets = tuple(EdgeTargetView(t["name"], tuple(sorted((t.get("deviceSelector") or {}).items())))
                    for t in edge if isinstance(t, dict) and t.get("name"))
    rollouts = {}
    for raw in (obj.get("status") or {}).get("rollouts") or []:
        try:
            entry = EdgeRolloutStatus.model_validate(raw)
        except ValidationError as e:
            log.warning("%s/%s: ignoring a rollout entry that does not parse: %s", meta.get("namespace"),
                        meta["name"], e.errors()[0]["msg"])
            continue
        rollouts[entry.target] = entry
    return ModelView(meta.get("namespace") or "default", meta["name"], targets, rollouts)


def _credential(meta: dict) -> str:
    """The credential's sha256 from the annotation; anything but 64 hex digits matches no credential."""
    value = (meta.get("annotations") or {}).get(CREDENTIAL_ANNOTATION, "")
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else ""


def _creation(meta: dict) -> datetime:
    stamp = meta.get("creationTimestamp")
    if not stamp:
        return datetime.now(timezone.utc)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class FleetState:
    """Devices by (namespace, name), their credential hashes, and models by namespace."""

    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], Device] = {}
        self.by_credential: dict[str, tuple[str, str]] = {}
        self.models: dict[str, dict[str, ModelView]] = {}

    def models_in(self, namespace: str) -> Iterator[ModelView]:
        return iter(self.models.get(namespace, {}).values())

    def bounded_labels(self, namespace: str, model: str, target: str,
                       version: int | None) -> tuple[str, str, str, str]:
        """Metric labels for what a device reported about a target: the model and target when the namespace's
        CompressedModels have them, the version when that target's rollout names it (its version or the one it
        falls back to); anything else is Other. A device cannot create series by making names up."""
        view = self.models.get(namespace, {}).get(model)
        if view is None or not any(t.name == target for t in view.targets):
            return namespace, OTHER, OTHER, "" if version is None else OTHER
        entry = view.rollouts.get(target)
        known = {entry.version, entry.previous_version} if entry else set()
        return namespace, model, target, "" if version is None else str(version) if version in known else OTHER

    def add_device(self, device: Device) -> None:
        old = self.devices.get(device.key)
        if old is not None and old.credential_sha256 != device.credential_sha256:
            self.by_credential.pop(old.credential_sha256, None)
        self.devices[device.key] = device
        if device.credential_sha256:
            self.by_credential[device.credential_sha256] = device.key

    def apply_device(self, obj: dict, now_monotonic: float) -> None:
        """An EdgeDevice from a list or a watch: labels and credential, and the status the API server holds.

        Our own report is kept when it is newer than that status (another replica, or our own earlier write)."""
        meta = obj["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        stored = _status(obj.get("status"))
        credential = _credential(meta)
        device = self.devices.get(key)
        if device is None:
            device = Device(key[0], key[1], dict(meta.get("labels") or {}), credential, _creation(meta),
                            stored or EdgeDeviceStatus(), stored, now_monotonic)
            self.add_device(device)
            return
        device.labels = dict(meta.get("labels") or {})
        if credential != device.credential_sha256:
            self.by_credential.pop(device.credential_sha256, None)
            device.credential_sha256 = credential
            if credential:
                self.by_credential[credential] = key
        if stored is not None:
            device.written = stored
            if (stored.last_seen or "") > (device.status.last_seen or ""):
                device.status = stored

    def delete_device(self, namespace: str, name: str) -> None:
        device = self.devices.pop((namespace, name), None)
        if device is not None:
            self.by_credential.pop(device.credential_sha256, None)

    def apply_model(self, obj: dict) -> None:
        view = _model_view(obj)
        self.models.setdefault(view.namespace, {})[view.name] = view

    def delete_model(self, namespace: str, name: str) -> None:
        self.models.get(namespace, {}).pop(name, None)

    def replace_devices(self, items: list[dict], now_monotonic: float) -> None:
        """A fresh list (start, or a watch that expired): devices no longer listed are gone."""
        listed = set()
        for obj in items:
            self.apply_device(obj, now_monotonic)
            listed.add((obj["metadata"].get("namespace") or "default", obj["metadata"]["name"]))
        for key in [k for k in self.devices if k not in listed]:
            self.delete_device(*key)

    def replace_models(self, items: list[dict]) -> None:
        self.models = {}
        for obj in items:
            self.apply_model(obj)
