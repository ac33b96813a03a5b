"""kopf handlers for CompressedModels and their worker Jobs.

Level-based: the resource's watch events and its Jobs' events call one reconcile, which looks at
the resource as it is. No create/update/delete handlers, so kopf keeps no progress or diff-base
annotations and adds no finalizer of its own: the operator's only writes to the resource are its
status and the `modelfleet.io/cleanup` finalizer, which the reconcile manages (domain/lifecycle.py).
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import kopf

from modelfleet.api.compressedmodel import GROUP, VERSION
from modelfleet.controller import echoes_own_write, reconcile, settings_from_env
from modelfleet.domain.lifecycle import needs_reconcile
from modelfleet.domain.plan import MANAGED_BY, MODEL_LABEL
from modelfleet.errors import RetryableError
from modelfleet.k8s import Cluster

RESOURCE = (GROUP, VERSION, "compressedmodels")
RETRY_DELAYS = (1, 5, 15)  # event handlers are not retried by kopf; a store briefly unreachable gets these
RECONCILE_THREADS = 48  # reconciles wait on the API server, not the CPU; more in flight keeps a burst moving
_state: dict = {}


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the body) for every watch event; level-based handlers
    never read it, and under a burst the copies cost the operator a tenth of its CPU."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.enabled = False  # our own Events carry the story; kopf's would repeat it
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    _state["cluster"] = Cluster()
    _state["settings"] = settings_from_env()
    _state["threads"] = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="reconcile")


@kopf.index("batch", "v1", "jobs", labels=MANAGED_BY)
async def model_jobs(namespace: str, labels, body, **_) -> dict:
    """Our Jobs by resource, from the Job watch: a reconcile reads them here instead of a LIST per call.

    kopf fills every index before any handler runs, so a restarted operator sees all existing Jobs.
    Just after a create the index may lag; a second create then gets 409 and changes nothing.
    """
    return {(namespace, labels[MODEL_LABEL]): dict(body)}


# The handlers are async so that the many events needing nothing (a Job's progress, our own writes
# coming back) are dismissed on the event loop; only a reconcile goes to a thread.


@kopf.on.event(*RESOURCE)
async def model_changed(body, type, namespace: str, name: str, model_jobs: kopf.Index, **_) -> None:
    if needs_reconcile(type, body) and not echoes_own_write(body):
        await _in_thread(_reconcile_retrying, namespace, name, model_jobs, dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
async def job_changed(body, namespace: str, type: str, model_jobs: kopf.Index, **_) -> None:
    finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                   for c in (body.get("status") or {}).get("conditions", []))
    if finished or type == "DELETED":  # deleted: by hand (re-created) or after its TTL (the status keeps the outcome)
        await _in_thread(_reconcile_retrying, namespace, body["metadata"]["labels"][MODEL_LABEL], model_jobs)


async def _in_thread(function, *args) -> None:
    await asyncio.get_running_loop().run_in_executor(_state["threads"], function, *args)


def _reconcile_retrying(namespace: str, name: str, index: kopf.Index, body: dict | None = None) -> None:
    for delay in (*RETRY_DELAYS, None):
        try:
            jobs = list(index.get((namespace, name), []))
            reconcile(_state["cluster"], _state["settings"], namespace, name, body, jobs)
            return
        except RetryableError:
            if delay is None:
                raise
            time.sleep(delay)
            body = None  # read it again
