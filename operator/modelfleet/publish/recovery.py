"""The write-ahead record that keeps a killed publish from leaving an unverified version served.

A version goes into `<model>/modelfleet.json` as pending, with the config it replaces, before any
of its files is written. It leaves that state in one record write: verified (served, or written
when there is no server) or rolled back. Whatever killed an attempt in between, even SIGKILL, the
next attempt finds the pending version and restores the previous state before it writes its own.
"""

from typing import TYPE_CHECKING

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.publication import VERIFIED_STATES, PublishedVersion, RepositoryRecord, VersionState
from modelfleet.progress import Progress
from modelfleet.publish.repository import CONFIG_FILE, ModelRepository, write_record

if TYPE_CHECKING:
    from modelfleet.publish.triton import TritonServer

RECORD_HISTORY = 20


def begin(repository: ModelRepository, record: RepositoryRecord, model: str, entry: PublishedVersion) -> None:
    """Record `entry` as pending (and its number as used) before anything of it is written."""
    entry.state = "pending"
    record.last_version = max(record.last_version, entry.version)
    record.versions.append(entry)
    write_record(repository, model, record)


def settle(repository: ModelRepository, record: RepositoryRecord, model: str, entry: PublishedVersion,
           state: VersionState) -> None:
    """The pending version's outcome, in one record write: for a verified one, the commit point."""
    entry.state, entry.previous_config = state, None
    present = set(repository.versions(model))
    current = [e.version in present or e.state == "pending" for e in record.versions]
    past = [i for i, is_current in enumerate(current) if not is_current][-RECORD_HISTORY:]
    record.versions = [e for i, e in enumerate(record.versions) if current[i] or i in past]
    write_record(repository, model, record)


def restore(repository: ModelRepository, target: TritonTarget, version: int, previous_config: str | None,
            server: "TritonServer | None") -> None:
    """Remove `version` and put the config from before it back (None: there was none); an explicit-mode
    server reloads.

    Raises when a step fails, so that the caller leaves the version pending for the next attempt.
    """
    model = target.model_name
    repository.delete_version(model, version)
    if previous_config is None:
        repository.delete(model, CONFIG_FILE)
    else:
        repository.write(model, CONFIG_FILE, previous_config)
    if server is not None and target.model_control == "explicit":  # a polling server drops it on its next scan
        server.reload(model, bool(repository.versions(model)))


def recover(repository: ModelRepository, record: RepositoryRecord, target: TritonTarget,
            server: "TritonServer | None", progress: Progress) -> None:
    """Undo what an attempt killed before its version was verified or rolled back left behind."""
    for entry in reversed([e for e in record.versions if e.state == "pending"]):  # newest first: oldest config wins
        progress.step("publish", f"version {entry.version} was left unverified by an interrupted attempt; removing it")
        restore(repository, target, entry.version, entry.previous_config, server)
        settle(repository, record, target.model_name, entry, "rolledBack")


def prune(repository: ModelRepository, record: RepositoryRecord, target: TritonTarget, version: int) -> None:
    """Keep the newest keepVersions verified versions up to `version`, the one just verified.

    Only verified versions are candidates: a version the record does not list as verified is never
    pruned (pending ones are recover's), and neither is one that is not older than `version`.
    """
    present = set(repository.versions(target.model_name))
    verified = sorted({e.version for e in record.versions
                       if e.state in VERIFIED_STATES and e.version in present and e.version <= version})
    for old in verified[:-target.keep_versions]:
        repository.delete_version(target.model_name, old)
