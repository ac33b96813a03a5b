"""The agent's state directory: credential, trust record, downloads and the installed versions of each target.

```
<dir>/credential                         0600, the device's bearer credential
<dir>/trust.json                         the last TrustRecord (written before the agent acts on its desired state)
<dir>/trust.previous.json                the one before it: the last good copy, should trust.json be damaged
<dir>/downloads/<manifest sha256>/...    partial and complete downloads (resumed with HTTP Range)
<dir>/models/<model>/<target>/
    versions/<v>/                        a verified bundle: its files, manifest.json, .agent.json (smoke result)
    current -> versions/<v>              the active model
    previous -> versions/<u>             kept for a rollback
    install.json                         the install phase, saved before each risky step
```

Every change is write-beside-then-rename (ostree, capistrano): files are fsynced before the rename and the
directory after it, so a `kill -9` or a power cut at any instant leaves either the old or the new state.
Temporary names start with `.` and bundle paths never do (`api.bundle.BUNDLE_PATH_PATTERN`), so they cannot
collide; `recover()` removes whatever a killed agent left half done.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from modelfleet import signing
from modelfleet.api.bundle import MANIFEST_FILE, BundleManifest, SignedEnvelope, TrustRecord

__all__ = ["AGENT_FILE", "DeviceStore", "Installed", "TargetStore", "manifest_of"]

AGENT_FILE = ".agent.json"  # the device's own smoke result, beside the bundle's files (a name bundles cannot use)
_TEMP = "."  # prefix of every temporary or discarded entry


def manifest_of(envelope: bytes) -> tuple[BundleManifest, str]:
    """The manifest inside an envelope and its payload sha256, without verifying the signature.

    Only for envelopes the agent verified before it stored them (TrustedState did that); reading them back must
    not depend on the keys still trusted today (a rotated-out key must not brick the active model).
    """
    body = base64.b64decode(SignedEnvelope.model_validate_json(envelope).payload)
    return BundleManifest.model_validate_json(body), signing.sha256_hex(body)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write beside, fsync, rename over, fsync the directory."""
    tmp = path.with_name(f"{_TEMP}{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _discard(path: Path) -> None:
    """Remove a directory tree without ever leaving a partial one under its real name."""
    if not path.exists() and not path.is_symlink():
        return
    trash = path.with_name(f"{_TEMP}trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True)
class Installed:
    """A version on disk: its manifest, the manifest's payload sha256 and the device's smoke result."""

    path: Path
    manifest: BundleManifest
    manifest_sha256: str
    since: datetime  # when `current` (or `previous`) was pointed at it
    smoke: dict | None  # {"agreement", "maxAbsDiff", "passed", "p50Ms", "p95Ms", "at"} from .agent.json

    @property
    def version(self) -> int:
        return self.manifest.version


class TargetStore:
    """One model's edge target: its versions and the `current` / `previous` links."""

    def __init__(self, root: Path, model: str, target: str):
        self.model, self.target = model, target
        self.root = root
        self.versions = root / "versions"
        self.current = root / "current"
        self.previous = root / "previous"

    # --- reading -------------------------------------------------------------------------------

    def version_dir(self, version: int) -> Path:
        return self.versions / str(version)

    def read(self, link: Path) -> Installed | None:
        """The version a link points at, when it is whole (see `check`); None otherwise."""
        return self.check(link, since=link)

    def check(self, directory: Path, since: Path | None = None) -> Installed | None:
        """The version in `directory` when it resolves and holds every file its manifest lists, at the listed
        size (hashes were verified before it got its name; `damage` checks them again)."""
        try:
            manifest, digest = manifest_of((directory / MANIFEST_FILE).read_bytes())
            for entry in manifest.files:
                if (directory / entry.path).stat().st_size != entry.size_bytes:
                    return None
            stamp = (since or directory).lstat().st_mtime
        except (OSError, ValueError):  # missing, dangling, unparseable: not a usable version
            return None
        try:
            smoke = json.loads((directory / AGENT_FILE).read_bytes())
        except (OSError, ValueError):
            smoke = None
        return Installed(path=directory.resolve(), manifest=manifest, manifest_sha256=digest,
                         since=datetime.fromtimestamp(stamp, timezone.utc), smoke=smoke)

    def damage(self, installed: Installed) -> str | None:
        """What differs between a version on disk and its manifest's sha256s (None: intact). The bytes of a
        file can change on disk without its size (a bad block, a hand edit): `check` only looks at sizes."""
        for entry in installed.manifest.files:
            digest = hashlib.sha256()
            try:
                with open(installed.path / entry.path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
            except OSError as e:
                return f"{entry.path}: {e.strerror or e}"
            if digest.hexdigest() != entry.sha256:
                return f"{entry.path}: sha256 {digest.hexdigest()[:12]}, the manifest lists {entry.sha256[:12]}"
        return None

    def active(self) -> Installed | None:
        return self.read(self.current)

    def previous_version(self) -> Installed | None:
        return self.read(self.previous)

    # --- changing ------------------------------------------------------------------------------

    def save_phase(self, phase: str, version: int | None = None) -> None:
        """Persist the install phase before a risky step (Mender's state name), so recovery knows where it was."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / "install.json", json.dumps({"phase": phase, "version": version}).encode())

    def phase(self) -> tuple[str, int | None]:
        try:
            data = json.loads((self.root / "install.json").read_bytes())
            return str(data["phase"]), data.get("version")
        except (OSError, ValueError, KeyError, TypeError):
            return "idle", None

    def temp_dir(self, version: int) -> Path:
        self.versions.mkdir(parents=True, exist_ok=True)
        path = self.versions / f"{_TEMP}tmp-{version}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def commit_dir(self, temp: Path, version: int) -> Path:
        """Give a complete, fsynced temporary directory its version's name. What had the name goes: a leftover
        of an earlier attempt, or a damaged copy being replaced (then a link to it dangles between the two
        renames; `recover` repairs a kill there, as for any broken `current`)."""
        final = self.version_dir(version)
        if final.exists():
            _discard(final)
        os.replace(temp, final)
        fsync_dir(self.versions)
        return final

    def discard_version(self, version: int) -> None:
        path = self.version_dir(version)
        if not self._linked(path):
            _discard(path)

    def _point(self, link: Path, directory: Path) -> None:
        tmp = link.with_name(f"{_TEMP}{link.name}.{uuid.uuid4().hex[:8]}")
        os.symlink(os.path.relpath(directory, link.parent), tmp)
        os.replace(tmp, link)  # atomic: readers see the old or the new target, never no link

    def switch(self, version: int) -> None:
        """Make `version` the active one; the active one becomes `previous`. Each link swap is atomic."""
        target = self.version_dir(version)
        old = self.active()
        if old is not None and old.path.resolve() != target.resolve():
            self._point(self.previous, old.path)
        self._point(self.current, target)
        fsync_dir(self.root)

    def revert(self) -> bool:
        """Point `current` back at `previous` (a hook failed, or a hook was cut short); False when none."""
        previous = self.previous_version()
        if previous is None:
            return False
        self._point(self.current, previous.path)
        fsync_dir(self.root)
        return True

    def prune(self) -> None:
        """Keep the active and previous versions; drop the others."""
        if not self.versions.is_dir():
            return
        for entry in self.versions.iterdir():
            if not entry.name.startswith(_TEMP) and not self._linked(entry):
                _discard(entry)

    def _linked(self, path: Path) -> bool:
        real = path.resolve()
        return any(link.is_symlink() and link.resolve() == real for link in (self.current, self.previous))

    def recover(self) -> list[str]:
        """Undo what a killed agent left half done; returns what it did, for the log.

        Removes temporary directories, links and discarded trees; when `current` is broken (dangling, a file
        missing or truncated), points it back at `previous`, or removes it when that is broken too.
        """
        done: list[str] = []
        for parent in (self.root, self.versions):
            if parent.is_dir():
                for entry in parent.iterdir():
                    if entry.name.startswith(_TEMP):
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
                        done.append(f"removed {entry.name}")
        if self.current.is_symlink() and self.active() is None:
            if self.revert():
                done.append("current was broken: back to previous")
            else:
                self.current.unlink()
                done.append("current was broken and no previous: removed")
        if self.previous.is_symlink() and self.previous_version() is None:
            self.previous.unlink()
            done.append("previous was broken: removed")
        return done


class DeviceStore:
    """The agent's whole state directory."""

    def __init__(self, root: Path):
        self.root = root
        self.credential_file = root / "credential"
        self.trust_file = root / "trust.json"
        self.previous_trust_file = root / "trust.previous.json"
        self.downloads = root / "downloads"
        self.models = root / "models"

    def prepare(self) -> None:
        for path in (self.root, self.downloads, self.models):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # it holds the credential

    def credential(self) -> str | None:
        try:
            return self.credential_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_credential(self, credential: str) -> None:
        write_atomic(self.credential_file, credential.encode(), mode=0o600)

    def trust_record(self) -> tuple[TrustRecord | None, str | None]:
        """The trust record and, when `trust.json` was unreadable, why: then the last good copy
        (`trust.previous.json`) is used, or none (the device trusts afresh from its pinned keys, as a new one
        does). Never raises for a damaged file: a crash loop would keep the device from ever updating again."""
        problem = None
        for path in (self.trust_file, self.previous_trust_file):
            try:
                record = TrustRecord.model_validate_json(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                problem = problem or f"{path.name} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                continue
            if problem:
                return record, f"{problem}; using the last good copy {path.name} (sequence {record.sequence})"
            return record, None
        return None, (f"{problem}; no good copy: trusting afresh from the pinned keys" if problem else None)

    def save_trust_record(self, record: TrustRecord) -> None:
        """Write the record; the one it replaces, if it parses, stays as the last good copy."""
        with contextlib.suppress(OSError, ValueError):
            previous = self.trust_file.read_bytes()
            TrustRecord.model_validate_json(previous)
            write_atomic(self.previous_trust_file, previous)
        write_atomic(self.trust_file, json.dumps(record.to_wire(), sort_keys=True).encode())

    def set_aside_trust_record(self, reason: str) -> None:
        """Move both record files out of the way (kept for people as `trust.discarded.json`)."""
        for path in (self.trust_file, self.previous_trust_file):
            if path.exists():
                os.replace(path, self.root / "trust.discarded.json")
        (self.root / "trust.discarded.reason").write_text(reason + "\n")
        fsync_dir(self.root)

    def target(self, model: str, target: str) -> TargetStore:
        return TargetStore(self.models / model / target, model, target)

    def targets(self) -> list[TargetStore]:
        """Every target with something on disk."""
        if not self.models.is_dir():
            return []
        return [self.target(m.name, t.name) for m in sorted(self.models.iterdir()) if m.is_dir()
                for t in sorted(m.iterdir()) if t.is_dir()]

    def download_dir(self, manifest_sha256: str) -> Path:
        return self.downloads / manifest_sha256

    def discard_download(self, manifest_sha256: str) -> None:
        _discard(self.download_dir(manifest_sha256))

    def prune_downloads(self, keep: set[str]) -> None:
        """Drop downloads of manifests no longer ordered (and leftovers of discards)."""
        if self.downloads.is_dir():
            for entry in self.downloads.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
