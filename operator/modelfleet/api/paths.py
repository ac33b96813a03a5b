"""Which paths and URIs a manifest or a result file may name (pure: no I/O).

The patterns go into the CRD, where the API server checks them with Go's RE2 (no lookarounds);
the functions give the same verdicts with a message that says what is wrong. `modelfleet.store.paths`
confines what passes on disk, symlinks included.
"""

import re

__all__ = ["DNS_SUBDOMAIN_PATTERN", "INPUT_SCHEMES", "INPUT_URI_PATTERN", "REPOSITORY_SCHEMES", "REPOSITORY_URI_PATTERN",
           "relative_path_problem", "uri_problem"]

_CHAR = r"[^/\\\x00]"  # anything but a separator, a backslash or NUL
# A path segment other than "." and "..": it starts with a character other than a dot, or with ".x", or "..x".
_SEGMENT = rf"(?:[^/\\\x00.]|\.[^/\\\x00.]|\.\.{_CHAR}){_CHAR}*"
_PATH = rf"{_SEGMENT}(?:/{_SEGMENT})*"
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_CLAIM = rf"{_LABEL}(?:\.{_LABEL})*"
DNS_SUBDOMAIN_PATTERN = rf"^{_CLAIM}$"  # a PersistentVolumeClaim's name
_FORMS = {
    "file": rf"file:///?{_PATH}/?",
    "https": rf"https://{_PATH}/?",
    "s3": rf"s3://{_SEGMENT}(?:/{_PATH})?/?",
    "pvc": rf"pvc://{_CLAIM}/{_PATH}/?",
}
INPUT_SCHEMES = ("file", "https", "s3", "pvc")
REPOSITORY_SCHEMES = ("file", "s3", "pvc")


def _uri_pattern(schemes: tuple[str, ...]) -> str:
    return "^(?:" + "|".join(_FORMS[s] for s in schemes) + ")$"


INPUT_URI_PATTERN = _uri_pattern(INPUT_SCHEMES)
REPOSITORY_URI_PATTERN = _uri_pattern(REPOSITORY_SCHEMES)
_MAX_CLAIM_LENGTH = 253


def relative_path_problem(path: str) -> str | None:
    """Why `path` could name something outside the directory it is relative to; None when it cannot."""
    if not path:
        return "the path is empty"
    if "\x00" in path or "\\" in path:
        return f"{path!r} holds a NUL character or a backslash"
    if path.startswith("/"):
        return f"{path!r} is absolute; it must be relative"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return f"{path!r} is not normalised: '..', '.' and empty segments are refused"
    return None


def uri_problem(uri: str, schemes: tuple[str, ...] = INPUT_SCHEMES) -> str | None:
    """Why `uri` is refused (the same verdict as the CRD's pattern), or None when it is fine."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in schemes:
        return f"must start with {', '.join(f'{s}://' for s in schemes)}"
    if scheme == "pvc":
        claim, _, rest = rest.partition("/")
        if len(claim) > _MAX_CLAIM_LENGTH or not re.fullmatch(_CLAIM, claim):
            return ("expected pvc://<claim>/<path> with a claim name of lowercase letters, digits, '-' and '.' "
                    f"(a DNS-1123 subdomain), got claim {claim!r}")
        if not rest:
            return "expected pvc://<claim>/<path>"
    elif scheme in ("https", "s3"):
        host, _, path = rest.partition("/")
        problem = relative_path_problem(host)
        if problem:
            return f"{'host' if scheme == 'https' else 'bucket'}: {problem}"
        if not path:
            return None
        rest = path
    elif scheme == "file":
        rest = rest.removeprefix("/")
        if not rest:
            return "expected file://<path>"
    problem = relative_path_problem(rest.removesuffix("/"))
    return f"path {problem}" if problem else None
