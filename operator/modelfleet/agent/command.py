"""`modelfleet agent`: its arguments (stdlib only, so building the CLI's parser stays cheap) and its entry."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
from pathlib import Path

__all__ = ["add_arguments", "main"]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", required=True, help="the fleet gateway's base URL (http:// or https://)")
    parser.add_argument("--dir", type=Path, required=True, help="state directory (credential, models, downloads)")
    parser.add_argument("--namespace", required=True, help="namespace of the device's EdgeDevice")
    parser.add_argument("--device", required=True, help="name of the device's EdgeDevice")
    parser.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the device, sent at enrollment (repeatable; modelfleet.io/class=...)")
    parser.add_argument("--bootstrap-token-file", type=Path,
                        help="file holding the bootstrap token; needed only while DIR/credential is missing")
    parser.add_argument("--state-keys", type=Path, required=True,
                        help="PEM file of the gateway's public keys (desired states); several during a rotation")
    parser.add_argument("--bundle-keys", type=Path, required=True,
                        help="PEM file of the bundle signers' public keys (manifests)")
    parser.add_argument("--ca-file", type=Path, help="CA bundle that signed the gateway's HTTPS certificate")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="seconds a request to the gateway may take in all, however slowly bytes arrive; a bundle "
                             "file gets this plus its size at 16 KiB/s (default 30)")
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="poll interval, jittered (default 30)")
    parser.add_argument("--clock-skew-seconds", type=float, default=300.0,
                        help="how far past an expiry a document is still accepted (default 300)")
    parser.add_argument("--maintenance-window", metavar="HH:MM-HH:MM",
                        help="switch models only in this daily window, device local time; downloads happen anytime")
    parser.add_argument("--post-install-hook", metavar="CMD",
                        help="command run after a switch (env MODELFLEET_MODEL, _TARGET, _VERSION, _MODEL_PATH); "
                             "a non-zero exit switches back to the previous version")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address /metrics listens on (default 0.0.0.0)")
    parser.add_argument("--smoke-threads", type=int, default=1, help="runtime threads of the smoke test")
    parser.add_argument("--check-seconds", type=float, default=3600.0,
                        help="how often the active models' files are hashed against their manifests; a damaged one "
                             "is reported (ActiveTampered) and installed again (default 3600)")
    parser.add_argument("--once", action="store_true",
                        help="one poll, then exit: 0 converged, 1 gateway unreachable, 2 not converged (an install "
                             "failed or waits for the window), 3 cannot enrol")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each install phase")


def main(args: argparse.Namespace) -> int:
    from modelfleet.agent.loop import Agent, AgentConfig, parse_window

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    config = AgentConfig(
        gateway=args.gateway, directory=args.dir.resolve(), namespace=args.namespace, device=args.device,
        labels=dict(args.label), bootstrap_token_file=args.bootstrap_token_file, state_keys=args.state_keys,
        bundle_keys=args.bundle_keys, ca_file=args.ca_file, poll_seconds=args.poll_seconds,
        clock_skew_seconds=args.clock_skew_seconds,
        maintenance_window=parse_window(args.maintenance_window) if args.maintenance_window else None,
        post_install_hook=shlex.split(args.post_install_hook) if args.post_install_hook else None,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, once=args.once,
        smoke_threads=args.smoke_threads, check_seconds=args.check_seconds, request_timeout=args.request_timeout)
    agent = Agent(config)
    signal.signal(signal.SIGTERM, lambda *_: agent.shutdown())  # cut the request or smoke test at hand, then exit
    return agent.run()
