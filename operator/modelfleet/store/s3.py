"""S3 (and S3-compatible stores such as MinIO) for inputs, results and Triton repositories.

Endpoint and credentials come from boto3's usual sources: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (in a cluster, a Secret's keys become the Job's environment).

Faults are translated once, here: an unreachable, throttled or failing (5xx) endpoint is a
RetryableError; a missing bucket or key, refused credentials or access are permanent.

Results are uploaded with `result.json` last: readers take its presence as the commit marker, so an
interrupted upload never leaves a result.json naming files that are not there.
"""

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from modelfleet.errors import PermanentError, RetryableError, SourceError, first_line
from modelfleet.store.files import sha256_file
from modelfleet.store.paths import confined

SCHEME = "s3://"
_CHUNK = 1 << 20
_SHA256_METADATA = "sha256"  # x-amz-meta-sha256: lets a re-upload skip objects that did not change
_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")
_RETRYABLE = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
              "ServiceUnavailable", "InternalError", "XMinioServerNotInitialized")
# Wrong or missing rights; a HEAD request's 403 carries no code at all, hence the status check too.
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403")
_CREDENTIALS_HINT = ("check the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; in a cluster the Secret "
                     "named by MODELFLEET_ARTIFACTS_SECRET or targets.triton.credentialsSecret) and their rights")
_WRITE_CHECK = ".modelfleet-write-check"
_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}

__all__ = ["SCHEME", "S3Location", "check_writable", "client", "delete_prefix", "download", "errors", "fetch", "parse", "put_directory",
           "put_file", "read_text"]


class S3Location(NamedTuple):
    """Bucket and key of an s3:// URI; `key` has no leading or trailing slash."""

    bucket: str
    key: str

    def child(self, *parts: str) -> "S3Location":
        return S3Location(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/")))


def parse(uri: str) -> S3Location:
    if not uri.startswith(SCHEME):
        raise PermanentError(f"{uri}: not an s3:// URI", reason="UnsupportedURI")
    bucket, _, key = uri.removeprefix(SCHEME).partition("/")
    if not bucket:
        raise PermanentError(f"{uri}: expected s3://<bucket>/<key>", reason="UnsupportedURI")
    return S3Location(bucket, key.strip("/"))


def client():
    """One boto3 client per endpoint and credentials (boto3 clients are thread-safe; creating them is not)."""
    key = tuple(os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
                                            "AWS_PROFILE"))
    with _client_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            _clients[key] = boto3.session.Session().client("s3", config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60))
        return _clients[key]


@contextmanager
def errors(subject: str, permanent: type[PermanentError] = PermanentError, missing_reason: str | None = None) -> Iterator[None]:
    """Translate boto faults about `subject` (a URI, or a phrase naming the store) into modelfleet errors.

    `permanent` is the class for refusals (missing bucket or key, access denied); `missing_reason`
    overrides its reason when the bucket or key does not exist.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or status == 429 or code in _RETRYABLE:
            raise RetryableError(f"{subject}: S3 answered {code or status} (retryable)") from e
        text = e.response.get("Error", {}).get("Message") or code
        if code in _MISSING:
            what = "no such bucket" if code == "NoSuchBucket" else "no such object"
            raise permanent(f"{subject}: {what} ({code}: {text})", reason=missing_reason) from e
        if status == 403 or code in _DENIED:
            raise permanent(f"{subject}: S3 denied access ({code or status}: {text}): {_CREDENTIALS_HINT}",
                            reason="AccessDenied") from e
        raise permanent(f"{subject}: S3 refused: {code}: {text}") from e
    except NoCredentialsError as e:
        raise permanent(f"{subject}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)") from e
    except (BotoCoreError, HTTPError, OSError) as e:  # urllib3's HTTPError: a body cut off mid-stream
        raise RetryableError(f"{subject}: S3 unreachable: {first_line(e)}") from e


def fetch(uri: str, workdir: Path) -> Path:
    """Download the object at `uri` into `workdir` (written as a .part file, then renamed)."""
    location = parse(uri)
    if not location.key:
        raise SourceError(f"{uri}: expected s3://<bucket>/<key>", reason="UnsupportedURI")
    return download(location, confined(workdir, Path(location.key).name, uri), subject=uri)


def download(location: S3Location, target: Path, subject: str | None = None,
             permanent: type[PermanentError] = SourceError, missing_reason: str = "SourceNotFound") -> Path:
    """Download one object to `target` (a .part file beside it, renamed into place)."""
    subject = subject or f"s3://{location.bucket}/{location.key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, errors(subject, permanent, missing_reason):
            # get_object rather than download_file: its errors say NoSuchKey or NoSuchBucket, a HEAD's only 404.
            body = client().get_object(Bucket=location.bucket, Key=location.key)["Body"]
            shutil.copyfileobj(body, out, _CHUNK)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_text(uri: str) -> str | None:
    """A small text object (result.json, triton-publication.json), or None when it does not exist."""
    from botocore.exceptions import ClientError

    location = parse(uri)
    with errors(uri):
        try:
            return client().get_object(Bucket=location.bucket, Key=location.key)["Body"].read().decode()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise


def put_file(path: Path, uri: str, subject: str | None = None) -> None:
    """Upload one file; a single (or multipart) PUT appears whole or not at all."""
    location = parse(uri)
    with errors(subject or uri):
        _put(path, location, sha256_file(path))


def check_writable(uri: str) -> None:
    """Write (and remove) a small dot-object under the prefix `uri`: wrong credentials or a missing
    bucket then fail in seconds, before a pipeline run whose upload they would refuse."""
    location = parse(uri).child(_WRITE_CHECK)
    with errors(uri, missing_reason="NoSuchBucket"):
        client().put_object(Bucket=location.bucket, Key=location.key, Body=b"")
    with contextlib.suppress(Exception):  # a write-only policy may not allow deletes; readers skip dot-objects
        client().delete_object(Bucket=location.bucket, Key=location.key)


def put_directory(directory: Path, uri: str, commit_marker: str = "result.json") -> list[str]:
    """Upload every file under `directory` to the prefix `uri`, `commit_marker` last; returns the keys written.

    Objects whose sha256 already matches are not sent again, so re-uploading an unchanged result
    leaves the previous result.json describing exactly the objects it names until the new one
    replaces it. Nothing is deleted: objects only the previous result named stay (harmless).
    """
    prefix = parse(uri)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not _hidden(p.relative_to(directory)))
    marker = directory / commit_marker
    if marker not in files:
        raise PermanentError(f"{directory}: no {commit_marker} to upload")
    files.remove(marker)
    written = []
    with errors(uri):
        s3 = client()
        for path in [*files, marker]:
            location = prefix.child(path.relative_to(directory).as_posix())
            digest = sha256_file(path)
            if path != marker and _stored_digest(s3, location) == digest:
                continue
            _put(path, location, digest)
            written.append(location.key)
    return written


def delete_prefix(uri: str) -> int:
    """Delete every object under the prefix `uri` (artifactPolicy Delete); returns how many."""
    prefix = parse(uri)
    deleted = 0
    with errors(uri):
        s3 = client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=prefix.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    return deleted


def _put(path: Path, location: S3Location, digest: str) -> None:
    client().upload_file(str(path), location.bucket, location.key, ExtraArgs={"Metadata": {_SHA256_METADATA: digest}})


def _stored_digest(s3, location: S3Location) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=location.bucket, Key=location.key).get("Metadata", {}).get(_SHA256_METADATA)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in _MISSING:
            return None
        raise


def _hidden(relative: Path) -> bool:
    """Dot-files and dot-directories (staging leftovers) are never part of a result."""
    return any(part.startswith(".") for part in relative.parts)
