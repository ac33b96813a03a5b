"""Kill trials: `modelfleet publish triton` killed at random points against a real tritonserver.

Trains the digits CNN, compresses it to int8-static ONNX, starts tritonserver (hack/triton, CPU,
explicit model control) and publishes once to measure how long a publish takes. Then each trial
starts `modelfleet publish triton` (the command the publish Job runs), sends SIGKILL or SIGTERM
(even odds) after a delay drawn uniformly from [0, that duration], runs the next attempt to
completion and checks (tests/kill_trials.py): nothing pending in the record, Triton serves only
versions the record lists as served, the last verified version from before the trial is still
there or a newer verified one is, and no directory of an unverified version remains; after SIGTERM
this must already hold when the killed process has exited. The RNG is seeded: reruns draw the same
signals and delays (the phases they hit vary with machine load).

Usage: python bench/publish_kills.py [--trials 50] [--seed 2024] [--json PATH]
Exit code 1 when any trial found a violation.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TritonProcess, digits_example  # noqa: E402  (the tests' harness: tritonserver on loopback)
from kill_trials import KillTrials, table  # noqa: E402

from modelfleet.manifest import load_manifest  # noqa: E402
from modelfleet.pipeline.run import compress  # noqa: E402
from modelfleet.progress import Progress  # noqa: E402

MODEL = "digits-kills"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", type=Path, help="also write every trial here")
    args = parser.parse_args()
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="modelfleet-kills-") as tmp:
        workdir = Path(tmp)
        progress.step("prepare", "training the digits CNN and compressing it")
        subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "examples/digits/train.py"), "--out",
                        str(workdir / "data")], check=True, stdout=subprocess.DEVNULL)
        (workdir / "repository").mkdir()
        server = TritonProcess(workdir / "repository", workdir / "tritonserver.log")
        try:
            manifest = workdir / "manifest.yaml"
            manifest.write_text(yaml.safe_dump(digits_example(workdir / "data", {
                "benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10},
                "targets": {"edge": [], "triton": {"repository": f"file://{workdir / 'repository'}", "modelName": MODEL,
                                                   "serverUrl": server.url}}})))  # 100 latency requests
            compress(load_manifest(manifest), workdir / "result", workdir, Progress(enabled=False))
            trials = KillTrials(server.url, workdir / "repository", MODEL, manifest, workdir / "result", args.seed)
            progress.step("calibrate", f"a publish takes {trials.calibrate():.2f} s (median of 3)")
            results = []
            started = time.monotonic()
            for number in range(args.trials):
                results.append(trials.run(number))
                last = results[-1]
                progress.step("trial", f"{number + 1}/{args.trials}: {last.signal} after {last.delay_s:.2f} s "
                                       f"({last.phase}), exit {last.exit_code}, {len(last.violations)} violations")
            elapsed = time.monotonic() - started
        finally:
            server.stop()
    print(table(results, trials.startup_s, trials.duration_s))
    print(f"\n{len(results)} trials in {elapsed:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"startupSeconds": trials.startup_s, "durationSeconds": trials.duration_s,
                                         "trials": [asdict(t) for t in results]}, indent=2))
    return 1 if any(t.violations for t in results) else 0


if __name__ == "__main__":
    sys.exit(main())
