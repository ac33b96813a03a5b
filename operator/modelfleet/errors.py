"""The exception hierarchy, with the worker exit code each error maps to.

Exit codes (DESIGN.md): 0 ok, 1-127 permanent (retrying cannot help), 128+ retryable.
"""


class ModelfleetError(Exception):
    """Base of every error modelfleet raises on purpose."""

    exit_code = 1
    reason = "Failed"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason


class PermanentError(ModelfleetError):
    """Bad input or an unsupported model: the same run will fail the same way."""

    exit_code = 2


class InvalidManifest(PermanentError):
    exit_code = 3
    reason = "InvalidSpec"


class SourceError(PermanentError):
    exit_code = 4
    reason = "InvalidSource"


class ChecksumMismatch(PermanentError):
    exit_code = 5
    reason = "ChecksumMismatch"


class DatasetError(PermanentError):
    exit_code = 6
    reason = "InvalidDataset"


class UnsupportedModel(PermanentError):
    """The model uses something a converter or runtime cannot express."""

    exit_code = 7
    reason = "UnsupportedOperator"

    def __init__(self, message: str, *, operator: str | None = None, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.operator = operator


class SLONotMet(PermanentError):
    """The pipeline finished but a candidate artifact missed an SLO (local run only)."""

    exit_code = 10
    reason = "SLONotMet"


class RepositoryError(PermanentError):
    """The Triton model repository cannot be written (or read)."""

    exit_code = 20
    reason = "RepositoryNotWritable"


class PublishConflict(PermanentError):
    """The model name is taken by a model modelfleet did not publish, or by another resource."""

    exit_code = 21
    reason = "ModelNameConflict"


class PublishFailed(PermanentError):
    """The new version did not load, verify or meet its SLO; the previous one stays served."""

    exit_code = 22
    reason = "PublishFailed"


class RetryableError(ModelfleetError):
    """A passing fault (network, store unavailable): the same run may succeed later."""

    exit_code = 128
    reason = "Retryable"


class Terminated(RetryableError):
    """SIGTERM (a deleted pod, a Job's deadline) stopped the command; 128 + 15, as a shell reports it."""

    exit_code = 143
    reason = "Terminated"


class KubernetesApiError(ModelfleetError):
    """The Kubernetes API refused or failed a request the operator made; the reconcile is requeued."""

    _REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                410: "Expired", 422: "Invalid", 429: "TooManyRequests"}

    def __init__(self, message: str, status: int | None):
        reason = "ApiUnreachable" if status is None else self._REASONS.get(status, "ApiServerError" if status >= 500 else "ApiError")
        super().__init__(message, reason=reason)
        self.status = status


def error_reason(error: BaseException) -> str:
    """The CamelCase word that names an error in conditions and metrics: a ModelfleetError's reason, else its class."""
    return error.reason if isinstance(error, ModelfleetError) else type(error).__name__


def first_line(e: BaseException, limit: int = 500) -> str:
    """The first line of an exception's text: library errors are often pages long."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]
