"""What a device agent trusts: verified desired states and bundles (python-tuf's TrustedMetadataSet, in small).

`TrustedState` takes bytes only and does no I/O and reads no clock: the caller fetches, passes the reference
time in, and persists `TrustRecord`s. Every document goes through the same checks in a fixed order:

1. parse the signed envelope (`Malformed`);
2. signature by a trusted key (`UnknownKey`, `TamperedDesiredState` / `TamperedManifest`), then the payload's
   own rules (`InvalidDesiredState` / `InvalidManifest`);
3. rollback: a desired state's sequence against the trusted one (`WrongDevice`, `Replayed`, `SequenceReused`);
   a manifest against the order of the slot it is installed in: the same namespace, model, target, version and
   payload sha256 as the trusted desired state names for that slot (`WrongBundle`: mix-and-match), and the
   installed version (`Downgrade`, unless the desired state orders that rollback);
4. time: a desired state issued further ahead of the device's clock than the skew allowance (`IssuedInFuture`:
   a gateway whose clock ran ahead must not lock the device out once its clock is right again), and expiry,
   with the same allowance (`Frozen` for a desired state, `Expired` for a manifest);
5. for a bundle, the agent's version (`AgentTooOld`) and then every file's size and sha256 (`FileSetMismatch`,
   `TamperedFile`).

The trusted state changes only once a document passed every check. Two sets of keys: the gateway's signs
desired states, the workers' sign bundle manifests, so a key leaked from a worker (which runs users' models)
can sign a bundle but cannot order a device to install it: a desired state pins each manifest by sha256.

The reference time is never earlier than the `issued` time of the last trusted desired state, so a device
whose clock went back (a board without a real-time clock, booted at 1970) still refuses answers that expired
before that one was issued.

Clocks, on either side: nothing is trusted that was issued ahead of the device's clock (plus the allowance), so
a gateway clock that ran ahead is refused without being persisted, and the device takes the next correct state
once the gateway's clock is right. A device clock that is behind refuses every state as `IssuedInFuture`, a
device clock that is ahead every state as `Frozen`: both are reported with the two times, and the device
recovers as soon as its clock is set (NTP), with nothing to delete. A trust record that itself lies ahead of
the device's clock (persisted from a bad clock) is set aside by `discard_future_record`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from modelfleet import signing
from modelfleet.agent import errors
from modelfleet.api.bundle import SEMVER_PATTERN, BundleManifest, BundleRef, DesiredState, TrustRecord
from modelfleet.signing import KeySet

__all__ = ["DEFAULT_CLOCK_SKEW", "DesiredStateUpdate", "FileSource", "Reader", "TrustedState", "VerifiedBundle"]

DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
MAX_CLOCK_SKEW = timedelta(days=1)
_CHUNK = 1 << 20


class Reader(Protocol):
    """A binary file object, read to its end in chunks."""

    def read(self, size: int = -1, /) -> bytes: ...


FileSource = bytes | bytearray | memoryview | Reader


@dataclass(frozen=True)
class DesiredStateUpdate:
    """A verified desired state and the record to persist (atomically) before acting on it."""

    desired: DesiredState
    record: TrustRecord
    changed: bool  # False: the same document as the trusted one (same sequence, same bytes), fetched again


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose manifest and files verified against the trusted desired state."""

    manifest: BundleManifest
    manifest_sha256: str
    ref: BundleRef
    rollback: bool  # True: it goes below the installed version, as the desired state orders


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class TrustedState:
    """The desired state and bundles one device agent may act on.

    `record` is the last `TrustRecord` the agent persisted (None on a fresh device). `state_keys` verify desired
    states, `bundle_keys` bundle manifests. `clock_skew` is how far past an expiry a document is still accepted.
    """

    def __init__(self, *, namespace: str, device: str, state_keys: KeySet, bundle_keys: KeySet,
                 record: TrustRecord | None = None, clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
                 agent_version: str | None = None):
        if record is not None and (record.namespace, record.device) != (namespace, device):
            raise ValueError(f"the trust record is {record.namespace}/{record.device}'s, not {namespace}/{device}'s")
        if not timedelta(0) <= clock_skew <= MAX_CLOCK_SKEW:
            raise ValueError(f"clock_skew must be between 0 and {MAX_CLOCK_SKEW}, got {clock_skew}")
        if agent_version is not None and not re.fullmatch(SEMVER_PATTERN, agent_version):
            raise ValueError(f"agent_version must be major.minor.patch, got {agent_version!r}")
        self.namespace = namespace
        self.device = device
        self._state_keys = state_keys
        self._bundle_keys = bundle_keys
        self._record = record
        self._skew = clock_skew
        self._agent_version = agent_version
        self._desired: DesiredState | None = None

    @property
    def record(self) -> TrustRecord | None:
        """What to persist: the last trusted desired state's sequence, issue time and digest."""
        return self._record

    @property
    def desired(self) -> DesiredState | None:
        """The desired state verified since this object was made; None until one is."""
        return self._desired

    def _reference(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must carry a zone (datetime.now(timezone.utc))")
        return max(now, self._record.issued) if self._record else now

    def discard_future_record(self, now: datetime) -> TrustRecord | None:
        """Set aside a trust record issued further ahead of `now` than the skew allowance (returns it; None when
        the record is fine). Such a record came from a clock that was wrong: kept, its sequence would refuse every
        correct desired state as a replay. Anything trusted after this must still be issued within the allowance
        of `now` and unexpired, so setting it aside reopens no old desired state."""
        self._reference(now)  # checks the zone
        record = self._record
        if record is not None and record.issued > now + self._skew:
            self._record = None
            return record
        return None

    def check_fresh(self, now: datetime) -> None:
        """The trusted desired state, confirmed unchanged by the gateway (304), must still be unexpired: raises
        `errors.Frozen` when it expired (a gateway that stopped issuing states is noticed) or `NoDesiredState`."""
        if self._desired is None:
            raise errors.NoDesiredState("no desired state was verified yet")
        reference = self._reference(now)
        if reference >= self._desired.expires + self._skew:
            raise errors.Frozen(f"sequence {self._desired.sequence} expired at {self._desired.expires.isoformat()} "
                                f"and the gateway still answers 'not modified' (reference time "
                                f"{reference.isoformat()}, skew allowance {self._skew})")

    def verify_desired_state(self, data: bytes, now: datetime) -> DesiredStateUpdate:
        """Verify a desired state fetched from the gateway; raises `errors.Refused` and leaves the state alone."""
        reference = self._reference(now)
        verified = _open(data, self._state_keys, DesiredState,
                         tampered=errors.TamperedDesiredState, invalid=errors.InvalidDesiredState)
        desired = verified.payload
        if (desired.namespace, desired.device) != (self.namespace, self.device):
            raise errors.WrongDevice(f"signed for {desired.namespace}/{desired.device}, "
                                     f"this is {self.namespace}/{self.device}")
        if desired.issued > now + self._skew:
            raise errors.IssuedInFuture(
                f"sequence {desired.sequence} was issued at {desired.issued.isoformat()}, ahead of this device's "
                f"clock ({now.isoformat()}) by more than the skew allowance {self._skew}: the gateway's clock or "
                "this device's is wrong")
        changed = True
        if self._record is not None:
            trusted = self._record.sequence
            if desired.sequence < trusted:
                raise errors.Replayed(f"sequence {desired.sequence} is below the trusted {trusted}")
            if desired.sequence == trusted:
                if verified.payload_sha256 != self._record.desired_state_sha256:
                    raise errors.SequenceReused(f"sequence {trusted} was trusted with other content")
                changed = False
        if reference >= desired.expires + self._skew:
            raise errors.Frozen(f"sequence {desired.sequence} expired at {desired.expires.isoformat()} "
                                f"(reference time {reference.isoformat()}, skew allowance {self._skew})")

        record = TrustRecord(namespace=self.namespace, device=self.device, sequence=desired.sequence,
                             issued=desired.issued, desired_state_sha256=verified.payload_sha256)
        self._record, self._desired = record, desired
        return DesiredStateUpdate(desired=desired, record=record, changed=changed)

    def verify_bundle(self, manifest_envelope: bytes, files: Mapping[str, FileSource], now: datetime,
                      installed_version: int | None, *, slot: BundleRef) -> VerifiedBundle:
        """Verify a downloaded bundle for `slot` (the trusted desired state's order it is installed for): its
        signed manifest and every file (name -> bytes or a binary reader).

        `installed_version` is the version of the slot's model and target the device runs (None: none). Raises
        `errors.Refused`; readers are read once, to their end or until a file is longer than listed.
        """
        desired = self._desired
        if desired is None:
            raise errors.NoDesiredState("verify a desired state first: nothing says which bundle to install")
        reference = self._reference(now)
        ref = desired.bundle_for(slot.model, slot.target)
        if ref is None or ref != slot:
            raise errors.NotOrdered(f"{slot.model}/{slot.target} version {slot.version}: desired state "
                                    f"{desired.sequence} does not order it")
        verified = _open(manifest_envelope, self._bundle_keys, BundleManifest,
                         tampered=errors.TamperedManifest, invalid=errors.InvalidManifest)
        manifest = verified.payload
        name = f"{manifest.namespace}/{manifest.model}/{manifest.target} version {manifest.version}"
        # Mix-and-match: a validly signed manifest of another model, target or version, served at this slot's URL.
        ordered = (desired.namespace, ref.model, ref.target, ref.version, ref.manifest_sha256)
        if (manifest.namespace, manifest.model, manifest.target, manifest.version, verified.payload_sha256) != ordered:
            raise errors.WrongBundle(f"{name} (manifest sha256 {verified.payload_sha256[:12]}) was served for "
                                     f"{desired.namespace}/{ref.model}/{ref.target} version {ref.version} "
                                     f"({ref.manifest_sha256[:12]}), which desired state {desired.sequence} orders")
        rollback = installed_version is not None and manifest.version < installed_version
        if rollback and not ref.rollback:
            raise errors.Downgrade(f"{name} is below the installed version {installed_version} and desired state "
                                   f"{desired.sequence} does not order a rollback")

        if reference >= desired.expires + self._skew:
            raise errors.Frozen(f"desired state {desired.sequence} expired at {desired.expires.isoformat()}; "
                                "fetch a fresh one")
        if reference >= manifest.expires + self._skew:
            raise errors.Expired(f"{name} expired at {manifest.expires.isoformat()} (reference time "
                                 f"{reference.isoformat()}, skew allowance {self._skew})")
        if self._agent_version and _version(manifest.min_agent_version) > _version(self._agent_version):
            raise errors.AgentTooOld(f"{name} needs agent {manifest.min_agent_version}, "
                                     f"this is {self._agent_version}")

        _check_files(manifest, files)
        return VerifiedBundle(manifest=manifest, manifest_sha256=verified.payload_sha256, ref=ref, rollback=rollback)


def _open(data: bytes, keys: KeySet, model: type, *, tampered: type[errors.Refused],
          invalid: type[errors.Refused]) -> signing.Verified:
    """signing.verify, its errors translated into the agent's."""
    try:
        return signing.verify(data, keys, model)
    except signing.InvalidPayload as e:
        raise invalid(str(e)) from None
    except signing.Malformed as e:
        raise errors.Malformed(str(e)) from None
    except signing.UnknownKey as e:
        raise errors.UnknownKey(str(e)) from None
    except signing.BadSignature as e:
        raise tampered(str(e)) from None


def _check_files(manifest: BundleManifest, files: Mapping[str, FileSource]) -> None:
    listed = {f.path for f in manifest.files}
    missing, extra = sorted(listed - set(files)), sorted(set(files) - listed)
    if missing or extra:
        raise errors.FileSetMismatch(f"missing {missing or 'none'}, not in the manifest {extra or 'none'}")
    for entry in manifest.files:
        size, digest = _measure(files[entry.path], limit=entry.size_bytes)
        if size > entry.size_bytes:
            raise errors.TamperedFile(f"{entry.path}: longer than the {entry.size_bytes} bytes listed")
        if size != entry.size_bytes:
            raise errors.TamperedFile(f"{entry.path}: {size} bytes, {entry.size_bytes} listed")
        if digest != entry.sha256:
            raise errors.TamperedFile(f"{entry.path}: sha256 {digest}, {entry.sha256} listed")


def _measure(source: FileSource, *, limit: int) -> tuple[int, str]:
    """Size and sha256 of bytes or a reader's content; stops reading once past `limit` (size is then limit + 1)."""
    digest = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        data = memoryview(source)
        if data.nbytes > limit:
            return limit + 1, ""
        digest.update(data)
        return data.nbytes, digest.hexdigest()
    size = 0
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return limit + 1, ""
        digest.update(chunk)
    return size, digest.hexdigest()
