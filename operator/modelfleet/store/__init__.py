"""Artifact store: fetch inputs by URI, write outputs atomically, hash files.

Supported sources: `file://` (absolute, or relative to a base directory such as the
manifest's), `pvc://<claim>/<path>` (a claim mounted under MODELFLEET_PVC_ROOT, default
/mnt/pvc), `https://` (read-only). `s3://` is recognised and refused with a clear message
until the store grows an S3 client.
"""

from modelfleet.store.files import atomic_write_bytes, atomic_write_text, sha256_file
from modelfleet.store.fetch import fetch, resolve_local

__all__ = ["atomic_write_bytes", "atomic_write_text", "fetch", "resolve_local", "sha256_file"]
