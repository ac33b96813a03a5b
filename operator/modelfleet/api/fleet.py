"""What device agents and the fleet gateway say to each other over HTTP (besides the signed documents of
`modelfleet.api.bundle`): enrollment and reports. The gateway's OpenAPI document is generated from these.

Routes (all under the gateway's base URL, JSON bodies, camelCase):

- `POST /v1/enroll`, `Authorization: Bearer <bootstrap token>` (the `token` key of the Secret
  `modelfleet-bootstrap` in the device's namespace): `EnrollRequest` -> 201 `EnrollResponse`; creates the
  EdgeDevice. 409 when that device is enrolled already.
- `GET /v1/devices/{namespace}/{device}/desired-state`, `Authorization: Bearer <credential>`: the signed
  `DesiredState` envelope; `ETag` / `If-None-Match` -> 304.
- `POST /v1/devices/{namespace}/{device}/report`, `Authorization: Bearer <credential>`: `AgentReport` -> 204.
- `GET /v1/devices/{namespace}/{device}/bundles/{model}/{target}/{version}/{path}`: one file of a bundle the
  device's desired state names (`manifest.json` first), with HTTP Range; or a redirect to a presigned URL.
"""

from typing import Literal

from pydantic import Field

from modelfleet.api.base import WireModel
from modelfleet.api.bundle import SEMVER_PATTERN
from modelfleet.api.compressedmodel import DNS_LABEL_PATTERN, REASON_PATTERN
from modelfleet.api.edgedevice import DeviceTargetStatus
from modelfleet.api.paths import DNS_SUBDOMAIN_PATTERN

__all__ = ["AgentReport", "EnrollRequest", "EnrollResponse", "FleetError", "LABEL_KEY_PATTERN",
           "LABEL_VALUE_PATTERN"]

# Kubernetes label syntax: an optional DNS-subdomain prefix and a name; values up to 63 characters.
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


class EnrollRequest(WireModel):
    """A device asking to join the fleet of a namespace."""

    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace to enrol in.")
    device: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
                        description="Name of the EdgeDevice to create, unique in the namespace.")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32,
                                   description="Labels of the EdgeDevice: its class (modelfleet.io/class) and other "
                                               "traits that edge targets' deviceSelectors match.")
    agent_version: str = Field(pattern=SEMVER_PATTERN, description="Version of the agent, major.minor.patch.")


class EnrollResponse(WireModel):
    """The device's own credential: shown once, stored by the gateway only as a hash."""

    namespace: str = Field(description="Namespace of the EdgeDevice.")
    device: str = Field(description="Name of the EdgeDevice.")
    credential: str = Field(description="Bearer credential for every later call of this device.")


class AgentReport(WireModel):
    """What an agent reports about itself: the whole picture each time, so a lost report loses nothing."""

    agent_version: str = Field(pattern=SEMVER_PATTERN, description="Version of the agent.")
    targets: list[DeviceTargetStatus] = Field(default_factory=list, max_length=64,
                                              description="Per CompressedModel edge target, what the device runs.")
    desired_sequence: int | None = Field(default=None, ge=1,
                                         description="Sequence of the last desired state the agent trusted.")


class FleetError(WireModel):
    """Every 4xx/5xx answer of the gateway."""

    reason: str = Field(pattern=REASON_PATTERN, description="CamelCase word, such as Unauthorized.")
    message: str = Field(description="Explanation for people.")
    kind: Literal["FleetError"] = Field(default="FleetError", description="What this document is.")
