"""s3:// as the artifact store, against a real MinIO built from its Go module (hack/minio.sh) on loopback."""

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import digits_example, free_port

from modelfleet.cli import main
from modelfleet.controller import clean_up, read_publication, read_result
from modelfleet.domain.plan import OperatorSettings, result_uri
from modelfleet.errors import PermanentError, RetryableError, SourceError
from modelfleet.store import fetch, read_text, s3

FAST = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10}, "targets": {"edge": []}}


def keys(minio, prefix: str) -> dict[str, dict]:
    pages = minio.client().get_paginator("list_objects_v2").paginate(Bucket=minio.bucket, Prefix=prefix)
    return {item["Key"]: item for page in pages for item in page.get("Contents", [])}


def body(minio, key: str) -> bytes:
    return minio.client().get_object(Bucket=minio.bucket, Key=key)["Body"].read()


# --- fetching inputs -------------------------------------------------------------------------------


def test_fetch_downloads_the_object_into_the_workdir(minio_env, tmp_path):
    minio_env.client().put_object(Bucket="modelfleet", Key="inputs/digits/model.pt", Body=b"weights" * 1000)
    path = fetch("s3://modelfleet/inputs/digits/model.pt", tmp_path / "download")
    assert path == tmp_path / "download" / "model.pt"
    assert path.read_bytes() == b"weights" * 1000
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no .part file left behind


def test_missing_key_or_bucket_and_refused_credentials_are_permanent_and_say_so(minio_env, tmp_path, monkeypatch):
    with pytest.raises(SourceError, match=r"s3://modelfleet/inputs/nothing.pt: no such object") as missing:
        fetch("s3://modelfleet/inputs/nothing.pt", tmp_path)
    assert missing.value.reason == "SourceNotFound" and missing.value.exit_code == 4
    with pytest.raises(SourceError, match=r"s3://no-such-bucket/model.pt: no such bucket") as no_bucket:
        fetch("s3://no-such-bucket/model.pt", tmp_path)
    assert no_bucket.value.reason == "SourceNotFound"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(SourceError, match=r"S3 denied access \(SignatureDoesNotMatch.*check the S3 credentials") as denied:
        fetch("s3://modelfleet/inputs/digits/model.pt", tmp_path)
    assert denied.value.reason == "AccessDenied"
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_is_retryable(minio_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError, match="S3 unreachable") as error:
        fetch("s3://modelfleet/inputs/digits/model.pt", tmp_path)
    assert error.value.exit_code >= 128
    with pytest.raises(RetryableError):
        read_text("s3://modelfleet/results/result.json")
    with pytest.raises(RetryableError):  # the operator must not conclude "no result" from "cannot look"
        read_result("s3://modelfleet/results")


# --- uploading results: artifacts first, result.json last --------------------------------------------


def result_dir(root: Path, version: str) -> Path:
    for name in ("onnx-fp32/model.onnx", "onnx-fp16/model.onnx", "onnx-fp16/smoke.npz"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name} {version}")
    (root / ".staging").mkdir(exist_ok=True)
    (root / ".staging" / "leftover").write_text("not part of the result")
    (root / "result.json").write_text(json.dumps({"version": version}))
    return root


def test_result_json_is_uploaded_last_and_a_failed_upload_keeps_the_previous_one(minio_env, tmp_path, monkeypatch):
    uri = "s3://modelfleet/results/ordering"
    order = []
    put = s3._put
    monkeypatch.setattr(s3, "_put", lambda path, location, digest: (order.append(location.key), put(path, location, digest)))
    written = s3.put_directory(result_dir(tmp_path / "v1", "v1"), uri)
    assert order == written and written[-1] == "results/ordering/result.json"
    assert sorted(keys(minio_env, "results/ordering/")) == sorted(written)  # dot-directories stay local

    # The second upload dies after its first changed artifact: v1's result.json is still the one there.
    def failing(path, location, digest):
        if order:
            raise OSError("connection reset by peer")
        order.append(location.key)
        put(path, location, digest)

    order.clear()
    monkeypatch.setattr(s3, "_put", failing)
    with pytest.raises(RetryableError, match="connection reset"):
        s3.put_directory(result_dir(tmp_path / "v2", "v2"), uri)
    assert json.loads(body(minio_env, "results/ordering/result.json")) == {"version": "v1"}

    # Unchanged objects are not sent again: re-uploading v1 rewrites the one object v2 got to, then result.json.
    monkeypatch.setattr(s3, "_put", put)
    assert s3.put_directory(tmp_path / "v1", uri) == ["results/ordering/onnx-fp16/model.onnx",
                                                      "results/ordering/result.json"]
    assert s3.put_directory(tmp_path / "v1", uri) == ["results/ordering/result.json"]


def test_a_directory_without_result_json_is_not_uploaded(minio_env, tmp_path):
    (tmp_path / "onnx-fp32").mkdir()
    (tmp_path / "onnx-fp32" / "model.onnx").write_text("x")
    with pytest.raises(PermanentError, match="no result.json"):
        s3.put_directory(tmp_path, "s3://modelfleet/results/incomplete")
    assert keys(minio_env, "results/incomplete/") == {}


# --- the command line: modelfleet run -o s3://, publish triton -r s3:// --------------------------------


@pytest.fixture(scope="module")
def s3_run(minio, digits_data, tmp_path_factory):
    """`modelfleet run -o s3://...` on the digits example with its inputs in MinIO too, once for this module."""
    workdir = tmp_path_factory.mktemp("s3-run")
    inputs = {}
    for name in ("digits.torchscript.pt", "calibration.npz", "evaluation.npz"):
        minio.client().upload_file(str(digits_data / name), minio.bucket, f"inputs/digits/{name}")
        inputs[name] = f"s3://{minio.bucket}/inputs/digits/{name}"
    manifest = workdir / "digits.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, FAST | {
        "source": {"uri": inputs["digits.torchscript.pt"]},
        "dataset": {"calibration": {"uri": inputs["calibration.npz"]}, "evaluation": {"uri": inputs["evaluation.npz"]}}})))
    uri = "s3://modelfleet/runs/digits"
    uploaded, put = [], s3._put
    with pytest.MonkeyPatch.context() as patch:
        for key, value in minio.env.items():
            patch.setenv(key, value)
        patch.setattr(s3, "_put", lambda path, location, digest: (uploaded.append(location.key),
                                                                  put(path, location, digest)))
        code = main(["run", "-f", str(manifest), "-o", uri, "-q"])
    return code, uri, digits_data, uploaded


def test_run_from_s3_inputs_to_an_s3_output_leaves_every_artifact_and_result_json_last(s3_run, minio_env):
    code, uri, _, uploaded = s3_run
    assert code == 0
    assert uploaded[-1] == "runs/digits/result.json" and uploaded.count("runs/digits/result.json") == 1
    stored = keys(minio_env, "runs/digits/")
    result = json.loads(body(minio_env, "runs/digits/result.json"))
    assert result["source"]["uri"] == "s3://modelfleet/inputs/digits/digits.torchscript.pt"
    listed = {f"runs/digits/{f}" for a in result["artifacts"] for f in (*a["files"], a.get("smoke")) if f}
    assert {a["name"] for a in result["artifacts"]} >= {"onnx-fp32", "onnx-fp16", "onnx-int8-static"}
    assert listed <= set(stored)
    assert not [k for k in stored if "/." in k]  # no staging leftovers
    # result.json went up after every artifact (S3 keeps LastModified to the second).
    assert all(stored["runs/digits/result.json"]["LastModified"] >= item["LastModified"] for item in stored.values())
    for artifact in result["artifacts"]:
        if len(artifact["files"]) == 1:
            data = body(minio_env, f"runs/digits/{artifact['files'][0]}")
            assert hashlib.sha256(data).hexdigest() == artifact["sha256"]


def test_run_fails_cleanly_when_an_s3_input_is_missing(minio_env, digits_data, tmp_path):
    manifest = tmp_path / "digits.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, FAST | {"source": {"uri": "s3://modelfleet/none.pt"}})))
    assert main(["worker", "compress", "-f", str(manifest), "-o", "s3://modelfleet/runs/missing", "-q"]) == 4
    assert keys(minio_env, "runs/missing/") == {}


def test_wrong_credentials_fail_the_worker_before_the_pipeline_runs(minio_env, digits_data, tmp_path, monkeypatch,
                                                                    capsys):
    manifest = tmp_path / "digits.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, FAST)))
    s3.check_writable("s3://modelfleet/runs/checked")  # right credentials: passes, and leaves nothing
    assert keys(minio_env, "runs/checked/") == {}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert main(["worker", "compress", "-f", str(manifest), "-o", "s3://modelfleet/runs/denied"]) == 2
    err = capsys.readouterr().err
    assert "s3://modelfleet/runs/denied: S3 denied access" in err and "check the S3 credentials" in err
    assert " fetch " not in err and " data " not in err  # refused before the first pipeline step
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio_env.env["AWS_SECRET_ACCESS_KEY"])
    assert main(["worker", "compress", "-f", str(manifest), "-o", "s3://no-such-bucket/runs", "-q"]) == 2
    assert "no such bucket" in capsys.readouterr().err


def test_publish_triton_from_an_s3_result_writes_the_publication_back(s3_run, minio_env, tmp_path):
    code, uri, digits_data, _ = s3_run
    assert code == 0
    repository = tmp_path / "triton"
    manifest = tmp_path / "digits.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, FAST | {
        "targets": {"edge": [], "triton": {"repository": f"file://{repository}", "modelName": "digits"}}})))
    assert main(["publish", "triton", "-f", str(manifest), "-r", uri, "-q"]) == 0
    publication = json.loads(body(minio_env, "runs/digits/triton-publication.json"))
    assert (publication["state"], publication["version"]) == ("Written", 1)
    assert (repository / "digits" / "1" / "model.onnx").is_file() and (repository / "digits" / "config.pbtxt").is_file()


def test_publish_triton_from_an_empty_s3_prefix_is_refused(minio_env, digits_data, tmp_path):
    manifest = tmp_path / "digits.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, FAST | {
        "targets": {"edge": [], "triton": {"repository": f"file://{tmp_path}/triton", "modelName": "digits"}}})))
    assert main(["publish", "triton", "-f", str(manifest), "-r", "s3://modelfleet/runs/never", "-q"]) == 3


# --- the operator's side: result and publication read from an s3:// artifact store --------------------


class NoJobs:
    """Just enough of modelfleet.k8s.Cluster for clean_up (it lists and deletes our Jobs, then posts an Event);
    a stand-in, since this test is about the S3 side (the cluster tests run clean-up against the real API)."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def jobs(self, namespace: str, name: str) -> list:
        return []

    def event(self, body: dict, kind: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


def test_the_operator_reads_result_and_publication_from_s3_and_deletes_them(minio_env, digits_result):
    settings = OperatorSettings(worker_image="w", artifacts="s3://modelfleet/operator", artifacts_secret="creds")
    output = result_uri(settings, "team-a", "digits", "0123456789")
    assert read_result(output) is None and read_publication(output) is None

    s3.put_directory(digits_result, output)
    minio_env.client().put_object(Bucket="modelfleet", Key="operator/team-a/digits/0123456789/triton-publication.json",
                                  Body=json.dumps({"state": "Written", "reason": "Written", "message": "v1",
                                                   "modelName": "digits", "version": 1,
                                                   "repository": "s3://models/triton", "artifact": "onnx-int8-static"}))
    result = read_result(output)
    assert result is not None and result.baseline.artifact == "onnx-fp32"
    publication = read_publication(output)
    assert publication is not None and publication.version == 1

    body_ = {"metadata": {"namespace": "team-a", "name": "digits"}, "spec": {"artifactPolicy": "Delete"}}
    cluster = NoJobs()
    clean_up(cluster, settings, body_)
    assert keys(minio_env, "operator/team-a/digits/") == {}
    assert cluster.events == [("CleanedUp", "0 Jobs deleted, artifacts under s3://modelfleet/operator/team-a/digits deleted")]
