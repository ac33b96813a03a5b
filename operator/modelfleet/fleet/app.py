"""The gateway's HTTP routes (FastAPI): thin translations to `Gateway` calls; the OpenAPI document comes from the
pydantic models of `modelfleet.api.fleet` and `modelfleet.api.bundle`.

Device routes take `Authorization: Bearer <credential>` through one dependency (`_device`). Every error is a
`FleetError` body. `/metrics` is on a separate port (`metrics_app`), so that devices cannot read the fleet's
composition from it.
"""

import os
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from modelfleet import __version__
from modelfleet.api.bundle import BUNDLE_PATH_PATTERN, SignedEnvelope
from modelfleet.api.compressedmodel import DNS_LABEL_PATTERN
from modelfleet.api.fleet import AgentReport, EnrollRequest, EnrollResponse, FleetError
from modelfleet.api.paths import DNS_SUBDOMAIN_PATTERN
from modelfleet.errors import SourceError
from modelfleet.fleet.gateway import Device, Gateway, Problem
from modelfleet.fleet.http import Unsatisfiable, byte_range, etag_matches
from modelfleet.fleet.limits import BodyLimits, Limits

__all__ = ["create_app", "metrics_app"]

_CHUNK = 1 << 16
_bearer = HTTPBearer(auto_error=False, description="The device's credential from enrolment (the bootstrap token "
                                                   "for /v1/enroll).")
Namespace = Annotated[str, PathParam(pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace.")]
DeviceName = Annotated[str, PathParam(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="EdgeDevice name.")]
Label = Annotated[str, PathParam(pattern=DNS_LABEL_PATTERN, max_length=63)]
_ERRORS = {status: {"model": FleetError} for status in (401, 403, 404, 408, 409, 413, 416, 422, 429, 431, 503)}
# Reasons of the errors the framework raises itself (unknown route, wrong method, unparseable request).
_HTTP_REASONS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(FleetError(reason=reason, message=message).to_wire(), status_code=status, headers=headers)


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials else None


def create_app(gateway: Gateway, limits: Limits = Limits()) -> FastAPI:
    app = FastAPI(title="modelfleet fleet gateway", version=__version__,
                  description="Enrolment, signed desired states, bundle downloads and reports for edge devices.")

    @app.exception_handler(Problem)
    async def problem(request: Request, e: Problem) -> JSONResponse:
        return _error(e.status, e.reason, e.message, e.headers)

    @app.exception_handler(HTTPException)
    async def framework(request: Request, e: HTTPException) -> JSONResponse:
        reason = _HTTP_REASONS.get(e.status_code, f"HTTP{e.status_code}")
        return _error(e.status_code, reason, str(e.detail), dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "Invalid", f"{where}: {first.get('msg', 'invalid request')}")

    app.add_middleware(BodyLimits, limits=limits)
    app.add_middleware(_Observe, gateway=gateway)

    async def _device(namespace: Namespace, device: DeviceName,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Device:
        return gateway.authenticate(namespace, device, _bearer_token(credentials))

    Authenticated = Annotated[Device, Depends(_device)]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n" if gateway.ready else "starting\n", status_code=200 if gateway.ready else 503,
                        media_type="text/plain")

    @app.post("/v1/enroll", operation_id="enroll", status_code=201, response_model=EnrollResponse, responses=_ERRORS,
              summary="Enrol a device with the namespace's bootstrap token; returns its credential once.")
    async def enroll(body: EnrollRequest,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> JSONResponse:
        response = await gateway.enroll(body, _bearer_token(credentials))
        return JSONResponse(response.to_wire(), status_code=201)

    @app.get("/v1/devices/{namespace}/{device}/desired-state", operation_id="desiredState",
             response_model=SignedEnvelope,
             responses={**_ERRORS, 304: {"description": "Not modified: If-None-Match names the current ETag."}},
             summary="The device's signed desired state; ETag and If-None-Match make polling cheap.")
    async def desired_state(caller: Authenticated,
                            if_none_match: Annotated[str | None, Header()] = None) -> Response:
        body, etag = await gateway.desired_state(caller)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @app.post("/v1/devices/{namespace}/{device}/report", operation_id="report", status_code=204, responses=_ERRORS,
              summary="What the device runs: installed bundles, smoke tests, latency, errors.")
    async def report(body: AgentReport, caller: Authenticated) -> Response:
        gateway.report(caller, body)
        return Response(status_code=204)

    @app.get("/v1/devices/{namespace}/{device}/bundles/{model}/{target}/{version}/{path:path}",
             operation_id="bundleFile",
             responses={**_ERRORS, 206: {"description": "The requested byte range."},
                        307: {"description": "Redirect to a presigned URL (s3:// stores)."}},
             response_class=Response, summary="One file of a bundle the desired state names, with HTTP Range.")
    async def bundle_file(caller: Authenticated, model: Label, target: Label,
                          version: Annotated[int, PathParam(ge=1, le=(1 << 53) - 1)],
                          path: Annotated[str, PathParam(pattern=BUNDLE_PATH_PATTERN, max_length=255)],
                          range: Annotated[str | None, Header()] = None,  # noqa: A002 - the header's name
                          if_range: Annotated[str | None, Header()] = None) -> Response:
        try:
            found = await gateway.bundle_file(caller, model, target, version, path)
        except SourceError:  # the path tried to leave the bundle's directory
            raise Problem(404, "NotFound", f"no file {path} in this bundle") from None
        if isinstance(found, bytes):
            return Response(found, media_type="application/json", headers={"Cache-Control": "no-cache"})
        if isinstance(found, str):
            return RedirectResponse(found, status_code=307)
        return _file_response(found, range, if_range)

    return app


class _Observe:
    """Request durations by route template, method and code (plain ASGI: no per-request task, unlike
    BaseHTTPMiddleware)."""

    def __init__(self, app, gateway: Gateway):
        self.app, self.gateway = app, gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, code = time.perf_counter(), 500

        async def sending(message):
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.gateway.metrics.requests.labels(route, scope["method"], str(code)).observe(
                time.perf_counter() - started)


def _file_response(path: Path, range_header: str | None, if_range: str | None) -> Response:
    """The file, or the byte range asked for (206), streamed in chunks; 416 for a range outside it."""
    stat = path.stat()
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag}
    if if_range and if_range.strip() != etag:
        range_header = None  # the file changed since the partial download began: send it whole
    try:
        span = byte_range(range_header, stat.st_size)
    except Unsatisfiable as e:
        return _error(416, "RangeNotSatisfiable", str(e), {**headers, "Content-Range": f"bytes */{stat.st_size}"})
    first, last = span if span else (0, stat.st_size - 1)
    length = max(0, last - first + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if span:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{stat.st_size}"

    def chunks():
        with open(path, "rb") as f:
            f.seek(first)
            left = length
            while left > 0:
                data = f.read(min(_CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data

    return StreamingResponse(chunks(), status_code=status, headers=headers, media_type="application/octet-stream")


def metrics_app(gateway: Gateway, memory=None):
    """/metrics and /healthz for the metrics port; with the in-memory backend also `/memory/...`, the stand-in
    API server's objects and write counts (for bench/fleet.py)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(request: Request) -> Response:
        return Response("ok\n" if gateway.ready else "starting\n", status_code=200 if gateway.ready else 503)

    routes = [Route("/metrics", metrics), Route("/healthz", healthz)]
    if memory is not None:
        routes += _memory_routes(memory)
    return Starlette(routes=routes)


def _memory_routes(memory):
    """What the bench does as the operator and the administrator: put objects and Secrets, read EdgeDevices,
    count writes."""
    import asyncio
    import json

    from starlette.routing import Route

    async def objects(request: Request) -> Response:
        plural = request.path_params["plural"]
        if request.method == "PUT":
            return JSONResponse(memory.put(plural, json.loads(await request.body())))
        # In a worker thread: serialising 10,000 objects would hold up the event loop's polls.
        body = await asyncio.to_thread(memory.dump, plural)
        return Response(body, media_type="application/json")

    async def secret(request: Request) -> Response:
        memory.put_secret(request.path_params["namespace"], request.path_params["name"], await request.json())
        return Response(status_code=204)

    async def writes(request: Request) -> Response:
        return JSONResponse({"creates": memory.creates, "statusWrites": memory.status_writes,
                             "pid": os.getpid()})

    return [Route("/memory/writes", writes), Route("/memory/{plural}", objects, methods=["GET", "PUT"]),
            Route("/memory/secrets/{namespace}/{name}", secret, methods=["PUT"])]
