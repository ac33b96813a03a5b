"""When a CompressedModel needs a reconcile, and what its finalizer list becomes.

The operator is level-based: it reacts to the resource as it is, not to kopf's create/update
diffs, so it needs no bookkeeping of its own on the resource beyond status and one finalizer.
"""

from modelfleet.domain.plan import RETRY_ANNOTATION

FINALIZER = "modelfleet.io/cleanup"


def needs_reconcile(event_type: str | None, body: dict) -> bool:
    """Whether a watch event of a CompressedModel calls for a reconcile.

    `event_type` None is the initial listing (operator start or restart): everything is looked at
    again, since Jobs may have ended while nobody watched. Afterwards: a deletion our finalizer
    holds, a generation the status has not seen (a new resource, a spec change), a missing
    finalizer, or a retry asked for and not honoured yet. Job and pod events, retries and the
    resync drive the rest, and our own writes come back here as no-ops.
    """
    if event_type == "DELETED":
        return False
    meta = body.get("metadata") or {}
    ours = FINALIZER in (meta.get("finalizers") or [])
    if meta.get("deletionTimestamp"):
        return ours
    if event_type is None or not ours:
        return True
    return (body.get("status") or {}).get("observedGeneration") != meta.get("generation") \
        or unhonoured_retry(body) is not None


def unhonoured_retry(body: dict) -> str | None:
    """The modelfleet.io/retry annotation's value when the status has not recorded honouring it yet."""
    wanted = ((body.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    return wanted if wanted is not None and wanted != (body.get("status") or {}).get("retry") else None


def with_finalizer(finalizers: list[str] | None) -> list[str] | None:
    """The list with ours added, or None when it is there already."""
    current = list(finalizers or [])
    return None if FINALIZER in current else current + [FINALIZER]


def without_finalizer(finalizers: list[str] | None) -> list[str] | None:
    """The list with ours removed, or None when it is absent already."""
    current = list(finalizers or [])
    return [f for f in current if f != FINALIZER] if FINALIZER in current else None
