"""Kill trials: `modelfleet publish triton` (the command the publish Job runs) killed at a random point.

Each trial starts a publish, sends SIGKILL or SIGTERM after a random delay spread over one publish's
duration, then runs the next attempt to completion, and checks what Triton and the repository hold.
Used by tests/test_triton_publish.py (a few trials) and bench/publish_kills.py (many).
"""

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.http as triton_http

RECORD_FILE = "modelfleet.json"
VERIFIED = ("served", "written")
# The progress line a publish printed last says where it was; (substring, phase), first match wins.
PHASES = [("interrupted", "rollback"), ("rolling back", "rollback"), ("left unverified", "recovery"),
          ("-> file://", "write"), ("loading", "load"), ("verifying", "verify"), ("measuring", "latency"),
          ("Served:", "record")]


class PublishRun:
    """One `modelfleet publish triton` process; its progress lines (stderr) are read as they come."""

    def __init__(self, manifest: Path, result_dir: Path):
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli", "publish", "triton", "-f", str(manifest), "-r", str(result_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.first_line_s: float | None = None  # after the start: Python and modelfleet's imports before it
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                if self.first_line_s is None:
                    self.first_line_s = time.monotonic() - self.started
                self.lines.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, text: str, timeout_s: float = 60) -> None:
        def printed() -> bool:
            return any(text in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(lambda: printed() or not self._reader.is_alive(), timeout_s)
            if not printed():
                raise AssertionError(f"publish printed no {text!r} (exit code {self.process.poll()}):\n"
                                     + "\n".join(self.lines))

    def phase(self) -> str:
        last = next((line for line in reversed(self.lines) if line.startswith("[")), None)
        if last is None:
            return "startup"
        return next((phase for text, phase in PHASES if text in last), "other")

    def finish(self, timeout_s: float = 120) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)  # the rest of stderr
        return code


@dataclass
class Trial:
    number: int
    signal: str
    delay_s: float
    phase: str  # where the publish was when the signal arrived; "finished" when it ended first
    exit_code: int
    recovered: bool  # the next attempt found the killed one's version pending and removed it
    seconds: float  # the killed attempt and the completing one
    violations: list[str] = field(default_factory=list)
    killed_output: list[str] = field(default_factory=list)  # kept when there are violations


class KillTrials:
    def __init__(self, triton_url: str, repository: Path, model: str, manifest: Path, result_dir: Path, seed: int):
        self.repository, self.model, self.manifest, self.result_dir = repository, model, manifest, result_dir
        self.client = triton_http.InferenceServerClient(triton_url.removeprefix("http://"))
        self.rng = random.Random(seed)
        self.startup_s = self.duration_s = 0.0

    def calibrate(self, publishes: int = 3) -> float:
        """Publishes to completion: the kill delays are drawn from the median one's duration, less most
        of the interpreter's start (a kill there tests nothing), so that they spread over the publishing.
        The first publish of a model also starts Triton's backend: the median leaves it out."""
        timings = []
        for _ in range(publishes):
            run = PublishRun(self.manifest, self.result_dir)
            if (code := run.finish()) != 0:
                raise AssertionError(f"calibration publish exited {code}:\n" + "\n".join(run.lines))
            timings.append((time.monotonic() - run.started, run.first_line_s or 0.0))
        self.duration_s, first_line_s = sorted(timings)[len(timings) // 2]
        self.startup_s = 0.8 * first_line_s
        return self.duration_s

    def run(self, number: int) -> Trial:
        before = self.last_verified()
        kill = self.rng.choice([signal.SIGKILL, signal.SIGTERM])
        delay = self.rng.uniform(self.startup_s, self.duration_s)
        started = time.monotonic()
        run = PublishRun(self.manifest, self.result_dir)
        try:
            run.process.wait(timeout=delay)
            phase = "finished"
        except subprocess.TimeoutExpired:
            phase = run.phase()
            run.process.send_signal(kill)
        code = run.finish()
        violations = []
        if kill == signal.SIGTERM:  # the process itself must have restored everything before it exited
            if code not in (0, 143, -signal.SIGTERM):
                violations.append(f"SIGTERM'd publish exited {code}")
            violations += [f"after SIGTERM: {v}" for v in self.violations(before)]
        follow_up = PublishRun(self.manifest, self.result_dir)
        follow_code = follow_up.finish()
        if follow_code != 0:
            violations.append(f"the next attempt exited {follow_code}: {follow_up.lines[-3:]}")
        violations += self.violations(before)
        recovered = any("left unverified" in line for line in follow_up.lines)
        return Trial(number, signal.Signals(kill).name, round(delay, 2), phase, code, recovered,
                     round(time.monotonic() - started, 2), violations, run.lines if violations else [])

    def record(self) -> dict:
        return json.loads((self.repository / self.model / RECORD_FILE).read_text())

    def last_verified(self) -> int:
        return max((v["version"] for v in self.record()["versions"] if v["state"] in VERIFIED), default=0)

    def violations(self, verified_before: int) -> list[str]:
        """What must hold whenever no publish runs: the invariants the kill trials check."""
        record = self.record()
        states = {v["version"]: v["state"] for v in record["versions"]}
        verified = {v for v, state in states.items() if state in VERIFIED}
        served = {v for v, state in states.items() if state == "served"}
        model_dir = self.repository / self.model
        on_disk = {int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
        found = []
        if pending := sorted(v for v, state in states.items() if state == "pending"):
            found.append(f"versions {pending} still pending")
        ready = {int(m["version"]) for m in self.client.get_model_repository_index()
                 if m.get("name") == self.model and m.get("state") == "READY"}
        if ready - served:
            found.append(f"Triton serves {sorted(ready - served)}, not recorded as served (record: {states})")
        if not ready:
            found.append("Triton serves no version")
        if verified_before and verified_before not in on_disk and not any(v > verified_before for v in verified & on_disk):
            found.append(f"version {verified_before}, verified before the trial, is gone and nothing newer is verified")
        if on_disk - verified:
            found.append(f"unverified version directories {sorted(on_disk - verified)} remain")
        if staging := sorted(p.name for p in model_dir.glob(".staging-*")):
            found.append(f"half-copied versions {staging} remain")
        return found


def table(trials: list[Trial], startup_s: float, duration_s: float) -> str:
    """Kills per signal and phase, recoveries, time per trial, and the violations (which must be 0)."""
    phases = [p for p in ("startup", "recovery", "write", "load", "verify", "latency", "record", "rollback", "other",
                          "finished") if any(t.phase == p for t in trials)]
    header = f"{'signal':<8} " + " ".join(f"{p:>8}" for p in phases)
    lines = [f"one publish: {duration_s:.2f} s; kill delays drawn from [{startup_s:.2f}, {duration_s:.2f}] s", "",
             header + f" {'trials':>7} {'recovered':>9} {'s/trial':>8} {'violations':>10}"]
    for name, rows in (("SIGKILL", [t for t in trials if t.signal == "SIGKILL"]),
                       ("SIGTERM", [t for t in trials if t.signal == "SIGTERM"]), ("all", trials)):
        if rows:
            lines.append(f"{name:<8} " + " ".join(f"{sum(t.phase == p for t in rows):>8}" for p in phases)
                         + f" {len(rows):>7} {sum(t.recovered for t in rows):>9}"
                         f" {sum(t.seconds for t in rows) / len(rows):>8.2f} {sum(len(t.violations) for t in rows):>10}")
    for t in trials:
        for violation in t.violations:
            lines.append(f"trial {t.number} ({t.signal} after {t.delay_s} s, {t.phase}, exit {t.exit_code}): {violation}")
        lines += [f"    {line}" for line in t.killed_output]
    return "\n".join(lines)
