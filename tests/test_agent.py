"""The device agent (`modelfleet agent`) as a real process against a stand-in gateway on loopback, installing tiny
real ncnn and TFLite bundles: enrollment, install, upgrade, rollback, failures, resume, hook, window, metrics, RSS.
"""

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import time as day_time
from pathlib import Path

import pytest

from agent_fleet import (MODEL, TARGET, Signer, StandInGateway, active_version, agent_command, agent_env,
                         check_active, run_agent_once, target_dir)
from modelfleet import signing
from modelfleet.agent.loop import in_window, parse_window

DEVICE = "pi-kitchen-1"


@pytest.fixture
def gateway():
    server = StandInGateway()
    yield server
    server.close()


@pytest.fixture
def signer(tmp_path) -> Signer:
    return Signer(tmp_path / "keys")


@pytest.fixture
def bundle_keys(signer) -> signing.KeySet:
    return signing.KeySet([signer.bundle_key])


def install(gateway, signer, directory, *bundles, rollback=False, extra=(), expect=0):
    """Publish the bundles, order the last one, run the agent once; returns the finished process."""
    for bundle in bundles:
        gateway.publish(bundle)
    gateway.order(DEVICE, signer.desired(DEVICE, bundles[-1].ref(rollback=rollback)))
    done = run_agent_once(gateway, signer, directory, DEVICE, *extra)
    assert done.returncode == expect, done.stderr
    return done


def last_target(gateway):
    report = gateway.reports(DEVICE)[-1]
    (status,) = [t for t in report.targets if (t.model, t.target) == (MODEL, TARGET)]
    return status


def test_enrols_installs_verifies_and_reports_a_real_ncnn_bundle(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    install(gateway, signer, directory, signer.bundle(1))

    credential = directory / "credential"
    assert credential.read_text() == f"credential-of-{DEVICE}"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert (directory / "trust.json").is_file()
    assert check_active(directory, bundle_keys) == 1
    assert os.readlink(target_dir(directory) / "current") == "versions/1"
    status = last_target(gateway)
    assert status.installed.version == 1 and status.installed.bundle_sha256 == signer.bundle(1).sha256
    assert status.health == "Healthy" and status.last_smoke.passed and status.last_smoke.agreement > 0.999
    assert 0 < status.latency.p50_ms <= status.latency.p95_ms
    assert status.last_error is None
    assert gateway.reports(DEVICE)[-1].desired_sequence == 1
    assert not list((directory / "downloads").iterdir())  # committed downloads are dropped


def test_https_with_a_ca_file(signer, bundle_keys, tmp_path):
    import ssl

    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    gateway = StandInGateway(tls=context)
    try:
        gateway.publish(signer.bundle(1))
        gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
        untrusted = run_agent_once(gateway, signer, tmp_path / "device", DEVICE)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        done = run_agent_once(gateway, signer, tmp_path / "device", DEVICE, "--ca-file", str(ca_file))
        assert done.returncode == 0, done.stderr
        assert check_active(tmp_path / "device", bundle_keys) == 1
    finally:
        gateway.close()


def test_installs_a_real_tflite_bundle(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    install(gateway, signer, directory, signer.bundle(4, runtime="tflite"))
    assert check_active(directory, bundle_keys) == 4
    assert last_target(gateway).installed.artifact == "tflite-fp32-phones"


def test_upgrades_keep_the_previous_version_and_prune_older_ones(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    for version in (1, 2, 3):
        install(gateway, signer, directory, signer.bundle(version))
    assert check_active(directory, bundle_keys) == 3
    assert os.readlink(target_dir(directory) / "previous") == "versions/2"
    assert sorted(p.name for p in (target_dir(directory) / "versions").iterdir()) == ["2", "3"]
    status = last_target(gateway)
    assert (status.installed.version, status.previous.version) == (3, 2)


def test_a_rollback_order_installs_the_previous_version_from_disk(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    install(gateway, signer, directory, signer.bundle(1))
    install(gateway, signer, directory, signer.bundle(2))
    gateway.bundles.clear()  # nothing to download: version 1 is verified where it is
    install(gateway, signer, directory, signer.bundle(1), rollback=True)
    assert check_active(directory, bundle_keys) == 1
    assert last_target(gateway).installed.version == 1


def test_a_failing_smoke_test_keeps_the_active_model_and_reports_why(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    install(gateway, signer, directory, signer.bundle(1))
    wrong = signer.bundle(2, files={**signer.bundle(2).files, "smoke.npz": signer.bundle(7).files["smoke.npz"]})
    install(gateway, signer, directory, wrong, expect=2)
    assert check_active(directory, bundle_keys) == 1
    error = last_target(gateway).last_error
    assert (error.reason, error.version, error.transient, error.attempts) == ("SmokeTestFailed", 2, False, 1)
    assert "minCosine" in error.message
    assert sorted(p.name for p in (target_dir(directory) / "versions").iterdir()) == ["1"]


def test_an_interrupted_download_resumes_with_range(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    bundle = signer.bundle(1, files={**signer.bundle(1).files, "padding.bin": os.urandom(256 << 10)})
    gateway.cut_once.add("padding.bin")
    install(gateway, signer, directory, bundle, expect=2)
    error = last_target(gateway).last_error
    assert (error.reason, error.transient) == ("DownloadFailed", True)
    assert active_version(directory) is None
    partial = next((directory / "downloads").iterdir()) / "padding.bin"
    have = partial.stat().st_size
    assert 0 < have < 256 << 10

    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr
    assert gateway.range_requests == [("padding.bin", f"bytes={have}-")]  # only the rest was fetched
    assert check_active(directory, bundle_keys) == 1


def test_a_failing_hook_switches_back_to_the_previous_version(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    seen = tmp_path / "hook.env"
    hook = f"sh -c 'echo $MODELFLEET_MODEL $MODELFLEET_TARGET $MODELFLEET_VERSION $MODELFLEET_MODEL_PATH >> {seen}'"
    install(gateway, signer, directory, signer.bundle(1), extra=("--post-install-hook", hook))
    assert seen.read_text().split() == [MODEL, TARGET, "1", str(target_dir(directory.resolve()) / "current")]
    install(gateway, signer, directory, signer.bundle(2), extra=("--post-install-hook", "false"), expect=2)
    assert check_active(directory, bundle_keys) == 1
    assert last_target(gateway).last_error.reason == "HookFailed"


def test_outside_the_maintenance_window_a_verified_bundle_waits(gateway, signer, tmp_path):
    directory = tmp_path / "device"
    now = time.localtime()
    start = (now.tm_hour + 2) % 24  # a window that opens in two hours
    install(gateway, signer, directory, signer.bundle(1), expect=2,
            extra=("--maintenance-window", f"{start:02d}:00-{(start + 1) % 24:02d}:00"))
    assert active_version(directory) is None
    assert last_target(gateway).last_error is None  # held, not failed
    assert (next((directory / "downloads").iterdir()) / "model.bin").is_file()


@pytest.mark.parametrize(("window", "now", "inside"), [
    ("02:00-04:00", day_time(3, 0), True), ("02:00-04:00", day_time(4, 0), False),
    ("22:00-04:00", day_time(23, 30), True), ("22:00-04:00", day_time(1, 0), True),
    ("22:00-04:00", day_time(12, 0), False), ("00:00-00:00", day_time(12, 0), True)])
def test_maintenance_windows_may_cross_midnight(window, now, inside):
    assert in_window(parse_window(window), now) is inside


def test_a_broken_current_falls_back_to_previous_on_start(gateway, signer, bundle_keys, tmp_path):
    directory = tmp_path / "device"
    install(gateway, signer, directory, signer.bundle(1))
    install(gateway, signer, directory, signer.bundle(2))
    (target_dir(directory) / "versions" / "2" / "model.bin").unlink()  # damage from outside the agent
    gateway.down = True
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 1 and "back to previous" in done.stderr
    assert check_active(directory, bundle_keys) == 1


def read_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_running_agent_installs_idles_small_serves_metrics_and_rides_out_an_outage(gateway, signer, bundle_keys,
                                                                                       tmp_path):
    from conftest import free_port

    directory, port = tmp_path / "device", free_port()
    gateway.publish(signer.bundle(1))
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
    command = agent_command(gateway, signer, directory, DEVICE, "--poll-seconds", "0.3",
                            "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    process = subprocess.Popen(command, env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        state = gateway.device(DEVICE)
        gateway.wait_for(lambda: state.reports and state.reports[-1].targets
                         and state.reports[-1].targets[0].installed, timeout=60)
        polled = state.not_modified
        gateway.wait_for(lambda: state.not_modified >= polled + 3)  # idle: 304s
        rss = read_rss_mb(process.pid)
        print(f"idle RSS after an install: {rss:.1f} MB")
        assert rss <= 120
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "ncnn" not in maps and "litert" not in maps.lower() and "numpy" not in maps  # the child ran them
        text = scrape(port)
        assert 'modelfleet_agent_active_version{model="digits",target="phones"} 1.0' in text
        assert 'modelfleet_agent_installs_total{model="digits",reason="Installed",result="Installed",' \
               'target="phones"} 1.0' in text
        assert 'modelfleet_agent_smoke_agreement_ratio{model="digits",target="phones"}' in text
        assert 'modelfleet_agent_latency_p95_seconds{model="digits",target="phones"}' in text

        gateway.publish(signer.bundle(2))
        gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(2).ref()))
        gateway.wait_for(lambda: state.reports[-1].targets[0].installed.version == 2, timeout=60)

        gateway.down = True  # offline: the active model stays, errors are counted, polling goes on with backoff
        gateway.wait_for(lambda: metric(scrape(port), 'modelfleet_agent_poll_errors_total{reason="Unavailable"}') >= 2,
                         timeout=30)
        assert check_active(directory, bundle_keys) == 2
        gateway.down = False
        reports = len(state.reports)
        gateway.wait_for(lambda: len(state.reports) > reports, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, process.stderr.read()


def test_backoff_doubles_with_jitter_up_to_the_rollouts_cap():
    from modelfleet.agent.loop import MAX_BACKOFF_S, _backoff

    for attempts, full in [(1, 30), (2, 60), (3, 120), (10, MAX_BACKOFF_S)]:
        delays = [_backoff(30, attempts) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 10  # jittered: devices do not retry in step


def test_the_agent_imports_neither_torch_nor_kubernetes_nor_the_runtimes():
    code = ("import sys, modelfleet.cli, modelfleet.agent.loop, modelfleet.agent.metrics, modelfleet.agent.command\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'kopf', 'kubernetes', 'ncnn', "
            "'ai_edge_litert', 'onnxruntime', 'numpy') or m.startswith(('modelfleet.pipeline', 'modelfleet.domain', "
            "'modelfleet.k8s', 'modelfleet.fleet'))]\n"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], env=agent_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_switch_whose_hook_was_cut_short_is_undone_on_restart_and_installed_again(gateway, signer, bundle_keys,
                                                                                    tmp_path):
    directory, hook = tmp_path / "device", ("--post-install-hook", "true")
    install(gateway, signer, directory, signer.bundle(1), extra=hook)
    install(gateway, signer, directory, signer.bundle(2), extra=hook)
    # What a kill -9 while the hook ran leaves: version 2 active, the phase saying its hook had not finished.
    (target_dir(directory) / "install.json").write_text('{"phase": "hooking", "version": 2}')
    gateway.down = True
    done = run_agent_once(gateway, signer, directory, DEVICE, *hook)
    assert done.returncode == 1 and "hook did not finish" in done.stderr
    assert check_active(directory, bundle_keys) == 1
    gateway.down = False
    done = run_agent_once(gateway, signer, directory, DEVICE, *hook)
    assert done.returncode == 0, done.stderr
    assert check_active(directory, bundle_keys) == 2
