"""Joining an untrusted relative path (from a manifest, a result file, an ONNX model) to a directory."""

from pathlib import Path

from modelfleet.api.paths import relative_path_problem
from modelfleet.errors import SourceError


def confined(root: Path, relative: str, subject: str) -> Path:
    """`root / relative`, resolved; refused (PathEscape) unless it stays inside `root`.

    The text must be relative and normalised (no '..', '.' or empty segments, no backslash or NUL),
    and what it resolves to, symlinks followed, must still lie inside the resolved root. `subject`
    (the URI or file the path came from) starts the message.
    """
    problem = relative_path_problem(relative)
    if problem:
        raise SourceError(f"{subject}: {problem}", reason="PathEscape")
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise SourceError(f"{subject}: {relative!r} leads to {path} through a symlink, outside {base}",
                          reason="PathEscape")
    return path
