"""Specs that the CRD schema accepts but that cannot work in a cluster, or that reach beyond their own
namespace: SpecValid=False, no Jobs."""

from urllib.parse import urlsplit

from modelfleet.api.compressedmodel import CompressedModel
from modelfleet.domain.plan import OperatorSettings, model_root_uri


def problems(model: CompressedModel, settings: OperatorSettings) -> list[tuple[str, str]]:
    """(reason, message) for every reason the spec cannot be carried out; empty when it can."""
    spec, namespace = model.spec, model.metadata.namespace or "default"
    found = []
    reads = {"spec.source.uri": spec.source.uri, "spec.dataset.calibration.uri": spec.dataset.calibration.uri,
             "spec.dataset.evaluation.uri": spec.dataset.evaluation.uri}
    for where, uri in reads.items():
        if uri.startswith("file://") and not uri.startswith("file:///"):
            found.append(("RelativePath", f"{where}: a relative file:// path means nothing inside a worker pod; "
                                          "use pvc://<claim>/<path> or https://"))
    if spec.dataset.calibration.uri == spec.dataset.evaluation.uri:
        found.append(("EvaluationOnCalibrationData", "spec.dataset: evaluating on the calibration data would hide "
                                                     "quantization damage; use a separate evaluation set"))
    if len(spec.source.inputs) != 1:
        found.append(("MultiInputUnsupported", f"spec.source.inputs: the worker evaluates single-input models; "
                                               f"this one declares {len(spec.source.inputs)}"))
    triton = spec.targets.triton
    if triton is None and spec.slo.latency_p95_ms.triton is not None:
        found.append(("NoTritonTarget", "spec.slo.latencyP95Ms.triton is set but spec.targets.triton is not"))
    if triton is not None and triton.repository.startswith("file://") and not triton.repository.startswith("file:///"):
        found.append(("RelativePath", "spec.targets.triton.repository: a relative file:// path means nothing in a pod"))
    if triton is not None and triton.server_url and not server_allowed(triton.server_url, settings.triton_servers):
        allowed = ", ".join(settings.triton_servers) or "none"
        found.append(("ServerNotAllowed", f"spec.targets.triton.serverUrl {triton.server_url} is not among the Triton "
                                          f"servers this operator may publish to ({allowed}); the operator's "
                                          "MODELFLEET_TRITON_SERVERS setting decides"))
    if triton is not None:
        reads["spec.targets.triton.repository"] = triton.repository
    own = model_root_uri(settings, namespace, "")
    for where, uri in reads.items():
        if _under(uri, settings.artifacts) and not _under(uri, own):
            found.append(("OtherNamespace", f"{where}: {uri} lies in the artifact store outside this namespace's "
                                            f"part ({own}); a resource reads only its own namespace's results"))
    return found


def server_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """Whether `url` is one of the `allowed` servers: scheme, host and port must match exactly."""
    return _origin(url) in {_origin(a) for a in allowed}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number matches nothing
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _under(uri: str, root: str) -> bool:
    """Whether `uri` names `root` or something beneath it (the schema already refused `..` and `.` segments)."""
    root = root.rstrip("/")
    return uri == root or uri.startswith(root + "/")
