"""The result manifest a worker writes (JSON, next to the artifacts) when a pipeline ends."""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from modelfleet.api.base import WireModel
from modelfleet.api.paths import relative_path_problem


def _inside_the_result(path: str) -> str:
    problem = relative_path_problem(path)
    if problem:
        raise ValueError(f"a result's files must stay inside its directory: {problem}")
    return path


# Readers join these to the result directory or prefix (publish downloads them from S3 too): a
# result.json from a store someone else can write must not name files outside it.
ResultPath = Annotated[str, AfterValidator(_inside_the_result)]


class LatencyResult(WireModel):
    """Latency of one artifact in its runtime."""

    p50_ms: float = Field(description="Median latency per batch, in milliseconds.")
    p95_ms: float = Field(description="95th percentile latency per batch, in milliseconds.")
    runs: int = Field(description="Timed runs the percentiles are taken over.")
    threads: int = Field(description="Intra-op threads the runtime used.")
    batch_size: int = Field(description="Samples per timed run.")


class AgreementResult(WireModel):
    """How closely an artifact reproduces the fp32 reference outputs on the evaluation set."""

    top1: float = Field(description="Share of samples, in percent, where the artifact's top-1 class equals the reference's.")
    max_abs_diff: float = Field(description="Largest absolute difference of any output value.")


class TensorSignature(WireModel):
    """One input or output tensor of an ONNX artifact, as its graph declares it."""

    name: str = Field(description="Tensor name.")
    dtype: str = Field(description="numpy element type, such as float32.")
    shape: list[int] = Field(description="Dimensions; -1 marks a dynamic one (the batch).")


class ModelSignature(WireModel):
    """The interface of an ONNX artifact, read from its graph."""

    inputs: list[TensorSignature] = Field(description="Graph inputs, in order.")
    outputs: list[TensorSignature] = Field(description="Graph outputs, in order.")


class ArtifactResult(WireModel):
    """One produced artifact with everything measured about it."""

    name: str = Field(description="Artifact name, such as onnx-int8-static or ncnn-fp16.")
    runtime: Literal["onnxruntime", "ncnn", "tflite"] = Field(description="Runtime the artifact was evaluated in.")
    precision: str = Field(description="Numeric precision: fp32, fp16, int8-dynamic or int8-static.")
    role: Literal["baseline", "candidate"] = Field(
        description="baseline: the fp32 reference; candidate: an artifact meant to ship, checked against the SLOs."
    )
    target: str | None = Field(default=None, description="Edge target name, for edge artifacts.")
    files: list[ResultPath] = Field(min_length=1, description="Files of the artifact, relative to the result directory.")
    sha256: str = Field(description="sha256 of the artifact (for several files: of their sorted name/digest list).")
    size_bytes: int = Field(description="Total size of the artifact's files, in bytes.")
    accuracy: float = Field(description="Top-1 accuracy on the evaluation set, in percent.")
    accuracy_drop_points: float = Field(description="Baseline accuracy minus this accuracy, in percentage points.")
    agreement: AgreementResult = Field(description="Agreement with the fp32 reference.")
    latency: LatencyResult = Field(description="Measured latency.")
    signature: ModelSignature | None = Field(default=None, description="Inputs and outputs, for ONNX artifacts.")
    smoke: ResultPath | None = Field(
        default=None,
        description="npz file (relative to the result directory) with reference inputs and this artifact's own "
                    "outputs for them, used to verify a deployment; ONNX artifacts only.",
    )


class BaselineResult(WireModel):
    """The fp32 reference every artifact is compared with."""

    artifact: str = Field(description="Name of the baseline artifact.")
    accuracy: float = Field(description="Top-1 accuracy of the fp32 ONNX model in onnxruntime, in percent.")
    evaluated_samples: int = Field(description="Number of evaluation samples.")


class TargetFailure(WireModel):
    """A variant or target that could not be produced; the others still complete."""

    target: str = Field(description="The variant or edge target that failed, such as onnx-fp16 or ncnn/phones.")
    stage: str = Field(description="Pipeline stage that failed: quantize, convert, evaluate or benchmark.")
    reason: str = Field(description="CamelCase reason, such as UnsupportedOperator.")
    message: str = Field(description="What went wrong, for people.")
    operator: str | None = Field(default=None, description="The model operator that could not be handled, when known.")


class SLOViolation(WireModel):
    """One SLO an artifact missed."""

    artifact: str = Field(description="Artifact or target name.")
    slo: str = Field(description="Which SLO: accuracyDrop, latencyP95, size or target.")
    limit: float | None = Field(default=None, description="The SLO's limit.")
    measured: float | None = Field(default=None, description="What was measured.")
    message: str = Field(description="Explanation for people.")


class SLOVerdict(WireModel):
    """Whether every candidate artifact met the SLOs."""

    passed: bool = Field(description="True when no SLO was violated.")
    violations: list[SLOViolation] = Field(default_factory=list, description="Every violation found.")


class SourceResult(WireModel):
    """The source the result was built from."""

    uri: str = Field(description="Source URI.")
    format: str = Field(description="Source format.")
    sha256: str = Field(description="sha256 of the fetched source.")


class ResultManifest(WireModel):
    """Everything a pipeline run produced and measured."""

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default="modelfleet.io/v1alpha1", alias="apiVersion")
    kind: Literal["CompressionResult"] = "CompressionResult"
    model_name: str = Field(description="Name of the CompressedModel.")
    generation: int | None = Field(default=None, description="Spec generation the result was built from.")
    source: SourceResult = Field(description="The fetched source.")
    baseline: BaselineResult = Field(description="The fp32 reference.")
    artifacts: list[ArtifactResult] = Field(description="Every artifact produced, baseline first.")
    failures: list[TargetFailure] = Field(default_factory=list, description="Variants or targets that failed.")
    verdict: SLOVerdict = Field(description="The SLO verdict over the candidate artifacts.")
    duration_seconds: float = Field(description="Wall time of the pipeline.")
