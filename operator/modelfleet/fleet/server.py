"""`modelfleet gateway`: the device API (HTTPS from a mounted Secret's files) and, on its own port, /metrics.

One process, one event loop: the fleet view lives in memory, so the gateway scales out by replicas (each
answers the same bytes), not by worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from pathlib import Path

from modelfleet.fleet.limits import Limits, guarded_protocol

__all__ = ["add_arguments", "build", "limits", "run"]

log = logging.getLogger("modelfleet.fleet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8443, help="device API port (default 8443)")
    parser.add_argument("--metrics-port", type=int, default=9090,
                        help="plain-HTTP port for /metrics and /healthz (default 9090; 0: none)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (e.g. a mounted kubernetes.io/tls "
                                                      "Secret's tls.crt); without it, plain HTTP")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert (tls.key)")
    parser.add_argument("--artifacts", default=os.environ.get("MODELFLEET_ARTIFACTS"),
                        help="artifact store root holding the bundles (file://, pvc://, s3://); default "
                             "$MODELFLEET_ARTIFACTS")
    parser.add_argument("--signing-key", type=Path, required=True,
                        help="PEM ed25519 key that signs desired states (Secret modelfleet-gateway-signing, "
                             "signing-key.pem)")
    parser.add_argument("--bundle-keys", type=Path, nargs="+", required=True,
                        help="PEM public keys of the bundle signers; a bundle no one of them signed is never offered")
    parser.add_argument("--state-period", type=int, default=300,
                        help="seconds per desired-state window: it expires two windows out (default 300)")
    parser.add_argument("--heartbeat", type=float, default=300,
                        help="seconds between lastSeen writes of a device whose report did not change (default 300; "
                             "stretched to 2 x devices / --write-rate for a large fleet, so heartbeats take at most "
                             "half the write budget)")
    parser.add_argument("--write-rate", type=float, default=20,
                        help="EdgeDevice status writes per second, at most (default 20)")
    parser.add_argument("--stale-after", type=float, default=900,
                        help="seconds without a report after which a device counts as stale (default 900)")
    parser.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes,
                        help=f"largest request body accepted; larger ones get 413 unread (default {Limits.max_body_bytes})")
    parser.add_argument("--max-header-bytes", type=int, default=Limits.max_header_bytes,
                        help="largest request line and headers together; larger get 431 (default "
                             f"{Limits.max_header_bytes})")
    parser.add_argument("--request-timeout", type=float, default=Limits.request_timeout_s,
                        help="seconds a client has for its request headers, and then for its body; a slower one is "
                             f"closed (default {Limits.request_timeout_s:g})")
    parser.add_argument("--max-connections-per-client", type=int, default=Limits.per_client_connections,
                        help="open connections per client address; more are closed at once (default "
                             f"{Limits.per_client_connections}; 0: no cap, for a gateway behind a proxy)")
    parser.add_argument("--max-connections", type=int, default=Limits.max_connections,
                        help=f"open connections in all; beyond it 503 (default {Limits.max_connections})")
    parser.add_argument("--backend", choices=("kubernetes", "memory"), default="kubernetes",
                        help="memory: an in-memory stand-in for the API server, for tests and bench/fleet.py only "
                             "(its objects and write counts under /memory on the metrics port)")


def build(args: argparse.Namespace):
    """(gateway, memory backend or None) from the parsed arguments."""
    from modelfleet import signing
    from modelfleet.fleet.backend import InMemoryApiServer, KubernetesBackend
    from modelfleet.fleet.bundles import BundleStore
    from modelfleet.fleet.gateway import Gateway, Settings

    if not args.artifacts:
        raise SystemExit("modelfleet gateway: --artifacts (or MODELFLEET_ARTIFACTS) is required")
    keys = signing.KeySet.load(p.read_bytes() for p in args.bundle_keys)
    state_key = signing.load_private_key(args.signing_key.read_bytes())
    memory = InMemoryApiServer() if args.backend == "memory" else None
    backend = memory or KubernetesBackend()
    settings = Settings(period_s=args.state_period, heartbeat_s=args.heartbeat, write_rate=args.write_rate,
                        stale_after_s=args.stale_after)
    return Gateway(backend, BundleStore(args.artifacts, keys), state_key, settings), memory


def limits(args: argparse.Namespace) -> Limits:
    return Limits(max_body_bytes=args.max_body_bytes, max_header_bytes=args.max_header_bytes,
                  request_timeout_s=args.request_timeout, per_client_connections=args.max_connections_per_client,
                  max_connections=args.max_connections)


class _NoSignals:
    """A second uvicorn server in the same loop must not take over SIGTERM from the first."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve(gateway, memory, args: argparse.Namespace) -> None:
    import uvicorn

    from modelfleet.fleet.app import create_app, metrics_app

    options = {"log_level": "warning", "access_log": False, "timeout_keep_alive": 35, "lifespan": "off"}
    tls = {"ssl_certfile": str(args.tls_cert), "ssl_keyfile": str(args.tls_key)} if args.tls_cert else {}
    bounds = limits(args)
    api = uvicorn.Server(uvicorn.Config(create_app(gateway, bounds), host=args.host, port=args.port,
                                        http=guarded_protocol(bounds), limit_concurrency=bounds.max_connections,
                                        **tls, **options))
    side = None
    if args.metrics_port:
        side = type("MetricsServer", (_NoSignals, uvicorn.Server), {})(
            uvicorn.Config(metrics_app(gateway, memory), host=args.host, port=args.metrics_port, **options))
    await gateway.start()
    side_task = asyncio.create_task(side.serve()) if side else None
    try:
        await api.serve()
    finally:
        if side:
            side.should_exit = True
            await side_task
        await gateway.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    gateway, memory = build(args)
    try:
        import uvloop

        uvloop.run(serve(gateway, memory, args))
    except ImportError:
        asyncio.run(serve(gateway, memory, args))
    return 0
