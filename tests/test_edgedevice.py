"""The EdgeDevice resource: its model and the fleet-view columns summed up from its targets."""

import pytest
import yaml

from modelfleet.api.edgedevice import DeviceTargetStatus, EdgeDevice, EdgeDeviceStatus
from modelfleet.domain.device import fleet_columns, worst_health

from test_crdgen import REPO

SHA = "0" * 64


def target(model, name, health="Healthy", version=None, p95=None) -> DeviceTargetStatus:
    return DeviceTargetStatus.model_validate({
        "model": model, "target": name, "health": health,
        **({"installed": {"artifact": f"ncnn-fp16-{name}", "version": version, "bundleSha256": SHA,
                          "since": "2025-12-01T12:00:00Z"}} if version else {}),
        **({"latency": {"p50Ms": p95 / 2, "p95Ms": p95}} if p95 is not None else {}),
    })


@pytest.mark.parametrize(("healths", "worst"), [
    ([], "Unknown"),
    (["Healthy"], "Healthy"),
    (["Healthy", "Unknown"], "Unknown"),
    (["Unknown", "Degraded", "Healthy"], "Degraded"),
    (["Degraded", "Failed"], "Failed"),
], ids=["no-targets", "healthy", "unknown-beats-healthy", "degraded-beats-unknown", "failed-beats-all"])
def test_worst_health(healths, worst):
    assert worst_health([target("digits", f"t{i}", h) for i, h in enumerate(healths)]) == worst


def test_fleet_columns_sum_up_every_target_in_one_line():
    status = EdgeDeviceStatus(targets=[target("kws", "phones", "Healthy", 7, 2.5),
                                       target("digits", "phones", "Degraded", 3, 4.8),
                                       target("digits", "pis", "Unknown")])
    columns = fleet_columns(status)
    assert (columns.health, columns.installed, columns.p95_ms) == ("Degraded", "digits/phones=3 kws/phones=7", 4.8)
    assert columns.targets == status.targets


def test_fleet_columns_of_a_device_that_runs_nothing_yet():
    columns = fleet_columns(EdgeDeviceStatus(agent_version="0.1.0"))
    assert (columns.health, columns.installed, columns.p95_ms) == ("Unknown", None, None)
    assert "installed" not in columns.to_wire() and "p95Ms" not in columns.to_wire()


def test_the_example_device_says_what_its_columns_say():
    example = yaml.safe_load((REPO / "examples" / "edge" / "edgedevice.yaml").read_text())
    device = EdgeDevice.model_validate(example)
    assert fleet_columns(device.status) == device.status


def test_a_device_enrols_with_metadata_alone():
    device = EdgeDevice.model_validate({"apiVersion": "modelfleet.io/v1alpha1", "kind": "EdgeDevice",
                                        "metadata": {"name": "pi-4.kitchen", "labels": {"modelfleet.io/class": "rpi4"}}})
    assert device.spec.display_name is None and device.status is None
