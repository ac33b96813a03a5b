"""Writes device reports to EdgeDevice status: one write per device at a time, rate-limited, changes first.

A report marks its device dirty; the writer later writes whatever the device's latest status is then, so ten
reports between two writes cost one write. Changes (a new version, health, an error) go before heartbeats
(lastSeen only). The rate limit keeps the API server's load flat however many devices report at once: a
burst of changes queues up instead (visible as `modelfleet_gateway_status_write_queue`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from modelfleet.api.edgedevice import EdgeDeviceStatus
from modelfleet.fleet.state import Device

__all__ = ["StatusWriter", "status_patch", "unchanged"]

log = logging.getLogger("modelfleet.fleet")
_RETRY_S = 5.0
# Top-level status fields the gateway owns; a value that became None is written as null (merge patch: remove).
_OWNED = ("agentVersion", "lastSeen", "targets", "health", "installed", "p95Ms")


def unchanged(a: EdgeDeviceStatus | None, b: EdgeDeviceStatus | None) -> bool:
    """Equal but for lastSeen (and the operator's conditions)."""
    if a is None or b is None:
        return a is b
    ignore = {"last_seen": None, "conditions": [], "observed_generation": None}
    return a.model_copy(update=ignore) == b.model_copy(update=ignore)


def status_patch(status: EdgeDeviceStatus) -> dict:
    wire = status.to_wire()
    return {key: wire.get(key) for key in _OWNED}


class StatusWriter:
    def __init__(self, write: Callable[[str, str, dict], None], rate_per_s: float,
                 on_result: Callable[[str], None] = lambda result: None):
        self._write = write
        self._interval = 1.0 / rate_per_s
        self._on_result = on_result
        self._changes: dict[tuple[str, str], Device] = {}
        self._heartbeats: dict[tuple[str, str], Device] = {}
        self._wake = asyncio.Event()
        self._writing = 0

    @property
    def pending(self) -> int:
        """Writes queued or in flight."""
        return len(self._changes) + len(self._heartbeats) + self._writing

    def submit(self, device: Device, change: bool) -> None:
        if change:
            self._heartbeats.pop(device.key, None)
            self._changes[device.key] = device
        elif device.key not in self._changes:
            self._heartbeats[device.key] = device
        self._wake.set()

    def _next(self) -> tuple[Device | None, bool]:
        for queue, change in ((self._changes, True), (self._heartbeats, False)):
            if queue:
                return queue.pop(next(iter(queue))), change
        return None, False

    async def run(self) -> None:
        next_slot = time.monotonic()
        while True:
            device, change = self._next()
            if device is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if change and unchanged(device.status, device.written):
                continue  # queued again while its change was being written
            delay = next_slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_slot = max(next_slot, time.monotonic()) + self._interval
            status = device.status  # the latest report, not the one that queued it
            self._writing = 1
            try:
                await asyncio.to_thread(self._write, device.namespace, device.name, status_patch(status))
            except Exception as e:  # the API server refused or is away: retry later, as a change
                log.warning("status of EdgeDevice %s/%s not written: %s", device.namespace, device.name, e)
                self._on_result("Failed")
                if not isinstance(e, LookupError):  # LookupError: deleted meanwhile
                    await asyncio.sleep(_RETRY_S)
                    self._changes.setdefault(device.key, device)
                continue
            finally:
                self._writing = 0
            device.written, device.written_at = status, time.monotonic()
            self._on_result("Written")
