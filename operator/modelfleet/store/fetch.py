"""Fetching inputs (models, datasets) by URI into local files."""

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from modelfleet.api.paths import DNS_SUBDOMAIN_PATTERN
from modelfleet.errors import PermanentError, RetryableError, SourceError
from modelfleet.store import s3
from modelfleet.store.paths import confined

_HTTP_TIMEOUT_S = 60


def resolve_local(uri: str, base_dir: Path | None = None) -> Path | None:
    """The local path a `file://` or `pvc://` URI names, or None for remote schemes.

    The path is resolved and must stay inside its root (else SourceError, reason PathEscape): the
    claim's mount MODELFLEET_PVC_ROOT/<claim> for pvc://, `base_dir` (default: the working directory)
    for a relative file://. An absolute file:// may name any file.
    """
    if uri.startswith("file://"):
        path = uri.removeprefix("file://").removesuffix("/")
        if path.startswith("/"):
            return confined(Path("/"), path.removeprefix("/"), uri)
        return confined(base_dir or Path.cwd(), path, uri)
    if uri.startswith("pvc://"):
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        if not path or not re.fullmatch(DNS_SUBDOMAIN_PATTERN, claim):
            raise SourceError(f"{uri}: expected pvc://<claim>/<path>, the claim a PVC name (lowercase letters, "
                              "digits, '-', '.')", reason="InvalidURI")
        root = Path(os.environ.get("MODELFLEET_PVC_ROOT", "/mnt/pvc")) / claim
        return confined(root, path.removesuffix("/"), uri)
    return None


def fetch(uri: str, workdir: Path, base_dir: Path | None = None) -> Path:
    """Make the object at `uri` available as a local file and return its path.

    Local URIs are read in place; https and s3 downloads land in `workdir`, written then renamed.
    """
    local = resolve_local(uri, base_dir)
    if local is not None:
        if not local.is_file():  # a directory, a device such as /dev/zero or a FIFO is no model or dataset
            what = "not a regular file" if local.exists() else "no such file"
            raise SourceError(f"{uri}: {what} ({local})", reason="SourceNotFound")
        if not os.access(local, os.R_OK):
            raise SourceError(f"{uri}: file is not readable ({local})", reason="SourceNotFound")
        return local
    if uri.startswith("https://"):
        return _download(uri, workdir)
    if uri.startswith(s3.SCHEME):
        return s3.fetch(uri, workdir)
    raise PermanentError(f"{uri}: unsupported URI scheme (use file://, pvc://, https:// or s3://)", reason="UnsupportedURI")


def read_text(uri: str, base_dir: Path | None = None) -> str | None:
    """A small text file (result.json, triton-publication.json) by URI, or None when it does not exist.

    Store faults other than absence raise: a RetryableError for an unreachable S3, for instance.
    """
    if uri.startswith(s3.SCHEME):
        return s3.read_text(uri)
    local = resolve_local(uri, base_dir)
    if local is None:
        raise PermanentError(f"{uri}: unsupported URI scheme for results (use file://, pvc:// or s3://)",
                             reason="UnsupportedURI")
    try:
        return local.read_text()
    except FileNotFoundError:
        return None


def _download(uri: str, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    target = confined(workdir, Path(uri.split("?", 1)[0]).name or "download", uri)
    name = target.name
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(uri, timeout=_HTTP_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, target)
    except urllib.error.HTTPError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.code >= 500 or e.code == 429:
            raise RetryableError(f"{uri}: server answered HTTP {e.code}") from e
        raise SourceError(f"{uri}: server answered HTTP {e.code} {e.reason}", reason="SourceNotFound") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise RetryableError(f"{uri}: could not download: {getattr(e, 'reason', e)}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
