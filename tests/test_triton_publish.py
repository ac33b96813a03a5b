"""Publishing to a real Triton server (tritonserver 2.51 on 127.0.0.1, see conftest.TritonProcess).

The artifacts are the digits CNN's, trained on real data; Triton runs them through the test-only
Python-based "onnxruntime" backend in tests/triton_backend (the repository layout is production's).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from conftest import TritonProcess, free_port

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.result import ResultManifest
from modelfleet.errors import PublishConflict, RepositoryError, RetryableError
from modelfleet.progress import Progress
from modelfleet.publish.repository import RECORD_FILE
from modelfleet.publish.triton import publish
from modelfleet.store import sha256_file

OWNER = "default/digits"


def load_result(result_dir: Path) -> ResultManifest:
    return ResultManifest.model_validate_json((result_dir / "result.json").read_text())


def target(repository: Path, name: str, server_url: str | None, **changes) -> TritonTarget:
    return TritonTarget.model_validate({"repository": f"file://{repository}", "modelName": name,
                                        "serverUrl": server_url, "verification": {"latencyRequests": 20}} | changes)


def publish_to(server: TritonProcess, name: str, result_dir: Path, slo: float | None = None, **changes):
    return publish(load_result(result_dir), result_dir, target(server.repository, name, server.url, **changes),
                   OWNER, None, Progress(enabled=False), latency_slo_ms=slo)


def client(server: TritonProcess) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def versions_on_disk(server: TritonProcess, name: str) -> list[int]:
    return sorted(int(p.name) for p in (server.repository / name).iterdir() if p.name.isdigit())


def tampered(result_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of the result whose int8 artifact was changed by `change(artifact_dir)`, sha256 updated."""
    copy = tmp_path / "tampered"
    shutil.copytree(result_dir, copy)
    change(copy / "onnx-int8-static")
    result = json.loads((copy / "result.json").read_text())
    for artifact in result["artifacts"]:
        if artifact["name"] == "onnx-int8-static":
            artifact["sha256"] = sha256_file(copy / "onnx-int8-static/model.onnx")
    (copy / "result.json").write_text(json.dumps(result))
    return copy


def corrupt_model(directory: Path) -> None:
    (directory / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf model" * 50)


def test_publish_loads_verifies_and_measures(triton, digits_result):
    outcome = publish_to(triton, "digits-a", digits_result)
    assert (outcome.state, outcome.reason, outcome.version, outcome.served_versions) == ("Served", "Served", 1, [1])
    assert outcome.latency.requests == 20 and 0 < outcome.latency.p50_ms <= outcome.latency.p95_ms
    assert outcome.latency.server_avg_us > 0
    model_dir = triton.repository / "digits-a"
    assert (model_dir / "1/model.onnx").read_bytes() == (digits_result / "onnx-int8-static/model.onnx").read_bytes()
    assert 'backend: "onnxruntime"' in (model_dir / "config.pbtxt").read_text()
    record = json.loads((model_dir / RECORD_FILE).read_text())
    assert (record["owner"], record["lastVersion"], record["versions"][0]["state"]) == (OWNER, 1, "served")

    # Triton itself serves the real model: its answers classify the evaluation digits like onnxruntime does.
    smoke = np.load(digits_result / "onnx-int8-static/smoke.npz")
    request = triton_http.InferInput("input", list(smoke["inputs"].shape), "FP32")
    request.set_data_from_numpy(smoke["inputs"])
    served = client(triton).infer("digits-a", [request]).as_numpy("output")
    assert np.array_equal(served.argmax(axis=1), smoke["outputs"].argmax(axis=1))
    assert client(triton).get_model_metadata("digits-a")["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]


def test_versions_only_grow_and_the_previous_one_stays_served(triton, digits_result):
    outcomes = [publish_to(triton, "digits-b", digits_result) for _ in range(3)]
    assert [o.version for o in outcomes] == [1, 2, 3]
    assert outcomes[1].served_versions == [1, 2] and outcomes[2].served_versions == [2, 3]
    assert versions_on_disk(triton, "digits-b") == [2, 3]  # version 1 left the policy and the disk


def test_model_triton_rejects_is_rolled_back_with_tritons_error(triton, digits_result, tmp_path):
    assert publish_to(triton, "digits-c", digits_result).version == 1
    bad = tampered(digits_result, tmp_path, corrupt_model)
    outcome = publish_to(triton, "digits-c", bad)
    assert (outcome.state, outcome.reason, outcome.version) == ("Failed", "LoadFailed", 2)
    assert "Protobuf parsing failed" in outcome.message and "version 2" in outcome.message
    assert outcome.served_versions == [1]
    assert versions_on_disk(triton, "digits-c") == [1]
    assert client(triton).is_model_ready("digits-c", "1")
    # The failed number is never handed out again.
    assert publish_to(triton, "digits-c", digits_result).version == 3


def test_first_version_failing_leaves_nothing_served(triton, digits_result, tmp_path):
    outcome = publish_to(triton, "digits-d", tampered(digits_result, tmp_path, corrupt_model))
    assert (outcome.state, outcome.served_versions) == ("Failed", [])
    assert versions_on_disk(triton, "digits-d") == []
    assert not client(triton).is_model_ready("digits-d")


def test_outputs_that_differ_from_the_artifacts_own_are_rolled_back(triton, digits_result, tmp_path):
    publish_to(triton, "digits-e", digits_result)

    def shift_reference(directory: Path) -> None:
        smoke = dict(np.load(directory / "smoke.npz"))
        np.savez(directory / "smoke.npz", inputs=smoke["inputs"], outputs=smoke["outputs"] + 0.5)

    outcome = publish_to(triton, "digits-e", tampered(digits_result, tmp_path, shift_reference))
    assert (outcome.state, outcome.reason, outcome.served_versions) == ("Failed", "SmokeMismatch", [1])
    assert "differ" in outcome.message and "0.5" in outcome.message


def test_missed_latency_slo_is_rolled_back(triton, digits_result):
    publish_to(triton, "digits-f", digits_result)
    outcome = publish_to(triton, "digits-f", digits_result, slo=0.001)
    assert (outcome.state, outcome.reason, outcome.served_versions) == ("Failed", "LatencySLONotMet", [1])
    assert "exceeds the SLO of 0.001 ms" in outcome.message


def test_unreachable_triton_is_retryable_and_writes_nothing(digits_result, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RetryableError, match="unreachable") as error:
        publish(load_result(digits_result), digits_result, target(tmp_path, "digits", dead), OWNER, None,
                Progress(enabled=False))
    assert error.value.exit_code >= 128
    assert list(tmp_path.iterdir()) == []


def test_name_taken_by_a_foreign_model_or_another_owner_is_refused(digits_result, tmp_path):
    foreign = tmp_path / "resnet" / "1"
    foreign.mkdir(parents=True)
    (foreign / "model.onnx").write_bytes(b"someone else's model")
    with pytest.raises(PublishConflict, match="not published by modelfleet"):
        publish(load_result(digits_result), digits_result, target(tmp_path, "resnet", None), OWNER, None,
                Progress(enabled=False))
    assert (foreign / "model.onnx").read_bytes() == b"someone else's model"
    assert sorted(p.name for p in (tmp_path / "resnet").iterdir()) == ["1"]

    publish(load_result(digits_result), digits_result, target(tmp_path, "digits", None), OWNER, None,
            Progress(enabled=False))
    with pytest.raises(PublishConflict, match="belongs to default/digits, not team-b/digits") as error:
        publish(load_result(digits_result), digits_result, target(tmp_path, "digits", None), "team-b/digits", None,
                Progress(enabled=False))
    assert error.value.exit_code == 21


def test_repository_that_cannot_be_written_fails_cleanly(digits_result, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the repository should be")
    with pytest.raises(RepositoryError, match="cannot be written") as error:
        publish(load_result(digits_result), digits_result, target(blocker, "digits", None), OWNER, None,
                Progress(enabled=False))
    assert error.value.exit_code == 20
    assert blocker.read_text() == "a file where the repository should be"


def test_version_copy_failing_midway_leaves_no_version_directory(digits_result, tmp_path):
    from modelfleet.publish.repository import LocalRepository

    repository = LocalRepository("file://x", tmp_path)
    with pytest.raises(RepositoryError):
        repository.put_version("digits", 1, tmp_path / "missing.onnx")
    assert [p.name for p in (tmp_path / "digits").iterdir()] == []


def test_poll_mode_server_picks_up_the_new_version(digits_result, tmp_path):
    (tmp_path / "repository").mkdir()
    server = TritonProcess(tmp_path / "repository", tmp_path / "poll.log",
                           "--model-control-mode=poll", "--repository-poll-secs=1")
    try:
        first = publish_to(server, "digits", digits_result, modelControl="poll")
        second = publish_to(server, "digits", digits_result, modelControl="poll")
        assert (first.state, first.version, second.state, second.version) == ("Served", 1, "Served", 2)
        assert client(server).is_model_ready("digits", "2")
    finally:
        server.stop()


def test_a_model_without_a_signature_is_refused(digits_result):
    result = load_result(digits_result)
    for artifact in result.artifacts:
        artifact.signature = None
    with pytest.raises(Exception, match="carries no signature"):
        publish(result, digits_result, target(Path("/nonexistent"), "digits", None), OWNER, None, Progress(enabled=False))


# --- s3:// repositories, against moto's S3 server on loopback (a real HTTP S3 endpoint) ------------


@pytest.fixture
def s3(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "modelfleet",
                       "AWS_SECRET_ACCESS_KEY": "modelfleet-secret", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="models")
    yield client
    server.stop()


def s3_target(repository: str, name: str = "digits") -> TritonTarget:
    return TritonTarget.model_validate({"repository": repository, "modelName": name})


def test_s3_repository_gets_versions_config_and_record(s3, digits_result):
    result = load_result(digits_result)
    outcomes = [publish(result, digits_result, s3_target("s3://models/triton"), OWNER, None, Progress(enabled=False))
                for _ in range(3)]
    assert [(o.state, o.version) for o in outcomes] == [("Written", 1), ("Written", 2), ("Written", 3)]
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="models")["Contents"])
    # keepVersions (2) prunes version 1 from the repository as well.
    assert keys == ["triton/digits/2/model.onnx", "triton/digits/3/model.onnx", "triton/digits/config.pbtxt",
                    "triton/digits/modelfleet.json"]
    body = s3.get_object(Bucket="models", Key="triton/digits/3/model.onnx")["Body"].read()
    assert body == (digits_result / "onnx-int8-static/model.onnx").read_bytes()
    record = json.loads(s3.get_object(Bucket="models", Key="triton/digits/modelfleet.json")["Body"].read())
    assert (record["owner"], record["lastVersion"]) == (OWNER, 3)


def test_s3_foreign_model_missing_bucket_and_dead_endpoint(s3, digits_result, monkeypatch):
    result = load_result(digits_result)
    s3.put_object(Bucket="models", Key="triton/resnet/1/model.onnx", Body=b"not ours")
    with pytest.raises(PublishConflict):
        publish(result, digits_result, s3_target("s3://models/triton", "resnet"), OWNER, None, Progress(enabled=False))
    assert s3.get_object(Bucket="models", Key="triton/resnet/1/model.onnx")["Body"].read() == b"not ours"

    with pytest.raises(RepositoryError, match="NoSuchBucket"):
        publish(result, digits_result, s3_target("s3://no-such-bucket/triton"), OWNER, None, Progress(enabled=False))

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError, match="S3 unreachable"):
        publish(result, digits_result, s3_target("s3://models/triton"), OWNER, None, Progress(enabled=False))


# --- the command line ----------------------------------------------------------------------------


def test_run_publishes_and_publish_command_adds_a_version(triton, digits_data, tmp_path):
    import yaml

    from conftest import digits_example
    from modelfleet.cli import main

    changes = {"benchmark": {"runs": 10, "warmupRuns": 2}, "targets": {"edge": [], "triton": {
        "repository": f"file://{triton.repository}", "modelName": "digits-cli", "serverUrl": triton.url,
        "verification": {"latencyRequests": 10}}}}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    out = tmp_path / "out"
    assert main(["run", "-q", "-f", str(manifest), "-o", str(out)]) == 0
    publication = json.loads((out / "triton-publication.json").read_text())
    assert (publication["state"], publication["version"], publication["artifact"]) == ("Served", 1, "onnx-int8-static")

    assert main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(out)]) == 0
    assert json.loads((out / "triton-publication.json").read_text())["servedVersions"] == [1, 2]

    # A repository the server does not read: Triton serves its own digits-cli, which is caught.
    exit_code = main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(out), "--repository", "file://elsewhere"])
    publication = json.loads((out / "triton-publication.json").read_text())
    assert (exit_code, publication["state"], publication["reason"]) == (22, "Failed", "WrongRepository")
    assert "from another repository" in publication["message"]
    assert not any((tmp_path / "elsewhere/digits-cli").glob("[0-9]*"))  # the unserved version was removed
    assert client(triton).is_model_ready("digits-cli", "2")
