"""One tenant never reaches another's results in an s3:// artifact store, against a real MinIO.

Two locks, each tested on its own: the operator refuses a manifest that names another namespace's prefix
(SpecValid=False, no Job: tests/test_operator_domain.py has the table), and the store itself refuses it when
each namespace's Secret holds credentials scoped to its own prefix (here: STS AssumeRole with the session
policy the README documents, as MinIO and AWS both issue them).
"""

import json

import pytest

from modelfleet.errors import PermanentError
from modelfleet.store import s3

PREFIX = "results"


def scoped_policy(bucket: str, namespace: str) -> dict:
    """The README's per-namespace policy: read and write under <prefix>/<namespace>/ only."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{PREFIX}/{namespace}/*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
         "Condition": {"StringLike": {"s3:prefix": [f"{PREFIX}/{namespace}/*"]}}}]}


@pytest.fixture
def team_a(minio, monkeypatch):
    """team-a's environment: MinIO's endpoint and short-lived credentials scoped to team-a's prefix."""
    import boto3

    sts = boto3.client("sts", endpoint_url=minio.endpoint, aws_access_key_id=minio.env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=minio.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    credentials = sts.assume_role(RoleArn="arn:aws:iam::minio:role/team-a", RoleSessionName="team-a",
                                  Policy=json.dumps(scoped_policy(minio.bucket, "team-a")),
                                  DurationSeconds=900)["Credentials"]
    for key, value in {"AWS_ENDPOINT_URL": minio.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                       "AWS_SESSION_TOKEN": credentials["SessionToken"]}.items():
        monkeypatch.setenv(key, value)
    return minio


def test_scoped_credentials_write_and_read_their_own_prefix(team_a, tmp_path):
    result = tmp_path / "result"
    result.mkdir()
    (result / "model.onnx").write_bytes(b"team-a's model")
    (result / "result.json").write_text("{}")
    s3.check_writable(f"s3://{team_a.bucket}/{PREFIX}/team-a/digits/0123456789")
    s3.put_directory(result, f"s3://{team_a.bucket}/{PREFIX}/team-a/digits/0123456789")
    fetched = s3.fetch(f"s3://{team_a.bucket}/{PREFIX}/team-a/digits/0123456789/model.onnx", tmp_path / "in")
    assert fetched.read_bytes() == b"team-a's model"


def test_scoped_credentials_cannot_read_or_write_another_namespaces_results(team_a, tmp_path):
    # team-b's result, written with the store's own credentials
    team_a.client().put_object(Bucket=team_a.bucket, Key=f"{PREFIX}/team-b/digits/0123456789/model.onnx",
                               Body=b"team-b's model")
    with pytest.raises(PermanentError, match="S3 denied access") as refused:
        s3.fetch(f"s3://{team_a.bucket}/{PREFIX}/team-b/digits/0123456789/model.onnx", tmp_path)
    assert refused.value.reason == "AccessDenied"
    with pytest.raises(PermanentError, match="S3 denied access"):
        s3.check_writable(f"s3://{team_a.bucket}/{PREFIX}/team-b/digits/0123456789")
    with pytest.raises(PermanentError, match="S3 denied access"):
        s3.delete_prefix(f"s3://{team_a.bucket}/{PREFIX}/team-b")
    body = team_a.client().get_object(Bucket=team_a.bucket, Key=f"{PREFIX}/team-b/digits/0123456789/model.onnx")
    assert body["Body"].read() == b"team-b's model"  # untouched
