"""Why a worker pod is stuck before it runs (pure): what should reach the status in seconds, not after the
Job's deadline."""

from dataclasses import dataclass
from datetime import datetime

# Waiting reasons that do not go away by themselves: a missing or unpullable image, a missing Secret or
# ConfigMap, a container the runtime cannot create.
STUCK_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})

# A pod is often unschedulable for a few seconds (a node being added, a claim binding, a burst of pods):
# surfacing that at once would cost a status write and a Warning Event per pod for nothing.
UNSCHEDULABLE_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str
    since: float | None = None  # when an unschedulable pod became so (epoch seconds): it gets a grace period


def pod_problem(pod: dict) -> PodProblem | None:
    """Why the pod cannot start: unschedulable (no node fits, a missing PersistentVolumeClaim, ...) or a
    container stuck waiting for a reason in STUCK_WAITING; None while it is fine or merely starting."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            return PodProblem("Unschedulable",
                              f"pod {name} cannot be scheduled: {condition.get('message') or 'no node fits'}",
                              _epoch(condition.get("lastTransitionTime")))
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            detail = waiting.get("message") or waiting["reason"]
            return PodProblem(waiting["reason"], f"pod {name}, container {container.get('name')}: {detail}")
    return None


def surfaces_in(problem: PodProblem, now: float, grace: float = UNSCHEDULABLE_GRACE_SECONDS) -> float:
    """Seconds until the problem belongs in the status: 0 for a stuck container, the rest of the grace
    period for an unschedulable pod."""
    return 0.0 if problem.since is None else max(0.0, problem.since + grace - now)


def _epoch(timestamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(timestamp).timestamp() if timestamp else None
    except ValueError:
        return None
