"""Specs that the CRD schema accepts but that cannot work in a cluster: SpecValid=False, no Jobs."""

from modelfleet.api.compressedmodel import CompressedModelSpec


def problems(spec: CompressedModelSpec) -> list[tuple[str, str]]:
    """(reason, message) for every reason the spec cannot be carried out; empty when it can."""
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
    return found
