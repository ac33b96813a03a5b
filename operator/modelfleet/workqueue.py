"""Requeue with backoff and periodic resync for the operator's reconciles, on kopf's event loop.

What controller-runtime's rate-limited workqueue and SyncPeriod give Go operators: a reconcile that
fails, whatever the error, runs again after an exponential backoff (per key, capped, at most one retry
pending per key), and every known resource is reconciled again every resync period, so nothing that
was missed or went wrong in between stays unnoticed.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelfleet.domain.requeue import backoff_seconds

Key = tuple[str, str]  # (namespace, name)
log = logging.getLogger("modelfleet.workqueue")


@dataclass(frozen=True)
class QueueSettings:
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    resync_seconds: float = 600.0


class WorkQueue:
    """Runs `reconcile(key, body)`; on an exception, `report(key, error, failures, delay)` says so (best effort)
    and the key is retried after the backoff. A success forgets the key's failures."""

    def __init__(self, reconcile: Callable[[Key, dict | None], Awaitable[None]],
                 report: Callable[[Key, Exception, int, float], Awaitable[None]], settings: QueueSettings):
        self._reconcile, self._report, self.settings = reconcile, report, settings
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self.known: set[Key] = set()

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Key) -> None:
        """The resource is gone: no retry, no resync."""
        self.known.discard(key)
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    async def process(self, key: Key, body: dict | None = None) -> None:
        timer = self._timers.pop(key, None)  # this run stands for any retry still pending
        if timer:
            timer.cancel()
        try:
            await self._reconcile(key, body)
        except Exception as error:  # noqa: BLE001 - every failure is requeued, never dropped
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = backoff_seconds(failures, self.settings.base_seconds, self.settings.max_seconds)
            log.warning("reconcile of %s/%s failed (%d in a row), again in %.0f s: %s: %s",
                        *key, failures, delay, type(error).__name__, error)
            self.add_after(key, delay)
            try:
                await self._report(key, error, failures, delay)
            except Exception as second:  # noqa: BLE001 - the status cannot be written now; the retry still comes
                log.warning("could not record the failure on %s/%s: %s", *key, second)
        else:
            self._failures.pop(key, None)

    def add_after(self, key: Key, delay: float) -> None:
        """Reconcile `key` in `delay` seconds; a retry already due sooner stands."""
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending and pending.when() <= loop.time() + delay:
            return
        if pending:
            pending.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self.process(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync_forever(self) -> None:
        """Every period, each known resource once more, spread over a tenth of the period so that a resync of
        thousands of resources is not one burst on the API server."""
        period = self.settings.resync_seconds
        while True:
            await asyncio.sleep(period * random.uniform(0.9, 1.0))  # jitter: replicas of a fleet don't align
            keys = sorted(self.known)
            log.info("resync of %d resources", len(keys))
            for index, key in enumerate(keys):
                self.add_after(key, period / 10 * index / max(len(keys), 1))
