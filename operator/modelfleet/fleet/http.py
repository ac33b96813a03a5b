"""Parsing the HTTP headers the gateway honours, explicitly: If-None-Match and Range (RFC 9110)."""

from __future__ import annotations

import re

__all__ = ["Unsatisfiable", "byte_range", "etag_matches"]

_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(,|$)')
# At most 19 digits a bound (any file size fits): a longer number is no range at all, and int() of thousands of
# digits is slow (Python refuses above 4,300).
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


class Unsatisfiable(ValueError):
    """A valid byte range that lies outside the file: 416."""


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weak comparison, as RFC 9110 asks for If-None-Match), or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    position, text = 0, if_none_match
    while position < len(text):
        match = _ETAG.match(text, position)
        if not match:
            return False  # malformed: as if absent
        if match.group(2) == etag:
            return True
        position = match.end()
    return False


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single `bytes=` range; None to send the whole file (no header, a
    header that does not parse, or several ranges: a server may ignore Range). Raises Unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        length = int(last)
        if length == 0:
            raise Unsatisfiable("an empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable(f"the range starts at {start}, the file has {size} bytes")
    return start, min(end, size - 1)
