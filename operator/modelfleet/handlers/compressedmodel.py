"""kopf handlers for CompressedModels, their worker Jobs and the Jobs' pods.

Level-based: the resource's watch events, its Jobs' and stuck pods' events, retries and the periodic
resync all call one reconcile, which looks at the resource as it is. No create/update/delete handlers,
so kopf keeps no progress or diff-base annotations and adds no finalizer of its own: the operator's
only writes to the resource are its status and the `modelfleet.io/cleanup` finalizer, which the
reconcile manages (domain/lifecycle.py). Failed reconciles are requeued with backoff (workqueue.py).
"""

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import kopf

from modelfleet import metrics
from modelfleet.api.compressedmodel import GROUP, VERSION
from modelfleet.controller import echoes_own_write, reconcile, record_failure, settings_from_env
from modelfleet.domain.lifecycle import needs_reconcile
from modelfleet.domain.plan import MANAGED_BY, MODEL_LABEL
from modelfleet.domain.pods import UNSCHEDULABLE_GRACE_SECONDS, pod_problem, surfaces_in
from modelfleet.k8s import Cluster
from modelfleet.workqueue import Key, QueueSettings, WorkQueue

RESOURCE = (GROUP, VERSION, "compressedmodels")
RECONCILE_THREADS = 48  # reconciles wait on the API server, not the CPU; more in flight keeps a burst moving
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Device reports come in bursts (the gateway batches its writes): a model's rollout looks at them at most this often.
DEVICE_DEBOUNCE_SECONDS = 2.0
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


def queue_settings_from_env() -> QueueSettings:
    return QueueSettings(base_seconds=float(os.environ.get("MODELFLEET_REQUEUE_BASE_SECONDS", "1")),
                         max_seconds=float(os.environ.get("MODELFLEET_REQUEUE_MAX_SECONDS", "300")),
                         resync_seconds=60 * float(os.environ.get("MODELFLEET_RESYNC_MINUTES", "10")))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.enabled = False  # our own Events carry the story; kopf's would repeat it
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    _state["cluster"] = Cluster()
    _state["settings"] = settings_from_env()
    _state["grace"] = float(os.environ.get("MODELFLEET_UNSCHEDULABLE_GRACE_SECONDS", UNSCHEDULABLE_GRACE_SECONDS))
    _state["threads"] = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="reconcile")
    _state["edge_models"] = set()
    _state["queue"] = queue = WorkQueue(_reconcile, _record_failure, queue_settings_from_env())
    _state["resync"] = asyncio.get_running_loop().create_task(queue.resync_forever())


@kopf.on.cleanup()
async def stop(**_) -> None:
    _state["resync"].cancel()


@kopf.index("batch", "v1", "jobs", labels=MANAGED_BY)
async def model_jobs(namespace: str, labels, body, **_) -> dict:
    """Our Jobs by resource, from the Job watch: a reconcile reads them here instead of a LIST per call.

    kopf fills every index before any handler runs, so a restarted operator sees all existing Jobs.
    Just after a create the index may lag; a second create then gets 409 and changes nothing.
    """
    return {(namespace, labels[MODEL_LABEL]): dict(body)}


@kopf.index("", "v1", "pods", labels=MANAGED_BY)
async def stuck_pods(namespace: str, labels, body, **_) -> dict:
    """Why our worker pods cannot start (unschedulable, image, missing Secret), by resource: only the stuck ones."""
    problem = pod_problem(dict(body))
    return {(namespace, labels[MODEL_LABEL]): (labels.get(JOB_NAME_LABEL), problem)} if problem else {}


@kopf.index(GROUP, VERSION, "edgedevices")
async def edge_devices(namespace: str, body, **_) -> dict:
    """The EdgeDevices by namespace, from their watch: rollouts read the devices' reports here."""
    return {namespace: dict(body)}


# The handlers are async so that the many events needing nothing (a Job's progress, our own writes
# coming back, pods starting normally) are dismissed on the event loop; only a reconcile goes to a thread.


@kopf.on.event(*RESOURCE)
async def model_changed(body, type, namespace: str, name: str, model_jobs: kopf.Index, stuck_pods: kopf.Index,
                        edge_devices: kopf.Index, **_) -> None:
    _state["indexes"] = model_jobs, stuck_pods  # live views: retries and resyncs read them too
    _state["devices"] = edge_devices
    queue: WorkQueue = _state["queue"]
    if type == "DELETED":
        queue.forget((namespace, name))
        metrics.forget_model(namespace, name)
        return
    queue.known.add((namespace, name))
    _note_edge_model((namespace, name), body)
    if needs_reconcile(type, body) and not echoes_own_write(body):
        await queue.process((namespace, name), dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
async def job_changed(body, namespace: str, type: str, model_jobs: kopf.Index, stuck_pods: kopf.Index, **_) -> None:
    _state["indexes"] = model_jobs, stuck_pods
    finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                   for c in (body.get("status") or {}).get("conditions", []))
    if finished or type == "DELETED":  # deleted: by hand (re-created) or after its TTL (the status keeps the outcome)
        await _state["queue"].process((namespace, body["metadata"]["labels"][MODEL_LABEL]))


@kopf.on.event("", "v1", "pods", labels=MANAGED_BY)
async def pod_changed(body, namespace: str, type: str, model_jobs: kopf.Index, stuck_pods: kopf.Index, **_) -> None:
    """A pod that gets stuck, or gets going again, changes what the status says (within seconds)."""
    _state["indexes"] = model_jobs, stuck_pods
    uid, seen = body["metadata"]["uid"], _state.setdefault("pod_problems", {})
    problem = None if type == "DELETED" else pod_problem(dict(body))
    if problem != seen.get(uid):
        if problem is None:
            seen.pop(uid, None)
        else:
            seen[uid] = problem
        key = (namespace, body["metadata"]["labels"][MODEL_LABEL])
        wait = surfaces_in(problem, time.time(), _state["grace"]) if problem else 0.0
        if wait:  # still within its grace period: look again when it ends
            _state["queue"].add_after(key, wait)
        else:
            await _state["queue"].process(key)


@kopf.on.event(GROUP, VERSION, "edgedevices")
async def device_changed(namespace: str, edge_devices: kopf.Index, **_) -> None:
    """A device enrolled, reported or left: the namespace's models with edge targets look again, soon."""
    _state["devices"] = edge_devices
    queue: WorkQueue = _state["queue"]
    for key in [k for k in queue.known if k[0] == namespace and k in _state["edge_models"]]:
        queue.add_after(key, DEVICE_DEBOUNCE_SECONDS)


async def _reconcile(key: Key, body: dict | None) -> None:
    jobs_index, pods_index = _state["indexes"]
    jobs = list(jobs_index.get(key, []))
    now = time.time()
    problems = {job: (problem.reason, problem.message) for job, problem in pods_index.get(key, [])
                if not surfaces_in(problem, now, _state["grace"])}
    devices_index = _state.get("devices")
    devices = list(devices_index.get(key[0], [])) if devices_index is not None else None
    if body is not None:
        _note_edge_model(key, body)
    look_in = await _in_thread(reconcile, _state["cluster"], _state["settings"], *key, body, jobs, problems, devices)
    if look_in is not None:  # a rollout's bake ends or a device times out then
        _state["queue"].add_after(key, look_in)


def _note_edge_model(key: Key, body: dict) -> None:
    """Which models device events concern: those with edge targets."""
    if ((body.get("spec") or {}).get("targets") or {}).get("edge"):
        _state["edge_models"].add(key)
    else:
        _state["edge_models"].discard(key)


async def _record_failure(key: Key, error: Exception, failures: int, delay: float) -> None:
    await _in_thread(record_failure, _state["cluster"], *key, error, failures, delay)


async def _in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_state["threads"], function, *args)
