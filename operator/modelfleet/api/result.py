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
    samples_ms: list[float] | None = Field(
        default=None, description="Every timed run, in milliseconds, in the order of the rounds: the artifacts of one "
                                  "runtime (and edge target) are timed interleaved, once each per round, so the runs "
                                  "of a round met the same load. Speed-ups and their intervals are computed from "
                                  "these.")


class AgreementResult(WireModel):
    """How closely an artifact reproduces the fp32 reference outputs on the evaluation set."""

    top1: float = Field(description="Share of samples, in percent, where the artifact's top-1 class equals the reference's.")
    max_abs_diff: float = Field(description="Largest absolute difference of any output value.")


class OutputFidelity(WireModel):
    """One output's closeness to the baseline's, for models with several outputs."""

    name: str = Field(description="Output name.")
    cosine: float = Field(description="Mean cosine similarity with the baseline's output.")
    snr_db: float = Field(description="Mean signal-to-noise ratio against the baseline's output, in dB.")


class FidelityResult(WireModel):
    """How closely an artifact's outputs follow the fp32 baseline's on the evaluation inputs (no labels needed).

    Each sample's output is compared as one vector; identical outputs count as 200 dB, a sample with NaN or
    infinite values as cosine -1 and -200 dB.
    """

    cosine: float = Field(description="Mean over the samples of the cosine similarity with the baseline's output.")
    snr_db: float = Field(description="Mean over the samples of the signal-to-noise ratio in dB: the baseline "
                                      "output's energy over the energy of the difference.")
    min_cosine: float = Field(description="Cosine similarity of the worst sample.")
    min_cosine_sample: int = Field(description="Index, in the evaluation set, of the sample with the lowest cosine.")
    min_snr_db: float = Field(description="Signal-to-noise ratio of the worst sample, in dB.")
    min_snr_sample: int = Field(description="Index, in the evaluation set, of the sample with the lowest SNR.")
    output: str | None = Field(default=None, description="With several outputs: the worst one (lowest mean cosine, "
                                                          "then SNR), which the figures above describe.")
    outputs: list[OutputFidelity] | None = Field(default=None, description="With several outputs: each one's means.")


class TensorSignature(WireModel):
    """One input or output tensor of an ONNX artifact, as its graph declares it."""

    name: str = Field(description="Tensor name.")
    dtype: str = Field(description="numpy element type, such as float32.")
    shape: list[int] = Field(description="Dimensions; -1 marks a dynamic one (the batch).")


class ModelSignature(WireModel):
    """The interface of an ONNX artifact, read from its graph."""

    inputs: list[TensorSignature] = Field(description="Graph inputs, in order.")
    outputs: list[TensorSignature] = Field(description="Graph outputs, in order.")


class NodeSensitivity(WireModel):
    """How much quantization noise one node of the all-int8 model adds."""

    node: str = Field(description="Node name in the fp32 graph.")
    op_type: str = Field(description="ONNX operator, such as Conv or MatMul.")
    noise_to_signal: float = Field(description="Energy of the int8 model's error in this node's output over the "
                                               "output's energy, on the sensitivity samples.")
    added: float = Field(description="The part of noiseToSignal this node adds: its output's less the worst of its "
                                     "inputs' (what quantizing its input activations and weights costs).")


class MixedTrial(WireModel):
    """One build of the mixed-precision search."""

    order: Literal["all-int8", "sensitivity", "graph"] = Field(
        description="Which nodes came first: the most sensitive (sensitivity) or the first from the input (graph).")
    float_nodes: int = Field(description="How many nodes, first in that order, were kept in float.")
    met: bool = Field(description="Whether the build met the quality SLOs.")
    quality: str = Field(description="Its quality in words, such as `cosine 0.9921, SNR 19.8 dB`.")
    size_bytes: int = Field(description="Size of the build, in bytes.")


class MixedPrecisionResult(WireModel):
    """What the accuracy-aware mixed-precision search found."""

    quantizable_nodes: int = Field(description="Nodes int8-static quantized.")
    float_nodes: list[str] = Field(default_factory=list, description="The nodes this artifact keeps in float.")
    most_sensitive: list[NodeSensitivity] = Field(default_factory=list,
                                                  description="The most sensitive nodes, most sensitive first.")
    trials: list[MixedTrial] = Field(default_factory=list, description="Every build of the search, in order.")


class ArtifactResult(WireModel):
    """One produced artifact with everything measured about it."""

    name: str = Field(description="Artifact name, such as onnx-int8-static or ncnn-fp16.")
    runtime: Literal["onnxruntime", "ncnn", "tflite"] = Field(description="Runtime the artifact was evaluated in.")
    precision: str = Field(description="Numeric precision: fp32, fp16, int8-dynamic, int8-static or int8-mixed "
                                       "(int8-static with its most sensitive nodes kept in float).")
    role: Literal["baseline", "candidate"] = Field(
        description="baseline: the fp32 reference; candidate: an artifact meant to ship, checked against the SLOs."
    )
    target: str | None = Field(default=None, description="Edge target name, for edge artifacts.")
    files: list[ResultPath] = Field(min_length=1, description="Files of the artifact, relative to the result directory.")
    sha256: str = Field(description="sha256 of the artifact (for several files: of their sorted name/digest list).")
    size_bytes: int = Field(description="Total size of the artifact's files, in bytes.")
    accuracy: float | None = Field(
        default=None, description="Top-1 accuracy on the evaluation set, in percent (metric top1 only).")
    accuracy_drop_points: float | None = Field(
        default=None, description="Baseline accuracy minus this accuracy, in percentage points (metric top1 only).")
    agreement: AgreementResult = Field(description="Agreement with the fp32 reference.")
    fidelity: FidelityResult | None = Field(
        default=None, description="Closeness of the outputs to the fp32 reference's, per sample (absent in results "
                                  "written before modelfleet measured it).")
    latency: LatencyResult = Field(description="Measured latency.")
    signature: ModelSignature | None = Field(default=None, description="Inputs and outputs, for ONNX artifacts.")
    smoke: ResultPath | None = Field(
        default=None,
        description="npz file (relative to the result directory) with reference inputs and this artifact's own "
                    "outputs for them, used to verify a deployment; ONNX artifacts only.",
    )
    speedup_vs_fp32: float | None = Field(
        default=None,
        description="Median time of the fp32 artifact in the same runtime (the ONNX baseline for ONNX variants, the "
                    "same edge target's fp32 for edge artifacts) divided by this one's, timed in the same rounds; "
                    "below 1 it is slower than fp32. Absent when no fp32 was built in that runtime (an edge target "
                    "with an explicit precision).",
    )
    speedup_interval: list[float] | None = Field(
        default=None, min_length=2, max_length=2,
        description="95% bootstrap interval [low, high] of speedupVsFp32, resampling the interleaved rounds.")
    slower_than_fp32: bool = Field(default=False, description="True when the whole speed-up interval lies below "
                                                              "the tie band (10%): slower than fp32 beyond noise.")
    fraction_quantized: float | None = Field(
        default=None,
        description="Quantized ONNX variants: the share of weight elements stored as int8, from 0 to 1.",
    )
    mixed_precision: MixedPrecisionResult | None = Field(
        default=None, description="int8-mixed artifacts: the nodes kept in float and the search that chose them.")
    notes: list[str] = Field(default_factory=list, description="What a reader should know about this artifact, "
                                                                "such as that it is slower than fp32.")


class LostCandidate(WireModel):
    """A candidate a target did not get, and why."""

    artifact: str = Field(description="Artifact name.")
    reason: str = Field(description="Why it lost, such as `slower than fp32 (1.34x)` or `drop 1.80 pt > 1.0`.")


class TargetChoice(WireModel):
    """The artifact one target ships."""

    target: str = Field(description="`triton`, or the edge target's name.")
    runtime: str = Field(description="Runtime of the target's candidates.")
    mode: Literal["auto", "requested"] = Field(
        description="auto: chosen on the measured figures; requested: the spec names the precision.")
    chosen: str | None = Field(default=None, description="The artifact the target ships; absent when none qualifies.")
    losers: list[LostCandidate] = Field(default_factory=list, description="Every other candidate, with why it lost.")


class BaselineResult(WireModel):
    """The fp32 reference every artifact is compared with."""

    artifact: str = Field(description="Name of the baseline artifact, or `source` when the ONNX export failed "
                                      "and the torch source, run in torch, is the reference.")
    metric: Literal["top1", "fidelity"] = Field(
        default="top1", description="The quality metric the artifacts are judged by (spec.dataset.metric).")
    accuracy: float | None = Field(
        default=None, description="Top-1 accuracy of the reference, in percent (metric top1 only).")
    opset: int | None = Field(default=None, description="ONNX opset of the fp32 baseline graph every ONNX variant "
                                                        "is built from.")
    evaluated_samples: int = Field(description="Number of evaluation samples.")


class TargetFailure(WireModel):
    """A variant or target that could not be produced; the others still complete."""

    target: str = Field(description="The artifact that failed, such as onnx-fp16 or ncnn-fp16-phones.")
    stage: str = Field(description="Pipeline stage that failed: quantize, convert, evaluate or benchmark.")
    reason: str = Field(description="CamelCase reason, such as UnsupportedOperator.")
    message: str = Field(description="What went wrong, for people.")
    operator: str | None = Field(default=None, description="The model operator that could not be handled, when known.")


class SLOViolation(WireModel):
    """One SLO an artifact missed."""

    artifact: str = Field(description="Artifact or target name.")
    slo: str = Field(description="Which SLO: accuracyDrop, fidelityCosine, fidelitySnr, latencyP95, size or target.")
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
    opset: int | None = Field(default=None, description="ONNX opset of an ONNX source as supplied; one below "
                                                        "compression.opset is converted to it.")


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
    notes: list[str] = Field(default_factory=list, description="What the pipeline changed or worked around, for "
                                                               "people: `source opset 11 -> 17`, a fall-back.")
    choices: list[TargetChoice] = Field(default_factory=list, description="The artifact each target ships.")
    tradeoff: ResultPath | None = Field(
        default=None, description="Picture of accuracy drop against p95 per runtime, the choices marked.")
    duration_seconds: float = Field(description="Wall time of the pipeline.")
