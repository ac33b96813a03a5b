"""The `modelfleet` command line."""

import argparse
import logging
import os
import signal
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from modelfleet.errors import ModelfleetError, SLONotMet, Terminated


def main(argv: list[str] | None = None) -> int:
    # torch warns about its own deprecations (jit.load, trace) on every run; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ModelfleetError as e:
        print(f"error: {e} [{e.reason}]", file=sys.stderr)
        _termination_message(f"{e.reason}: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _termination_message(text: str) -> None:
    """In a pod, leave the error where Kubernetes puts it into the container status (the operator reads it)."""
    path = os.environ.get("MODELFLEET_TERMINATION_MESSAGE_PATH")
    if path:
        try:
            Path(path).write_text(text[:4000])  # the kubelet keeps at most 4096 bytes
        except OSError:
            pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelfleet", description="Compress ML models and ship them to Triton and edge fleets.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline locally and apply the SLO gate")
    _pipeline_arguments(run)
    run.set_defaults(handler=_run)

    worker = commands.add_parser("worker", help="commands the worker image runs inside Jobs")
    worker_commands = worker.add_subparsers(required=True, metavar="COMMAND")
    compress = worker_commands.add_parser("compress", help="run the pipeline and write result.json (no gate exit code)")
    _pipeline_arguments(compress)
    compress.set_defaults(handler=_worker_compress)
    bundle = worker_commands.add_parser(
        "bundle", help="build and sign the edge bundles of a compress result whose gate passed")
    bundle.add_argument("-f", "--filename", type=Path, required=True,
                        help="CompressedModel manifest (YAML), or env:NAME to read it from an environment variable")
    bundle.add_argument("-r", "--result", type=_location, required=True,
                        help="directory holding result.json and the artifacts (a path, file://, pvc:// or s3:// URI)")
    bundle.add_argument("-o", "--output", type=_location, required=True,
                        help="bundles root, <artifacts>/<namespace>/<model>/bundles (a path, file://, pvc:// or "
                             "s3://); each bundle goes to <output>/<target>/<version>/")
    bundle.add_argument("--version", action="append", default=[], metavar="TARGET=N", dest="versions",
                        help="edge target and the bundle version to build for it (repeatable; at least one)")
    bundle.add_argument("--key", type=Path, default=None,
                        help="ed25519 signing key, PKCS #8 PEM (default: "
                             "/var/run/modelfleet/bundle-signing/signing-key.pem)")
    bundle.add_argument("--valid-days", type=int, default=90, help="days until the manifests expire (default 90)")
    bundle.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    bundle.set_defaults(handler=_worker_bundle)

    publish = commands.add_parser("publish", help="deliver built artifacts")
    publish_commands = publish.add_subparsers(required=True, metavar="TARGET")
    triton = publish_commands.add_parser(
        "triton", help="write the spec's Triton target into its model repository; load and verify it when a server is given")
    triton.add_argument("-f", "--filename", type=Path, required=True, help="CompressedModel manifest (YAML)")
    triton.add_argument("-r", "--result", type=_location, required=True,
                        help="directory holding result.json and the artifacts (a path, file://, pvc:// or s3:// URI)")
    triton.add_argument("--repository", help="override spec.targets.triton.repository")
    triton.add_argument("--server-url", help="override spec.targets.triton.serverUrl (Triton's HTTP endpoint)")
    triton.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    triton.set_defaults(handler=_publish_triton)

    operator = commands.add_parser("operator", help="run the operator (kopf) against the current cluster")
    operator.add_argument("-n", "--namespace", action="append",
                          help="watch only this namespace (repeatable); default: every namespace")
    operator.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint")
    operator.add_argument("-v", "--verbose", action="store_true",
                          help="also log kopf's line for every handled watch event (several per resource)")
    operator.set_defaults(handler=_operator)

    keys = commands.add_parser("keys", help="signing keys for edge bundles and desired states")
    keys_commands = keys.add_subparsers(required=True, metavar="COMMAND")
    generate = keys_commands.add_parser("generate", help="make an ed25519 key pair (PEM files)")
    generate.add_argument("--out-private", type=Path, required=True,
                          help="file for the private key (PKCS #8 PEM, mode 0600; refused when it exists)")
    generate.add_argument("--out-public", type=Path, required=True,
                          help="file for the public key (PEM), what agents trust (--bundle-keys, --state-keys)")
    generate.set_defaults(handler=_keys_generate)

    from modelfleet.agent.command import add_arguments as agent_arguments  # stdlib only: the parser stays cheap

    agent = commands.add_parser("agent", help="run the device agent: poll the fleet gateway, install bundles")
    agent_arguments(agent)
    agent.set_defaults(handler=_agent)

    from modelfleet.fleet.server import add_arguments as gateway_arguments  # stdlib only: the parser stays cheap

    gateway = commands.add_parser("gateway", help="run the fleet gateway: enrolment, signed desired states, bundles "
                                                  "and reports for edge devices")
    gateway_arguments(gateway)
    gateway.set_defaults(handler=_gateway)

    validate = commands.add_parser("validate", help="check a CompressedModel manifest without running anything")
    validate.add_argument("-f", "--filename", type=Path, required=True)
    validate.set_defaults(handler=_validate)
    return parser


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", type=Path, required=True,
                        help="CompressedModel manifest (YAML), or env:NAME to read it from an environment variable")
    parser.add_argument("-o", "--output", type=_location, required=True,
                        help="directory for artifacts and result.json (a path, file://, pvc:// or s3:// URI)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _location(value: str) -> Path | str:
    """A local directory as a resolved Path, or an s3:// prefix as the URI itself."""
    from modelfleet.store import resolve_local

    if value.startswith("s3://"):
        if not value.removeprefix("s3://").split("/", 1)[0]:
            raise argparse.ArgumentTypeError(f"{value}: expected s3://<bucket>/<prefix>")
        return value.rstrip("/")
    if "://" not in value:
        return Path(value).resolve()
    local = resolve_local(value)
    if local is None:
        raise argparse.ArgumentTypeError(f"{value}: use a path, file://, pvc:// or s3://")
    return local.resolve()


@contextmanager
def _workdir(location: Path | str):
    """Where a command reads and writes a result: the directory itself, or a temporary one for s3://."""
    if isinstance(location, Path):
        yield location
    else:
        with tempfile.TemporaryDirectory(prefix="modelfleet-") as tmp:
            yield Path(tmp)


def _compress(args, directory: Path):
    from modelfleet.manifest import load_manifest, manifest_dir
    from modelfleet.pipeline.run import compress
    from modelfleet.progress import Progress

    model = load_manifest(args.filename)
    progress = Progress(enabled=not args.quiet)
    if isinstance(args.output, str):
        from modelfleet.store import s3

        s3.check_writable(args.output)  # refused credentials fail now, not after the whole run
    result = compress(model, directory, manifest_dir(args.filename), progress)
    if isinstance(args.output, str):  # built locally; now the artifacts, then result.json (the commit marker)
        from modelfleet.pipeline.run import RESULT_FILE

        written = s3.put_directory(directory, args.output, commit_marker=RESULT_FILE)
        progress.step("upload", f"{len(written)} objects -> {args.output}/ ({RESULT_FILE} last)")
    return model, result


def _run(args) -> int:
    from modelfleet.report import result_table

    with _workdir(args.output) as directory:
        model, result = _compress(args, directory)
        print(result_table(result))
        if not result.verdict.passed:
            raise SLONotMet("; ".join(v.message for v in result.verdict.violations))
        if model.spec.targets.triton:
            _publish(model, args.filename, directory, model.spec.targets.triton, not args.quiet, result, args.output)
    return 0


def _publish_triton(args) -> int:
    from modelfleet.domain.choice import triton_artifact
    from modelfleet.errors import InvalidManifest
    from modelfleet.manifest import load_manifest

    model = load_manifest(args.filename)
    target = model.spec.targets.triton
    if target is None:
        raise InvalidManifest(f"{args.filename}: spec.targets.triton is not set")
    overrides = {k: v for k, v in (("repository", args.repository), ("serverUrl", args.server_url)) if v}
    target = type(target).model_validate(target.model_dump(by_alias=True) | overrides)
    with _workdir(args.result) as result_dir:
        # The manifest's SLOs, not the ones result.json was judged by: changing the SLOs does not recompress.
        result = _read_result(args.result, result_dir, model.spec, lambda r: _artifact_files(r, {
            triton_artifact(r, target.precision)}))
        verdict = result.verdict
        if not verdict.passed:
            raise SLONotMet(f"{args.result}/result.json: the artifacts miss the SLOs ("
                            f"{'; '.join(v.message for v in verdict.violations)}); not publishing")
        _publish(model, args.filename, result_dir, target, not args.quiet, result, args.result)
    return 0


def _artifact_files(result, names) -> list[str]:
    """The files (and smoke data) of the named artifacts, relative to the result directory."""
    return [f for a in result.artifacts if a.name in names for f in (*a.files, a.smoke) if f]


def _read_result(location: Path | str, directory: Path, spec, wanted):
    """The result manifest, its choices and verdict made under `spec`'s SLOs; for s3://, downloaded with the
    files `wanted(result)` names (relative paths) into `directory`."""
    from pydantic import ValidationError

    from modelfleet.api.result import ResultManifest
    from modelfleet.domain.choice import rejudged
    from modelfleet.errors import InvalidManifest, PermanentError
    from modelfleet.manifest import format_validation_error
    from modelfleet.pipeline.run import RESULT_FILE
    from modelfleet.store import s3
    from modelfleet.store.paths import confined

    if isinstance(location, Path):
        text = (location / RESULT_FILE).read_text() if (location / RESULT_FILE).is_file() else None
    else:
        text = s3.read_text(f"{location}/{RESULT_FILE}")
    if text is None:
        raise InvalidManifest(f"{location}/{RESULT_FILE}: no result manifest (run `modelfleet run` first)")
    try:
        result = rejudged(ResultManifest.model_validate_json(text), spec)
    except ValidationError as e:
        raise InvalidManifest(f"{location}/{RESULT_FILE}: invalid result manifest:\n{format_validation_error(e)}",
                              reason="InvalidResult") from e
    if isinstance(location, str):
        prefix = s3.parse(location)
        for relative in dict.fromkeys(wanted(result)):
            s3.download(prefix.child(relative), confined(directory, relative, f"{location}/{RESULT_FILE}"),
                        permanent=PermanentError, missing_reason="ArtifactMissing")
        (directory / RESULT_FILE).write_text(text)
    return result


def _publish(model, manifest: Path, result_dir: Path, target, verbose: bool, result, location: Path | str) -> None:
    """Publish, write the outcome beside result.json (and to s3://), print it; a rolled-back version is an error."""
    from modelfleet.errors import PublishFailed
    from modelfleet.manifest import manifest_dir
    from modelfleet.progress import Progress
    from modelfleet.publish.triton import PUBLICATION_FILE, publish
    from modelfleet.store import atomic_write_text, s3

    owner = f"{model.metadata.namespace or 'default'}/{model.metadata.name}"
    with _sigterm_raises():
        outcome = publish(result, result_dir, target, owner, manifest_dir(manifest), Progress(enabled=verbose),
                          latency_slo_ms=model.spec.slo.latency_p95_ms.triton)
    atomic_write_text(result_dir / PUBLICATION_FILE, outcome.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    if isinstance(location, str):
        s3.put_file(result_dir / PUBLICATION_FILE, f"{location}/{PUBLICATION_FILE}")
    print(f"triton: {target.model_name} version {outcome.version} {outcome.state.lower()}: {outcome.message}")
    if outcome.state == "Failed":
        raise PublishFailed(outcome.message, reason=outcome.reason)


@contextmanager
def _sigterm_raises():
    """SIGTERM (pod deletion, the Job's deadline) raises Terminated, so publishing rolls back before the exit."""

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one rollback; the kubelet's SIGKILL ends a stuck one
        raise Terminated("stopped by SIGTERM (pod deleted or Job deadline passed) while publishing")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_compress(args) -> int:
    with _workdir(args.output) as directory:
        _compress(args, directory)
    return 0


def _worker_bundle(args) -> int:
    from modelfleet.manifest import load_manifest
    from modelfleet.progress import Progress
    from modelfleet.publish import bundle

    versions = bundle.parse_versions(args.versions)
    key = bundle.load_signing_key(args.key or bundle.DEFAULT_KEY_PATH)  # a missing key fails before any download
    model = load_manifest(args.filename)
    progress = Progress(enabled=not args.quiet)
    with _workdir(args.result) as result_dir:
        # Planned before any download (s3://): a target without a chosen artifact stops the command here.
        result = _read_result(args.result, result_dir, model.spec,
                              lambda r: bundle.source_files(bundle.plan_bundles(model, r, versions)))
        plans = bundle.plan_bundles(model, result, versions)
        built = bundle.build(model, result, result_dir, plans, args.output, key, progress, valid_days=args.valid_days)
    summary = " ".join(f"{b.target}={b.version}{' (unchanged)' if b.unchanged else ''}" for b in built)
    print(f"bundles: {summary} -> {args.output}")
    _termination_message(f"Bundled: {summary}")
    return 0


def _keys_generate(args) -> int:
    from modelfleet import signing
    from modelfleet.errors import PermanentError

    key = signing.generate_private_key()
    try:
        # O_EXCL: never overwrite a key (a lost signing key strands every agent that trusts it); 0600 from the start.
        fd = os.open(args.out_private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise PermanentError(f"{args.out_private}: {e.strerror}", reason="KeyNotWritten") from None
    with os.fdopen(fd, "wb") as out:
        out.write(signing.private_key_pem(key))
    args.out_public.write_bytes(signing.public_key_pem(key))
    print(f"key {signing.key_id(key)}: private {args.out_private}, public {args.out_public}")
    return 0


def _operator(args) -> int:
    import kopf

    import modelfleet.handlers.compressedmodel  # noqa: F401  (registers the handlers)
    from modelfleet import metrics

    port = metrics.port_from_env()
    if port:  # /metrics on MODELFLEET_METRICS_PORT (default 8080; 0: off)
        metrics.serve(port)
    kopf.configure(verbose=False)
    if not args.verbose:  # "Handler ... succeeded" for every Job and resource event: noise, and CPU under a burst
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(standalone=True, clusterwide=not args.namespace, namespaces=args.namespace or [],
             liveness_endpoint=args.liveness)
    return 0


def _agent(args) -> int:
    from modelfleet.agent.command import main as agent_main

    return agent_main(args)


def _gateway(args) -> int:
    from modelfleet.fleet.server import run

    return run(args)


def _validate(args) -> int:
    from modelfleet.manifest import load_manifest

    model = load_manifest(args.filename)
    print(f"{args.filename}: CompressedModel {model.metadata.name} is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
