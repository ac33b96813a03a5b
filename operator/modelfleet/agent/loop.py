"""The agent's loop: poll the desired state, verify it, install what differs, report.

One install is a state machine whose phase is saved (`TargetStore.save_phase`) before each risky step; what a
restarted agent does about each phase:

| phase         | what it does                                     | on restart                                   |
|---------------|--------------------------------------------------|----------------------------------------------|
| idle          | nothing                                          | nothing                                      |
| downloading   | manifest, then files into downloads/ (Range)     | partial files stay; the next try continues   |
| unpacking     | links verified files into a temporary directory  | temporary directories are removed            |
| smoke-testing | golden inputs through the runtime, in a child    | the same; nothing is switched before a pass  |
| switching     | `current` -> the new version, `previous` -> old  | with a hook: back to `previous` (unconfirmed)|
| hooking       | the post-install hook                            | with a hook: back to `previous` (unconfirmed)|

Whatever the phase, `TargetStore.recover` then checks `current` and falls back to `previous` when it is broken.
A failure leaves the active model as it was, is reported (`DeviceTargetStatus.lastError`) and retried with
exponential backoff and jitter; a refused bundle is retried too (a tampered download may be a bad cache), but
no sooner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time as clock
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from modelfleet import __version__, signing
from modelfleet.agent import errors
from modelfleet.agent.client import GatewayClient, GatewayRefused
from modelfleet.agent.errors import TransportError
from modelfleet.agent.smoke import SmokeFailed, run_smoke
from modelfleet.agent.store import AGENT_FILE, DeviceStore, Installed, TargetStore, fsync_dir, manifest_of, write_atomic
from modelfleet.agent.trust import TrustedState
from modelfleet.api.bundle import MANIFEST_FILE, BundleRef
from modelfleet.api.edgedevice import DeviceError, DeviceLatency, DeviceTargetStatus, InstalledBundle, SmokeTest
from modelfleet.api.fleet import AgentReport, EnrollRequest

__all__ = ["AgentConfig", "Agent", "in_window", "load_keys", "parse_window"]

log = logging.getLogger("modelfleet.agent")
MAX_BACKOFF_S = 900.0  # the rollout's install_backoff cap: a retried device reports within its timeout
REPORT_EVERY_POLLS = 5  # a report at least this often, even when nothing changed (the gateway's lastSeen)


@dataclass(frozen=True)
class AgentConfig:
    gateway: str
    directory: Path
    namespace: str
    device: str
    state_keys: Path
    bundle_keys: Path
    labels: dict[str, str] = field(default_factory=dict)
    bootstrap_token_file: Path | None = None
    ca_file: Path | None = None
    poll_seconds: float = 30.0
    clock_skew_seconds: float = 300.0
    maintenance_window: tuple[time, time] | None = None
    post_install_hook: list[str] | None = None
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    once: bool = False
    smoke_threads: int = 1
    check_seconds: float = 3600.0  # how often the active models' files are hashed against their manifests
    request_timeout: float = 30.0  # a request's total deadline (GatewayClient)


class InstallFailed(Exception):
    def __init__(self, reason: str, message: str, transient: bool):
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient


@dataclass
class _Failure:
    """The failed attempts at one ordered bundle (reset when the order changes or an install succeeds)."""

    manifest_sha256: str
    attempts: int
    retry_at: float  # monotonic
    error: DeviceError


def load_keys(path: Path) -> signing.KeySet:
    """A PEM file with one or more public keys (or raw base64 keys, one a line): the keys of a rotation."""
    text = path.read_text()
    blocks = re.findall(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", text, re.S)
    rest = re.sub(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", "", text, flags=re.S)
    blocks += [line.strip() for line in rest.splitlines() if line.strip() and not line.startswith("#")]
    if not blocks:
        raise ValueError(f"{path}: no public keys")
    return signing.KeySet.load(blocks)


def parse_window(text: str) -> tuple[time, time]:
    """`HH:MM-HH:MM`, device local time; the end may be past midnight (22:00-04:00)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text.strip())
    if not match:
        raise ValueError(f"maintenance window {text!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return time(h1, m1), time(h2, m2)


def in_window(window: tuple[time, time] | None, now: time) -> bool:
    if window is None:
        return True
    start, end = window
    if start == end:
        return True
    return start <= now < end if start < end else now >= start or now < end


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)


def _backoff(base: float, attempts: int) -> float:
    """Exponential with full jitter in its upper half: base, 2 base, 4 base, ... up to MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, base * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


class Agent:
    def __init__(self, config: AgentConfig, *, client: GatewayClient | None = None):
        self.config = config
        self.store = DeviceStore(config.directory)
        self.client = client or GatewayClient(config.gateway, ca_file=config.ca_file, timeout=config.request_timeout)
        self.trust: TrustedState | None = None
        self.failures: dict[tuple[str, str], _Failure] = {}
        self.held: dict[tuple[str, str], str] = {}  # verified downloads waiting for the maintenance window
        self.state_error: DeviceError | None = None
        self.notice: DeviceError | None = None  # reported once: a damaged trust record set aside, ...
        self.damaged: dict[tuple[str, str], DeviceError] = {}  # active models whose files failed their hashes
        self.next_check = 0.0  # monotonic time of the next check of the active models' hashes
        self.etag: str | None = None
        self.report_due = True
        self.polls_since_report = 0
        self.stop = threading.Event()
        self.metrics = None

    def shutdown(self) -> None:
        """Stop soon (SIGTERM): the loop ends, and a request or smoke test under way is cut short."""
        self.stop.set()
        self.client.abort()

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what a killed agent left, load the trust record, serve /metrics. No network."""
        self.store.prepare()
        hook = bool(self.config.post_install_hook)
        for target in self.store.targets():
            phase, version = target.phase()
            active = target.active()
            # A switch the hook never confirmed is undone: the version is installed again, hook included.
            if hook and phase in ("switching", "hooking") and active and active.version == version:
                if target.revert():
                    log.warning("%s/%s: version %s was switched to but its hook did not finish: back to previous",
                                target.model, target.target, version)
            for action in target.recover():
                log.warning("%s/%s: recovery: %s", target.model, target.target, action)
            if phase != "idle":
                target.save_phase("idle")
            # A kill after a switch but before its prune leaves a third version; a converged target never
            # installs again to prune it.
            target.prune()
        record, problem = self.store.trust_record()
        if problem:
            log.error("trust record: %s", problem)
            self._state_problem("TrustRecordCorrupt", problem)
        self.trust = TrustedState(
            namespace=self.config.namespace, device=self.config.device,
            state_keys=load_keys(self.config.state_keys), bundle_keys=load_keys(self.config.bundle_keys),
            record=record, clock_skew=timedelta(seconds=self.config.clock_skew_seconds),
            agent_version=__version__)
        if self.config.metrics_port is not None:
            from modelfleet.agent.metrics import AgentMetrics

            self.metrics = AgentMetrics()
            self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
        self._set_aside_future_record()
        self._check_active()
        self._update_gauges()

    def enroll(self) -> None:
        """Get a credential when the state directory has none (raises TransportError; GatewayRefused 409 when the
        device is enrolled already and its credential is lost)."""
        credential = self.store.credential()
        if credential is None:
            if self.config.bootstrap_token_file is None:
                raise SystemExit(f"{self.store.credential_file} is missing: pass --bootstrap-token-file to enrol")
            token = self.config.bootstrap_token_file.read_text().strip()
            answer = self.client.enroll(EnrollRequest(namespace=self.config.namespace, device=self.config.device,
                                                      labels=self.config.labels, agent_version=__version__), token)
            self.store.save_credential(answer.credential)
            credential = answer.credential
            log.info("enrolled as %s/%s", self.config.namespace, self.config.device)
        self.client.credential = credential

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Poll until stopped (SIGTERM); with `once`, one poll: 0 converged, 1 gateway unreachable, 2 not converged
        (an install failed or waits for the maintenance window), 3 enrollment impossible."""
        self.start()
        unreachable = 0
        while not self.stop.is_set():
            try:
                if self.client.credential is None:
                    self.enroll()
                converged = self.poll()
                unreachable = 0
                delay = _jitter(self.config.poll_seconds)
                if self.config.once:
                    return 0 if converged else 2
            except GatewayRefused as e:
                if e.status == 409:
                    log.error("%s: enrolled already and the credential is lost; delete the EdgeDevice to enrol "
                              "again", e)
                    return 3
                if e.status == 401 and self.store.credential() is None:
                    log.error("%s: the bootstrap token was refused", e)
                    return 3
                unreachable += 1
                self._transport_failed(e)
            except TransportError as e:
                unreachable += 1
                self._transport_failed(e)
            if self.config.once:
                return 1
            if unreachable:
                delay = _backoff(self.config.poll_seconds, unreachable)
            self.stop.wait(delay)
        return 0

    def _state_problem(self, reason: str, message: str) -> None:
        """Something about the device's own state that people must hear of once (the next report carries it)."""
        self.notice = DeviceError(reason=reason, message=message[:4000], at=_rfc3339(datetime.now(timezone.utc)))
        self.report_due = True

    def _set_aside_future_record(self) -> None:
        """A trust record issued ahead of this device's clock came from a clock that was wrong (the gateway's, or
        this device's before it was set): kept, it would refuse every correct desired state as a replay."""
        now = datetime.now(timezone.utc)
        record = self.trust.discard_future_record(now)
        if record is not None:
            message = (f"the trust record (sequence {record.sequence}) was issued at {record.issued.isoformat()}, "
                       f"ahead of this device's clock ({now.isoformat()}): set aside, trusting afresh")
            log.error("%s", message)
            self.store.set_aside_trust_record(message)
            self.etag = None
            self._state_problem("TrustRecordCorrupt", message)

    def _check_active(self) -> None:
        """Hash every active model's files against its manifest: a damaged one is reported and installed again."""
        self.next_check = clock.monotonic() + self.config.check_seconds
        for target in self.store.targets():
            active = target.active()
            if active is None:
                continue
            damage = target.damage(active)
            key = (target.model, target.target)
            if damage:
                message = (f"{key[0]}/{key[1]} version {active.version}: the active model's files differ from its "
                           f"manifest ({damage}); installing it again")
                log.error("%s", message)
                self.damaged[key] = DeviceError(reason="ActiveTampered", message=message,
                                                at=_rfc3339(datetime.now(timezone.utc)), version=active.version)
                self._state_problem("ActiveTampered", message)  # reported even once it is repaired
            elif self.damaged.pop(key, None) is not None:
                self.report_due = True
            if self.metrics:
                self.metrics.active_checks.labels("Damaged" if damage else "Intact").inc()

    def _transport_failed(self, error: TransportError) -> None:
        # Offline or refused by the gateway: the active model keeps running; the loop backs off and retries.
        log.warning("gateway: %s", error)
        if self.metrics:
            self.metrics.poll_errors.labels(getattr(error, "reason", None) or "Unreachable").inc()
        self.report_due = True

    def poll(self) -> bool:
        """One poll: fetch and verify the desired state, install what differs, report when due. True when every
        ordered bundle is active. Raises TransportError when the gateway cannot be reached."""
        if clock.monotonic() >= self.next_check:
            self._check_active()
        self._set_aside_future_record()
        answer = self.client.desired_state(self.config.namespace, self.config.device, self.etag)
        if self.metrics:
            self.metrics.polls.inc()
        try:
            if answer.body is None:  # 304: still the trusted document, which must still be unexpired
                self.trust.check_fresh(datetime.now(timezone.utc))
            else:
                update = self.trust.verify_desired_state(answer.body, datetime.now(timezone.utc))
                if update.changed:
                    self.store.save_trust_record(update.record)  # persisted before the agent acts on it
                    self.store.prune_downloads({b.manifest_sha256 for b in update.desired.bundles})
                self.etag = answer.etag
        except errors.Refused as e:
            log.warning("desired state refused: %s", e)
            message = e.message if not answer.server_date else f"{e.message} (the gateway's Date: {answer.server_date})"
            self.state_error = DeviceError(reason=e.reason, message=message[:4000],
                                           at=_rfc3339(datetime.now(timezone.utc)))
            self.etag = None
            if self.metrics:
                self.metrics.poll_errors.labels(e.reason).inc()
            self._report()
            return False
        if self.state_error is not None:
            self.state_error, self.report_due = None, True
        desired = self.trust.desired
        converged = desired is not None
        for ref in desired.bundles if desired else []:
            converged &= self._converge(ref)
        self.polls_since_report += 1
        if self.report_due or self.polls_since_report >= REPORT_EVERY_POLLS or self.config.once:
            self._report()
        return converged

    def _converge(self, ref: BundleRef) -> bool:
        """Install `ref` when it is not active and no backoff holds it back; True when it is active."""
        key = (ref.model, ref.target)
        target = self.store.target(ref.model, ref.target)
        active = target.active()
        intact = key not in self.damaged
        if active and intact and (active.version, active.manifest_sha256) == (ref.version, ref.manifest_sha256):
            return True
        failure = self.failures.get(key)
        if failure and failure.manifest_sha256 != ref.manifest_sha256:
            del self.failures[key]  # another order: start afresh
            failure = None
        if failure and clock.monotonic() < failure.retry_at:
            return False
        if self.held.get(key) == ref.manifest_sha256 and not self._window_open():
            return False
        try:
            installed = self._install(target, ref, active)
        except InstallFailed as e:
            self._failed(target, ref, e)
            return False
        if installed:
            self.failures.pop(key, None)
            self.held.pop(key, None)
            self.damaged.pop(key, None)
            self._count(ref, "Installed", "Installed")
        self.report_due = True
        return installed

    def _window_open(self) -> bool:
        return in_window(self.config.maintenance_window, datetime.now().time())

    def _failed(self, target: TargetStore, ref: BundleRef, error: InstallFailed) -> None:
        key = (ref.model, ref.target)
        previous = self.failures.get(key)
        attempts = previous.attempts + 1 if previous else 1
        log.warning("%s/%s version %d: %s: %s (attempt %d)", ref.model, ref.target, ref.version, error.reason,
                    error.message, attempts)
        self.failures[key] = _Failure(
            manifest_sha256=ref.manifest_sha256, attempts=attempts,
            retry_at=clock.monotonic() + _backoff(self.config.poll_seconds, attempts),
            error=DeviceError(reason=error.reason, message=error.message[:4000],
                              at=_rfc3339(datetime.now(timezone.utc)), version=ref.version, attempts=attempts,
                              transient=error.transient))
        with contextlib.suppress(OSError):
            target.save_phase("idle")
        self._count(ref, "Failed", error.reason)
        self.report_due = True

    def _count(self, ref: BundleRef, result: str, reason: str) -> None:
        if self.metrics:
            self.metrics.installs.labels(ref.model, ref.target, result, reason).inc()

    # --- one install ---------------------------------------------------------------------------

    def _install(self, target: TargetStore, ref: BundleRef, active: Installed | None) -> bool:
        """Download, verify, unpack, smoke-test and switch to `ref`; False when held for the maintenance window.
        Raises InstallFailed and leaves the active model alone."""
        installed_version = active.version if active else None
        name = f"{ref.model}/{ref.target} version {ref.version}"
        phase, temp = "downloading", None
        try:
            # A version already on disk (the previous one, for a rollback) is verified where it is; a copy that
            # fails (its bytes changed on disk) is downloaded again and replaces it.
            on_disk = target.check(target.version_dir(ref.version))
            in_place = False
            if on_disk is not None and on_disk.manifest_sha256 == ref.manifest_sha256:
                source, envelope = on_disk.path, (on_disk.path / MANIFEST_FILE).read_bytes()
                try:
                    manifest = self._verify(ref, envelope, source, installed_version, discard_on_tamper=False)
                    in_place = True
                except (errors.TamperedFile, errors.FileSetMismatch) as e:
                    log.warning("%s: the copy on disk is damaged (%s); downloading it again", name, e)
                    self._count(ref, "Failed", "ActiveTampered")
            if not in_place:
                target.save_phase(phase, ref.version)
                log.info("%s: downloading", name)
                source = self.store.download_dir(ref.manifest_sha256)
                envelope = self.client.fetch(f"{ref.url}/{MANIFEST_FILE}")
                self._check_manifest(ref, envelope, installed_version)
                manifest, _ = manifest_of(envelope)
                for entry in manifest.files:
                    self.client.download(f"{ref.url}/{entry.path}", source / entry.path, entry.size_bytes)
                manifest = self._verify(ref, envelope, source, installed_version, discard_on_tamper=True)
            if not self._window_open():
                self.held[(ref.model, ref.target)] = ref.manifest_sha256
                log.info("%s: verified; held until the maintenance window", name)
                return False

            phase = "unpacking"
            directory = source
            if not in_place:
                target.save_phase(phase, ref.version)
                directory = temp = self._unpack(target, ref.version, source, envelope, manifest)

            phase = "smoke-testing"
            target.save_phase(phase, ref.version)
            log.info("%s: smoke test", name)
            self._smoke(directory, manifest)
            if temp is not None:
                target.commit_dir(temp, ref.version)
                temp = None

            phase = "switching"
            target.save_phase(phase, ref.version)
            target.switch(ref.version)
            log.info("%s: active", name)
            if self.config.post_install_hook:
                phase = "hooking"
                target.save_phase(phase, ref.version)
                self._hook(target, ref)
            target.save_phase("idle")
        except errors.Refused as e:
            raise InstallFailed(e.reason, e.message, transient=False) from None
        except TransportError as e:
            raise InstallFailed("DownloadFailed", str(e), transient=True) from None
        except OSError as e:  # disk full, permissions: worth retrying once the disk has room
            reason = {"downloading": "DownloadFailed", "unpacking": "UnpackFailed"}.get(phase, "SwitchFailed")
            raise InstallFailed(reason, f"{phase}: {e}", transient=True) from None
        finally:
            if temp is not None:  # a failed smoke test: the unpacked copy goes, the downloads stay
                shutil.rmtree(temp, ignore_errors=True)
        target.prune()
        self.store.discard_download(ref.manifest_sha256)
        self._update_gauges()
        return True

    def _check_manifest(self, ref: BundleRef, envelope: bytes, installed_version: int | None) -> None:
        """TrustedState's manifest checks before downloading what it lists: given no files, a manifest that passes
        every other check fails only at the file-set check (a manifest lists at least one file)."""
        try:
            self.trust.verify_bundle(envelope, {}, datetime.now(timezone.utc), installed_version, slot=ref)
        except errors.FileSetMismatch:
            return

    def _verify(self, ref: BundleRef, envelope: bytes, source: Path, installed_version: int | None, *,
                discard_on_tamper: bool):
        manifest, digest = manifest_of(envelope)
        try:
            with contextlib.ExitStack() as stack:
                files = {}
                for entry in manifest.files:
                    path = source / entry.path
                    if path.is_file():
                        files[entry.path] = stack.enter_context(open(path, "rb"))
                return self.trust.verify_bundle(envelope, files, datetime.now(timezone.utc), installed_version,
                                                slot=ref).manifest
        except (errors.TamperedFile, errors.FileSetMismatch):
            if discard_on_tamper:  # fetch it afresh next time
                self.store.discard_download(digest)
            raise

    def _unpack(self, target: TargetStore, version: int, source: Path, envelope: bytes, manifest) -> Path:
        """The verified files and the manifest in a fresh temporary directory, fsynced (hard links when the
        downloads share the file system, copies otherwise)."""
        temp = target.temp_dir(version)
        for entry in manifest.files:
            destination = temp / entry.path
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source / entry.path, destination)
            except OSError:
                shutil.copyfile(source / entry.path, destination)
            with open(destination, "rb") as f:
                os.fsync(f.fileno())
        write_atomic(temp / MANIFEST_FILE, envelope)
        for directory in {(temp / e.path).parent for e in manifest.files} | {temp}:
            fsync_dir(directory)
        return temp

    def _smoke(self, directory: Path, manifest) -> None:
        try:
            result = run_smoke(directory, manifest, threads=self.config.smoke_threads, cancel=self.stop)
        except SmokeFailed as e:
            raise InstallFailed("SmokeTestFailed", str(e), transient=False) from None
        write_atomic(directory / AGENT_FILE, _json({**result.to_json(), "at": _rfc3339(datetime.now(timezone.utc))}))
        if not result.passed:
            raise InstallFailed("SmokeTestFailed", result.detail, transient=False)

    def _hook(self, target: TargetStore, ref: BundleRef) -> None:
        env = dict(os.environ, MODELFLEET_MODEL=ref.model, MODELFLEET_TARGET=ref.target,
                   MODELFLEET_VERSION=str(ref.version), MODELFLEET_MODEL_PATH=str(target.current))
        try:
            done = subprocess.run(self.config.post_install_hook, env=env, capture_output=True, text=True,
                                  timeout=300)
            problem = f"exited {done.returncode}: {done.stderr.strip()[-300:]}" if done.returncode else None
        except (OSError, subprocess.TimeoutExpired) as e:
            problem = str(e)
        if problem:
            # The hook is the device's own acceptance: without it the version is not committed.
            target.revert()
            target.save_phase("idle")
            target.discard_version(ref.version)
            raise InstallFailed("HookFailed", f"post-install hook {problem}; back to the previous version",
                                transient=False)

    # --- reports -------------------------------------------------------------------------------

    def _status(self, target: TargetStore) -> DeviceTargetStatus:
        active, previous = target.active(), target.previous_version()
        failure = self.failures.get((target.model, target.target))
        smoke = active.smoke if active else None
        return DeviceTargetStatus(
            model=target.model, target=target.target,
            installed=_bundle(active),
            previous=_bundle(previous) if previous and (active is None or previous.path != active.path) else None,
            health="Healthy" if smoke and smoke.get("passed") else "Unknown",
            last_smoke=SmokeTest(agreement=smoke["agreement"], passed=smoke["passed"], at=smoke.get("at"))
            if smoke else None,
            latency=DeviceLatency(p50_ms=smoke["p50Ms"], p95_ms=smoke["p95Ms"]) if smoke else None,
            last_error=(failure.error if failure else self.damaged.get((target.model, target.target))
                        or self.state_error or self.notice))

    def report(self) -> AgentReport:
        desired = self.trust.desired if self.trust else None
        keys = {(t.model, t.target) for t in self.store.targets()}
        keys |= {(b.model, b.target) for b in desired.bundles} if desired else set()
        record = self.trust.record if self.trust else None
        return AgentReport(agent_version=__version__,
                           targets=[self._status(self.store.target(m, t)) for m, t in sorted(keys)][:64],
                           desired_sequence=record.sequence if record else None)

    def _report(self) -> None:
        try:
            self.client.report(self.config.namespace, self.config.device, self.report())
            self.report_due, self.polls_since_report, self.notice = False, 0, None
        except TransportError as e:
            log.warning("report: %s", e)
            self.report_due = True
        self._update_gauges()

    def _update_gauges(self) -> None:
        if not self.metrics:
            return
        for target in self.store.targets():
            active = target.active()
            if active:
                labels = (target.model, target.target)
                self.metrics.active_version.labels(*labels).set(active.version)
                if active.smoke:
                    self.metrics.smoke_agreement.labels(*labels).set(active.smoke["agreement"])
                    self.metrics.latency_p95.labels(*labels).set(active.smoke["p95Ms"] / 1000)


def _bundle(installed: Installed | None) -> InstalledBundle | None:
    if installed is None:
        return None
    manifest = installed.manifest
    return InstalledBundle(artifact=f"{manifest.runtime}-{manifest.precision}-{manifest.target}",
                           version=manifest.version, bundle_sha256=installed.manifest_sha256,
                           since=_rfc3339(installed.since))


def _json(data: dict) -> bytes:
    import json

    return json.dumps(data, sort_keys=True).encode()
