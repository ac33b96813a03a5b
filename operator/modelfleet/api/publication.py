"""What publishing to Triton writes: the ownership record in the repository and the outcome."""

from typing import Literal

from pydantic import Field

from modelfleet.api.base import WireModel


VersionState = Literal["pending", "written", "served", "rolledBack"]
VERIFIED_STATES: tuple[VersionState, ...] = ("written", "served")


class PublishedVersion(WireModel):
    """One version modelfleet wrote into the repository."""

    version: int = Field(description="Triton model version.")
    artifact: str = Field(description="Artifact name, such as onnx-int8-static.")
    sha256: str = Field(description="sha256 of model.onnx.")
    generation: int | None = Field(default=None, description="Resource generation the artifact was built from.")
    state: VersionState = Field(
        description="pending: recorded before its files were written, neither verified nor rolled back yet; "
                    "served: verified on a server; written: verified without a server (none was given); "
                    "rolledBack: removed again."
    )
    previous_config: str | None = Field(
        default=None,
        description="While pending: config.pbtxt as it was before this version was written (absent: there was none), "
                    "what a rollback restores.",
    )


class RepositoryRecord(WireModel):
    """`<model>/modelfleet.json` in the model repository: who owns the model and which versions were used.

    Versions are never reused: the next one is above both lastVersion and every directory present.
    A version is recorded as pending before any of its files is written, so an attempt killed at any
    point leaves a record from which the next attempt restores the previous state.
    """

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default="modelfleet.io/v1alpha1", alias="apiVersion")
    kind: Literal["TritonModelRecord"] = "TritonModelRecord"
    owner: str = Field(description="namespace/name of the CompressedModel that publishes this model.")
    last_version: int = Field(ge=0, description="Highest version number ever written.")
    versions: list[PublishedVersion] = Field(
        default_factory=list,
        description="Oldest first: every version still in the repository or pending, and the most recent others.",
    )


class ServingLatency(WireModel):
    """Latency of the served model, measured through Triton."""

    p50_ms: float = Field(description="Median request latency seen by the client, in milliseconds.")
    p95_ms: float = Field(description="95th percentile request latency seen by the client, in milliseconds.")
    requests: int = Field(description="Requests timed (batch size 1).")
    server_avg_us: float | None = Field(
        default=None, description="Triton's own average request duration over those requests (statistics API), in microseconds."
    )


class TritonPublication(WireModel):
    """The outcome of publishing one artifact to a Triton model repository (and server)."""

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default="modelfleet.io/v1alpha1", alias="apiVersion")
    kind: Literal["TritonPublication"] = "TritonPublication"
    model_name: str = Field(description="Model name in the repository.")
    repository: str = Field(description="Repository URI.")
    artifact: str = Field(description="Artifact published.")
    version: int = Field(description="Version written for it.")
    state: Literal["Written", "Served", "Failed"] = Field(
        description="Written: in the repository, no server given; Served: loaded and verified; Failed: rolled back."
    )
    reason: str = Field(description="CamelCase reason, such as Served, LoadFailed or SmokeMismatch.")
    message: str = Field(description="What happened, for people; on failure it carries Triton's own error text.")
    ready_seconds: float | None = Field(
        default=None, description="From the load request (or the write, in poll mode) until Triton reported the version ready."
    )
    served_versions: list[int] = Field(default_factory=list, description="Versions Triton serves afterwards.")
    latency: ServingLatency | None = Field(default=None, description="Serving latency, when measured.")
    latency_slo_ms: float | None = Field(default=None, description="The Triton p95 SLO it was held to.")
