"""The operator's requeue and resync (modelfleet.workqueue) on a real asyncio loop, with short delays.

The cluster tests prove the same on a real API server (a quota that refuses Jobs, a policy that refuses
deletions); these pin the queue's own rules: every error retried with backoff, one retry pending per
key, success forgets, resync visits every known resource.
"""

import asyncio

import pytest

from modelfleet.workqueue import QueueSettings, WorkQueue

FAST = QueueSettings(base_seconds=0.01, max_seconds=0.04, resync_seconds=0.2)


class Recorder:
    """A reconcile that fails the first `failures` times for each key, and a report that records failures."""

    def __init__(self, failures: int, error: Exception = RuntimeError("API answered 500")):
        self.failures, self.error = failures, error
        self.calls: list[tuple] = []
        self.reports: list[tuple] = []
        self.done = asyncio.Event()

    async def reconcile(self, key, body) -> None:
        self.calls.append((key, body))
        if sum(1 for k, _ in self.calls if k == key) <= self.failures:
            raise self.error
        self.done.set()

    async def report(self, key, error, failures, delay) -> None:
        self.reports.append((key, str(error), failures, delay))


async def wait(event: asyncio.Event, timeout: float = 5) -> None:
    await asyncio.wait_for(event.wait(), timeout)


@pytest.mark.parametrize("error", [RuntimeError("API answered 500"), ValueError("odd termination message"),
                                   KeyError("status")])
def test_any_failed_reconcile_is_retried_with_growing_backoff_until_it_succeeds(error):
    async def scenario():
        recorder = Recorder(failures=4, error=error)
        queue = WorkQueue(recorder.reconcile, recorder.report, FAST)
        await queue.process(("ns", "m"), {"metadata": {}})
        await wait(recorder.done)
        assert len(recorder.calls) == 5 and queue.failures(("ns", "m")) == 0  # success forgets
        assert [(f, d) for _, _, f, d in recorder.reports] == [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.04)]
        assert all(message == str(error) for _, message, _, _ in recorder.reports)
        assert recorder.calls[1][1] is None  # a retry reads the resource afresh

    asyncio.run(scenario())


def test_one_retry_is_pending_per_key_however_many_failures_arrive():
    async def scenario():
        recorder = Recorder(failures=3)
        queue = WorkQueue(recorder.reconcile, recorder.report, QueueSettings(base_seconds=0.05, max_seconds=0.05))
        # three events for one key fail at once: one retry comes, not three
        await asyncio.gather(*(queue.process(("ns", "m")) for _ in range(3)))
        await wait(recorder.done)
        await asyncio.sleep(0.15)  # time for any duplicate retry to show itself
        assert len(recorder.calls) == 4

    asyncio.run(scenario())


def test_a_report_that_fails_does_not_stop_the_retry():
    async def scenario():
        recorder = Recorder(failures=1)

        async def broken_report(*_):
            raise ConnectionError("status patch refused too")

        queue = WorkQueue(recorder.reconcile, broken_report, FAST)
        await queue.process(("ns", "m"))
        await wait(recorder.done)
        assert len(recorder.calls) == 2

    asyncio.run(scenario())


def test_a_forgotten_key_is_neither_retried_nor_resynced():
    async def scenario():
        recorder = Recorder(failures=100)
        queue = WorkQueue(recorder.reconcile, recorder.report, QueueSettings(base_seconds=0.05, resync_seconds=0.05))
        queue.known.add(("ns", "gone"))
        await queue.process(("ns", "gone"))
        queue.forget(("ns", "gone"))
        resync = asyncio.get_running_loop().create_task(queue.resync_forever())
        await asyncio.sleep(0.3)
        resync.cancel()
        assert len(recorder.calls) == 1

    asyncio.run(scenario())


def test_resync_reconciles_every_known_resource_each_period():
    async def scenario():
        recorder = Recorder(failures=0)
        queue = WorkQueue(recorder.reconcile, recorder.report, FAST)
        queue.known.update({("a", "one"), ("b", "two"), ("b", "three")})
        resync = asyncio.get_running_loop().create_task(queue.resync_forever())
        while len({k for k, _ in recorder.calls}) < 3 or len(recorder.calls) < 6:  # two rounds
            await asyncio.sleep(0.01)
        resync.cancel()
        assert {k for k, _ in recorder.calls} == queue.known

    asyncio.run(asyncio.wait_for(scenario(), 10))
