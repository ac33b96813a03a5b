"""Edge targets from the compress result to the devices: bundle versions first, then each target's rollout.

Pure. The operator passes what it observed (the recorded status, the result's choices, the EdgeDevices of the
namespace, the time) and writes back `status.bundles`, `status.rollouts` and the rollout conditions.

- A bundle is built from one artifact of one compress result (`source`). A target whose source changed gets
  the next version, above every version it had before (built, rolled out or only assigned), so a number is
  never given to other content; an unchanged source keeps its version and its manifest.
- A target's rollout starts once its bundle is built (the manifest's sha256 is known) and follows
  `modelfleet.domain.rollout.decide` on the reports of the devices its deviceSelector selects.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from modelfleet.api.compressedmodel import SLO, EdgeBundleStatus, EdgeRolloutStatus, EdgeTarget
from modelfleet.api.edgedevice import DeviceHealth, EdgeDevice
from modelfleet.api.result import TargetChoice
from modelfleet.domain import rollout
from modelfleet.domain.status import Wanted

__all__ = ["EdgeOutcome", "device_reports", "next_rollouts", "rollout_salt", "selects", "wanted_bundles"]


def wanted_bundles(targets: Sequence[EdgeTarget], choices: Sequence[TargetChoice], compress_hash: str,
                   recorded: Sequence[EdgeBundleStatus],
                   rollouts: Sequence[EdgeRolloutStatus]) -> list[EdgeBundleStatus]:
    """Per edge target with a chosen artifact, the bundle it should have (in spec order)."""
    chosen = {c.target: c.chosen for c in choices if c.chosen}
    before = {b.target: b for b in recorded}
    rolled = {r.target: r for r in rollouts}
    bundles = []
    for target in targets:
        artifact = chosen.get(target.name)
        if artifact is None:
            continue
        source = f"{compress_hash}/{artifact}"
        known = before.get(target.name)
        if known is not None and known.source == source:
            bundles.append(known)
            continue
        highest = max(known.version if known else 0, rolled[target.name].version if target.name in rolled else 0)
        bundles.append(EdgeBundleStatus(target=target.name, version=highest + 1, source=source, artifact=artifact))
    return bundles


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a device with `labels` matches a deviceSelector (every pair; an empty selector selects all)."""
    return all(labels.get(key) == value for key, value in selector.items())


def rollout_salt(namespace: str, model: str, target: str) -> str:
    """The target, not the version: the same devices are the canaries release after release."""
    return f"{namespace}/{model}/{target}"


def device_reports(devices: Sequence[EdgeDevice], model: str, target: EdgeTarget,
                   version: int) -> list[rollout.DeviceReport]:
    """The reports of the devices `target` selects, as the rollout of `version` reads them."""
    reports = []
    for device in devices:
        if not selects(target.device_selector, device.metadata.labels):
            continue
        status = device.status
        entry = next((t for t in status.targets if (t.model, t.target) == (model, target.name)), None) if status else None
        error = entry.last_error if entry and entry.last_error and entry.last_error.version == version else None
        reports.append(rollout.DeviceReport(
            name=device.metadata.name,
            enrolled_at=_instant(device.metadata.creation_timestamp) or _EPOCH,
            version=entry.installed.version if entry and entry.installed else None,
            health=entry.health if entry else DeviceHealth.unknown.value,
            error=error.reason if error else None,
            transient=error.transient if error else False,
            attempts=error.attempts if error else 0,
            p95_ms=entry.latency.p95_ms if entry and entry.latency else None,
            agreement=entry.last_smoke.agreement if entry and entry.last_smoke else None,
            reported_at=_instant(status.last_seen) if status else None,
        ))
    return reports


@dataclass(frozen=True)
class EdgeOutcome:
    rollouts: list[EdgeRolloutStatus]
    conditions: list[Wanted]  # RolledOut and RolloutHalted; none without a built bundle
    next_look: datetime | None  # the earliest time a rollout wants another look (a bake ends, a device times out)


def next_rollouts(namespace: str, model: str, targets: Sequence[EdgeTarget], slo: SLO,
                  bundles: Sequence[EdgeBundleStatus], recorded: Sequence[EdgeRolloutStatus],
                  devices: Sequence[EdgeDevice], now: datetime) -> EdgeOutcome:
    """Each edge target's rollout one step on: started for a newly built bundle, then decided."""
    built = {b.target: b for b in bundles if b.manifest_sha256}
    before = {r.target: r for r in recorded}
    rollouts, verdicts, looks = [], {}, []
    for target in targets:
        prior_status = before.get(target.name)
        prior = rollout.state_from(prior_status) if prior_status else None
        bundle = built.get(target.name)
        if bundle is None:
            if prior_status is not None:  # the new version is still being built: the old rollout goes on
                bundle_version = prior_status.version
            else:
                continue
        else:
            bundle_version = bundle.version
        state = rollout.start(rollout_salt(namespace, model, target.name), bundle_version, prior)
        reports = device_reports(devices, model, target, state.version)
        verdict = rollout.decide(rollout.policy(target, slo), state, reports, now)
        changed_at = prior_status.changed_at if prior_status else None
        if prior is None or _desired_versions(verdict.state) != _desired_versions(prior):
            changed_at = _precise_timestamp(now)
        rollouts.append(rollout.to_status(target.name, verdict).model_copy(update={"changed_at": changed_at}))
        verdicts[target.name] = verdict
        if verdict.next_look:
            looks.append(verdict.next_look)
    return EdgeOutcome(rollouts, rollout.resource_conditions(verdicts), min(looks, default=None))


def _desired_versions(state: rollout.RolloutState) -> tuple:
    """What decides which version each device gets: a change here changes desired states."""
    return state.version, state.previous, state.bounds, len(state.opened_at), state.rolled_back, state.completed


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _precise_timestamp(moment: datetime) -> str:
    """To the millisecond: two models changing within a second still give the gateway two sequences."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
