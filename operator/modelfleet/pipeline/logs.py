"""Capturing what native converters print, so progress output stays readable."""

import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def redirect_fds(log: Path):
    """Send stdout/stderr of native code (which ignores sys.stdout) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def tail(log: Path, lines: int = 5) -> str:
    if not log.is_file():
        return ""
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])[-1500:]

