"""kopf handlers for CompressedModels and their worker Jobs.

Progress storage: annotations only (`modelfleet.io/...`), so kopf's bookkeeping survives the CRD's
structural-schema pruning whatever the status schema says (the CRD also preserves status.kopf).
"""

import time

import kopf

from modelfleet.api.compressedmodel import GROUP, VERSION
from modelfleet.controller import clean_up, reconcile, settings_from_env
from modelfleet.domain.plan import MANAGED_BY, MODEL_LABEL
from modelfleet.errors import RetryableError
from modelfleet.k8s import Cluster

RESOURCE = (GROUP, VERSION, "compressedmodels")
_state: dict = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    settings.posting.enabled = False  # our own Events carry the story; kopf's would repeat it
    settings.execution.max_workers = 16  # sync handlers wait on the API server, not the CPU
    settings.watching.server_timeout = 300
    _state["cluster"] = Cluster()
    _state["settings"] = settings_from_env()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
def reconcile_model(body, namespace: str, name: str, **_) -> None:
    reconcile(_state["cluster"], _state["settings"], namespace, name, dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
def job_changed(body, namespace: str, type: str, **_) -> None:
    finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                   for c in (body.get("status") or {}).get("conditions", []))
    if not finished or type == "DELETED":
        return
    # Event handlers are not retried by kopf: a store that is briefly unreachable gets a few tries here.
    for delay in (1, 5, 15, None):
        try:
            reconcile(_state["cluster"], _state["settings"], namespace, body["metadata"]["labels"][MODEL_LABEL])
            return
        except RetryableError:
            if delay is None:
                raise
            time.sleep(delay)


@kopf.on.delete(*RESOURCE)
def delete_model(body, **_) -> None:
    clean_up(_state["cluster"], _state["settings"], body)
