"""What one client may cost the gateway, enforced before authentication and before any parsing of a body.

Two layers, because a request can be abusive before the application sees it:

- the connection (`guarded_protocol`, a subclass of uvicorn's httptools protocol): at most
  `per_client_connections` open connections per peer address (more are closed at once); the request line and
  headers within `max_header_bytes` (431) and within `request_timeout_s` of the connection opening or of the
  request's first byte (a slow drip is closed; an idle keep-alive connection closes on uvicorn's own timer);
- the request (`BodyLimits`, ASGI middleware): a body declared or sent larger than `max_body_bytes` is refused
  (413) without being read; a body not complete within `request_timeout_s` is refused (408). The body is read
  here, whole and bounded, and handed on, so no route can read an unbounded one.

Every refusal is a `FleetError` body (reason `PayloadTooLarge`, `HeadersTooLarge`, `RequestTimeout`), and the
connection is closed after it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

__all__ = ["Limits", "BodyLimits", "guarded_protocol"]

_BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # an AgentReport is at most 64 targets with 4,000-character messages: ~300 KB
    max_header_bytes: int = 16 << 10  # request line and headers together
    request_timeout_s: float = 10.0  # headers, and then the body, each within this long
    per_client_connections: int = 64  # 0: no cap (behind a proxy every device has the proxy's address)
    max_connections: int = 4096  # all clients together (uvicorn's limit_concurrency: 503 beyond it)


def _error_bytes(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"reason": reason, "message": message}).encode()
    phrase = {408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large"}[status]
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class BodyLimits:
    """ASGI middleware: the body read here, bounded in size and time, then replayed to the application."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit() or len(declared) > 19:
                return await _refuse(send, 400, "Invalid", "Content-Length is not a number of bytes")
            if int(declared) > self.limits.max_body_bytes:
                return await _refuse(send, 413, "PayloadTooLarge",
                                     f"the body may have at most {self.limits.max_body_bytes} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limits.max_body_bytes:
                        return await _refuse(send, 413, "PayloadTooLarge",
                                             f"the body may have at most {self.limits.max_body_bytes} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await _refuse(send, 408, "RequestTimeout",
                                 f"the body did not arrive within {self.limits.request_timeout_s:g} s")
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _refuse(send, status: int, reason: str, message: str) -> None:
    body = json.dumps({"reason": reason, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def guarded_protocol(limits: Limits):
    """uvicorn's httptools protocol with the connection limits above (pass as `uvicorn.Config(http=...)`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    open_by_peer: Counter[str] = Counter()  # one server's connections by peer address

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _header_bytes = 0
        _refusal: bytes | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            peer = self.client[0] if self.client else None
            cap = limits.per_client_connections
            if peer is not None and cap and open_by_peer[peer] >= cap:
                transport.abort()  # connection_lost follows; nothing was counted for it
                return
            self._peer = peer
            if peer is not None:
                open_by_peer[peer] += 1
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._peer is not None:
                open_by_peer[self._peer] -= 1
                if open_by_peer[self._peer] <= 0:
                    del open_by_peer[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.request_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.write(_error_bytes(408, "RequestTimeout", "no complete request headers within "
                                                  f"{limits.request_timeout_s:g} s"))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            if self._deadline is None:
                self._arm()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > limits.max_header_bytes:
                self._refusal = _error_bytes(431, "HeadersTooLarge", "the request line and headers may have at "
                                             f"most {limits.max_header_bytes} bytes")
                raise ValueError("headers too large")  # stops the parser; send_400_response answers 431

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()  # the body has its own deadline (BodyLimits)
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if self._refusal is None:
                return super().send_400_response(msg)
            self.transport.write(self._refusal)
            self.transport.close()

    return GuardedHttpToolsProtocol
