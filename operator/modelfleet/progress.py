"""Progress lines for long work: elapsed time, stage, message; on stderr so stdout stays clean."""

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._start = time.monotonic()

    def step(self, stage: str, message: str) -> None:
        if self._enabled:
            elapsed = time.monotonic() - self._start
            print(f"[{elapsed:6.1f}s] {stage:<9} {message}", file=self._stream, flush=True)
