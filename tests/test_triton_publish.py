"""Publishing to a real Triton server (tritonserver 2.51 on 127.0.0.1, see conftest.TritonProcess).

The artifacts are the digits CNN's, trained on real data; Triton runs them through the test-only
Python-based "onnxruntime" backend in tests/triton_backend (the repository layout is production's).
"""

import json
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from conftest import TritonProcess, digits_example, free_port
from kill_trials import KillTrials, PublishRun, table

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.publication import PublishedVersion, RepositoryRecord
from modelfleet.api.result import ResultManifest
from modelfleet.errors import PermanentError, PublishConflict, RepositoryError, RetryableError
from modelfleet.progress import Progress
from modelfleet.publish.recovery import RECORD_HISTORY, begin, prune, recover, settle
from modelfleet.publish.repository import CONFIG_FILE, RECORD_FILE, ModelRepository, open_repository, read_record
from modelfleet.publish.triton import ALLOWED_SERVERS_ENV, check_server_allowed, publish
from modelfleet.store import sha256_file

OWNER = "default/digits"


def load_result(result_dir: Path) -> ResultManifest:
    return ResultManifest.model_validate_json((result_dir / "result.json").read_text())


def target(repository: Path, name: str, server_url: str | None, **changes) -> TritonTarget:
    # int8-static named, as these tests are about publishing one known artifact (auto is tests/test_choice.py's)
    return TritonTarget.model_validate({"repository": f"file://{repository}", "modelName": name,
                                        "precision": "int8-static", "serverUrl": server_url,
                                        "verification": {"latencyRequests": 20}} | changes)


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
    with pytest.raises(PermanentError, match="carries no signature") as error:
        publish(result, digits_result, target(Path("/nonexistent"), "digits", None), OWNER, None, Progress(enabled=False))
    assert (type(error.value), error.value.reason) == (PermanentError, "ArtifactMissing")


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


def repository_target(repository: str, name: str = "digits") -> TritonTarget:
    return TritonTarget.model_validate({"repository": repository, "modelName": name, "precision": "int8-static"})


def test_s3_repository_gets_versions_config_and_record(s3, digits_result):
    result = load_result(digits_result)
    outcomes = [publish(result, digits_result, repository_target("s3://models/triton"), OWNER, None, Progress(enabled=False))
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
        publish(result, digits_result, repository_target("s3://models/triton", "resnet"), OWNER, None, Progress(enabled=False))
    assert s3.get_object(Bucket="models", Key="triton/resnet/1/model.onnx")["Body"].read() == b"not ours"

    with pytest.raises(RepositoryError, match="NoSuchBucket"):
        publish(result, digits_result, repository_target("s3://no-such-bucket/triton"), OWNER, None, Progress(enabled=False))

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError, match="S3 unreachable"):
        publish(result, digits_result, repository_target("s3://models/triton"), OWNER, None, Progress(enabled=False))


# --- the command line ----------------------------------------------------------------------------


def test_run_publishes_and_publish_command_adds_a_version(triton, digits_data, tmp_path):
    import yaml

    from conftest import digits_example
    from modelfleet.cli import main

    # precision auto (the default) between fp32 and int8-static. Not int8-dynamic: it quantizes activations
    # with a scale taken from each batch, so Triton's outputs (other batches) differ from the smoke outputs.
    changes = {"benchmark": {"runs": 10, "warmupRuns": 2}, "compression": {"precisions": ["int8-static"]},
               "targets": {"edge": [], "triton": {
                   "repository": f"file://{triton.repository}", "modelName": "digits-cli", "serverUrl": triton.url,
                   "verification": {"latencyRequests": 10}}}}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    out = tmp_path / "out"
    assert main(["run", "-q", "-f", str(manifest), "-o", str(out)]) == 0
    (choice,) = json.loads((out / "result.json").read_text())["choices"]
    publication = json.loads((out / "triton-publication.json").read_text())
    assert (publication["state"], publication["version"], publication["artifact"]) == ("Served", 1, choice["chosen"])

    assert main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(out)]) == 0
    assert json.loads((out / "triton-publication.json").read_text())["servedVersions"] == [1, 2]

    # A repository the server does not read: Triton serves its own digits-cli, which is caught.
    exit_code = main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(out), "--repository", "file://elsewhere"])
    publication = json.loads((out / "triton-publication.json").read_text())
    assert (exit_code, publication["state"], publication["reason"]) == (22, "Failed", "WrongRepository")
    assert "from another repository" in publication["message"]
    assert not any((tmp_path / "elsewhere/digits-cli").glob("[0-9]*"))  # the unserved version was removed
    assert client(triton).is_model_ready("digits-cli", "2")


def test_publish_judges_the_result_by_the_manifests_slos_not_the_ones_it_was_built_under(digits_data, digits_result,
                                                                                       tmp_path):
    """Changing the SLOs does not recompress (the operator keeps the result), so the publish command gates
    the stored result with the SLOs of the manifest it is given."""
    import yaml

    from conftest import digits_example
    from modelfleet.cli import main

    assert load_result(digits_result).verdict.passed
    repository = tmp_path / "repository"
    changes = {"slo": {"maxAccuracyDropPoints": 0.0, "maxSizeBytes": 1000},
               "targets": {"edge": [], "triton": {"repository": f"file://{repository}", "modelName": "digits-slo"}}}
    manifest = tmp_path / "stricter.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    assert main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(digits_result)]) == 10  # SLONotMet
    assert not repository.exists()

    changes["slo"] = {"maxAccuracyDropPoints": 5.0}
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    assert main(["publish", "triton", "-q", "-f", str(manifest), "-r", str(digits_result)]) == 0
    assert (repository / "digits-slo" / "1" / "model.onnx").is_file()


# --- nothing unverified stays served: rollback on any failure, the write-ahead record, pruning ----


def states(repository: ModelRepository, name: str) -> dict[int, str]:
    return {v.version: v.state for v in read_record(repository, name).versions}


class FaultAt(Progress):
    """Progress that calls `fault` at the step whose message contains `text`: a real fault at a known point."""

    def __init__(self, text: str, fault):
        super().__init__(enabled=False)
        self.text, self.fault = text, fault

    def step(self, stage: str, message: str) -> None:
        if self.text in message:
            self.fault()


def test_triton_stopping_mid_verification_rolls_back_and_the_next_attempt_finishes_it(digits_result, tmp_path):
    (tmp_path / "repository").mkdir()
    result = load_result(digits_result)
    server = TritonProcess(tmp_path / "repository", tmp_path / "first.log")
    try:
        publish(result, digits_result, target(tmp_path / "repository", "digits", server.url), OWNER, None,
                Progress(enabled=False))
        served_config = (tmp_path / "repository/digits" / CONFIG_FILE).read_text()
        with pytest.raises(RetryableError, match="unreachable") as error:
            publish(result, digits_result, target(tmp_path / "repository", "digits", server.url), OWNER, None,
                    FaultAt("verifying version 2", server.stop))
    finally:
        server.stop()
    assert error.value.exit_code >= 128
    repository = open_repository(f"file://{tmp_path / 'repository'}")
    assert repository.versions("digits") == [1]
    assert repository.read("digits", CONFIG_FILE) == served_config
    # The stopped server could not be told to reload: version 2 stays pending until the next attempt.
    assert states(repository, "digits") == {1: "served", 2: "pending"}

    server = TritonProcess(tmp_path / "repository", tmp_path / "second.log")
    try:
        outcome = publish(result, digits_result, target(tmp_path / "repository", "digits", server.url), OWNER, None,
                          Progress(enabled=False))
    finally:
        server.stop()
    assert (outcome.state, outcome.version, outcome.served_versions) == ("Served", 3, [1, 3])
    assert repository.versions("digits") == [1, 3]  # the last verified version survived the retry's pruning
    assert states(repository, "digits") == {1: "served", 2: "rolledBack", 3: "served"}


@pytest.fixture
def cli_target(triton, digits_data, digits_result, tmp_path):
    """A manifest publishing model `name` to the session's server, and a copy of the result it publishes."""
    import yaml

    result_dir = tmp_path / "result"
    shutil.copytree(digits_result, result_dir)

    def write(name: str) -> tuple[Path, Path]:
        changes = {"targets": {"edge": [], "triton": {
            "repository": f"file://{triton.repository}", "modelName": name, "serverUrl": triton.url,
            "verification": {"latencyRequests": 100}}}}
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
        return manifest, result_dir

    return write


@pytest.mark.parametrize("name, step", [("digits-term-a", "loading digits-term-a"),
                                        ("digits-term-b", "measuring version 2")], ids=["load", "latency-run"])
def test_sigterm_rolls_back_before_the_process_exits(triton, cli_target, name, step):
    manifest, result_dir = cli_target(name)
    assert PublishRun(manifest, result_dir).finish() == 0
    run = PublishRun(manifest, result_dir)
    run.wait_for_line(step)
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.lines
    assert any("[Terminated]" in line for line in run.lines), run.lines
    repository = open_repository(f"file://{triton.repository}")
    assert states(repository, name) == {1: "served", 2: "rolledBack"}, run.lines
    assert repository.versions(name) == [1]
    assert KillTrials(triton.url, triton.repository, name, manifest, result_dir, seed=0).violations(1) == []
    assert [m["version"] for m in client(triton).get_model_repository_index()
            if m["name"] == name and m.get("state") == "READY"] == ["1"]


def test_publish_killed_at_random_points_never_leaves_an_unverified_version_served(triton, cli_target):
    manifest, result_dir = cli_target("digits-kills")
    trials = KillTrials(triton.url, triton.repository, "digits-kills", manifest, result_dir, seed=2024)
    trials.calibrate()
    results = [trials.run(number) for number in range(6)]
    assert sum(len(t.violations) for t in results) == 0, table(results, trials.startup_s, trials.duration_s)


def killed_attempt(repository: ModelRepository, name: str, result_dir: Path, killed_after: str) -> int:
    """What an attempt killed after step `killed_after` leaves behind: publish's own steps up to there."""
    artifact = next(a for a in load_result(result_dir).artifacts if a.name == "onnx-int8-static")
    record = read_record(repository, name)
    version = record.last_version + 1
    begin(repository, record, name, PublishedVersion(version=version, artifact=artifact.name, sha256=artifact.sha256,
                                                     state="pending", previous_config=repository.read(name, CONFIG_FILE)))
    if killed_after == "copying" and repository.uri.startswith("file://"):
        staging = Path(repository.uri.removeprefix("file://")) / name / f".staging-{version}"
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"half a model")
    if killed_after in ("copied", "configured"):
        repository.put_version(name, version, result_dir / artifact.files[0])
    if killed_after == "configured":
        repository.write(name, CONFIG_FILE, f"# the config of version {version}, never verified")
    return version


@pytest.mark.parametrize("killed_after", ["recorded", "copying", "copied", "configured"])
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_attempt_killed_after_any_step_is_undone_by_the_next_one(digits_result, tmp_path, request, kind, killed_after):
    uri = f"file://{tmp_path}" if kind == "file" else f"s3://models/{tmp_path.name}"  # moto's buckets outlive a test
    if kind == "s3":
        request.getfixturevalue("s3")
    result, repository = load_result(digits_result), open_repository(uri)
    publish(result, digits_result, repository_target(uri), OWNER, None, Progress(enabled=False))
    config = repository.read("digits", CONFIG_FILE)
    assert killed_attempt(repository, "digits", digits_result, killed_after) == 2

    outcome = publish(result, digits_result, repository_target(uri), OWNER, None, Progress(enabled=False))
    assert (outcome.state, outcome.version) == ("Written", 3)
    assert repository.versions("digits") == [1, 3]
    assert states(repository, "digits") == {1: "written", 2: "rolledBack", 3: "written"}
    assert repository.read("digits", CONFIG_FILE) != config and "3:" in repository.read("digits", CONFIG_FILE)
    if kind == "file":
        assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1", "3", CONFIG_FILE, RECORD_FILE]


def test_a_killed_first_version_is_recovered_to_no_config_at_all(digits_result, tmp_path):
    repository = open_repository(f"file://{tmp_path}")
    record = RepositoryRecord(owner=OWNER, last_version=0)
    artifact = next(a for a in load_result(digits_result).artifacts if a.name == "onnx-int8-static")
    begin(repository, record, "digits", PublishedVersion(version=1, artifact=artifact.name, sha256=artifact.sha256,
                                                         state="pending"))
    repository.put_version("digits", 1, digits_result / artifact.files[0])
    repository.write("digits", CONFIG_FILE, "# never verified")

    record = read_record(repository, "digits")
    recover(repository, record, repository_target(f"file://{tmp_path}"), None, Progress(enabled=False))
    assert [p.name for p in (tmp_path / "digits").iterdir()] == [RECORD_FILE]
    assert (read_record(repository, "digits").last_version, states(repository, "digits")) == (1, {1: "rolledBack"})


def test_pruning_keeps_the_newest_verified_versions_and_touches_nothing_else(digits_result, tmp_path):
    repository = open_repository(f"file://{tmp_path}")
    recorded = {1: "served", 2: "served", 3: "rolledBack", 4: "written", 5: "pending", 6: "served"}
    for version in [*recorded, 7]:  # 7: a directory the record does not list
        repository.put_version("digits", version, digits_result / "onnx-int8-static/model.onnx")
    record = RepositoryRecord(owner=OWNER, last_version=7, versions=[
        PublishedVersion(version=v, artifact="onnx-int8-static", sha256="0" * 64, state=state)
        for v, state in recorded.items()])
    keep_two = repository_target(f"file://{tmp_path}")

    prune(repository, record, keep_two, 4)  # verified up to 4: 1, 2, 4; the newer 6 is not a candidate
    assert repository.versions("digits") == [2, 3, 4, 5, 6, 7]
    prune(repository, record, keep_two, 6)
    assert repository.versions("digits") == [3, 4, 5, 6, 7]


def test_record_keeps_every_version_still_in_the_repository_however_long_the_history(digits_result, tmp_path):
    uri = f"file://{tmp_path}"
    repository = open_repository(uri)
    publish(load_result(digits_result), digits_result, repository_target(uri), OWNER, None, Progress(enabled=False))
    record = read_record(repository, "digits")
    for version in range(2, RECORD_HISTORY + 10):
        entry = PublishedVersion(version=version, artifact="onnx-int8-static", sha256="0" * 64, state="pending")
        begin(repository, record, "digits", entry)
        settle(repository, record, "digits", entry, "rolledBack")
    kept = read_record(repository, "digits").versions
    assert (kept[0].version, kept[0].state) == (1, "written")
    assert len(kept) == 1 + RECORD_HISTORY


# --- the allow-list of Triton servers (MODELFLEET_TRITON_SERVERS) ---------------------------------

ALLOWED = "http://triton.serving:8000,https://triton.prod:8443"


@pytest.mark.parametrize("url, allowed, ok", [
    ("http://triton.serving:8000", ALLOWED, True),
    ("https://TRITON.prod:8443/v2/models", ALLOWED, True),  # host case and path do not matter
    ("http://triton.serving", "http://triton.serving:80/", True),  # the scheme's default port
    ("http://triton.serving:8001", ALLOWED, False),
    ("https://triton.serving:8000", ALLOWED, False),
    ("http://triton.serving.example.com:8000", ALLOWED, False),
    ("http://triton.serving:8000@evil.example.com:8000", ALLOWED, False),  # user info is not the host
    ("http://triton.serving:8000", " , ", False),  # set, but nothing usable: refuse rather than allow all
    ("http://anything:1", "", True),  # unset: local use, no restriction
])
def test_allow_list_matches_scheme_host_and_port(url, allowed, ok):
    if ok:
        check_server_allowed(url, allowed)
    else:
        with pytest.raises(PermanentError, match="allow-list") as error:
            check_server_allowed(url, allowed)
        assert error.value.reason == "ServerNotAllowed" and url in str(error.value)


def test_server_off_the_allow_list_is_refused_before_any_request_or_write(digits_result, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOWED_SERVERS_ENV, ALLOWED)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(PermanentError) as error:
            publish(load_result(digits_result), digits_result, target(tmp_path / "repository", "digits", url), OWNER,
                    None, Progress(enabled=False))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    assert (error.value.reason, error.value.exit_code) == ("ServerNotAllowed", 2)
    assert url in str(error.value) and "operator's setting decides" in str(error.value)
    assert not (tmp_path / "repository").exists()


def test_server_on_the_allow_list_is_published_to(triton, digits_result, monkeypatch):
    monkeypatch.setenv(ALLOWED_SERVERS_ENV, f"{ALLOWED},{triton.url}/v2")
    assert publish_to(triton, "digits-allowed", digits_result).state == "Served"
