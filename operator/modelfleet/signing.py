"""Signing and verifying modelfleet's documents (bundle manifests, desired states) with ed25519.

Imports only `modelfleet.api` and `cryptography`, so that the device agent can use it as it is.

**Canonical JSON.** A document is signed as its canonical JSON: the model's wire form (camelCase aliases,
unset optionals left out), object keys sorted by code point, no whitespace (`,` and `:` separators), non-ASCII
characters written as themselves and the whole encoded as UTF-8, NaN and infinities refused. The same model
always gives the same bytes, so the sha256 of those bytes names a document (a desired state pins a manifest by
it). Verifiers never re-encode: they check the signature over the bytes as received and parse only those.

**Envelope.** A `SignedEnvelope` (shaped like DSSE) carries the payload bytes in base64, its media type and
signatures. Each signature is ed25519 (RFC 8032, through `cryptography`) over DSSE's pre-authentication
encoding, `DSSEv1 <len(type)> <type> <len(body)> <body>`, so a signature made for one kind of document
cannot pass for another.

**Keys.** A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key; it only helps to
find a key, and the verifier's own key decides. A `KeySet` is the set of public keys a verifier trusts: holding
the old and the new key while signers move to the new one is how keys rotate. Signing keys are PEM (PKCS #8,
unencrypted) and live in a Kubernetes Secret under `SECRET_KEY_FIELD`.

**Errors.** `verify` raises only `EnvelopeError`s, about the data: `Malformed` (not a signed envelope of the
expected type; `InvalidPayload`, a subclass, when a trusted key signed a payload that breaks the model's rules),
`UnknownKey` (no signature by a trusted key) and `BadSignature` (a trusted key's signature does not verify: the
payload or the signature was changed). Fetching the bytes, and its failures, are the caller's. Loading a key
raises `InvalidKey`, a configuration problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from modelfleet.api.base import WireModel
from modelfleet.api.bundle import EnvelopeSignature, SignedEnvelope

__all__ = ["MAX_ENVELOPE_BYTES", "SECRET_KEY_FIELD", "BadSignature", "EnvelopeError", "InvalidKey", "InvalidPayload",
           "KeySet", "Malformed", "UnknownKey", "Verified", "canonical_json", "generate_private_key", "key_id",
           "load_private_key", "load_public_key", "pae", "private_key_from_secret", "private_key_pem",
           "public_key_base64", "public_key_pem", "secret_data", "sha256_hex", "sign", "strict_json", "verify"]

MAX_ENVELOPE_BYTES = 2 << 20  # a manifest is a few KiB; a base64 payload of at most 1 MiB fits
SECRET_KEY_FIELD = "signing-key.pem"

M = TypeVar("M", bound=WireModel)
PublicKeyish = Ed25519PublicKey | Ed25519PrivateKey


# --- errors -------------------------------------------------------------------------------------


class EnvelopeError(ValueError):
    """The bytes are not a document a trusted key signed. Bad data: fetching them again gives the same answer."""


class Malformed(EnvelopeError):
    """Not a signed envelope of the expected type: unparseable JSON, bad base64, another payload type."""


class InvalidPayload(Malformed):
    """A trusted key signed it, but the payload breaks the document's rules (a path outside the bundle, ...)."""


class UnknownKey(EnvelopeError):
    """No signature is by a trusted key (a key never trusted, or one rotated out)."""


class BadSignature(EnvelopeError):
    """A trusted key's signature does not verify over the payload: the payload or the signature was changed."""


class InvalidKey(ValueError):
    """A key that cannot be loaded: not PEM or raw base64, or not ed25519."""


# --- encoding -----------------------------------------------------------------------------------


def canonical_json(document: WireModel | Mapping[str, Any] | list) -> bytes:
    """The canonical JSON bytes of a model (its wire form) or of plain JSON data; see the module's docstring."""
    data = document.to_wire() if isinstance(document, WireModel) else document
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"an object repeats a key: {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """Parse JSON that two parsers cannot read differently: UTF-8, no repeated keys, no NaN or Infinity."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Malformed(f"not strict JSON: {e}") from None


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what each signature is computed over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# --- keys ---------------------------------------------------------------------------------------


def _public(key: PublicKeyish) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def _raw(key: PublicKeyish) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: PublicKeyish) -> str:
    """The key's id: the first 16 hex digits of the sha256 of its raw public key (of a private key's public key)."""
    return sha256_hex(_raw(key))[:16]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS #8 PEM, unencrypted: what a Secret holds (the Secret's own protection applies)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: PublicKeyish) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_base64(key: PublicKeyish) -> str:
    """The raw 32-byte public key in base64: the short form for an agent's configuration."""
    return base64.b64encode(_raw(key)).decode()


def load_private_key(pem: bytes | str) -> Ed25519PrivateKey:
    """An ed25519 private key from unencrypted PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidKey(f"not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKey(f"expected an ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(text: bytes | str) -> Ed25519PublicKey:
    """An ed25519 public key from PEM (SubjectPublicKeyInfo) or from its raw 32 bytes in base64."""
    data = (text.encode() if isinstance(text, str) else text).strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise InvalidKey(f"not a PEM public key: {e}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidKey(f"expected an ed25519 key, got {type(key).__name__}")
        return key
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as e:
        raise InvalidKey(f"neither PEM nor base64: {e}") from None
    if len(raw) != 32:
        raise InvalidKey(f"a raw ed25519 public key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def secret_data(key: Ed25519PrivateKey) -> dict[str, str]:
    """A Secret's `data` holding the signing key (values base64, as the Kubernetes API writes them)."""
    return {SECRET_KEY_FIELD: base64.b64encode(private_key_pem(key)).decode()}


def private_key_from_secret(data: Mapping[str, str]) -> Ed25519PrivateKey:
    """The signing key from a Secret's `data` (base64 values, as the Kubernetes API returns them)."""
    if SECRET_KEY_FIELD not in data:
        raise InvalidKey(f"the Secret has no {SECRET_KEY_FIELD!r} key; it has {sorted(data)}")
    try:
        pem = _b64decode(data[SECRET_KEY_FIELD])
    except (binascii.Error, ValueError) as e:
        raise InvalidKey(f"{SECRET_KEY_FIELD}: not base64: {e}") from None
    return load_private_key(pem)


class KeySet:
    """The public keys a verifier trusts, by key id, and how many distinct ones must sign (default one).

    Immutable: `with_keys` and `without` return new sets. Rotation: trust the new key beside the old one, move the
    signer to the new key, then drop the old one.
    """

    def __init__(self, keys: Iterable[PublicKeyish] = (), *, threshold: int = 1):
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self._keys[key_id(key)] = _public(key)
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self._keys and threshold > len(self._keys):
            raise ValueError(f"threshold {threshold} is more than the {len(self._keys)} keys trusted")
        self.threshold = threshold

    @classmethod
    def load(cls, entries: Iterable[bytes | str], *, threshold: int = 1) -> KeySet:
        """Keys from PEM or base64 texts (see `load_public_key`)."""
        return cls((load_public_key(e) for e in entries), threshold=threshold)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def with_keys(self, *keys: PublicKeyish) -> KeySet:
        return KeySet([*self._keys.values(), *keys], threshold=self.threshold)

    def without(self, *kids: str) -> KeySet:
        return KeySet([k for i, k in self._keys.items() if i not in kids], threshold=self.threshold)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet({sorted(self._keys)}, threshold={self.threshold})"


# --- sign and verify ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified(Generic[M]):
    """A verified document: the parsed payload, the sha256 of its exact bytes, the trusted keys that signed it."""

    payload: M
    payload_sha256: str
    key_ids: tuple[str, ...]


def sign(payload: WireModel, *keys: Ed25519PrivateKey) -> bytes:
    """The signed envelope of `payload` (canonical JSON bytes), with one signature per key.

    Key ids are computed from the keys, never passed, so an envelope cannot name the wrong key. Signing with the
    old and the new key at once lets verifiers that trust either accept it during a rotation. The payload is
    parsed back first: what cannot be verified is never signed.
    """
    if not keys:
        raise ValueError("sign needs at least one key")
    payload_type = type(payload).PAYLOAD_TYPE
    body = canonical_json(payload)
    type(payload).model_validate(strict_json(body))
    message = pae(payload_type, body)
    signatures = [EnvelopeSignature(key_id=key_id(k), sig=base64.b64encode(k.sign(message)).decode()) for k in keys]
    envelope = SignedEnvelope(payload_type=payload_type, payload=base64.b64encode(body).decode(), signatures=signatures)
    return canonical_json(envelope)


def verify(envelope: bytes, keyset: KeySet, model: type[M]) -> Verified[M]:
    """The payload of a signed envelope, when enough trusted keys signed it; raises an `EnvelopeError` otherwise.

    In this order: the envelope parses and carries `model`'s payload type (`Malformed`); some signature is by a
    trusted key (`UnknownKey`); `keyset.threshold` distinct trusted keys' signatures verify (`BadSignature`);
    only then is the payload parsed into `model` (`InvalidPayload`): unverified bytes never reach the parser.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise Malformed(f"an envelope of {len(envelope)} bytes is over the {MAX_ENVELOPE_BYTES} allowed")
    try:
        parsed = SignedEnvelope.model_validate(strict_json(envelope))
    except ValidationError as e:
        raise Malformed(f"not a signed envelope: {e.error_count()} problem(s): {_first_error(e)}") from None
    if parsed.payload_type != model.PAYLOAD_TYPE:
        raise Malformed(f"expected a {model.PAYLOAD_TYPE} payload, got {parsed.payload_type}")
    try:
        body = _b64decode(parsed.payload)
    except (binascii.Error, ValueError) as e:
        raise Malformed(f"payload is not base64: {e}") from None

    known = [s for s in parsed.signatures if s.key_id in keyset]
    if not known:
        raise UnknownKey(f"signed by {sorted({s.key_id for s in parsed.signatures})}, none of them trusted "
                         f"(trusted: {sorted(keyset.ids)})")
    message = pae(parsed.payload_type, body)
    valid: list[str] = []
    for signature in known:
        if signature.key_id in valid:
            continue
        try:
            keyset.get(signature.key_id).verify(_b64decode(signature.sig), message)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        valid.append(signature.key_id)
    if len(valid) < keyset.threshold:
        raise BadSignature(f"{len(valid)} of the signatures by trusted keys {sorted({s.key_id for s in known})} "
                           f"verify, {keyset.threshold} needed: the payload or a signature was changed")

    try:
        payload = model.model_validate(strict_json(body))
    except Malformed as e:
        raise InvalidPayload(f"signed payload is not strict JSON: {e}") from None
    except ValidationError as e:
        raise InvalidPayload(f"signed {model.__name__} is invalid: {_first_error(e)}") from None
    return Verified(payload=payload, payload_sha256=sha256_hex(body), key_ids=tuple(valid))


def _first_error(e: ValidationError) -> str:
    first = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{where}: {first['msg']}"
