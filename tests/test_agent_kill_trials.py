"""kill -9 at random points of an install: the active model is never broken or missing, and a restarted agent
converges.

Each trial orders a new version (a new real ncnn bundle), starts `modelfleet agent --once` with a post-install
hook, sends SIGKILL after a random delay spread over one install's duration, then checks, from outside, that
`current` resolves, its manifest verifies, every file hashes as listed and ncnn loaded from it reproduces its
golden outputs, and that it is the version before or the new one. Every tenth trial (and the last) the agent then
runs to the end and must have the ordered version active with nothing left over.

Most of a bare `--once` run is the interpreter starting and the smoke test's child loading its runtime, so the
delays are drawn in three strata, timed on a first install: one kill in five anywhere before the first install
step, half of them anywhere after the agent logged that step, and three in ten around the end of the smoke test
(where the directory is committed, the links switch and the hook runs). The phase the agent had saved when it
died (install.json) is tallied, to show where the kills landed.
"""

import collections
import json
import random
import signal
import subprocess
import threading
import time

import pytest

from agent_fleet import (Signer, StandInGateway, agent_command, agent_env, check_active, run_agent_once,
                         target_dir)
from modelfleet import signing

DEVICE = "pi-garage-3"
HOOK = ("--post-install-hook", "true")


def converge(gateway, signer, directory, version, keys) -> None:
    done = run_agent_once(gateway, signer, directory, DEVICE, *HOOK)
    assert done.returncode == 0, done.stderr
    assert check_active(directory, keys) == version
    versions = target_dir(directory) / "versions"
    assert all(not p.name.startswith(".") for p in versions.iterdir()), sorted(versions.iterdir())
    assert len(list(versions.iterdir())) <= 2


STEPS = ("downloading", "smoke test", "active")  # what the agent logs (-v) as an install goes


def watch(process, seen: dict[str, threading.Event]) -> None:
    for line in process.stderr:
        for step, event in seen.items():
            if line.rstrip().endswith(step):
                event.set()


def saved_phase(directory) -> str:
    return json.loads((target_dir(directory) / "install.json").read_text())["phase"]


def timed_install(gateway, signer, directory) -> tuple[dict[str, float], float]:
    """Run one install to its end; seconds from the start to each logged step, and to its exit."""
    started = time.monotonic()
    process = subprocess.Popen(agent_command(gateway, signer, directory, DEVICE, "--once", *HOOK), env=agent_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timeline = {}
    for line in process.stderr:
        for step in STEPS:
            if line.rstrip().endswith(step):
                timeline.setdefault(step, time.monotonic() - started)
    assert process.wait() == 0 and set(timeline) == set(STEPS), timeline
    return timeline, time.monotonic() - started


def kill_trials(tmp_path, trials: int, seed: int) -> collections.Counter:
    rng = random.Random(seed)
    gateway, signer = StandInGateway(), Signer(tmp_path / "keys")
    keys = signing.KeySet([signer.bundle_key])
    directory = tmp_path / "device"
    try:
        gateway.publish(signer.bundle(1))
        gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
        timeline, duration = timed_install(gateway, signer, directory)
        print(f"install steps after {timeline} s, exit after {duration:.2f} s")
        assert check_active(directory, keys) == 1

        phases: collections.Counter = collections.Counter()
        active = 1
        for trial in range(trials):
            version = trial + 2
            bundle = signer.bundle(version)
            gateway.publish(bundle)
            gateway.order(DEVICE, signer.desired(DEVICE, bundle.ref()))
            process = subprocess.Popen(agent_command(gateway, signer, directory, DEVICE, "--once", *HOOK),
                                       env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seen = {step: threading.Event() for step in STEPS}
            reader = threading.Thread(target=watch, args=(process, seen), daemon=True)
            reader.start()
            stratum = rng.random()
            if stratum < 0.2:
                time.sleep(rng.uniform(0.0, timeline["downloading"]))
            elif stratum < 0.7:
                seen["downloading"].wait(timeout=60)
                time.sleep(rng.uniform(0.0, duration - timeline["downloading"]))
            else:
                seen["smoke test"].wait(timeout=60)
                smoke = timeline["active"] - timeline["smoke test"]
                time.sleep(rng.uniform(0.8 * smoke, 1.3 * smoke))
            installing = seen["downloading"]
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                phases[saved_phase(directory) if installing.is_set() else "starting"] += 1
            else:
                phases["finished"] += 1
            reader.join(timeout=10)

            now = check_active(directory, keys)  # raises when current is broken or missing
            assert now in (active, version) or now < version, (trial, now, active, version)
            active = now
            if trial % 10 == 9 or trial == trials - 1:
                converge(gateway, signer, directory, version, keys)
                active = version
        return phases
    finally:
        gateway.close()


def test_a_few_kills_at_random_points_of_an_install_leave_a_working_model(tmp_path):
    phases = kill_trials(tmp_path, trials=10, seed=1)
    print(f"kill trials: {dict(phases)}")


@pytest.mark.slow
def test_200_kills_at_random_points_of_an_install_never_leave_a_broken_active_model(tmp_path):
    phases = kill_trials(tmp_path, trials=200, seed=12)
    print(f"kill trials: {dict(phases)}")
    assert sum(phases.values()) == 200
    # The kills reached the risky phases, not only the interpreter's start.
    assert phases["downloading"] + phases["smoke-testing"] + phases["switching"] + phases["hooking"] >= 20
