"""pydantic models of every resource and file format modelfleet reads or writes.

The single source of truth: `crds/` is generated from these models (see `modelfleet.crdgen`).
No I/O here.
"""

from modelfleet.api.compressedmodel import (
    API_VERSION,
    GROUP,
    Artifact,
    CalibrationMethod,
    CompressedModel,
    CompressedModelSpec,
    CompressedModelStatus,
    Compression,
    Condition,
    Dataset,
    EdgeRuntime,
    EdgeTarget,
    Evaluation,
    Precision,
    Source,
    SourceFormat,
    TensorSpec,
    TritonTarget,
    SLO,
)
from modelfleet.api.result import (
    AgreementResult,
    ArtifactResult,
    BaselineResult,
    LatencyResult,
    ResultManifest,
    SLOVerdict,
    SLOViolation,
    TargetFailure,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "SLO",
    "AgreementResult",
    "Artifact",
    "ArtifactResult",
    "BaselineResult",
    "CalibrationMethod",
    "CompressedModel",
    "CompressedModelSpec",
    "CompressedModelStatus",
    "Compression",
    "Condition",
    "Dataset",
    "EdgeRuntime",
    "EdgeTarget",
    "Evaluation",
    "LatencyResult",
    "Precision",
    "ResultManifest",
    "SLOVerdict",
    "SLOViolation",
    "Source",
    "SourceFormat",
    "TargetFailure",
    "TensorSpec",
    "TritonTarget",
]
