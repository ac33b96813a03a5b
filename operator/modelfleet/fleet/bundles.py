"""Bundles in the artifact store, as the gateway serves them.

Layout: `<root>/<ns>/<model>/bundles/<target>/<version>/manifest.json` (a SignedEnvelope, written last) beside
the files it lists. A manifest is read once per (ns, model, target, version) and verified with the bundle
keys the gateway trusts before a desired state ever names it: a bundle signed by no trusted key, or one whose
manifest names another model, target or version (mix-and-match), is never offered. Devices get the manifest's
verified bytes from memory, never the file as it is on disk now. Files come from a local root (file://,
pvc://) with HTTP Range, plain files inside their own bundle's directory only, or from s3:// as a presigned
URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from modelfleet import signing
from modelfleet.api.bundle import MANIFEST_FILE, BundleManifest
from modelfleet.errors import ModelfleetError, RetryableError, SourceError
from modelfleet.store import resolve_local, s3
from modelfleet.store.paths import confined

__all__ = ["BundleStore", "Manifest", "StoreUnavailable"]

log = logging.getLogger("modelfleet.fleet")
MISSING_TTL_S = 30.0  # a bundle not built yet is looked for again after this long, not on every poll
PRESIGN_TTL_S = 900


class StoreUnavailable(Exception):
    """The store could not be read (transient): the answer waits, rather than leave a bundle out."""


@dataclass(frozen=True)
class Manifest:
    sha256: str  # of the payload bytes: what a desired state pins
    envelope: bytes
    files: frozenset[str]
    expires: datetime


class BundleStore:
    def __init__(self, root: str, keys: signing.KeySet):
        self.root = root.rstrip("/")
        self._keys = keys
        self._local = None if root.startswith(s3.SCHEME) else resolve_local(self.root)
        if self._local is None and not root.startswith(s3.SCHEME):
            raise ValueError(f"{root}: the artifact store must be file://, pvc:// or s3://")
        self._manifests: dict[tuple[str, str, str, int], Manifest] = {}
        self._missing: dict[tuple[str, str, str, int], float] = {}
        self._loading: dict[tuple[str, str, str, int], asyncio.Future] = {}

    def _relative(self, namespace: str, model: str, target: str, version: int, path: str) -> str:
        return f"{namespace}/{model}/bundles/{target}/{version}/{path}"

    def cached(self, key: tuple[str, str, str, int]) -> Manifest | None:
        return self._manifests.get(key)

    async def manifest(self, namespace: str, model: str, target: str, version: int,
                       now: datetime) -> Manifest | None:
        """The verified manifest, or None when it is missing, unverifiable or expired. Many concurrent polls
        for a new version wait on one read."""
        key = (namespace, model, target, version)
        found = self._manifests.get(key)
        if found is None:
            if time.monotonic() < self._missing.get(key, 0.0):
                return None
            loading = self._loading.get(key)
            if loading is None:
                loading = asyncio.ensure_future(asyncio.to_thread(self._load, key))
                self._loading[key] = loading
                loading.add_done_callback(lambda _: self._loading.pop(key, None))
            found = await asyncio.shield(loading)
            if found is None:
                self._missing[key] = time.monotonic() + MISSING_TTL_S
                return None
            self._manifests[key] = found
        return found if found.expires > now else None

    def _bundle_path(self, namespace: str, model: str, target: str, version: int, path: str) -> Path:
        """A file of a bundle on a local store: inside that bundle's own directory, and no symlink on the way
        from the store's root (a listed file replaced by a link to another tenant's file is not served)."""
        relative = self._relative(namespace, model, target, version, path)
        lexical = self._local.resolve() / relative
        resolved = confined(self._local, relative, self.root)
        if resolved != lexical or lexical.is_symlink():
            raise SourceError(f"{self.root}: {relative} is or passes through a symlink; bundles are plain files "
                              "in their own directory", reason="PathEscape")
        return resolved

    def _read(self, key: tuple[str, str, str, int]) -> bytes | None:
        relative = self._relative(*key, MANIFEST_FILE)
        try:
            if self._local is not None:
                path = self._bundle_path(*key, MANIFEST_FILE)
                return path.read_bytes() if path.is_file() else None
            text = s3.read_text(f"{self.root}/{relative}")
            return None if text is None else text.encode()
        except RetryableError as e:
            raise StoreUnavailable(str(e)) from e
        except ModelfleetError as e:  # a path refused, an access denied: nothing to offer
            log.warning("%s/%s: %s", self.root, relative, e)
            return None
        except OSError as e:
            raise StoreUnavailable(f"{self.root}/{relative}: {e}") from e

    def _load(self, key: tuple[str, str, str, int]) -> Manifest | None:
        relative = self._relative(*key, MANIFEST_FILE)
        data = self._read(key)
        if data is None:
            return None
        try:
            verified = signing.verify(data, self._keys, BundleManifest)
        except signing.EnvelopeError as e:
            log.error("%s/%s: not offered to devices: %s", self.root, relative, e)
            return None
        m = verified.payload
        if (m.namespace, m.model, m.target, m.version) != key:
            log.error("%s/%s: not offered to devices: the manifest is for %s/%s/%s version %d", self.root, relative,
                      m.namespace, m.model, m.target, m.version)
            return None
        return Manifest(verified.payload_sha256, data, frozenset(f.path for f in m.files), m.expires)

    def local_file(self, namespace: str, model: str, target: str, version: int, path: str) -> Path | None:
        """The file on a local store (None for s3://): a plain file inside the bundle's own directory, reached
        through no symlink (raises SourceError otherwise)."""
        if self._local is None:
            return None
        return self._bundle_path(namespace, model, target, version, path)

    def presigned_url(self, namespace: str, model: str, target: str, version: int, path: str) -> str:
        location = s3.parse(f"{self.root}/{self._relative(namespace, model, target, version, path)}")
        with s3.errors(self.root):
            return s3.client().generate_presigned_url(
                "get_object", Params={"Bucket": location.bucket, "Key": location.key}, ExpiresIn=PRESIGN_TTL_S)
