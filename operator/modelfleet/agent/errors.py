"""The device agent's two error trees, kept apart as python-tuf keeps them.

`Refused`: bad data. The bytes were fetched but must not be trusted (tampered, unsigned, replayed, expired, a
downgrade); fetching the same bytes again gives the same answer, and the agent keeps what it runs. Each class
carries a stable CamelCase `reason` the agent reports to the gateway.

`TransportError`: the bytes could not be fetched (connection, HTTP status, timeout); worth retrying later.
Neither tree derives from the other.
"""

from typing import ClassVar

__all__ = ["AgentTooOld", "Downgrade", "Expired", "FileSetMismatch", "Frozen", "InvalidDesiredState",
           "InvalidManifest", "Malformed", "NoDesiredState", "NotOrdered", "Refused", "Replayed", "SequenceReused",
           "TamperedDesiredState", "TamperedFile", "TamperedManifest", "TransportError", "UnknownKey", "WrongDevice"]


class Refused(Exception):
    """Bad data the agent refuses; `reason` says why in one CamelCase word, the message says it for people."""

    reason: ClassVar[str] = "Refused"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class Malformed(Refused):
    """Not a signed envelope of the expected kind (unparseable, bad base64, another payload type)."""

    reason = "Malformed"


class UnknownKey(Refused):
    """No signature by a key the agent trusts for this kind of document."""

    reason = "UnknownKey"


class TamperedDesiredState(Refused):
    """A trusted key's signature over the desired state does not verify."""

    reason = "TamperedDesiredState"


class TamperedManifest(Refused):
    """A trusted key's signature over the bundle manifest does not verify."""

    reason = "TamperedManifest"


class InvalidDesiredState(Refused):
    """Signed by a trusted key, but the desired state breaks its format's rules."""

    reason = "InvalidDesiredState"


class InvalidManifest(Refused):
    """Signed by a trusted key, but the manifest breaks its format's rules (a path outside the bundle, ...)."""

    reason = "InvalidManifest"


class WrongDevice(Refused):
    """A desired state signed for another device or namespace."""

    reason = "WrongDevice"


class Replayed(Refused):
    """A desired state older (lower sequence) than the one the agent already trusts."""

    reason = "Replayed"


class SequenceReused(Refused):
    """A desired state with the trusted sequence but other content: the gateway signed two different answers."""

    reason = "SequenceReused"


class Frozen(Refused):
    """A desired state past its expiry: an answer held back or replayed after the gateway moved on."""

    reason = "Frozen"


class IssuedInFuture(Refused):
    """A desired state issued further ahead of the device's clock than the skew allowance: the gateway's clock or
    the device's is wrong. Never persisted, so nothing locks the device out once the clocks agree again."""

    reason = "IssuedInFuture"


class NoDesiredState(Refused):
    """A bundle offered before any desired state was verified: nothing says what to install."""

    reason = "NoDesiredState"


class NotOrdered(Refused):
    """A bundle the trusted desired state does not order (no order for that slot, or another one)."""

    reason = "NotOrdered"


class WrongBundle(Refused):
    """Mix-and-match: a validly signed manifest of another model, target, version or content served for the
    slot the desired state orders (a bundle store written by an attacker, a mirror that mixed bundles up)."""

    reason = "WrongBundle"


class Downgrade(Refused):
    """A version below the installed one, without the desired state ordering that rollback."""

    reason = "Downgrade"


class Expired(Refused):
    """A bundle manifest past its expiry."""

    reason = "Expired"


class AgentTooOld(Refused):
    """The manifest needs a newer agent than this one."""

    reason = "AgentTooOld"


class FileSetMismatch(Refused):
    """The bundle holds files its manifest does not list, or lacks some it lists."""

    reason = "FileSetMismatch"


class TamperedFile(Refused):
    """A file whose size or sha256 differs from its manifest's."""

    reason = "TamperedFile"


class TransportError(Exception):
    """The bytes could not be fetched; the fetcher raises it and the agent retries later."""
