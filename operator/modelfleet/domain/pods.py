"""Why a worker pod is stuck before it runs (pure): what should reach the status in seconds, not after the
Job's deadline."""

# Waiting reasons that do not go away by themselves: a missing or unpullable image, a missing Secret or
# ConfigMap, a container the runtime cannot create.
STUCK_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def pod_problem(pod: dict) -> tuple[str, str] | None:
    """(reason, message) when the pod cannot start: unschedulable (no node fits, a missing PersistentVolumeClaim,
    ...) or a container stuck waiting for a reason in STUCK_WAITING; None while it is fine or merely starting."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            return "Unschedulable", f"pod {name} cannot be scheduled: {condition.get('message') or 'no node fits'}"
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            detail = waiting.get("message") or waiting["reason"]
            return waiting["reason"], f"pod {name}, container {container.get('name')}: {detail}"
    return None
