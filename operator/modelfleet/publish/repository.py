"""Triton model repositories on a local path / mounted volume or in S3, written so that a version
appears complete or not at all.

Layout (Triton's): `<repository>/<model>/config.pbtxt`, `<repository>/<model>/<version>/model.onnx`,
plus modelfleet's ownership record `<repository>/<model>/modelfleet.json`.
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from modelfleet.api.publication import RepositoryRecord
from modelfleet.errors import PermanentError, RepositoryError, first_line
from modelfleet.store import atomic_write_text, resolve_local, s3

RECORD_FILE = "modelfleet.json"
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"


class ModelRepository(Protocol):
    uri: str

    def read(self, model: str, name: str) -> str | None: ...
    def write(self, model: str, name: str, text: str) -> None: ...
    def delete(self, model: str, name: str) -> None: ...
    def versions(self, model: str) -> list[int]: ...
    def exists(self, model: str) -> bool: ...
    def put_version(self, model: str, version: int, source: Path) -> None: ...
    def delete_version(self, model: str, version: int) -> None: ...


def open_repository(uri: str, base_dir: Path | None = None) -> ModelRepository:
    if uri.startswith("s3://"):
        return S3Repository(uri)
    local = resolve_local(uri, base_dir)
    if local is None:
        raise PermanentError(f"{uri}: a Triton repository must be file://, pvc:// or s3://", reason="UnsupportedURI")
    return LocalRepository(uri, local)


def read_record(repository: ModelRepository, model: str) -> RepositoryRecord | None:
    text = repository.read(model, RECORD_FILE)
    return RepositoryRecord.model_validate_json(text) if text is not None else None


def write_record(repository: ModelRepository, model: str, record: RepositoryRecord) -> None:
    repository.write(model, RECORD_FILE, record.model_dump_json(by_alias=True, exclude_none=True, indent=2))


class LocalRepository:
    """A directory: the version is staged beside its final place and renamed into it."""

    def __init__(self, uri: str, root: Path):
        self.uri = uri
        self.root = root

    def read(self, model: str, name: str) -> str | None:
        path = self.root / model / name
        return path.read_text() if path.is_file() else None

    def write(self, model: str, name: str, text: str) -> None:
        with _writing(self.uri):
            atomic_write_text(self.root / model / name, text)

    def delete(self, model: str, name: str) -> None:
        with _writing(self.uri):
            (self.root / model / name).unlink(missing_ok=True)

    def exists(self, model: str) -> bool:
        return (self.root / model).exists()

    def versions(self, model: str) -> list[int]:
        directory = self.root / model
        if not directory.is_dir():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())

    def put_version(self, model: str, version: int, source: Path) -> None:
        final = self.root / model / str(version)
        # A dot-name is not a version to Triton, so a poll-mode server never sees the half-copied one.
        staging = self.root / model / f".staging-{version}"
        with _writing(self.uri):
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.mkdir(parents=True)
                shutil.copyfile(source, staging / MODEL_FILE)
                with open(staging / MODEL_FILE, "rb") as f:
                    os.fsync(f.fileno())
                staging.rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def delete_version(self, model: str, version: int) -> None:
        """Remove the version and what a killed copy or delete of it left behind."""
        directory = self.root / model / str(version)
        # Rename first: Triton must never see a version directory without its model file.
        doomed = self.root / model / f".deleting-{version}"
        with _writing(self.uri):
            for leftover in (doomed, self.root / model / f".staging-{version}"):
                if leftover.exists():
                    shutil.rmtree(leftover)
            if directory.exists():
                directory.rename(doomed)
                shutil.rmtree(doomed)


class S3Repository:
    """A bucket prefix. A version holds one object (model.onnx), and a single PUT is atomic in S3.

    Endpoint and credentials come from boto3's usual sources: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION (the operator fills these from a Secret).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.bucket, self.prefix = s3.parse(uri)
        self._s3 = s3.client()

    def _key(self, model: str, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, model, *parts) if p)

    def read(self, model: str, name: str) -> str | None:
        from botocore.exceptions import ClientError

        with _s3_errors(self.uri):
            try:
                return self._s3.get_object(Bucket=self.bucket, Key=self._key(model, name))["Body"].read().decode()
            except ClientError as e:
                if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None
                raise

    def write(self, model: str, name: str, text: str) -> None:
        with _s3_errors(self.uri):
            self._s3.put_object(Bucket=self.bucket, Key=self._key(model, name), Body=text.encode())

    def delete(self, model: str, name: str) -> None:
        with _s3_errors(self.uri):
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(model, name))

    def _keys(self, model: str) -> list[str]:
        keys = []
        with _s3_errors(self.uri):
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(model) + "/")
            for page in pages:
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def exists(self, model: str) -> bool:
        return bool(self._keys(model))

    def versions(self, model: str) -> list[int]:
        base = self._key(model) + "/"
        found = {key[len(base):].split("/", 1)[0] for key in self._keys(model) if key[len(base):].count("/") >= 1}
        return sorted(int(v) for v in found if v.isdigit())

    def put_version(self, model: str, version: int, source: Path) -> None:
        with _s3_errors(self.uri):
            self._s3.upload_file(str(source), self.bucket, self._key(model, str(version), MODEL_FILE))

    def delete_version(self, model: str, version: int) -> None:
        prefix = self._key(model, str(version)) + "/"
        with _s3_errors(self.uri):
            for key in [k for k in self._keys(model) if k.startswith(prefix)]:
                self._s3.delete_object(Bucket=self.bucket, Key=key)


@contextmanager
def _writing(uri: str):
    """Turns a failed local write into a clear, permanent repository error."""
    try:
        yield
    except OSError as e:
        raise RepositoryError(f"Triton repository {uri} cannot be written: {first_line(e)}") from e


def _s3_errors(uri: str):
    """S3 faults: unreachable or throttled endpoints are retryable; denied or missing buckets are not."""
    return s3.errors(f"Triton repository {uri}", RepositoryError)
