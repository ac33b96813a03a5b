"""Artifact store: fetch inputs by URI, write outputs atomically, hash files.

Supported sources: `file://` (absolute, or relative to a base directory such as the
manifest's), `pvc://<claim>/<path>` (a claim mounted under MODELFLEET_PVC_ROOT, default
/mnt/pvc), `https://` (read-only), `s3://<bucket>/<key>` (boto3; `modelfleet.store.s3` also uploads
results, result.json last).
"""

from modelfleet.store.files import atomic_write_bytes, atomic_write_text, sha256_file
from modelfleet.store.fetch import fetch, read_text, resolve_local

__all__ = ["atomic_write_bytes", "atomic_write_text", "fetch", "read_text", "resolve_local", "sha256_file"]
