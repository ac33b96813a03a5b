"""Edge rollout decisions: table tests on hand-built fleets (Argo Rollouts style), then properties of the waves."""

import copy
import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from modelfleet.api.compressedmodel import SLO, CompressedModel, EdgeRolloutStatus, EdgeTarget, RolloutSpec
from modelfleet.domain.plan import COMPRESS, stage_hashes
from modelfleet.domain.rollout import (
    ADVANCE, AGREEMENT_GATE, COMPLETE, FAILURE_THRESHOLD, HALT, HOLD, LATENCY_GATE, ROLLED_OUT, ROLLOUT_HALTED,
    DeviceReport, RolloutState, Verdict, assigned_wave, decide, desired_bundle, install_backoff, policy,
    resource_conditions, start, state_from, to_status, wave_bounds, wave_of,
)
from modelfleet.domain.status import Wanted

T0 = datetime(2025, 12, 1, 12, 0, tzinfo=timezone.utc)
ENROLLED = T0 - timedelta(days=30)
SALT = "ml/digits/phones"
NEW, OLD = 2, 1
# canary below 5, wave 1 [5, 20), wave 2 [20, 60), wave 3 [60, 100)
BOUNDS = (5.0, 20.0, 60.0, 100.0)
# The defaults (bake 300 s, timeout 900 s, 3 retries, threshold 1 / 5 %, agreement 0.99) and a 20 ms p95 gate.
SPEC = RolloutSpec(gates={"maxP95Ms": 20})


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def _names_by_wave(bounds, count=4000) -> dict[int, list[str]]:
    by_wave = {}
    for i in range(count):
        name = f"dev-{i:04d}"
        by_wave.setdefault(assigned_wave(wave_of(name, SALT), bounds), []).append(name)
    return by_wave


NAMES = _names_by_wave(BOUNDS)

# What a device reports, by kind: the fields of DeviceReport besides its name.
KINDS = {
    "healthy": dict(version=NEW, health="Healthy", p95_ms=5.0, agreement=0.999, reported_at=T0 - minutes(1)),
    "installing": dict(version=OLD, health="Healthy", reported_at=T0 - minutes(1)),
    "silent": dict(version=OLD, health="Healthy", reported_at=T0 - timedelta(days=1)),
    "unhealthy": dict(version=NEW, health="Failed", reported_at=T0 - minutes(1)),
    "degraded": dict(version=NEW, health="Degraded", reported_at=T0 - minutes(1)),
    "smoking": dict(version=NEW, health="Unknown", reported_at=T0 - minutes(1)),
    "retrying": dict(version=OLD, error="DownloadFailed", transient=True, attempts=3, reported_at=T0 - minutes(1)),
    "retries-spent": dict(version=OLD, error="DownloadFailed", transient=True, attempts=4, reported_at=T0 - minutes(1)),
    "bad-signature": dict(version=OLD, error="SignatureInvalid", attempts=1, reported_at=T0 - minutes(1)),
    "slow": dict(version=NEW, health="Healthy", p95_ms=50.0, agreement=0.999, reported_at=T0 - minutes(1)),
    "disagrees": dict(version=NEW, health="Healthy", p95_ms=5.0, agreement=0.9, reported_at=T0 - minutes(1)),
    "enrolled-just-now": dict(version=None, health="Unknown", reported_at=None, enrolled_at=T0 - minutes(1)),
}


def fleet(*groups: tuple[int, str, int]) -> list[DeviceReport]:
    """Reports of `count` devices of `wave` reporting `kind`, for each (wave, kind, count); distinct names."""
    taken: dict[int, int] = {}
    reports = []
    for wave, kind, count in groups:
        first = taken.get(wave, 0)
        for name in NAMES[wave][first:first + count]:
            reports.append(DeviceReport(name=name, **{"enrolled_at": ENROLLED, **KINDS[kind]}))
        taken[wave] = first + count
    return reports


def opened(*ages_minutes: float, **changes) -> RolloutState:
    """The rollout of v2 over v1 with a wave open for each age given (the canary first)."""
    return RolloutState(**{"salt": SALT, "version": NEW, "previous": OLD, "bounds": BOUNDS,
                           "opened_at": tuple(T0 - minutes(age) for age in ages_minutes), **changes})


FRESH = RolloutState(salt=SALT, version=NEW, previous=OLD)
PAUSED = RolloutSpec(gates={"maxP95Ms": 20}, paused=True)
TOLERANT = RolloutSpec(gates={"maxP95Ms": 20}, failureThreshold={"count": 1, "percent": 10})


# --- decide: one row per branch -----------------------------------------------------------------------

DECISIONS = [
    # id, spec, state, fleet, action, reason, message part, next look (minutes from T0; None: on the next event)
    ("no-devices", SPEC, FRESH, [], HOLD, "NoDevices", "deviceSelector", None),
    ("paused-before-the-canary", PAUSED, FRESH, fleet((0, "installing", 1)), HOLD, "Paused", "before the canary", None),
    ("opens-the-canary", SPEC, FRESH, fleet((0, "installing", 1), (2, "installing", 3)), ADVANCE, "WaveOpened",
     "opened the canary: 1 device(s) get version 2", 5),
    ("canary-bakes", SPEC, opened(1), fleet((0, "healthy", 1), (1, "installing", 2)), HOLD, "WaveBaking",
     "the canary bakes until 2025-12-01T12:04:00Z", 4),
    ("bake-ends-before-a-timeout", SPEC, opened(1), fleet((0, "installing", 1)), HOLD, "WaveBaking", "bakes", 4),
    ("baked-canary-opens-wave-1", SPEC, opened(10), fleet((0, "healthy", 1), (1, "installing", 2)), ADVANCE,
     "WaveOpened", "opened wave 1 (up to 20%): 2 device(s) get version 2", 5),
    ("waits-for-an-installing-device", SPEC, opened(10), fleet((0, "installing", 1)), HOLD, "AwaitingDevices",
     "dev-", 5),
    ("waits-for-a-smoke-test", SPEC, opened(10), fleet((0, "smoking", 1)), HOLD, "AwaitingDevices",
     "installed, health not reported yet", 5),
    ("waits-for-a-silent-device-until-its-timeout", SPEC, opened(10), fleet((0, "silent", 1)), HOLD,
     "AwaitingDevices", "no report since its wave opened", 5),
    ("transient-failure-under-the-retries-is-not-a-failure", SPEC, opened(10), fleet((0, "retrying", 1)), HOLD,
     "AwaitingDevices", "retrying after DownloadFailed, attempt 4 of 4", 5),
    ("silent-past-the-timeout-fails-the-canary", SPEC, opened(16), fleet((0, "silent", 1)), HALT,
     "FailureThreshold", "the canary: 1 of 1 device(s) failed, threshold 1", None),
    ("transient-failure-past-the-retries-fails", SPEC, opened(10), fleet((0, "retries-spent", 1)), HALT,
     "FailureThreshold", "(DownloadFailed)", None),
    ("permanent-failure-halts-during-the-bake", SPEC, opened(1), fleet((0, "bad-signature", 1)), HALT,
     "FailureThreshold", "(SignatureInvalid); rolled back to version 1", None),
    ("unhealthy-after-install-halts", SPEC, opened(1), fleet((0, "unhealthy", 1)), HALT, "FailureThreshold",
     "(Failed)", None),
    ("degraded-after-install-halts", SPEC, opened(1), fleet((0, "degraded", 1)), HALT, "FailureThreshold",
     "(Degraded)", None),
    ("slow-on-device-halts-on-the-latency-gate", SPEC, opened(1), fleet((0, "slow", 1)), HALT, "LatencyGate",
     "on-device p95 50 ms > 20 ms", None),
    ("no-latency-gate-without-a-limit", RolloutSpec(), opened(10), fleet((0, "slow", 1), (1, "installing", 1)),
     ADVANCE, "WaveOpened", "opened wave 1", 5),
    ("disagreeing-outputs-halt-on-the-agreement-gate", SPEC, opened(1), fleet((0, "disagrees", 1)), HALT,
     "AgreementGate", "golden-set agreement 0.9 < 0.99", None),
    ("paused-holds-a-baked-wave", PAUSED, opened(10), fleet((0, "healthy", 1), (1, "installing", 1)), HOLD, "Paused",
     "paused at the canary", None),
    ("paused-still-halts-on-a-breach", PAUSED, opened(1), fleet((0, "bad-signature", 1)), HALT, "FailureThreshold",
     "SignatureInvalid", None),
    ("paused-looks-again-when-a-device-times-out", PAUSED, opened(10), fleet((0, "silent", 1)), HOLD, "Paused",
     "paused", 5),
    # wave 2 of 40 devices: threshold max(1, ceil(5% of 40)) = 2
    ("one-failure-in-40-is-tolerated", SPEC, opened(60, 40, 20), fleet((0, "healthy", 1), (1, "healthy", 4),
                                                                          (2, "healthy", 39), (2, "silent", 1),
                                                                          (3, "installing", 1)),
     ADVANCE, "WaveOpened", "opened wave 3 (up to 100%)", 5),
    ("two-failures-in-40-halt", SPEC, opened(60, 40, 10), fleet((0, "healthy", 1), (1, "healthy", 4),
                                                                 (2, "healthy", 38), (2, "bad-signature", 2)),
     HALT, "FailureThreshold", "wave 2 (up to 60%): 2 of 40 device(s) failed, threshold 2", None),
    ("a-wider-threshold-tolerates-more", TOLERANT, opened(60, 40, 20), fleet((0, "healthy", 1), (1, "healthy", 4),
                                                                             (2, "healthy", 37), (2, "silent", 3),
                                                                             (3, "installing", 1)),
     ADVANCE, "WaveOpened", "opened wave 3", 5),
    ("a-failure-in-an-earlier-wave-still-counts", SPEC, opened(60, 40, 1), fleet((0, "unhealthy", 1), (2, "healthy", 3)),
     HALT, "FailureThreshold", "the canary", None),
    # p95 over 20 updated devices, one slow: the 95th percentile is the 19th, fast
    ("one-slow-device-in-20-passes-the-gate", SPEC, opened(60, 10), fleet((0, "healthy", 1), (1, "healthy", 18),
                                                                          (1, "slow", 1), (2, "installing", 1)),
     ADVANCE, "WaveOpened", "opened wave 2", 5),
    ("one-slow-device-in-19-is-the-p95", SPEC, opened(60, 10), fleet((0, "healthy", 1), (1, "healthy", 17),
                                                                      (1, "slow", 1), (2, "installing", 1)),
     HALT, "LatencyGate", "slowest dev-", None),
    ("empty-waves-are-skipped", SPEC, opened(10), fleet((0, "healthy", 1), (3, "installing", 2)), ADVANCE,
     "WaveOpened", "opened wave 3 (up to 100%): 2 device(s)", 5),
    ("a-device-enrolled-into-an-open-wave-gets-its-own-timeout", SPEC, opened(60, 30),
     fleet((0, "healthy", 1), (1, "enrolled-just-now", 1)), HOLD, "AwaitingDevices", "no report yet", 14),
    ("last-wave-baked-and-settled-completes", SPEC, opened(90, 60, 30, 10),
     fleet((0, "healthy", 1), (1, "healthy", 2), (2, "healthy", 2), (3, "healthy", 2)), COMPLETE, "Complete",
     "version 2 rolled out to every wave", None),
    ("nothing-beyond-the-open-waves-completes", SPEC, opened(30, 10), fleet((0, "healthy", 1), (1, "healthy", 2)),
     COMPLETE, "Complete", "every wave", None),
    ("complete-stays-complete", SPEC, opened(90, 60, 30, 10, completed=True), fleet((0, "unhealthy", 1)), COMPLETE,
     "Complete", "every wave", None),
    ("halted-stays-halted", SPEC, opened(90, halted="LatencyGate", message="on-device p95 50 ms > 20 ms",
                                         rolled_back=True), fleet((0, "healthy", 1)), HALT, "LatencyGate",
     "on-device p95 50 ms > 20 ms", None),
]


@pytest.mark.parametrize(("spec", "state", "reports", "action", "reason", "message", "look"),
                         [pytest.param(*row[1:], id=row[0]) for row in DECISIONS])
def test_decide(spec, state, reports, action, reason, message, look):
    verdict = decide(spec, state, reports, T0)
    assert (verdict.action, verdict.reason) == (action, reason), verdict.message
    assert message in verdict.message
    assert verdict.next_look == (None if look is None else T0 + minutes(look))


def test_a_hold_writes_nothing_new():
    state = opened(1)
    assert decide(SPEC, state, fleet((0, "healthy", 1)), T0).state is state


def test_opening_the_canary_fixes_the_bounds_and_one_time():
    reports = fleet((0, "installing", 1), (1, "installing", 3), (3, "installing", 6))
    verdict = decide(SPEC, FRESH, reports, T0)
    assert verdict.state.opened_at == (T0,)
    canary = [r.name for r in reports if desired_bundle(r.name, verdict.state) == NEW]
    assert len(canary) == 1  # canary.count 1: the lowest position
    assert canary == [min(reports, key=lambda r: wave_of(r.name, SALT)).name]
    assert verdict.state.bounds[1:] == (10.0, 50.0, 100.0)


def test_skipped_waves_open_together():
    verdict = decide(SPEC, opened(10), fleet((0, "healthy", 1), (3, "installing", 2)), T0)
    assert verdict.state.opened_at == (T0 - minutes(10), T0, T0, T0)
    assert verdict.counts.current_wave == 3


def test_a_halt_rolls_every_open_wave_back_and_stays_until_the_version_changes():
    reports = fleet((0, "healthy", 1), (1, "healthy", 4), (2, "bad-signature", 2), (3, "installing", 3))
    verdict = decide(SPEC, opened(60, 40, 10), reports, T0)
    assert verdict.action == HALT and verdict.state.rolled_back
    assert {desired_bundle(r.name, verdict.state) for r in reports} == {OLD}
    # Later looks, even with every device healthy again, say the same.
    again = decide(SPEC, verdict.state, fleet((0, "healthy", 1), (1, "healthy", 4)), T0 + minutes(60))
    assert (again.action, again.reason, again.message, again.state) == (HALT, FAILURE_THRESHOLD, verdict.message,
                                                                        verdict.state)
    # A new version starts over from the version the devices went back to.
    fixed = start(SALT, 3, verdict.state)
    assert (fixed.version, fixed.previous, fixed.halted, fixed.rolled_back, fixed.opened_at) == (3, OLD, None, False, ())


def test_counts():
    reports = fleet((0, "healthy", 1), (1, "healthy", 3), (1, "smoking", 1), (1, "silent", 1), (2, "installing", 4))
    verdict = decide(RolloutSpec(failureThreshold={"count": 3}, paused=True), opened(60, 20), reports, T0)
    assert verdict.action == HOLD
    assert verdict.counts.desired == 10
    assert verdict.counts.updated == 5  # healthy + smoking
    assert verdict.counts.healthy == 4
    assert verdict.counts.failed == 2  # silent and smoking for 20 minutes; wave 2 is not open
    assert (verdict.counts.current_wave, verdict.counts.rolled_back) == (1, False)


def test_a_device_that_timed_out_and_came_back_counts_as_healthy():
    late = fleet((0, "healthy", 1), (1, "healthy", 1), (1, "silent", 1))
    assert decide(TOLERANT, opened(60, 20), late, T0).counts.failed == 1
    back = [replace(r, **KINDS["healthy"]) for r in late]
    assert decide(TOLERANT, opened(60, 20), back, T0).counts.failed == 0


def test_the_verdict_is_independent_of_the_order_of_the_reports():
    reports = fleet((0, "healthy", 1), (1, "healthy", 3), (1, "silent", 2), (2, "bad-signature", 1))
    shuffled = list(reports)
    random.Random(7).shuffle(shuffled)
    assert decide(SPEC, opened(60, 20), reports, T0) == decide(SPEC, opened(60, 20), shuffled, T0)


# --- conditions ---------------------------------------------------------------------------------------


def _verdict(action, reason, message=""):
    return Verdict(action, reason, message, FRESH)


@pytest.mark.parametrize(("action", "reason", "wanted"), [
    (ADVANCE, "WaveOpened", [Wanted(ROLLED_OUT, "False", "WaveOpened", "m"), Wanted(ROLLOUT_HALTED, "False", "NoBreach")]),
    (HOLD, "WaveBaking", [Wanted(ROLLED_OUT, "False", "WaveBaking", "m"), Wanted(ROLLOUT_HALTED, "False", "NoBreach")]),
    (COMPLETE, "Complete", [Wanted(ROLLED_OUT, "True", "Complete", "m"), Wanted(ROLLOUT_HALTED, "False", "NoBreach")]),
    (HALT, LATENCY_GATE, [Wanted(ROLLED_OUT, "False", "Halted", "m"), Wanted(ROLLOUT_HALTED, "True", LATENCY_GATE, "m")]),
])
def test_conditions_of_one_target(action, reason, wanted):
    assert _verdict(action, reason, "m").conditions == wanted


@pytest.mark.parametrize(("verdicts", "wanted"), [
    ({}, []),
    ({"phones": _verdict(COMPLETE, "Complete", "v2 out"), "pis": _verdict(COMPLETE, "Complete", "v7 out")},
     [Wanted(ROLLED_OUT, "True", "Complete", "phones: v2 out; pis: v7 out"), Wanted(ROLLOUT_HALTED, "False", "NoBreach")]),
    ({"phones": _verdict(COMPLETE, "Complete", "v2 out"), "pis": _verdict(HOLD, "WaveBaking", "bakes")},
     [Wanted(ROLLED_OUT, "False", "WaveBaking", "pis: bakes"), Wanted(ROLLOUT_HALTED, "False", "NoBreach")]),
    ({"phones": _verdict(HOLD, "Paused", "paused"), "pis": _verdict(HALT, AGREEMENT_GATE, "agreement 0.9")},
     [Wanted(ROLLED_OUT, "False", "Paused", "phones: paused; pis: agreement 0.9"),
      Wanted(ROLLOUT_HALTED, "True", AGREEMENT_GATE, "pis: agreement 0.9")]),
    ({"phones": _verdict(HALT, LATENCY_GATE, "slow"), "pis": _verdict(HALT, AGREEMENT_GATE, "off")},
     [Wanted(ROLLED_OUT, "False", "Halted", "phones: slow; pis: off"),
      Wanted(ROLLOUT_HALTED, "True", LATENCY_GATE, "phones: slow; pis: off")]),
], ids=["no-edge-targets", "all-complete", "one-baking", "one-halted", "both-halted"])
def test_conditions_across_targets(verdicts, wanted):
    assert resource_conditions(verdicts) == wanted


# --- desired bundle and start ---------------------------------------------------------------------------

CANARY, WAVE_1, WAVE_3 = NAMES[0][0], NAMES[1][0], NAMES[3][0]


@pytest.mark.parametrize(("state", "device", "version"), [
    (FRESH, CANARY, OLD),
    (opened(1), CANARY, NEW),
    (opened(1), WAVE_1, OLD),
    (opened(10, 1), WAVE_1, NEW),
    (opened(10, 1), WAVE_3, OLD),
    (opened(10, 1, rolled_back=True, halted="FailureThreshold"), CANARY, OLD),
    (opened(10, 1, completed=True), WAVE_3, NEW),
    (replace(opened(1), previous=None), WAVE_1, None),
], ids=["not-started", "canary-open", "wave-closed", "wave-open", "later-wave", "rolled-back", "completed",
        "first-rollout-ever"])
def test_desired_bundle(state, device, version):
    assert desired_bundle(device, state) == version


@pytest.mark.parametrize(("prior", "previous"), [
    (None, None),
    (opened(90, 60, 30, 10, completed=True), NEW),
    (opened(10), OLD),
    (opened(10, halted="LatencyGate", rolled_back=True), OLD),
], ids=["first", "after-a-complete-rollout", "over-one-in-flight", "after-a-halt"])
def test_start_falls_back_to_the_last_complete_version(prior, previous):
    state = start(SALT, 3, prior)
    assert (state.version, state.previous, state.opened_at, state.halted) == (3, previous, (), None)


def test_start_with_the_same_version_keeps_the_rollout():
    halted = opened(10, halted="LatencyGate", rolled_back=True)
    assert start(SALT, NEW, halted) is halted
    assert start(SALT, NEW, None, previous=OLD) == FRESH


# --- policy, backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rollout", "slo", "limit"), [
    ({}, {"latencyP95Ms": {"ncnn": 12.5, "tflite": 30}}, 12.5),
    ({"gates": {"maxP95Ms": 8}}, {"latencyP95Ms": {"ncnn": 12.5}}, 8),
    ({}, {"latencyP95Ms": {"tflite": 30}}, None),
], ids=["from-the-runtime-slo", "explicit-wins", "no-gate"])
def test_policy_resolves_the_latency_gate(rollout, slo, limit):
    target = EdgeTarget(name="phones", runtime="ncnn", rollout=rollout)
    assert policy(target, SLO.model_validate(slo)).gates.max_p95_ms == limit


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 30), (2, 60), (3, 120), (5, 480), (6, 900), (20, 900)])
def test_install_backoff_doubles_up_to_a_cap(attempts, seconds):
    assert install_backoff(attempts) == seconds


# --- the spec ---------------------------------------------------------------------------------------------


def test_defaults():
    spec = EdgeTarget(name="phones", runtime="ncnn").rollout
    assert (spec.canary.count, spec.canary.percent, spec.waves, spec.bake_seconds) == (1, None, [10, 50, 100], 300)
    assert (spec.failure_threshold.count, spec.failure_threshold.percent) == (1, 5)
    assert (spec.gates.max_p95_ms, spec.gates.min_agreement) == (None, 0.99)
    assert (spec.report_timeout_seconds, spec.install_retries, spec.paused) == (900, 3, False)


@pytest.mark.parametrize(("rollout", "error"), [
    ({"waves": [50, 10, 100]}, "waves must rise strictly and end at 100, got [50.0, 10.0, 100.0]"),
    ({"waves": [10, 10, 100]}, "waves must rise strictly"),
    ({"waves": [10, 50]}, "end at 100"),
    ({"waves": [0, 100]}, "greater than 0"),
    ({"waves": [10, 101]}, "less than or equal to 100"),
    ({"canary": {"count": 2, "percent": 1}}, "canary takes exactly one of count and percent"),
    ({"canary": {}}, "canary takes exactly one of count and percent"),
], ids=["falling", "repeated", "short-of-100", "zero", "over-100", "both-canaries", "no-canary"])
def test_bad_rollouts_are_refused_with_a_clear_message(rollout, error):
    with pytest.raises(ValidationError, match=r"rollout\.(waves|canary)") as raised:
        EdgeTarget(name="phones", runtime="ncnn", rollout=rollout)
    assert error in str(raised.value)


def test_a_rollout_change_does_not_recompress():
    manifest = {
        "apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel", "metadata": {"name": "digits"},
        "spec": {"source": {"uri": "s3://m/d.onnx", "format": "onnx", "inputs": [{"name": "x", "shape": [-1, 64]}]},
                 "dataset": {"calibration": {"uri": "s3://d/c.npz"}, "evaluation": {"uri": "s3://d/e.npz"}},
                 "targets": {"edge": [{"name": "phones", "runtime": "ncnn"}]}},
    }
    paused = copy.deepcopy(manifest)
    paused["spec"]["targets"]["edge"][0]["rollout"] = {"paused": True, "waves": [50, 100]}
    assert stage_hashes(CompressedModel.model_validate(paused))[COMPRESS] == \
        stage_hashes(CompressedModel.model_validate(manifest))[COMPRESS]
    # The digest of a spec written before rollouts existed did not change either.
    assert stage_hashes(CompressedModel.model_validate(manifest))[COMPRESS] == "f55d56f5b6"


# --- properties of the waves ------------------------------------------------------------------------------

MANY = [f"device-{i}" for i in range(10_000)]


def test_positions_are_stable_and_pinned():
    # sha256 of the salt, a NUL and the name: the same in every process and release, or every fleet reshuffles.
    assert wave_of("pi-kitchen-01", "ml/digits/pis") == wave_of("pi-kitchen-01", "ml/digits/pis")
    assert round(wave_of("pi-kitchen-01", "ml/digits/pis"), 9) == 91.91551939
    assert wave_of("pi-kitchen-01", "ml/digits/pis") != wave_of("pi-kitchen-01", "ml/kws/pis")
    assert all(0 <= wave_of(name, SALT) < 100 for name in MANY[:1000])


def test_percentages_are_honoured_for_10000_devices():
    spec = RolloutSpec(canary={"percent": 1}, waves=[10, 50, 100])
    bounds = wave_bounds(spec, [])
    shares = [0] * len(bounds)
    for name in MANY:
        shares[assigned_wave(wave_of(name, SALT), bounds)] += 1
    expected = [100, 900, 4000, 5000]  # 1 %, then up to 10, 50 and 100 %
    assert all(abs(got - want) <= 150 for got, want in zip(shares, expected)), shares


def test_a_canary_by_count_is_exactly_that_many_devices_and_order_free():
    spec = RolloutSpec(canary={"count": 25})
    positions = [wave_of(name, SALT) for name in MANY]
    bounds = wave_bounds(spec, positions)
    assert sum(1 for p in positions if assigned_wave(p, bounds) == 0) == 25
    random.Random(3).shuffle(positions)
    assert wave_bounds(spec, positions) == bounds
    assert wave_bounds(spec, positions[:10]) == (100.0, 100.0, 100.0, 100.0)  # fewer devices than the count: all


def test_membership_is_the_same_across_calls_and_fleet_orders():
    reports = [DeviceReport(name=name, enrolled_at=ENROLLED) for name in MANY[:2000]]
    first = decide(SPEC, FRESH, reports, T0).state
    shuffled = list(reports)
    random.Random(11).shuffle(shuffled)
    again = decide(SPEC, FRESH, shuffled, T0).state
    assert first == again
    state = opened(30, 10, bounds=first.bounds)
    assert [desired_bundle(n, state) for n in MANY[:2000]] == [desired_bundle(n, state) for n in MANY[:2000]]


def test_a_device_enrolled_later_gets_what_its_position_says():
    reports = [DeviceReport(name=name, enrolled_at=ENROLLED, **KINDS["healthy"]) for name in MANY[:1000]]
    state = decide(SPEC, opened(60, 20, bounds=wave_bounds(SPEC, [wave_of(r.name, SALT) for r in reports])),
                   reports, T0).state
    for late in MANY[1000:1200]:
        wave = assigned_wave(wave_of(late, SALT), state.bounds)
        assert desired_bundle(late, state) == (NEW if wave <= state.current_wave else OLD)


def test_advancing_writes_one_status_entry_and_nothing_per_device():
    for size in (10, 10_000):
        reports = [DeviceReport(name=name, enrolled_at=ENROLLED, **KINDS["healthy"]) for name in MANY[:size]]
        verdict = decide(SPEC, opened(10), reports, T0)
        assert verdict.action == ADVANCE
        wire = to_status("phones", verdict).to_wire()
        assert not any(name in json.dumps(wire) for name in MANY[:size])
        assert len(wire["waveBounds"]) == 4 and len(wire["waveOpenedAt"]) == 2
        assert wire["desired"] == size


def test_the_status_entry_reads_back_as_the_state():
    for verdict in (decide(SPEC, opened(10), fleet((0, "healthy", 1), (1, "installing", 1)), T0),
                    decide(SPEC, opened(1), fleet((0, "bad-signature", 1)), T0)):
        status = EdgeRolloutStatus.model_validate(to_status("phones", verdict).to_wire())
        assert state_from(status) == verdict.state
        assert (status.updated, status.failed, status.current_wave) == (verdict.counts.updated, verdict.counts.failed,
                                                                        verdict.counts.current_wave)
