"""The `EdgeDevice` resource (modelfleet.io/v1alpha1): one enrolled device and what it reports.

Labels carry the device's class (`modelfleet.io/class`, or any label an edge target's `deviceSelector`
matches). The status is the device's last report: per CompressedModel edge target the installed and the
previous bundle, health, the last smoke test and the latency measured on the device; besides, the agent
version, when it was last seen and its last error. `health`, `installed` and `p95Ms` at the top of the
status sum the targets up for `kubectl get edgedevices` (see `modelfleet.domain.device.fleet_columns`).
"""

from enum import Enum
from typing import Literal

from pydantic import Field

from modelfleet.api.base import WireModel
from modelfleet.api.compressedmodel import DNS_LABEL_PATTERN, REASON_PATTERN, SHA256_PATTERN, Condition
from modelfleet.api.paths import DNS_SUBDOMAIN_PATTERN

__all__ = ["CLASS_LABEL", "DeviceError", "DeviceHealth", "DeviceLatency", "DeviceTargetStatus", "EdgeDevice",
           "EdgeDeviceSpec", "EdgeDeviceStatus", "InstalledBundle", "SmokeTest"]

# The label `kubectl get edgedevices` shows as the device's class; deviceSelector may match any label.
CLASS_LABEL = "modelfleet.io/class"
# Bundle versions are integers that grow per model and target (`modelfleet.api.bundle`), exact in JSON.
MAX_VERSION = (1 << 53) - 1


class DeviceHealth(str, Enum):
    """How a device judges a target's bundle."""

    healthy = "Healthy"
    degraded = "Degraded"
    failed = "Failed"
    unknown = "Unknown"


class InstalledBundle(WireModel):
    """A bundle installed on the device."""

    artifact: str = Field(min_length=1, max_length=253,
                          description="The artifact the bundle carries, such as ncnn-fp16-phones.")
    version: int = Field(ge=1, le=MAX_VERSION, description="The bundle version.")
    bundle_sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the bundle archive, lowercase hex.")
    since: str = Field(description="When the device switched to this bundle, RFC 3339.")


class SmokeTest(WireModel):
    """The device's last run of the bundle's golden set."""

    agreement: float = Field(
        ge=-1, le=1,
        description="Mean cosine similarity of the device's outputs with the reference outputs in the bundle.",
    )
    passed: bool = Field(description="Whether the agreement met the bundle's own threshold.")
    at: str | None = Field(default=None, description="When it ran, RFC 3339.")


class DeviceLatency(WireModel):
    """Inference latency measured on the device, in milliseconds."""

    p50_ms: float = Field(ge=0, description="Median latency.")
    p95_ms: float = Field(ge=0, description="95th percentile latency.")


# Every reason a modelfleet agent reports (its refusals, modelfleet.agent.errors, and its install steps). The field
# takes any CamelCase word, so newer agents can say more; metrics count only these and call the rest Other.
DEVICE_ERROR_REASONS = frozenset({
    # a document or bundle refused (modelfleet.agent.errors)
    "Malformed", "UnknownKey", "TamperedDesiredState", "TamperedManifest", "InvalidDesiredState", "InvalidManifest",
    "WrongDevice", "Replayed", "SequenceReused", "Frozen", "IssuedInFuture", "NoDesiredState", "NotOrdered",
    "WrongBundle", "Downgrade", "Expired", "AgentTooOld", "FileSetMismatch", "TamperedFile",
    # the device's own state
    "TrustRecordCorrupt", "ActiveTampered",
    # an install step
    "DownloadFailed", "UnpackFailed", "SwitchFailed", "SmokeTestFailed", "HookFailed",
})


class DeviceError(WireModel):
    """The last thing that went wrong on the device for a target."""

    reason: str = Field(pattern=REASON_PATTERN, max_length=1024, description="CamelCase word, such as DownloadFailed.")
    message: str = Field(default="", max_length=32768, description="Explanation for people.")
    at: str = Field(description="When it happened, RFC 3339.")
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION,
                                description="The bundle version being installed, if any.")
    attempts: int = Field(default=1, ge=1, description="Failed install attempts of that version so far.")
    transient: bool = Field(
        default=False,
        description="Whether retrying may help (download, disk space): a transient failure is retried with "
                    "backoff before the rollout counts it.",
    )


class DeviceTargetStatus(WireModel):
    """One CompressedModel edge target as the device reports it."""

    model: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The CompressedModel (same namespace).")
    target: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The edge target within it.")
    installed: InstalledBundle | None = Field(default=None, description="The bundle in service.")
    previous: InstalledBundle | None = Field(default=None, description="The bundle kept beside it for a rollback.")
    health: DeviceHealth = Field(default=DeviceHealth.unknown, description="Healthy, Degraded, Failed or Unknown.")
    last_smoke: SmokeTest | None = Field(default=None, description="The last smoke test of the installed bundle.")
    latency: DeviceLatency | None = Field(default=None, description="Latency of the installed bundle on the device.")
    last_error: DeviceError | None = Field(default=None, description="The last error, until a later install succeeds.")


class EdgeDeviceSpec(WireModel):
    """What people say about the device; its class and other selectable traits are labels."""

    display_name: str | None = Field(default=None, max_length=253, description="A name for people.")


class EdgeDeviceStatus(WireModel):
    """What the device's agent last reported."""

    observed_generation: int | None = Field(default=None, description="The generation the status was computed from.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions, one per type.")
    agent_version: str | None = Field(default=None, max_length=64, description="Version of the device agent.")
    last_seen: str | None = Field(default=None, description="When the agent last reported, RFC 3339.")
    targets: list[DeviceTargetStatus] = Field(
        default_factory=list, max_length=64, description="Per CompressedModel edge target, what the device runs.")
    health: DeviceHealth = Field(
        default=DeviceHealth.unknown,
        description="The worst health of the targets (Failed, Degraded, Unknown, Healthy); Unknown without one.",
    )
    installed: str | None = Field(
        default=None, max_length=4096,
        description="The installed version of each target in one line: `digits/phones=3 kws/phones=7`.",
    )
    p95_ms: float | None = Field(default=None, ge=0, description="The highest on-device p95 of the targets, in ms.")


class DeviceMetadata(WireModel):
    """The part of Kubernetes object metadata that manifests set."""

    model_config = WireModel.model_config | {"extra": "allow"}

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
                      description="Device name, unique in the namespace.")
    namespace: str | None = Field(default=None, description="Namespace.")
    labels: dict[str, str] = Field(
        default_factory=dict, description=f"Labels; {CLASS_LABEL} names the device class.")
    creation_timestamp: str | None = Field(default=None, description="When the device enrolled, RFC 3339 (set by "
                                                                     "the API server).")


class EdgeDevice(WireModel):
    """An enrolled edge device: its class in labels, what it runs and how that runs in status."""

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(alias="apiVersion", description="API version.")
    kind: Literal["EdgeDevice"] = Field(description="Kind.")
    metadata: DeviceMetadata = Field(description="Standard object metadata.")
    spec: EdgeDeviceSpec = Field(default_factory=EdgeDeviceSpec, description="Desired state.")
    status: EdgeDeviceStatus | None = Field(default=None, description="Observed state, reported by the device agent.")
