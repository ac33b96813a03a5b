"""The `modelfleet` command line."""

import argparse
import sys
import warnings
from pathlib import Path

from modelfleet.errors import ModelfleetError, SLONotMet


def main(argv: list[str] | None = None) -> int:
    # torch warns about its own deprecations (jit.load, trace) on every run; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ModelfleetError as e:
        print(f"error: {e} [{e.reason}]", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


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

    validate = commands.add_parser("validate", help="check a CompressedModel manifest without running anything")
    validate.add_argument("-f", "--filename", type=Path, required=True)
    validate.set_defaults(handler=_validate)
    return parser


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", type=Path, required=True, help="CompressedModel manifest (YAML)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for artifacts and result.json")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _compress(args):
    from modelfleet.manifest import load_manifest
    from modelfleet.pipeline.run import compress
    from modelfleet.progress import Progress

    model = load_manifest(args.filename)
    base_dir = args.filename.resolve().parent
    return compress(model, args.output.resolve(), base_dir, Progress(enabled=not args.quiet))


def _run(args) -> int:
    from modelfleet.report import result_table

    result = _compress(args)
    print(result_table(result))
    if not result.verdict.passed:
        raise SLONotMet("; ".join(v.message for v in result.verdict.violations))
    return 0


def _worker_compress(args) -> int:
    _compress(args)
    return 0


def _validate(args) -> int:
    from modelfleet.manifest import load_manifest

    model = load_manifest(args.filename)
    print(f"{args.filename}: CompressedModel {model.metadata.name} is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
