"""The agent's HTTP client for the fleet gateway: the standard library only (urllib), to keep the agent small.

Every failure to get the bytes (connection, timeout, an HTTP error status) raises `TransportError`; what the
bytes say is `TrustedState`'s business. Bundle files download with HTTP Range: a partial file continues where
it stopped. A redirect (a presigned s3:// URL) is followed without the device's credential.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from modelfleet.agent.errors import TransportError
from modelfleet.api.fleet import AgentReport, EnrollRequest, EnrollResponse

__all__ = ["DesiredStateAnswer", "GatewayClient", "GatewayError", "GatewayRefused"]

_CHUNK = 1 << 16
MAX_DOCUMENT_BYTES = 4 << 20  # desired states and manifests are a few KiB


class GatewayError(TransportError):
    """The gateway answered with an error status (`status`, and its FleetError reason when it sent one)."""

    def __init__(self, message: str, status: int, reason: str):
        super().__init__(message)
        self.status, self.reason = status, reason


class GatewayRefused(GatewayError):
    """A 4xx answer: this request, as it is, will not be served (unknown credential, not found, ...)."""


@dataclass(frozen=True)
class DesiredStateAnswer:
    body: bytes | None  # None: 304, the same document as the ETag names
    etag: str | None


class _NoCredentialOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never send the device's credential to another host (a presigned URL)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


class GatewayClient:
    def __init__(self, base_url: str, *, ca_file: Path | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._opener = urllib.request.build_opener(_NoCredentialOnRedirect(),
                                                   urllib.request.HTTPSHandler(context=context))
        self.credential: str | None = None

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path.lstrip("/"))

    def _request(self, method: str, path: str, *, body: bytes | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None):
        request = urllib.request.Request(self.url(path), data=body, method=method, headers=dict(headers or {}))
        if body is not None:
            request.add_header("Content-Type", "application/json")
        bearer = token or self.credential
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return e
            raise _refused(method, path, e) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise TransportError(f"{method} {path}: {getattr(e, 'reason', e)}") from None

    def enroll(self, request: EnrollRequest, bootstrap_token: str) -> EnrollResponse:
        body = json.dumps(request.to_wire()).encode()
        with self._request("POST", "v1/enroll", body=body, token=bootstrap_token) as response:
            data = _read_limited(response, "v1/enroll")
        try:
            return EnrollResponse.model_validate_json(data)
        except ValueError as e:
            raise TransportError(f"POST v1/enroll: not an EnrollResponse: {e}") from None

    def desired_state(self, namespace: str, device: str, etag: str | None) -> DesiredStateAnswer:
        path = f"v1/devices/{namespace}/{device}/desired-state"
        with self._request("GET", path, headers={"If-None-Match": etag} if etag else None) as response:
            if response.status == 304:
                return DesiredStateAnswer(body=None, etag=etag)
            return DesiredStateAnswer(body=_read_limited(response, path), etag=response.headers.get("ETag"))

    def report(self, namespace: str, device: str, report: AgentReport) -> None:
        path = f"v1/devices/{namespace}/{device}/report"
        with self._request("POST", path, body=json.dumps(report.to_wire()).encode()) as response:
            response.read()

    def fetch(self, path: str) -> bytes:
        """A small document (a bundle's manifest.json)."""
        with self._request("GET", path) as response:
            return _read_limited(response, path)

    def download(self, path: str, destination: Path, size: int) -> None:
        """Download into `destination`, continuing a partial file with Range; never writes past `size` + 1 bytes
        (one more shows the file is longer than listed; verification then refuses it)."""
        have = destination.stat().st_size if destination.exists() else 0
        if have >= size:
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            response = self._request("GET", path, headers={"Range": f"bytes={have}-"} if have else None)
        except GatewayRefused as e:
            if e.status == 416:  # nothing past what we have: the file is shorter than listed; verify says so
                return
            raise
        with response, open(destination, "r+b" if have else "wb") as out:
            if response.status == 206:
                out.seek(have)
            else:  # 200: the server sent the whole file
                out.truncate(0)
            written = out.tell()
            try:
                while written <= size and (chunk := response.read(min(_CHUNK, size + 1 - written))):
                    out.write(chunk)
                    written += len(chunk)
            except (http.client.HTTPException, OSError) as e:
                raise TransportError(f"GET {path}: cut after {written} bytes: {e}") from None
            finally:
                out.flush()
                os.fsync(out.fileno())
            if written < size:
                raise TransportError(f"GET {path}: {written} of {size} bytes, the connection ended early")


def _read_limited(response, path: str) -> bytes:
    try:
        data = response.read(MAX_DOCUMENT_BYTES + 1)
    except (http.client.HTTPException, OSError) as e:
        raise TransportError(f"{path}: {e}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TransportError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


def _refused(method: str, path: str, error: urllib.error.HTTPError) -> TransportError:
    reason = f"HTTP{error.code}"
    try:
        reason = json.loads(error.read(65536)).get("reason") or reason
    except (ValueError, AttributeError, OSError):
        pass
    message = f"{method} {path}: HTTP {error.code} ({reason})"
    kind = GatewayRefused if 400 <= error.code < 500 else GatewayError
    return kind(message, error.code, reason)
