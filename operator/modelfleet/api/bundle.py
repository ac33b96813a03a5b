"""Edge bundles and the documents that deliver them: the bundle manifest, the signed envelope, desired state.

A bundle is what one edge target gets for one version: the model files its runtime loads, `smoke.npz` (golden
inputs and the fp32 baseline's outputs for them) and `manifest.json`, a `BundleManifest` inside a
`SignedEnvelope` (see `modelfleet.signing`). The `DesiredState` the fleet gateway serves each device travels
signed the same way: which bundle version each target should run, with a sequence number and an expiry, so that
an agent can tell a replayed or frozen answer from a fresh one (TUF's timestamp role).

Everything here reaches devices from a network and is treated as hostile: paths are confined (a conservative
character set, no absolute paths, no `..`), lists are bounded, times carry a zone and are kept in UTC.
No I/O here; `schemas/` holds the JSON schemas generated from these models (`modelfleet.crdgen`).
"""

from datetime import datetime, timezone
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, Field, model_validator

from modelfleet.api.base import WireModel
from modelfleet.api.compressedmodel import API_VERSION, DNS_LABEL_PATTERN, SHA256_PATTERN, EdgeRuntime
from modelfleet.api.paths import DNS_SUBDOMAIN_PATTERN, relative_path_problem
from modelfleet.api.result import ModelSignature

__all__ = ["BUNDLE_PATH_PATTERN", "KEY_ID_PATTERN", "MANIFEST_FILE", "SEMVER_PATTERN", "BundleFile", "BundleManifest",
           "BundlePath", "BundleRef", "DesiredState", "EnvelopeSignature", "SignedEnvelope", "SmokeCheck",
           "TrustRecord", "UtcDateTime"]

MANIFEST_FILE = "manifest.json"  # in the bundle: the SignedEnvelope whose payload is the BundleManifest
# One path segment: a letter, digit or underscore first (so never '.', '..' or a hidden file), then letters,
# digits, '.', '_' and '-'. No separators, backslashes, NUL, control characters or look-alike Unicode.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
BUNDLE_PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$"
MAX_BUNDLE_PATH = 255
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
SEMVER_PATTERN = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$"
MAX_FILES = 256
MAX_BUNDLES = 64


def _inside_the_bundle(path: str) -> str:
    # The pattern already refuses all of these; this says which rule a path broke, in words.
    problem = relative_path_problem(path)
    if problem:
        raise ValueError(f"a bundle's paths must stay inside the bundle: {problem}")
    return path


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


# A path relative to the bundle's directory (or, for BundleRef.url, to the gateway's base URL).
BundlePath = Annotated[str, AfterValidator(_inside_the_bundle),
                       Field(pattern=BUNDLE_PATH_PATTERN, min_length=1, max_length=MAX_BUNDLE_PATH)]
# An instant with a zone (a naive time is refused), kept in UTC so that equal instants serialise alike.
UtcDateTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class BundleFile(WireModel):
    """One file of a bundle, with what it must hash to."""

    path: BundlePath = Field(description="Path inside the bundle: letters, digits, '.', '_', '-' and '/' "
                                         "between segments; absolute paths, '..' and hidden files are refused.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the file's bytes, lowercase hex.")
    size_bytes: int = Field(ge=0, le=1 << 40, description="Size of the file in bytes.")


class SmokeCheck(WireModel):
    """How the agent checks an installed bundle before switching to it: the golden inputs through the runtime."""

    file: BundlePath = Field(
        default="smoke.npz",
        description="npz file of the bundle holding `inputs` (golden inputs, batched) and `outputs` (the fp32 "
                    "baseline's outputs for them).",
    )
    max_abs_diff: float | None = Field(
        default=None, gt=0,
        description="Largest allowed absolute difference between the runtime's outputs and the golden outputs.",
    )
    min_cosine: float | None = Field(
        default=None, ge=-1, le=1,
        description="Smallest allowed cosine similarity, per sample, of the runtime's outputs with the golden "
                    "outputs (what the pipeline's fidelity metric measures; a quantized model rarely meets a tight "
                    "absolute tolerance against fp32).",
    )

    @model_validator(mode="after")
    def _some_tolerance(self) -> "SmokeCheck":
        if self.max_abs_diff is None and self.min_cosine is None:
            raise ValueError("a smoke check needs maxAbsDiff, minCosine or both")
        return self


class BundleManifest(WireModel):
    """`manifest.json` of an edge bundle: what it holds, for which target and version, until when it is valid.

    Signed by the worker that builds the bundle. An agent installs it only when the signed desired state names
    this manifest's sha256, every file hashes as listed, it has not expired and its version is not below the
    installed one (unless the desired state orders that rollback).
    """

    PAYLOAD_TYPE: ClassVar[str] = "application/vnd.modelfleet.bundle-manifest+json"

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion",
                                                           description="Version of this format.")
    kind: Literal["BundleManifest"] = Field(default="BundleManifest", description="What this document is.")
    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63,
                           description="Namespace of the CompressedModel the bundle was built from.")
    model: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of that CompressedModel.")
    target: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of the edge target.")
    version: int = Field(ge=1, le=(1 << 53) - 1,
                         description="Bundle version, increasing with every bundle of this model and target.")
    runtime: EdgeRuntime = Field(description="The runtime that loads the model files: ncnn or tflite.")
    precision: Literal["fp32", "fp16", "int8"] = Field(description="Precision the model's weights are stored in.")
    signature: ModelSignature = Field(description="Names, element types and shapes of the model's inputs and "
                                                  "outputs.")
    model_files: list[BundlePath] = Field(
        min_length=1, max_length=8,
        description="The files the runtime loads, in load order (ncnn: the .param, then the .bin; tflite: the "
                    ".tflite); each one is listed in files.",
    )
    files: list[BundleFile] = Field(min_length=1, max_length=MAX_FILES,
                                    description="Every file of the bundle except manifest.json, with its sha256 "
                                                "and size.")
    smoke: SmokeCheck = Field(description="The smoke test the agent runs before it switches to this version.")
    device_selector: dict[str, str] = Field(
        default_factory=dict, max_length=32,
        description="Labels a device must carry for this bundle, from the edge target; empty selects every device.",
    )
    created: UtcDateTime = Field(description="When the bundle was built, RFC 3339 with a zone.")
    expires: UtcDateTime = Field(description="After this instant (plus the agent's clock-skew allowance) agents "
                                             "refuse the manifest.")
    min_agent_version: str = Field(default="0.1.0", pattern=SEMVER_PATTERN,
                                   description="Oldest agent version (major.minor.patch) that can install it.")

    @model_validator(mode="after")
    def _consistent(self) -> "BundleManifest":
        if self.expires <= self.created:
            raise ValueError("expires must be after created")
        paths = [f.path for f in self.files]
        folded = [p.lower() for p in paths]
        repeated = sorted({p for p in paths if folded.count(p.lower()) > 1})
        if repeated:
            raise ValueError(f"files are listed twice (letter case ignored): {', '.join(repeated)}")
        # "a" and "a/b" cannot both be files.
        directories = {"/".join(segments[:i]) for p in folded for segments in [p.split("/")]
                       for i in range(1, len(segments))}
        clashes = sorted(p for p in paths if p.lower() in directories)
        if clashes:
            raise ValueError(f"paths used as a file and as a directory: {', '.join(clashes)}")
        if MANIFEST_FILE in folded:
            raise ValueError(f"{MANIFEST_FILE} is the manifest itself and is not listed in files")
        unlisted = [p for p in (*self.model_files, self.smoke.file) if p not in paths]
        if unlisted:
            raise ValueError(f"modelFiles and smoke.file must be listed in files: {', '.join(unlisted)}")
        if len(set(self.model_files)) != len(self.model_files):
            raise ValueError("modelFiles names a file twice")
        return self


class EnvelopeSignature(WireModel):
    """One signature over a signed envelope's payload."""

    key_id: str = Field(pattern=KEY_ID_PATTERN,
                        description="Which key signed: the first 16 hex digits of the sha256 of its raw ed25519 "
                                    "public key. Only a hint for finding the key; the key itself is the verifier's.")
    sig: str = Field(min_length=1, max_length=128, description="The ed25519 signature, base64 (standard alphabet).")


class SignedEnvelope(WireModel):
    """A signed document (shaped like DSSE): the payload's exact bytes, base64, and signatures over them.

    Each signature is ed25519 over DSSE's pre-authentication encoding of payloadType and the payload bytes, so a
    signature made for one kind of document cannot pass for another. The payload is canonical JSON; verifiers
    check the signature over the bytes as received and parse only what verified.
    """

    payload_type: str = Field(
        pattern=r"^application/vnd\.modelfleet\.[a-z-]+\+json$", max_length=128,
        description="Media type of the payload, such as application/vnd.modelfleet.bundle-manifest+json.",
    )
    payload: str = Field(min_length=1, max_length=1 << 20, description="The payload's bytes, base64 (standard "
                                                                       "alphabet).")
    signatures: list[EnvelopeSignature] = Field(min_length=1, max_length=8, description="Signatures over the "
                                                                                        "payload.")


class BundleRef(WireModel):
    """The bundle one target of one model should run on the device."""

    model: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of the CompressedModel.")
    target: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of its edge target.")
    version: int = Field(ge=1, le=(1 << 53) - 1, description="Bundle version to run.")
    manifest_sha256: str = Field(pattern=SHA256_PATTERN,
                                 description="sha256 of the manifest's payload bytes (the signed canonical JSON): "
                                             "the only manifest the agent accepts for this target.")
    url: BundlePath = Field(description="Where the bundle is downloaded, relative to the gateway's base URL "
                                        "(relative, so that a desired state cannot send an agent to another host).")
    rollback: bool = Field(default=False,
                           description="True orders a rollback: the agent installs this version even when it is "
                                       "below the installed one, which it otherwise refuses.")


class DesiredState(WireModel):
    """What one device should run, signed by the fleet gateway: TUF's timestamp role for one device.

    The sequence increases with every document the gateway signs for the device, and the document expires soon:
    an agent refuses a lower sequence (a replayed answer) and an expired document (a frozen one).
    """

    PAYLOAD_TYPE: ClassVar[str] = "application/vnd.modelfleet.desired-state+json"

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion",
                                                           description="Version of this format.")
    kind: Literal["DesiredState"] = Field(default="DesiredState", description="What this document is.")
    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace of the EdgeDevice.")
    device: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Name of the EdgeDevice.")
    sequence: int = Field(ge=1, le=(1 << 53) - 1,
                          description="Increases with every desired state signed for this device.")
    issued: UtcDateTime = Field(description="When the gateway signed it.")
    expires: UtcDateTime = Field(description="After this instant (plus the agent's clock-skew allowance) agents "
                                             "refuse it as frozen.")
    bundles: list[BundleRef] = Field(default_factory=list, max_length=MAX_BUNDLES,
                                     description="One bundle per model and edge target the device should run.")

    @model_validator(mode="after")
    def _consistent(self) -> "DesiredState":
        if self.expires <= self.issued:
            raise ValueError("expires must be after issued")
        keys = [(b.model, b.target) for b in self.bundles]
        repeated = sorted({f"{m}/{t}" for m, t in keys if keys.count((m, t)) > 1})
        if repeated:
            raise ValueError(f"one bundle per model and target, repeated: {', '.join(repeated)}")
        return self

    def bundle_for(self, model: str, target: str) -> BundleRef | None:
        """The bundle ordered for a model's target, or None."""
        return next((b for b in self.bundles if (b.model, b.target) == (model, target)), None)


class TrustRecord(WireModel):
    """What a device agent persists after it verified a desired state (before acting on it).

    Restored on start, it keeps a restarted agent from accepting a desired state older than the last one it
    trusted, and from trusting a clock that went back (issued bounds the reference time from below).
    """

    api_version: Literal["modelfleet.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion",
                                                           description="Version of this format.")
    kind: Literal["AgentTrustRecord"] = Field(default="AgentTrustRecord", description="What this document is.")
    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace of the EdgeDevice.")
    device: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Name of the EdgeDevice.")
    sequence: int = Field(ge=1, description="Sequence of the last trusted desired state.")
    issued: UtcDateTime = Field(description="When that desired state was issued.")
    desired_state_sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of its payload bytes.")
