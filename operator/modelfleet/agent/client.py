"""The agent's HTTP client for the fleet gateway: the standard library only (http.client), to keep the agent small.

Every failure to get the bytes (connection, deadline, an HTTP error status) raises `TransportError`; what the
bytes say is `TrustedState`'s business. Bundle files download with HTTP Range: a partial file continues where
it stopped.

Every request has a total deadline, not only a timeout per read: a server that sends one byte every few seconds
is cut off when the deadline passes (a watchdog shuts the socket down), and `abort()` does the same at once, so
an agent told to stop never waits on the network. Small documents get `timeout` seconds in all; a bundle file
`timeout` plus its size at `MIN_RATE`.

Redirects (a presigned s3:// URL) are followed at most `MAX_REDIRECTS` times; https never redirects to http, and
the device's credential goes only to the gateway's own origin (scheme, host and port).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from modelfleet.agent.errors import TransportError
from modelfleet.api.fleet import AgentReport, EnrollRequest, EnrollResponse

__all__ = ["DesiredStateAnswer", "GatewayClient", "GatewayError", "GatewayRefused"]

_CHUNK = 1 << 16
MAX_DOCUMENT_BYTES = 4 << 20  # desired states and manifests are a few KiB
MAX_REDIRECTS = 3
MIN_RATE = 16 << 10  # bytes per second a bundle download must at least average
_REDIRECTS = {301, 302, 303, 307, 308}


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
    server_date: str | None = None  # the answer's Date header (the gateway's clock, for a clock-skew report)


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class _Exchange:
    """One request and its response on its own connection, under a deadline enforced by a watchdog."""

    def __init__(self, client: GatewayClient, connection: http.client.HTTPConnection, deadline: float, what: str):
        self.client, self.connection, self.what = client, connection, what
        self.deadline = deadline
        self._expired = False
        self._watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.response: http.client.HTTPResponse | None = None

    def _expire(self) -> None:
        self._expired = True
        _shut(self.connection)

    def failed(self, error: BaseException) -> TransportError:
        if self._expired:
            return TransportError(f"{self.what}: no complete answer within its deadline")
        if self.client.aborted:
            return TransportError(f"{self.what}: aborted (the agent is stopping)")
        return TransportError(f"{self.what}: {error}")

    def read(self, size: int) -> bytes:
        try:
            data = self.response.read(size)
        except (http.client.HTTPException, OSError, ValueError) as e:
            raise self.failed(e) from None
        if self._expired or self.client.aborted:  # the socket was shut: what came is a fragment
            raise self.failed(EOFError())
        return data

    def close(self) -> None:
        self._watchdog.cancel()
        self.connection.close()
        self.client._forget(self)


def _shut(connection: http.client.HTTPConnection) -> None:
    """Unblock whatever waits on the connection's socket (a read in another thread) without touching TLS state."""
    sock = connection.sock
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class GatewayClient:
    def __init__(self, base_url: str, *, ca_file: Path | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._origin = _origin(urllib.parse.urlsplit(self.base_url))
        self.credential: str | None = None
        self.aborted = False
        self._lock = threading.Lock()
        self._open: set[_Exchange] = set()

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path.lstrip("/"))

    def abort(self) -> None:
        """Cut every request under way (from a signal handler or another thread); later requests fail at once."""
        self.aborted = True
        with self._lock:
            exchanges = list(self._open)
        for exchange in exchanges:
            _shut(exchange.connection)

    def _forget(self, exchange: _Exchange) -> None:
        with self._lock:
            self._open.discard(exchange)

    def _request(self, method: str, path: str, *, body: bytes | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None, seconds: float | None = None) -> _Exchange:
        """Send the request, follow redirects; returns the exchange with a 2xx or 304 response (the caller closes
        it), raises GatewayRefused / GatewayError for an error status, TransportError for the rest."""
        deadline = time.monotonic() + (seconds or self.timeout)
        url, what = self.url(path), f"{method} {path}"
        for _ in range(MAX_REDIRECTS + 1):
            exchange = self._send(method, url, body, token, headers, deadline, what)
            status = exchange.response.status
            if status not in _REDIRECTS:
                if status < 400 or status == 304:
                    return exchange
                try:
                    raise _refused(what, status, exchange.read(65536))
                finally:
                    exchange.close()
            location = exchange.response.getheader("Location")
            exchange.close()
            if not location:
                raise TransportError(f"{what}: HTTP {status} without a Location")
            following = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).scheme == "https" and urllib.parse.urlsplit(following).scheme != "https":
                raise TransportError(f"{what}: refusing a redirect from https to {following.split('?')[0]}")
            url = following
            if status == 303:
                method, body = "GET", None
        raise TransportError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _send(self, method: str, url: str, body: bytes | None, token: str | None, headers: dict[str, str] | None,
              deadline: float, what: str) -> _Exchange:
        if self.aborted:
            raise TransportError(f"{what}: aborted (the agent is stopping)")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"{what}: cannot fetch {url.split('?')[0]}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(f"{what}: no complete answer within its deadline")
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=remaining,
                                                     context=self._context)
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=remaining)
        exchange = _Exchange(self, connection, deadline, what)
        with self._lock:
            self._open.add(exchange)
        send = {"Connection": "close", **(headers or {})}
        if body is not None:
            send["Content-Type"] = "application/json"
        bearer = token or self.credential
        if bearer and _origin(parts) == self._origin:  # never to another origin (a presigned URL's host)
            send["Authorization"] = f"Bearer {bearer}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            connection.request(method, target, body=body, headers=send)
            exchange.response = connection.getresponse()
        except (http.client.HTTPException, OSError, ValueError) as e:
            exchange.close()
            raise exchange.failed(e) from None
        return exchange

    def enroll(self, request: EnrollRequest, bootstrap_token: str) -> EnrollResponse:
        body = json.dumps(request.to_wire()).encode()
        data = self._document("POST", "v1/enroll", body=body, token=bootstrap_token)
        try:
            return EnrollResponse.model_validate_json(data)
        except ValueError as e:
            raise TransportError(f"POST v1/enroll: not an EnrollResponse: {e}") from None

    def desired_state(self, namespace: str, device: str, etag: str | None) -> DesiredStateAnswer:
        path = f"v1/devices/{namespace}/{device}/desired-state"
        exchange = self._request("GET", path, headers={"If-None-Match": etag} if etag else None)
        try:
            date = exchange.response.getheader("Date")
            if exchange.response.status == 304:
                return DesiredStateAnswer(body=None, etag=etag, server_date=date)
            return DesiredStateAnswer(body=_read_limited(exchange), etag=exchange.response.getheader("ETag"),
                                      server_date=date)
        finally:
            exchange.close()

    def report(self, namespace: str, device: str, report: AgentReport) -> None:
        path = f"v1/devices/{namespace}/{device}/report"
        self._document("POST", path, body=json.dumps(report.to_wire()).encode())

    def fetch(self, path: str) -> bytes:
        """A small document (a bundle's manifest.json)."""
        return self._document("GET", path)

    def _document(self, method: str, path: str, **kwargs) -> bytes:
        exchange = self._request(method, path, **kwargs)
        try:
            return _read_limited(exchange)
        finally:
            exchange.close()

    def download(self, path: str, destination: Path, size: int) -> None:
        """Download into `destination`, continuing a partial file with Range; never writes past `size` + 1 bytes
        (one more shows the file is longer than listed; verification then refuses it)."""
        have = destination.stat().st_size if destination.exists() else 0
        if have >= size:
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            exchange = self._request("GET", path, headers={"Range": f"bytes={have}-"} if have else None,
                                     seconds=self.timeout + (size - have) / MIN_RATE)
        except GatewayRefused as e:
            if e.status == 416:  # nothing past what we have: the file is shorter than listed; verify says so
                return
            raise
        try:
            with open(destination, "r+b" if have else "wb") as out:
                if exchange.response.status == 206:
                    out.seek(have)
                else:  # 200: the server sent the whole file
                    out.truncate(0)
                written = out.tell()
                try:
                    while written <= size and (chunk := exchange.read(min(_CHUNK, size + 1 - written))):
                        out.write(chunk)
                        written += len(chunk)
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        finally:
            exchange.close()
        if written < size:
            raise TransportError(f"GET {path}: {written} of {size} bytes, the connection ended early")


def _read_limited(exchange: _Exchange) -> bytes:
    data = exchange.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TransportError(f"{exchange.what}: larger than {MAX_DOCUMENT_BYTES} bytes")
    if exchange.response.length:  # bytes promised by Content-Length that never came
        raise TransportError(f"{exchange.what}: {exchange.response.length} bytes short, the connection ended early")
    return data


def _refused(what: str, status: int, body: bytes) -> GatewayError:
    reason = f"HTTP{status}"
    try:
        said = json.loads(body).get("reason")
        if isinstance(said, str) and re.fullmatch(r"[A-Z][A-Za-z0-9]{0,63}", said):  # it becomes a metric label
            reason = said
    except (ValueError, AttributeError):
        pass
    message = f"{what}: HTTP {status} ({reason})"
    kind = GatewayRefused if 400 <= status < 500 else GatewayError
    return kind(message, status, reason)
