"""The real agent process against the real fleet gateway (operator/modelfleet/fleet/, uvicorn on loopback, its
in-memory API server standing in for Kubernetes): enrol, poll, download real ncnn bundles from the file://
store, install version 2 as the rollout orders, report; then the rollout rolls back and the agent follows.
"""

import hashlib
import sys
from datetime import datetime, timedelta, timezone

import pytest

from agent_fleet import REPO, check_active, model_files, target_dir

pytest.importorskip("uvicorn")

from gateway_world import (MODEL, NAMESPACE, SIGNATURE, TARGET, TOKEN, World, compressed_model,  # noqa: E402
                           rollout, serve)
from modelfleet import signing  # noqa: E402
from modelfleet.api.bundle import BundleManifest  # noqa: E402
from modelfleet.fleet.backend import MODELS  # noqa: E402

DEVICE = "phone-07"


def real_bundle(world: World, version: int) -> None:
    """A real ncnn bundle (golden outputs from ncnn itself) in the store layout, over the world's stand-in one."""
    files = model_files("ncnn", version, world.root / "golden")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    manifest = BundleManifest(
        namespace=NAMESPACE, model=MODEL, target=TARGET, version=version, runtime="ncnn", precision="fp32",
        signature=SIGNATURE, model_files=["model.param", "model.bin"],
        files=[{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "sizeBytes": len(b)} for p, b in files.items()],
        smoke={"minCosine": 0.999}, device_selector={"modelfleet.io/class": "phone"},
        created=now - timedelta(days=1), expires=now + timedelta(days=30))
    directory = world.root / NAMESPACE / MODEL / "bundles" / TARGET / str(version)
    for old in directory.iterdir():
        old.unlink()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "manifest.json").write_bytes(signing.sign(manifest, world.bundle_key))


def test_the_agent_installs_what_the_real_gateway_orders_and_follows_a_rollback(tmp_path):
    import subprocess

    from agent_fleet import agent_env

    world = World(tmp_path / "store")
    for version in (1, 2):
        real_bundle(world, version)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "gateway.pub").write_bytes(signing.public_key_pem(world.state_key))
    (keys / "bundle.pub").write_bytes(signing.public_key_pem(world.bundle_key))
    (keys / "token").write_text(TOKEN)
    directory = tmp_path / "device"
    gateway = world.gateway(clock=lambda: datetime.now(timezone.utc))

    def agent():
        return subprocess.run(
            [sys.executable, "-m", "modelfleet.cli", "agent", "--gateway", running.url, "--dir", str(directory),
             "--namespace", NAMESPACE, "--device", DEVICE, "--label", "modelfleet.io/class=phone",
             "--bootstrap-token-file", str(keys / "token"), "--state-keys", str(keys / "gateway.pub"),
             "--bundle-keys", str(keys / "bundle.pub"), "--once", "-v"],
            env=agent_env(), capture_output=True, text=True, timeout=120, cwd=REPO)

    bundle_keys = signing.KeySet([world.bundle_key])
    with serve(gateway) as running:
        done = agent()
        assert done.returncode == 0, done.stderr
        assert check_active(directory, bundle_keys) == 2

        # The rollout halts and rolls back: the gateway orders version 1 with a rollback, the agent obeys.
        world.api.put(MODELS, compressed_model(rollout(2, 1, opened=3, rolledBack=True,
                                                       changedAt=datetime.now(timezone.utc).strftime(
                                                           "%Y-%m-%dT%H:%M:%SZ"))))
        done = agent()
        assert done.returncode == 0, done.stderr
        assert check_active(directory, bundle_keys) == 1
        assert (target_dir(directory) / "previous").resolve().name == "2"
