"""The `CompressedModel` resource (modelfleet.io/v1alpha1): what to compress, for where, under which SLOs."""

import math
from enum import Enum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from modelfleet.api.base import WireModel
from modelfleet.api.paths import (INPUT_SCHEMES, INPUT_URI_PATTERN, REPOSITORY_SCHEMES, REPOSITORY_URI_PATTERN,
                                  uri_problem)
from modelfleet.api.result import TargetChoice

GROUP = "modelfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

SHA256_PATTERN = r"^[a-f0-9]{64}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
REASON_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
# Job names are `<name>-compress-<10 hex>` or `<name>-publish-<10 hex>` (a retry folds into the hash) and
# are label values too: Kubernetes allows 63 characters, which 40 leaves room for.
MAX_NAME_LENGTH = 40
NAME_TOO_LONG = (f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the worker Jobs are named "
                 "<name>-compress-<hash> and <name>-publish-<hash>, within Kubernetes' 63")
# One batch of the model input (the batch dimension counted as 1 when dynamic): 1 GiB of float32.
MAX_BATCH_ELEMENTS = 1 << 28


def _cel(rule: str, message: str) -> dict:
    """JSON schema extra holding a Kubernetes CEL rule, so the API server enforces a model validator too."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


def _checked_uri(schemes: tuple[str, ...]):
    """Before the pattern (whose mismatch message is the regex itself): the same verdict, said in words."""

    def check(value):
        problem = isinstance(value, str) and uri_problem(value, schemes)
        if problem:
            raise ValueError(f"{value!r}: {problem}")
        return value

    return BeforeValidator(check)


# Inputs and repositories: no '..', '.' or empty segments, no backslash or NUL, pvc:// claims that are
# valid PVC names; `modelfleet.store` still confines each resolved path to its root at run time.
InputURI = Annotated[str, _checked_uri(INPUT_SCHEMES), Field(pattern=INPUT_URI_PATTERN, max_length=2048)]
RepositoryURI = Annotated[str, _checked_uri(REPOSITORY_SCHEMES), Field(pattern=REPOSITORY_URI_PATTERN, max_length=2048)]


class SourceFormat(str, Enum):
    torchscript = "torchscript"
    exported_program = "exported-program"
    onnx = "onnx"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8_dynamic = "int8-dynamic"
    int8_static = "int8-static"


class EdgeRuntime(str, Enum):
    ncnn = "ncnn"
    tflite = "tflite"


AUTO = "auto"
# What `targets.triton.precision` takes: auto (the fastest built ONNX variant that meets the SLOs) or one variant.
TritonPrecision = Enum("TritonPrecision", {"auto": AUTO, **{p.name: p.value for p in Precision}}, type=str)
# The precisions each edge runtime builds. `auto` builds every one of them and ships the fastest that meets the
# SLOs; a new precision added here becomes a candidate (the CRD rule and the validator follow this table).
EDGE_PRECISIONS: dict[EdgeRuntime, tuple[str, ...]] = {
    EdgeRuntime.ncnn: ("fp32", "fp16", "int8"),
    EdgeRuntime.tflite: ("fp32", "int8"),
}
EDGE_PRECISION_RULE = "edge precision must be auto or one its runtime builds: " + "; ".join(
    f"{runtime.value} {', '.join(precisions)}" for runtime, precisions in EDGE_PRECISIONS.items())


class CalibrationMethod(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    int64 = "int64"
    int32 = "int32"
    uint8 = "uint8"


class TensorSpec(WireModel):
    """One model input: its name, shape and element type."""

    # Mirrors _dims_are_sizes: only a dynamic (-1) batch dimension may be non-positive; an input without a batch
    # axis may be a 0-d scalar, one with a batch axis has at least that.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel(
            "(has(self.batched) && !self.batched) ? self.shape.all(d, d > 0) : (self.shape.size() >= 1 && "
            "self.shape.filter(d, d <= 0).size() == (self.shape[0] == -1 ? 1 : 0))",
            "batch dimension must be -1 (dynamic) or positive, other dimensions positive",
        )
    }

    name: str = Field(
        min_length=1,
        max_length=128,
        description="Input name. For ONNX sources it must match the graph's input name; for torch sources it names the exported ONNX input.",
    )
    shape: list[int] = Field(
        max_length=8,
        description="Input shape. With batched (the default) the first dimension is the batch, -1 marks it dynamic, "
                    "and every other dimension is a positive size; without, every dimension is a positive size and "
                    "[] is a 0-d scalar.",
    )
    dtype: DType = Field(default=DType.float32, description="Element type of the input tensor.")
    batched: bool = Field(
        default=True,
        description="Whether the first dimension is the batch axis. false for an input without one, such as a "
                    "0-d scalar (a sample rate) or a recurrent state whose batch axis is not the first: each "
                    "sample in the data then holds the whole tensor, and the model is called one sample at a time.",
    )

    @model_validator(mode="after")
    def _dims_are_sizes(self) -> "TensorSpec":
        if not self.batched:
            if any(d <= 0 for d in self.shape):
                raise ValueError(f"input {self.name!r}: an input without a batch axis has positive dimensions only, "
                                 f"got {self.shape}")
        elif not self.shape:
            raise ValueError(f"input {self.name!r}: a batched input needs its batch dimension; a 0-d scalar is "
                             "batched: false")
        elif self.shape[0] == 0 or self.shape[0] < -1:
            raise ValueError(f"input {self.name!r}: batch dimension must be -1 (dynamic) or positive, got {self.shape[0]}")
        elif [d for d in self.shape[1:] if d <= 0]:
            raise ValueError(f"input {self.name!r}: non-batch dimensions must be positive, got {self.shape}")
        elements = math.prod(abs(d) for d in self.shape)
        if elements > MAX_BATCH_ELEMENTS:
            raise ValueError(f"input {self.name!r}: one batch of shape {self.shape} has {elements} elements, "
                             f"more than the {MAX_BATCH_ELEMENTS} modelfleet loads at once")
        return self


class Source(WireModel):
    """Where the trained model comes from."""

    uri: InputURI = Field(
        description="URI of the trained model: file://, https://, s3:// or pvc://<claim>/<path>. "
                    "'..' and '.' path segments are refused.",
    )
    format: SourceFormat = Field(
        description="Serialization of the source: a TorchScript archive, a torch.export ExportedProgram (.pt2), or an ONNX model."
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Expected sha256 of the source file, lowercase hex. When set, a mismatch stops the pipeline before any work.",
    )
    inputs: list[TensorSpec] = Field(
        min_length=1,
        max_length=16,
        description="The model's inputs, in order. Used to export torch sources and checked against ONNX sources.",
    )


class DataRef(WireModel):
    """A data file in the artifact store."""

    uri: InputURI = Field(
        description="URI of an .npz file holding an `inputs` array (samples along the first axis) and an integer "
                    "`labels` array (needed for evaluation with metric top1 only): file://, https://, s3:// or "
                    "pvc://<claim>/<path>.",
    )


class Dataset(WireModel):
    """Real data used to calibrate quantization and to measure accuracy."""

    calibration: DataRef = Field(description="Samples fed through the model to calibrate static quantization ranges.")
    evaluation: DataRef = Field(description="Held-out samples on which every artifact is measured.")
    metric: Literal["top1", "fidelity"] = Field(
        default="top1",
        description="How artifacts are judged: top1, top-1 classification accuracy against the evaluation labels "
                    "(slo.maxAccuracyDropPoints); fidelity, no labels needed, cosine similarity and signal-to-noise "
                    "ratio of each sample's outputs against the fp32 baseline's (slo.minFidelityCosine, "
                    "slo.minFidelitySnrDb), for any model with float outputs.",
    )


class MixedPrecision(WireModel):
    """Accuracy-aware mixed precision: int8-static with its most sensitive nodes kept in float."""

    enabled: bool = Field(default=True, description="Search when int8-static misses the quality SLO.")
    max_trials: int = Field(default=12, ge=1, le=64, description="Most quantization builds the search may try.")
    max_seconds: int = Field(default=900, ge=10, le=86400, description="Most wall time the search may take.")


class Compression(WireModel):
    """Which compressed variants to produce, and how."""

    precisions: list[Precision] = Field(
        default_factory=lambda: [Precision.int8_static],
        min_length=1,
        max_length=4,
        description="ONNX variants to produce besides the fp32 baseline (always built): fp32, fp16, int8-dynamic (MatMul/Gemm weights only), int8-static (QDQ, calibrated).",
    )
    per_channel: bool = Field(default=True, description="Quantize weights per output channel instead of per tensor (int8-static).")
    calibration_method: CalibrationMethod = Field(
        default=CalibrationMethod.minmax, description="How int8-static activation ranges are chosen from the calibration data."
    )
    calibration_samples: int = Field(
        default=128, ge=1, le=100000, description="At most this many calibration samples are used (int8-static)."
    )
    opset: int = Field(default=17, ge=17, le=23, description="ONNX opset of the exported graph.")
    mixed_precision: MixedPrecision = Field(
        default_factory=MixedPrecision,
        description="When int8-static misses the quality SLO: search for the fewest nodes to keep in float "
                    "(artifact onnx-int8-mixed).")



class InstanceKind(str, Enum):
    cpu = "CPU"
    gpu = "GPU"


class InstanceGroup(WireModel):
    """Where Triton runs model instances, and how many."""

    kind: InstanceKind = Field(default=InstanceKind.cpu, description="CPU or GPU instances (KIND_CPU / KIND_GPU).")
    count: int = Field(default=1, ge=1, le=64, description="Instances per device.")


class DynamicBatching(WireModel):
    """Triton's server-side batching of concurrent requests (needs a dynamic batch dimension)."""

    enabled: bool = Field(default=True, description="Let Triton combine concurrent requests into batches.")
    max_queue_delay_microseconds: int = Field(
        default=100, ge=0, le=10_000_000, description="How long a request may wait for others to form a batch."
    )


class TritonVerification(WireModel):
    """What is checked after Triton has loaded a new version."""

    smoke_tolerance: float = Field(
        default=1e-3, gt=0, description="Largest allowed absolute difference between Triton's outputs and the artifact's own."
    )
    latency_requests: int = Field(default=100, ge=10, le=100_000, description="Requests timed for the serving p50/p95.")
    timeout_seconds: int = Field(default=120, ge=1, le=3600, description="How long to wait for the version to become ready.")


class TritonTarget(WireModel):
    """Serve one ONNX artifact from an NVIDIA Triton model repository."""

    # Mirrors _tensorrt_needs_gpu.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel(
            "!has(self.tensorrt) || !self.tensorrt || (has(self.instanceGroup) && self.instanceGroup.kind == 'GPU')",
            "tensorrt needs instanceGroup.kind GPU",
        )
    }

    repository: RepositoryURI = Field(
        description="Triton model repository: file://<path>, pvc://<claim>/<path> or s3://<bucket>/<prefix> "
                    "(endpoint and credentials from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).",
    )
    model_name: str = Field(pattern=DNS_LABEL_PATTERN, description="Model name inside the repository.")
    precision: TritonPrecision = Field(
        default=TritonPrecision.auto,
        description="Which ONNX artifact to publish: auto (default) publishes the fastest (median, timed interleaved) "
                    "among the fp32 baseline and compression.precisions that meet the SLOs (ties within 10%: the "
                    "smaller); "
                    "fp32 or one of compression.precisions publishes that one.",
    )
    server_url: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="Triton HTTP endpoint. When set, the new version is loaded and verified there.",
    )
    credentials_secret: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        description="Secret (same namespace) whose keys become the publish Job's environment: AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION for an s3:// repository.",
    )
    model_control: Literal["explicit", "poll"] = Field(
        default="explicit",
        description="The server's --model-control-mode: explicit (modelfleet loads the model) or poll (wait for Triton to find it).",
    )
    max_batch_size: int = Field(
        default=8, ge=1, le=4096, description="max_batch_size when the model has a dynamic batch dimension."
    )
    dynamic_batching: DynamicBatching = Field(default_factory=DynamicBatching, description="Server-side batching.")
    instance_group: InstanceGroup = Field(default_factory=InstanceGroup, description="Model instances.")
    tensorrt: bool = Field(default=False, description="Use the TensorRT execution accelerator (GPU instances only).")
    warmup: bool = Field(default=True, description="Have Triton run a zero-filled warm-up request before it reports ready.")
    keep_versions: int = Field(
        default=2, ge=1, le=16, description="Versions kept served and on disk (version_policy latest); 2 makes a rollback one step."
    )
    verification: TritonVerification = Field(default_factory=TritonVerification, description="Checks after loading.")

    @model_validator(mode="after")
    def _tensorrt_needs_gpu(self) -> "TritonTarget":
        if self.tensorrt and self.instance_group.kind != InstanceKind.gpu:
            raise ValueError("tensorrt needs instanceGroup.kind GPU")
        return self


class Canary(WireModel):
    """The first wave: a few devices that get a new version before anyone else."""

    # Mirrors _count_or_percent.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel("has(self.count) != has(self.percent)", "canary takes exactly one of count and percent")
    }

    count: int | None = Field(
        default=None, ge=1, le=100_000,
        description="This many devices: those with the lowest positions (a stable hash of the device name), "
                    "fixed when the canary opens.",
    )
    percent: float | None = Field(
        default=None, gt=0, le=100,
        description="The devices whose position (a stable hash of the device name, 0 to 100) is below this percent.",
    )

    @model_validator(mode="after")
    def _count_or_percent(self) -> "Canary":
        if (self.count is None) == (self.percent is None):
            raise ValueError("canary takes exactly one of count and percent")
        return self


class FailureThreshold(WireModel):
    """When a wave counts as breached, like AWS IoT Jobs' abortConfig and hawkBit's error threshold."""

    count: int = Field(
        default=1, ge=1, le=1_000_000,
        description="A wave is breached once its failed devices reach this count and `percent` of the wave, "
                    "whichever is the larger number: the count is the floor that keeps a small wave from "
                    "breaching on no failure, the percent lets a large wave ride out a few offline devices.",
    )
    percent: float = Field(
        default=5.0, ge=0, le=100,
        description="Share of a wave's devices, in percent, whose failure breaches it (rounded up to whole "
                    "devices; never below `count`). 0 leaves only the count.",
    )


class RolloutGates(WireModel):
    """Figures the devices report that must hold while a rollout advances; a breach halts and rolls back."""

    max_p95_ms: float | None = Field(
        default=None, gt=0,
        description="Largest allowed on-device p95 latency in milliseconds, read as the 95th percentile (nearest "
                    "rank) over the updated devices' own p95s: with fewer than 20 devices, the slowest device. "
                    "Unset: slo.latencyP95Ms of the target's runtime, and no latency gate when that is unset too.",
    )
    min_agreement: float = Field(
        default=0.99, ge=-1, le=1,
        description="Smallest allowed golden-set agreement (mean cosine similarity of the device's outputs with "
                    "the bundle's reference outputs), read as the 5th percentile (nearest rank) over the updated "
                    "devices: with fewer than 20 devices, the worst device.",
    )


# Mirrors RolloutSpec._waves_rise_to_100.
WAVES_RULE = "waves must rise strictly and end at 100"


class RolloutSpec(WireModel):
    """How a new bundle reaches the devices of an edge target: a canary, then waves, each baked and gated.

    Which wave a device is in follows from a stable hash of its name and the rollout's state, so opening a
    wave is one status write, not one per device.
    """

    canary: Canary = Field(
        default_factory=lambda: Canary(count=1),
        description="The first wave. Default: one device.",
    )
    waves: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [10.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Share of the fleet, in percent, that has the new version once each wave after the canary "
                    "is open (cumulative, canary included). Rises strictly and ends at 100. Default: 10, 50, 100.",
        json_schema_extra=_cel("self.isSorted() && self.all(w, self.exists_one(v, v == w)) && "
                               "self[self.size() - 1] == 100.0", WAVES_RULE),
    )
    bake_seconds: int = Field(
        default=300, ge=0, le=7 * 86400,
        description="How long each wave runs, after it opened, before the next one may open.",
    )
    failure_threshold: FailureThreshold = Field(
        default_factory=FailureThreshold, description="When a wave counts as breached (checked for every open wave)."
    )
    gates: RolloutGates = Field(default_factory=RolloutGates, description="On-device latency and agreement gates.")
    report_timeout_seconds: int = Field(
        default=900, ge=60, le=7 * 86400,
        description="A device that has neither installed the new version healthily nor failed this long after "
                    "its wave opened (or after it enrolled, when later) counts as failed, so an offline device "
                    "never holds a rollout forever.",
    )
    install_retries: int = Field(
        default=3, ge=0, le=20,
        description="Transient install failures (download, disk) a device retries, with backoff, before the "
                    "install counts as failed. Permanent ones (bad signature, failed smoke test) count at once.",
    )
    paused: bool = Field(
        default=False,
        description="Open no further wave. A breach in the open waves still halts and rolls back.",
    )

    @field_validator("waves")
    @classmethod
    def _waves_rise_to_100(cls, waves: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(waves, waves[1:])) or waves[-1] != 100:
            raise ValueError(f"{WAVES_RULE}, got {waves}")
        return waves


class EdgeTarget(WireModel):
    """A bundle for edge devices, built for one on-device runtime."""

    # Mirrors Targets._unique_edge_names' precision check; precision is always set by the CRD default.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel(
            f"self.precision == '{AUTO}' || "
            + " || ".join(f"(self.runtime == '{runtime.value}' && self.precision in {list(precisions)})"
                          for runtime, precisions in EDGE_PRECISIONS.items()),
            EDGE_PRECISION_RULE,
        )
    }

    # max_length repeats the pattern's limit so the API server can bound the cost of the uniqueness rule.
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of this target, unique within the resource.")
    runtime: EdgeRuntime = Field(description="On-device runtime: ncnn (converted through pnnx) or tflite (LiteRT).")
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        default=AUTO,
        description="Weight storage precision. auto (default) builds every precision the runtime supports and ships "
                    "the fastest (median, timed interleaved) that meets the SLOs (ties within 10%: the smaller). ncnn builds fp32, "
                    "fp16 and int8 (ncnn2table's calibration on dataset.calibration, then ncnn2int8); tflite builds "
                    "fp32 and int8 (full-integer, ai-edge-quantizer calibrated on dataset.calibration).",
    )
    device_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Labels an EdgeDevice must carry to receive this bundle. Empty selects every device.",
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="How a new bundle reaches the selected devices. Default: one canary device, then waves of "
                    "10, 50 and 100 percent, each baked 300 s, halted and rolled back on failures or gate breaches.",
    )


class Targets(WireModel):
    """Where the compressed model goes."""

    triton: TritonTarget | None = Field(default=None, description="Cloud serving through Triton.")
    edge: list[EdgeTarget] = Field(
        default_factory=list,
        max_length=16,
        description="Edge bundles, one per runtime and device class.",
        json_schema_extra=_cel("self.all(a, self.exists_one(b, b.name == a.name))", "edge target names must be unique"),
    )

    @model_validator(mode="after")
    def _unique_edge_names(self) -> "Targets":
        names = [t.name for t in self.edge]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"edge target names must be unique, repeated: {', '.join(dupes)}")
        for t in self.edge:
            if t.precision != AUTO and t.precision not in EDGE_PRECISIONS[t.runtime]:
                raise ValueError(f"edge target {t.name!r}: {EDGE_PRECISION_RULE}, not {t.precision!r}")
        return self


class LatencyBudget(WireModel):
    """p95 latency limits per runtime, in milliseconds, for one batch of the benchmark batch size."""

    onnxruntime: float | None = Field(default=None, gt=0, description="p95 limit for ONNX artifacts in onnxruntime.")
    ncnn: float | None = Field(default=None, gt=0, description="p95 limit for ncnn artifacts.")
    tflite: float | None = Field(default=None, gt=0, description="p95 limit for TFLite artifacts in the LiteRT interpreter.")
    triton: float | None = Field(default=None, gt=0, description="p95 limit for requests served by Triton.")


class SLO(WireModel):
    """What a compressed artifact must meet before it ships."""

    max_accuracy_drop_points: float = Field(
        default=1.0, ge=0, le=100,
        description="Largest allowed accuracy loss versus the fp32 baseline, in percentage points (metric top1).",
    )
    min_fidelity_cosine: float = Field(
        default=0.99, ge=-1, le=1,
        description="Smallest allowed mean cosine similarity of an artifact's outputs with the fp32 baseline's over "
                    "the evaluation samples (metric fidelity).",
    )
    min_fidelity_snr_db: float | None = Field(
        default=None, ge=-200, le=200,
        description="Smallest allowed mean signal-to-noise ratio, in dB, of an artifact's outputs against the fp32 "
                    "baseline's over the evaluation samples (metric fidelity); unset, not checked.",
    )
    latency_p95_ms: LatencyBudget = Field(default_factory=LatencyBudget, description="p95 latency limits per runtime.")
    max_size_bytes: int | None = Field(default=None, ge=1, description="Largest allowed artifact size in bytes.")


class Benchmark(WireModel):
    """How latency is measured."""

    threads: int = Field(default=1, ge=1, le=256, description="Intra-op threads given to each runtime.")
    warmup_runs: int = Field(default=10, ge=0, le=10000, description="Untimed runs before measuring.")
    runs: int = Field(default=100, ge=10, le=100000, description="Timed runs; p50 and p95 are taken over these.")


class ResourceList(WireModel):
    """CPU and memory quantities, as Kubernetes writes them (500m, 2, 1Gi)."""

    cpu: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU, such as 500m or 2.")
    memory: str | None = Field(
        default=None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|e[0-9]+)?$", description="Memory, such as 2Gi."
    )


class WorkerResources(WireModel):
    """Requests and limits of the worker container."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="1", memory="2Gi"), description="Guaranteed resources."
    )
    limits: ResourceList = Field(default_factory=lambda: ResourceList(memory="8Gi"), description="Upper bounds.")


class Worker(WireModel):
    """How the worker Jobs run."""

    resources: WorkerResources = Field(default_factory=WorkerResources, description="Container resources.")
    backoff_limit: int = Field(default=2, ge=0, le=20, description="Retries after retryable failures (exit codes 128 "
                                                                   "and above, but 137, an out-of-memory kill).")
    active_deadline_seconds: int = Field(default=3600, ge=60, le=86400, description="Wall-time limit of one Job.")
    ttl_seconds_after_finished: int = Field(
        default=86400, ge=0, description="How long finished Jobs stay for inspection before Kubernetes deletes them."
    )


class CompressedModelSpec(WireModel):
    """Desired state: a trained model, the data to judge it by, the variants to build and where they go."""

    # Mirrors _triton_precision_is_built. The CRD defaults triton.precision, so it is always set;
    # ['int8-static'] is the default of compression.precisions.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel(
            "!has(self.targets) || !has(self.targets.triton) || self.targets.triton.precision in ['auto', 'fp32']"
            " || self.targets.triton.precision in"
            " (has(self.compression) && has(self.compression.precisions) ? self.compression.precisions : ['int8-static'])",
            "targets.triton.precision must be auto, fp32 or one of compression.precisions",
        )
    }

    source: Source = Field(description="The trained model.")
    dataset: Dataset = Field(description="Calibration and evaluation data.")
    compression: Compression = Field(default_factory=Compression, description="Variants to produce.")
    targets: Targets = Field(default_factory=Targets, description="Delivery targets.")
    slo: SLO = Field(default_factory=SLO, description="Service-level objectives every shipped artifact must meet.")
    benchmark: Benchmark = Field(default_factory=Benchmark, description="Latency measurement settings.")
    worker: Worker = Field(default_factory=Worker, description="How the worker Jobs run.")
    artifact_policy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="What happens to stored artifacts when the resource is deleted."
    )

    @model_validator(mode="after")
    def _triton_precision_is_built(self) -> "CompressedModelSpec":
        triton = self.targets.triton
        built = [AUTO, Precision.fp32, *self.compression.precisions]
        if triton and triton.precision not in built:
            raise ValueError(
                f"targets.triton.precision {triton.precision!r} must be one of compression.precisions "
                f"{list(self.compression.precisions)} (or auto, fp32)"
            )
        return self


class Condition(WireModel):
    """One aspect of the resource's state (Kubernetes API conventions)."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316, description="Condition type, such as Ready or SLOMet.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(pattern=REASON_PATTERN, max_length=1024, description="CamelCase word a program can match on.")
    message: str = Field(default="", max_length=32768, description="Explanation for people.")
    last_transition_time: str = Field(description="When status last changed, RFC 3339.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation this condition was computed from.")


class Artifact(WireModel):
    """A produced, stored artifact."""

    name: str = Field(description="Artifact name, such as onnx-int8-static or ncnn-fp16.")
    runtime: str = Field(description="Runtime that serves it.")
    precision: str = Field(description="Numeric precision.")
    uri: str = Field(description="Where it is stored.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the artifact.")
    size_bytes: int = Field(ge=0, description="Size in bytes.")


class ArtifactEvaluation(WireModel):
    """Quality and latency of one artifact."""

    name: str = Field(description="Artifact name.")
    accuracy: float | None = Field(default=None, description="Top-1 accuracy on the evaluation set, in percent (metric top1).")
    accuracy_drop_points: float | None = Field(
        default=None, description="Baseline accuracy minus this accuracy, in percentage points (metric top1).")
    fidelity_cosine: float | None = Field(
        default=None, description="Mean cosine similarity of the outputs with the fp32 baseline's.")
    fidelity_snr_db: float | None = Field(
        default=None, description="Mean signal-to-noise ratio of the outputs against the fp32 baseline's, in dB.")
    latency_p50_ms: float = Field(description="Median latency in milliseconds.")
    latency_p95_ms: float = Field(description="95th percentile latency in milliseconds.")


class Evaluation(WireModel):
    """Baseline versus compressed figures."""

    baseline_accuracy: float | None = Field(
        default=None, description="Top-1 accuracy of the fp32 ONNX baseline, in percent (metric top1).")
    artifacts: list[ArtifactEvaluation] = Field(default_factory=list, description="Figures per artifact.")
    int8_accuracy_drop_points: float | None = Field(default=None, description="Accuracy drop of the int8 artifact, for the printer column.")
    int8_size_bytes: int | None = Field(default=None, description="Size of the int8 artifact, for the printer column.")


class EdgeBundleStatus(WireModel):
    """The newest bundle of one edge target: its version, what it is built from, and its manifest once built.

    Versions grow per resource and target and are recorded here before the bundle Job runs, so a restarted
    operator assigns the same one, and a version is never given to other content.
    """

    target: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The edge target.")
    version: int = Field(ge=1, le=(1 << 53) - 1, description="The bundle version.")
    source: str = Field(max_length=512, description="What the bundle is built from: `<compress hash>/<artifact>`.")
    artifact: str = Field(max_length=253, description="The artifact the bundle carries.")
    manifest_sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN,
        description="sha256 of the signed manifest's payload once the bundle is built; unset while it is built.",
    )


class EdgeRolloutStatus(WireModel):
    """Rollout of one edge target: the state the rollout decisions read back, and what they counted.

    No per-device entry: which wave a device is in follows from `salt`, `waveBounds` and a hash of its name.
    """

    target: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The edge target.")
    version: int = Field(ge=1, le=(1 << 53) - 1, description="The bundle version being rolled out.")
    previous_version: int | None = Field(
        default=None, ge=1, le=(1 << 53) - 1,
        description="The version devices fall back to: the last one rolled out completely. Unset: none yet.",
    )
    salt: str = Field(max_length=512, description="Hashed with each device name into its position (0 to 100).")
    wave_bounds: list[float] = Field(
        default_factory=list, max_length=21,
        description="Upper position bound of each wave, the canary first, fixed when the canary opened.",
    )
    wave_opened_at: list[str] = Field(
        default_factory=list, max_length=21, description="When each open wave opened, RFC 3339, the canary first.",
    )
    current_wave: int = Field(default=-1, ge=-1, description="Index of the last open wave (0: the canary; -1: none).")
    halted: str | None = Field(
        default=None, pattern=REASON_PATTERN,
        description="Why the rollout halted (FailureThreshold, LatencyGate, AgreementGate); it stays halted "
                    "until the version changes.",
    )
    message: str = Field(default="", max_length=32768, description="The last decision, for people.")
    rolled_back: bool = Field(default=False, description="Devices are pointed back at previousVersion.")
    completed: bool = Field(default=False, description="Every wave opened, baked and passed.")
    changed_at: str | None = Field(
        default=None,
        description="When the devices' desired versions last changed (a wave opened, a halt, a new version), "
                    "RFC 3339 to the millisecond: the fleet gateway's desired-state sequence never falls below it.",
    )
    desired: int = Field(default=0, ge=0, description="Devices the target's deviceSelector selects.")
    updated: int = Field(default=0, ge=0, description="Devices that report the new version installed.")
    healthy: int = Field(default=0, ge=0, description="Updated devices that report themselves healthy.")
    failed: int = Field(
        default=0, ge=0,
        description="Devices of open waves that failed: unhealthy, install failed past its retries, or silent "
                    "past reportTimeoutSeconds.",
    )
    measured: int = Field(default=0, ge=0, description="Updated devices that reported their own p95 latency.")
    slow: int = Field(default=0, ge=0, description="Measured devices whose own p95 is over the latency gate.")
    disagreeing: int = Field(
        default=0, ge=0, description="Updated devices whose golden-set agreement is below the agreement gate.")


class CompressedModelStatus(WireModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(default=None, description="The generation the status was computed from.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions, one per type.")
    artifacts: list[Artifact] = Field(default_factory=list, description="Artifacts of the observed generation.")
    evaluation: Evaluation | None = Field(default=None, description="Accuracy and latency figures.")
    chosen: str | None = Field(
        default=None,
        description="The artifact each target ships, in one line: `triton=onnx-fp32 phones=ncnn-fp16-phones`.",
    )
    choices: list[TargetChoice] = Field(
        default_factory=list, description="Per target, the artifact it ships and why each other candidate lost.")
    spec_hashes: dict[str, str] = Field(
        default_factory=dict,
        description="Per stage (compress, publish), the hash of the spec parts that stage depends on, as the "
                    "conditions describe it: a spec change that leaves a stage's hash alone does not run it again.",
    )
    retry: str | None = Field(
        default=None,
        description="The value of the modelfleet.io/retry annotation the operator last honoured; setting the "
                    "annotation to a new value runs the failed stages once more.",
    )
    bundles: list[EdgeBundleStatus] = Field(
        default_factory=list, description="Per edge target, its newest signed bundle (built or being built).")
    rollouts: list[EdgeRolloutStatus] = Field(
        default_factory=list, description="Per edge target, the rollout of its current bundle to the devices.")


class ObjectMeta(WireModel):
    """The part of Kubernetes object metadata that manifests set."""

    model_config = WireModel.model_config | {"extra": "allow"}

    name: str = Field(pattern=DNS_LABEL_PATTERN, description=f"Resource name, at most {MAX_NAME_LENGTH} characters.")
    namespace: str | None = Field(default=None, description="Namespace.")
    generation: int | None = Field(default=None, description="Spec generation, set by the API server.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")

    @field_validator("name")
    @classmethod
    def _name_leaves_room_for_job_names(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"{NAME_TOO_LONG} ({name!r} has {len(name)})")
        return name


class CompressedModel(WireModel):
    """A trained model to compress, validate and deliver to Triton and edge fleets."""

    # Mirrors ObjectMeta._name_leaves_room_for_job_names; the API server lets a root rule read metadata.name.
    model_config = WireModel.model_config | {
        "json_schema_extra": _cel(f"self.metadata.name.size() <= {MAX_NAME_LENGTH}", NAME_TOO_LONG)
    }

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(alias="apiVersion", description="API version.")
    kind: Literal["CompressedModel"] = Field(description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: CompressedModelSpec = Field(description="Desired state.")
    status: CompressedModelStatus | None = Field(default=None, description="Observed state.")
