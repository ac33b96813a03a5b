"""Edge rollouts as value functions: a canary, then waves, each baked and gated; a breach halts and rolls back.

Argo Rollouts' shape without a controller in it: `decide` takes one edge target's rollout spec, the state the
operator stored, the devices' reports and the time, and returns a `Verdict`: advance (open the next wave),
hold (and when to look again), halt (and roll back), or complete; with the next state, the counts and the
conditions. The operator writes what the verdict says and nothing else. No clock, no I/O, no Kubernetes.

Waves without per-device state
------------------------------
Every device has a position in [0, 100): a stable hash of the rollout's salt and the device name
(`wave_of`). The salt names the target (`<namespace>/<model>/<target>`), not the version, so the same
devices are the canaries release after release, as in ring deployments. Wave i holds the devices whose
position lies below `bounds[i]` and not below `bounds[i-1]`; the canary is wave 0. The bounds are fixed when
the canary opens: the canary's from `canary.count` (just above the count-th lowest position then) or
`canary.percent`, then one per entry of `waves`, never below the canary's. Opening a wave appends one time
to the state, so it is one status write however large the fleet; which bundle a device should run
(`desired_bundle`) follows from the state and its position. A device enrolled later gets what its
position says: the new version if its wave is open, the previous one otherwise.

What a device of an open wave counts as
---------------------------------------
- healthy: it reports the new version installed and Healthy;
- failed: it reports the new version Failed or Degraded; or an install error that is permanent, or transient
  with more failed attempts than `installRetries` (the agent retries with `install_backoff`); or it has
  done neither this long after its wave opened (or it enrolled, when later): `reportTimeoutSeconds`. So an
  offline device never holds a rollout forever, and one that comes back and installs counts as healthy;
- pending: anything else (installing, retrying, not heard from yet).

The decision, in order
----------------------
1. A halted rollout stays halted (devices on the previous version) until the version changes (`start`);
   a completed one stays complete.
2. Breaches, checked in every open wave whatever else holds (also while paused, also while baking):
   - FailureThreshold: a wave's failed devices reach max(failureThreshold.count,
     ceil(failureThreshold.percent% of the wave));
   - LatencyGate: the 95th percentile (nearest rank) of the updated devices' own p95s exceeds maxP95Ms;
     below 20 devices that is the slowest device;
   - AgreementGate: the 5th percentile (nearest rank) of their golden-set agreement is below minAgreement;
     below 20 devices that is the worst device.
   A breach halts: every device of every open wave is pointed back at the previous version.
3. Nothing opens while `paused`, or before any device is selected (NoDevices: the first device to enrol
   becomes the canary).
4. A wave must have baked `bakeSeconds` and every device of the open waves must be healthy or failed
   before the next wave opens. Empty waves are skipped; once the last wave has baked and settled, the
   rollout is complete.
"""

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from modelfleet.api.compressedmodel import SLO, EdgeRolloutStatus, EdgeTarget, RolloutSpec
from modelfleet.api.edgedevice import DeviceHealth
from modelfleet.domain.status import Wanted

__all__ = [
    "ADVANCE", "AGREEMENT_GATE", "COMPLETE", "FAILURE_THRESHOLD", "HALT", "HOLD", "LATENCY_GATE", "ROLLED_OUT",
    "ROLLOUT_HALTED", "Counts", "DeviceReport", "RolloutState", "Verdict", "assigned_wave", "decide",
    "desired_bundle", "install_backoff", "policy", "resource_conditions", "start", "state_from", "to_status",
    "wave_bounds", "wave_of",
]

# Verdicts.
ADVANCE, HOLD, HALT, COMPLETE = "advance", "hold", "halt", "complete"
# Conditions and their reasons.
ROLLED_OUT, ROLLOUT_HALTED = "RolledOut", "RolloutHalted"
FAILURE_THRESHOLD, LATENCY_GATE, AGREEMENT_GATE = "FailureThreshold", "LatencyGate", "AgreementGate"
WAVE_OPENED, WAVE_BAKING, AWAITING_DEVICES, PAUSED, NO_DEVICES = (
    "WaveOpened", "WaveBaking", "AwaitingDevices", "Paused", "NoDevices")
COMPLETED, HALTED, NO_BREACH = "Complete", "Halted", "NoBreach"
# Device outcomes within a rollout.
_HEALTHY, _FAILED, _PENDING = "healthy", "failed", "pending"
REPORT_TIMEOUT = "ReportTimeout"

_TOP = math.nextafter(100.0, 0.0)  # the highest position
_NAMED = 5  # devices named in a message, at most
_EPSILON = 1e-9  # float slack when a percentage of a wave is rounded up to whole devices
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# --- positions and waves -------------------------------------------------------------------------------


def wave_of(device_name: str, salt: str) -> float:
    """The device's position in [0, 100): sha256 of the salt and the name, the same on every call and in
    every process. The waves are ranges of positions."""
    digest = hashlib.sha256(salt.encode() + b"\0" + device_name.encode()).digest()
    position = (int.from_bytes(digest[:8], "big") >> 11) / (1 << 53) * 100  # 53 bits: exact in a float
    return min(position, _TOP)


def wave_bounds(spec: RolloutSpec, positions: Sequence[float]) -> tuple[float, ...]:
    """Upper position bound of each wave, the canary first, for the fleet at the positions given (only a
    canary by count reads them: it ends just above the count-th lowest position)."""
    if spec.canary.count is not None:
        ordered = sorted(positions)
        count = spec.canary.count
        canary = math.nextafter(ordered[count - 1], math.inf) if count < len(ordered) else 100.0
    else:
        canary = float(spec.canary.percent)
    return (canary, *(max(float(w), canary) for w in spec.waves))


def assigned_wave(position: float, bounds: Sequence[float]) -> int:
    """Index of the wave a position belongs to (0: the canary): the first whose bound lies above it."""
    if not bounds:
        raise ValueError("no waves yet: the bounds are fixed when the canary opens")
    return min(bisect.bisect_right(bounds, position), len(bounds) - 1)


# --- state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """What the operator stores per edge target (`EdgeRolloutStatus`): nothing per device."""

    salt: str
    version: int  # bundle versions grow per model and target (modelfleet.api.bundle)
    previous: int | None = None  # the last version rolled out completely; None: none yet
    bounds: tuple[float, ...] = ()  # fixed when the canary opens
    opened_at: tuple[datetime, ...] = ()  # when each open wave opened, the canary first
    halted: str | None = None  # the breach's reason
    message: str = ""  # why it halted, for people
    rolled_back: bool = False
    completed: bool = False

    @property
    def current_wave(self) -> int:
        """Index of the last open wave; -1 before the canary opens."""
        return len(self.opened_at) - 1


def start(salt: str, version: int, prior: RolloutState | None = None, previous: int | None = None) -> RolloutState:
    """The rollout of `version`. Devices fall back to the last version rolled out completely: the prior
    rollout's if it completed, else the one it fell back to (`previous` when there was no prior rollout).
    The same version as the prior rollout's keeps that rollout, halted or not."""
    if prior is None:
        return RolloutState(salt=salt, version=version, previous=previous)
    if prior.version == version:
        return prior
    return RolloutState(salt=salt, version=version, previous=prior.version if prior.completed else prior.previous)


def desired_bundle(device_name: str, state: RolloutState) -> int | None:
    """The version a device should run: the new one once its wave is open, unless the rollout was rolled
    back; the previous one otherwise (None: nothing)."""
    if state.rolled_back or not state.opened_at:
        return state.previous
    if state.completed:
        return state.version
    wave = assigned_wave(wave_of(device_name, state.salt), state.bounds)
    return state.version if wave <= state.current_wave else state.previous


def policy(target: EdgeTarget, slo: SLO) -> RolloutSpec:
    """The target's rollout spec with the latency gate resolved: maxP95Ms, else the SLO of its runtime."""
    rollout = target.rollout
    if rollout.gates.max_p95_ms is not None:
        return rollout
    limit = getattr(slo.latency_p95_ms, target.runtime)
    return rollout.model_copy(update={"gates": rollout.gates.model_copy(update={"max_p95_ms": limit})})


def install_backoff(attempts: int, base_seconds: float = 30.0, cap_seconds: float = 900.0) -> float:
    """Seconds before retrying a transient install failure after `attempts` failed attempts: doubling, capped."""
    return min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1))


# --- reports and verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceReport:
    """One selected device as its EdgeDevice status reports it, for this target.

    `error`, `transient` and `attempts` describe failed installs of the rollout's version only (older
    errors are not passed); `p95_ms` and `agreement` are measured with the installed version."""

    name: str
    enrolled_at: datetime
    version: int | None = None  # installed
    health: str = DeviceHealth.unknown.value
    error: str | None = None  # reason of the last failed install
    transient: bool = False
    attempts: int = 0  # failed install attempts
    p95_ms: float | None = None
    agreement: float | None = None
    reported_at: datetime | None = None  # last report of any kind


@dataclass(frozen=True)
class Counts:
    """Status per edge target: selected, on the new version, healthy on it, failed in open waves; and of the
    updated devices that measured themselves, those over the latency gate and below the agreement gate (the
    device-side SLIs: the gates allow 5% of devices over each)."""

    desired: int = 0
    updated: int = 0
    healthy: int = 0
    failed: int = 0
    current_wave: int = -1
    rolled_back: bool = False
    measured: int = 0
    slow: int = 0
    disagreeing: int = 0


@dataclass(frozen=True)
class Verdict:
    action: str  # ADVANCE, HOLD, HALT or COMPLETE
    reason: str  # CamelCase: WaveOpened, WaveBaking, AwaitingDevices, Paused, NoDevices, a breach, Complete
    message: str
    state: RolloutState  # what to store; the same object on a hold
    counts: Counts = field(default_factory=Counts)
    next_look: datetime | None = None  # None: on the next report or spec change

    @property
    def conditions(self) -> list[Wanted]:
        """RolledOut and RolloutHalted for this target."""
        if self.action == HALT:
            return [Wanted(ROLLED_OUT, "False", HALTED, self.message),
                    Wanted(ROLLOUT_HALTED, "True", self.reason, self.message)]
        rolled_out = Wanted(ROLLED_OUT, "True" if self.action == COMPLETE else "False", self.reason, self.message)
        return [rolled_out, Wanted(ROLLOUT_HALTED, "False", NO_BREACH)]


@dataclass(frozen=True)
class _Device:
    report: DeviceReport
    wave: int
    outcome: str = _PENDING  # devices of closed waves stay pending
    why: str = ""
    deadline: datetime | None = None  # when a pending device times out


def decide(spec: RolloutSpec, state: RolloutState, reports: Sequence[DeviceReport], now: datetime) -> Verdict:
    """Pure: what to do next for one edge target. `spec` as `policy` resolves it; `reports`: every device
    the target's deviceSelector selects, in any order; times timezone-aware."""
    reports = sorted(reports, key=lambda r: r.name)
    if state.halted:
        return _verdict(HALT, state.halted, state.message, state, spec, reports, now)
    if state.completed:
        return _verdict(COMPLETE, COMPLETED, _done_message(state), state, spec, reports, now)
    if not state.opened_at:
        if not reports:
            return _verdict(HOLD, NO_DEVICES, "no EdgeDevice matches the target's deviceSelector", state, spec,
                            reports, now)
        if spec.paused:
            return _verdict(HOLD, PAUSED, "paused before the canary", state, spec, reports, now)
        bounds = wave_bounds(spec, [wave_of(r.name, state.salt) for r in reports])
        return _open(replace(state, bounds=bounds), 0, spec, reports, now)

    devices = _devices(spec, state, reports, now)
    breaches = _breaches(spec, state, devices)
    if breaches:
        (reason, _), message = breaches[0], "; ".join(text for _, text in breaches)
        halted = replace(state, halted=reason, message=f"{message}; rolled back to {_version(state.previous)}",
                         rolled_back=True)
        return _verdict(HALT, reason, halted.message, halted, spec, reports, now)

    deadlines = [d.deadline for d in devices if d.outcome == _PENDING and d.deadline]
    first_timeout = min(deadlines, default=None)
    if spec.paused:
        return _verdict(HOLD, PAUSED, f"paused at {_wave_name(state.current_wave, state.bounds)}", state, spec,
                        reports, now, first_timeout)
    baked_at = state.opened_at[-1] + timedelta(seconds=spec.bake_seconds)
    if now < baked_at:
        return _verdict(HOLD, WAVE_BAKING, f"{_wave_name(state.current_wave, state.bounds)} bakes until "
                        f"{_timestamp(baked_at)}", state, spec, reports, now, min(baked_at, first_timeout or baked_at))
    pending = [d for d in devices if d.outcome == _PENDING and d.wave <= state.current_wave]
    if pending:
        named = ", ".join(f"{d.report.name} ({d.why})" for d in pending[:_NAMED])
        return _verdict(HOLD, AWAITING_DEVICES, f"{_wave_name(state.current_wave, state.bounds)}: waiting for "
                        f"{len(pending)} device(s): {named}", state, spec, reports, now, first_timeout)
    following = sorted({d.wave for d in devices if d.wave > state.current_wave})
    if not following:
        # The waves still closed are empty now; opening them too gives a device enrolled later the new version.
        closed = len(state.bounds) - len(state.opened_at)
        completed = replace(state, completed=True, opened_at=state.opened_at + (now,) * closed)
        return _verdict(COMPLETE, COMPLETED, _done_message(completed), completed, spec, reports, now)
    return _open(state, following[0], spec, reports, now)


def _open(state: RolloutState, wave: int, spec: RolloutSpec, reports: Sequence[DeviceReport], now: datetime) -> Verdict:
    """Open `wave`, or the first wave from it that has devices (skipped empty ones open with it)."""
    occupied = sorted({assigned_wave(wave_of(r.name, state.salt), state.bounds) for r in reports})
    wave = next((w for w in occupied if w >= wave), len(state.bounds) - 1)
    opened = replace(state, opened_at=state.opened_at + (now,) * (wave + 1 - len(state.opened_at)))
    members = sum(1 for r in reports if assigned_wave(wave_of(r.name, state.salt), state.bounds) == wave)
    message = f"opened {_wave_name(wave, state.bounds)}: {members} device(s) get {_version(state.version)}"
    return _verdict(ADVANCE, WAVE_OPENED, message, opened, spec, reports, now,
                    now + timedelta(seconds=spec.bake_seconds))


def _devices(spec: RolloutSpec, state: RolloutState, reports: Sequence[DeviceReport], now: datetime) -> list[_Device]:
    devices = []
    for report in reports:
        wave = assigned_wave(wave_of(report.name, state.salt), state.bounds)
        if wave > state.current_wave:
            devices.append(_Device(report, wave))
        else:
            devices.append(_Device(report, wave, *_outcome(spec, state, report, state.opened_at[wave], now)))
    return devices


def _outcome(spec: RolloutSpec, state: RolloutState, report: DeviceReport, opened_at: datetime,
             now: datetime) -> tuple[str, str, datetime | None]:
    """(outcome, why, deadline) of a device whose wave is open."""
    if report.version == state.version:
        if report.health == DeviceHealth.healthy.value:
            return _HEALTHY, "", None
        if report.health in (DeviceHealth.failed.value, DeviceHealth.degraded.value):
            return _FAILED, report.health, None
    if report.error and (not report.transient or report.attempts > spec.install_retries):
        return _FAILED, report.error, None
    deadline = max(opened_at, report.enrolled_at) + timedelta(seconds=spec.report_timeout_seconds)
    if now >= deadline:
        return _FAILED, REPORT_TIMEOUT, None
    if report.error:
        why = f"retrying after {report.error}, attempt {report.attempts + 1} of {spec.install_retries + 1}"
    elif report.version == state.version:
        why = "installed, health not reported yet"
    elif report.reported_at is None:
        why = "no report yet"
    elif report.reported_at < opened_at:
        why = "no report since its wave opened"
    else:
        why = "installing"
    return _PENDING, why, deadline


def _breaches(spec: RolloutSpec, state: RolloutState, devices: Sequence[_Device]) -> list[tuple[str, str]]:
    """(reason, message) of each breach in the open waves, failure thresholds first."""
    breaches = []
    threshold = spec.failure_threshold
    for wave in range(state.current_wave + 1):
        members = [d for d in devices if d.wave == wave]
        failed = [d for d in members if d.outcome == _FAILED]
        limit = max(threshold.count, math.ceil(threshold.percent * len(members) / 100 - _EPSILON))
        if failed and len(failed) >= limit:
            named = ", ".join(f"{d.report.name} ({d.why})" for d in failed[:_NAMED])
            breaches.append((FAILURE_THRESHOLD, f"{_wave_name(wave, state.bounds)}: {len(failed)} of {len(members)} "
                                                f"device(s) failed, threshold {limit}: {named}"))
    updated = [d.report for d in devices if d.wave <= state.current_wave and d.report.version == state.version]
    limit = spec.gates.max_p95_ms
    p95s = sorted((r.p95_ms, r.name) for r in updated if r.p95_ms is not None)
    if limit is not None and p95s:
        value, _ = _nearest_rank(p95s, 95)
        if value > limit:
            breaches.append((LATENCY_GATE, f"on-device p95 {value:g} ms > {limit:g} ms (95th percentile over "
                                           f"{len(p95s)} device(s); slowest {p95s[-1][1]} {p95s[-1][0]:g} ms)"))
    agreements = sorted((r.agreement, r.name) for r in updated if r.agreement is not None)
    if agreements:
        value, _ = _nearest_rank(agreements, 5)
        if value < spec.gates.min_agreement:
            breaches.append((AGREEMENT_GATE, f"golden-set agreement {value:g} < {spec.gates.min_agreement:g} (5th "
                                             f"percentile over {len(agreements)} device(s); worst "
                                             f"{agreements[0][1]} {agreements[0][0]:g})"))
    return breaches


def _nearest_rank(ordered: Sequence, percentile: float):
    """The nearest-rank percentile of sorted values: no interpolation, always one of them."""
    return ordered[max(1, math.ceil(percentile / 100 * len(ordered) - _EPSILON)) - 1]


def _verdict(action: str, reason: str, message: str, state: RolloutState, spec: RolloutSpec,
             reports: Sequence[DeviceReport], now: datetime, next_look: datetime | None = None) -> Verdict:
    devices = _devices(spec, state, reports, now) if state.opened_at else []
    updated = [r for r in reports if r.version == state.version]
    limit, floor = spec.gates.max_p95_ms, spec.gates.min_agreement
    counts = Counts(desired=len(reports), updated=len(updated),
                    healthy=sum(1 for r in updated if r.health == DeviceHealth.healthy.value),
                    failed=sum(1 for d in devices if d.outcome == _FAILED), current_wave=state.current_wave,
                    rolled_back=state.rolled_back,
                    measured=sum(1 for r in updated if r.p95_ms is not None),
                    slow=sum(1 for r in updated if limit is not None and r.p95_ms is not None and r.p95_ms > limit),
                    disagreeing=sum(1 for r in updated if r.agreement is not None and r.agreement < floor))
    return Verdict(action, reason, message, state, counts, next_look)


def _wave_name(wave: int, bounds: Sequence[float]) -> str:
    if wave == 0:
        return "the canary"
    return f"wave {wave} (up to {bounds[wave]:g}%)"


def _done_message(state: RolloutState) -> str:
    return f"{_version(state.version)} rolled out to every wave"


def _version(version: int | None) -> str:
    return "no bundle" if version is None else f"version {version}"


# --- across targets and to the status --------------------------------------------------------------------


def resource_conditions(verdicts: Mapping[str, Verdict]) -> list[Wanted]:
    """RolledOut and RolloutHalted for the resource, from each edge target's verdict (in spec order):
    rolled out when every target is, halted when any is. No edge target: neither condition."""
    if not verdicts:
        return []
    halted = [(target, v) for target, v in verdicts.items() if v.action == HALT]
    waiting = [(target, v) for target, v in verdicts.items() if v.action != COMPLETE]
    if waiting:
        rolled_out = Wanted(ROLLED_OUT, "False", HALTED if waiting[0][1].action == HALT else waiting[0][1].reason,
                            "; ".join(f"{target}: {v.message}" for target, v in waiting))
    else:
        rolled_out = Wanted(ROLLED_OUT, "True", COMPLETED, "; ".join(f"{t}: {v.message}" for t, v in verdicts.items()))
    if halted:
        return [rolled_out, Wanted(ROLLOUT_HALTED, "True", halted[0][1].reason,
                                   "; ".join(f"{target}: {v.message}" for target, v in halted))]
    return [rolled_out, Wanted(ROLLOUT_HALTED, "False", NO_BREACH)]


def to_status(target: str, verdict: Verdict) -> EdgeRolloutStatus:
    """The one status entry the operator writes for a target: the verdict's state and counts."""
    state, counts = verdict.state, verdict.counts
    return EdgeRolloutStatus(
        target=target, version=state.version, previous_version=state.previous, salt=state.salt,
        wave_bounds=list(state.bounds), wave_opened_at=[_timestamp(t) for t in state.opened_at],
        current_wave=state.current_wave, halted=state.halted, message=verdict.message,
        rolled_back=state.rolled_back, completed=state.completed, desired=counts.desired, updated=counts.updated,
        healthy=counts.healthy, failed=counts.failed, measured=counts.measured, slow=counts.slow,
        disagreeing=counts.disagreeing,
    )


def state_from(status: EdgeRolloutStatus) -> RolloutState:
    """The stored state back from the status entry."""
    return RolloutState(
        salt=status.salt, version=status.version, previous=status.previous_version, bounds=tuple(status.wave_bounds),
        opened_at=tuple(datetime.fromisoformat(t) for t in status.wave_opened_at), halted=status.halted,
        message=status.message if status.halted else "", rolled_back=status.rolled_back, completed=status.completed,
    )


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)
