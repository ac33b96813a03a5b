"""The fleet-view columns of an EdgeDevice, from its per-target status.

A printer column shows only the first value of a list, so a device running several targets gets one-line
sums at the top of its status: the worst health, every installed version, the highest p95.
"""

from collections.abc import Sequence

from modelfleet.api.edgedevice import DeviceHealth, DeviceTargetStatus, EdgeDeviceStatus

__all__ = ["HEALTH_ORDER", "fleet_columns", "worst_health"]

# Worst first. Unknown ranks below Degraded: a device that has not said anything yet is not known to be bad.
HEALTH_ORDER = (DeviceHealth.failed.value, DeviceHealth.degraded.value, DeviceHealth.unknown.value,
                DeviceHealth.healthy.value)


def worst_health(targets: Sequence[DeviceTargetStatus]) -> str:
    """The worst health among the targets; Unknown for a device that runs none."""
    if not targets:
        return DeviceHealth.unknown.value
    return min((t.health for t in targets), key=HEALTH_ORDER.index)


def fleet_columns(status: EdgeDeviceStatus) -> EdgeDeviceStatus:
    """The status with `health`, `installed` and `p95Ms` summed up from its targets."""
    targets = sorted(status.targets, key=lambda t: (t.model, t.target))
    installed = " ".join(f"{t.model}/{t.target}={t.installed.version}" for t in targets if t.installed)
    p95s = [t.latency.p95_ms for t in targets if t.latency]
    return status.model_copy(update={"health": worst_health(targets), "installed": installed or None,
                                     "p95_ms": max(p95s) if p95s else None})
