"""Edge bundles: the chosen artifact of each edge target, its golden data and a signed manifest.

One bundle per edge target and version, at `<bundles root>/<target>/<version>/` in the artifact store (the root is
`<artifacts>/<namespace>/<model>/bundles`): the model files the target's runtime loads under flat names
(`model.param` and `model.bin` for ncnn, `model.tflite` for TFLite), `smoke.npz` and `manifest.json`, the
`BundleManifest` signed with the worker's key (`modelfleet.signing.sign`).

**Golden data.** `smoke.npz` is the fp32 baseline's: golden inputs (the first evaluation samples) and the
outputs the ONNX fp32 baseline gives for them, as the pipeline wrote it beside `onnx-fp32/model.onnx`. A device
runs the inputs through its runtime and compares with those outputs within `SmokeCheck.min_cosine`, which
`smoke_check` derives from the artifact's own measured fidelity to fp32 (see there).

**Commit marker.** The files are written first and `manifest.json` last (atomically: rename on disk, one PUT on
S3), so a bundle without a manifest is unfinished and nobody reads it. A version is never rewritten with other
content: when a manifest exists already, a bundle listing the same files and digests is left alone (a Job
that runs again signs nothing new, so the manifest's sha256 that desired states pin stays the same), and any
other content is refused (`BundleConflict`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from modelfleet import signing
from modelfleet.api.bundle import MANIFEST_FILE, BundleFile, BundleManifest, SignedEnvelope, SmokeCheck
from modelfleet.api.compressedmodel import CompressedModel, EdgeTarget
from modelfleet.api.result import ArtifactResult, ModelSignature, ResultManifest, TensorSignature
from modelfleet.errors import PermanentError
from modelfleet.progress import Progress
from modelfleet.store import atomic_write_bytes, s3, sha256_file

__all__ = ["DEFAULT_KEY_PATH", "DEFAULT_VALID_DAYS", "MIN_AGENT_VERSION", "SMOKE_FILE", "BundleConflict",
           "BundleError", "BundlePlan", "Built", "build", "load_signing_key", "parse_versions", "plan_bundles",
           "smoke_check", "source_files"]

DEFAULT_KEY_PATH = Path("/var/run/modelfleet/bundle-signing") / signing.SECRET_KEY_FIELD
DEFAULT_VALID_DAYS = 90
MIN_AGENT_VERSION = "0.1.0"  # the first agent; raise it when a manifest needs something older agents lack
SMOKE_FILE = "smoke.npz"
# Smoke tolerance (see smoke_check): how far below the worker's measurement a device may land.
SMOKE_MARGIN = 0.005
SMOKE_FLOOR = 0.9
# The names of the model files inside a bundle, by the suffix the pipeline gives them, in load order.
_MODEL_FILES = {"ncnn": ((".param", "model.param"), (".bin", "model.bin")),
                "tflite": ((".tflite", "model.tflite"),)}
_PRECISIONS = ("fp32", "fp16", "int8")


class BundleError(PermanentError):
    """A bundle cannot be built from this result and these arguments; running again gives the same answer."""

    exit_code = 30
    reason = "BundleFailed"


class BundleConflict(BundleError):
    """The version exists already with other content; a version is never rewritten."""

    exit_code = 31
    reason = "BundleConflict"


@dataclass(frozen=True)
class BundlePlan:
    """What one bundle holds: bundle name -> path relative to the result directory, model files in load order."""

    target: EdgeTarget
    version: int
    artifact: ArtifactResult
    model_files: tuple[tuple[str, str], ...]  # (name in the bundle, path in the result)
    smoke: str  # path of the golden data in the result

    @property
    def files(self) -> tuple[tuple[str, str], ...]:
        return (*self.model_files, (SMOKE_FILE, self.smoke))


@dataclass(frozen=True)
class Built:
    """One bundle written (or found complete with the same content)."""

    target: str
    version: int
    artifact: str
    location: str
    unchanged: bool
    manifest_sha256: str


# --- arguments ---------------------------------------------------------------------------------------


def parse_versions(values: Iterable[str]) -> dict[str, int]:
    """`--version target=N` values as {target: N}; each target once, N a positive integer."""
    versions: dict[str, int] = {}
    for value in values:
        target, sep, number = value.partition("=")
        if not sep or not target or not number.isdigit() or int(number) < 1:
            raise BundleError(f"--version {value!r}: expected <edge target>=<version>, the version a positive "
                              "integer", reason="InvalidArguments")
        if target in versions:
            raise BundleError(f"--version names {target} twice", reason="InvalidArguments")
        versions[target] = int(number)
    if not versions:
        raise BundleError("no --version given: nothing to build", reason="InvalidArguments")
    return versions


def load_signing_key(path: Path) -> signing.Ed25519PrivateKey:
    """The worker's ed25519 signing key (PKCS #8 PEM, from the Secret mounted at DEFAULT_KEY_PATH)."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise BundleError(f"signing key {path}: {e.strerror or e} (mount the Secret modelfleet-bundle-signing, or "
                          "make one with `modelfleet keys generate`)", reason="SigningKeyMissing") from None
    try:
        return signing.load_private_key(pem)
    except signing.InvalidKey as e:
        raise BundleError(f"signing key {path}: {e}", reason="InvalidSigningKey") from None


# --- planning (pure) ---------------------------------------------------------------------------------


def plan_bundles(model: CompressedModel, result: ResultManifest, versions: dict[str, int]) -> list[BundlePlan]:
    """The bundle of every target in `versions`, from the artifacts `result` chose (judged under the model's spec,
    see `modelfleet.domain.choice.rejudged`). Every problem is found before anything is written."""
    targets = {t.name: t for t in model.spec.targets.edge}
    unknown = sorted(set(versions) - set(targets))
    if unknown:
        raise BundleError(f"--version names {', '.join(unknown)}, not an edge target of {model.metadata.name} "
                          f"(its edge targets: {', '.join(targets) or 'none'})", reason="UnknownTarget")
    smoke = _golden_data(result)
    artifacts = {a.name: a for a in result.artifacts}
    plans = []
    for name, version in versions.items():
        choice = next((c for c in result.choices if c.target == name), None)
        if choice is None or choice.chosen is None:
            why = "; ".join(f"{lost.artifact}: {lost.reason}" for lost in choice.losers) if choice else ""
            failed = [f"{f.target}: {f.message}" for f in result.failures if f.target.endswith(f"-{name}")]
            raise BundleError(f"edge target {name}: no artifact passed the gate, nothing to bundle"
                              + (f" ({why or '; '.join(failed)})" if why or failed else ""),
                              reason="NoChosenArtifact")
        artifact = artifacts.get(choice.chosen)
        if artifact is None:
            raise BundleError(f"edge target {name}: the chosen artifact {choice.chosen} is not in the result "
                              f"(failed: {', '.join(f.target for f in result.failures) or 'none'})",
                              reason="NoChosenArtifact")
        plans.append(BundlePlan(targets[name], version, artifact, _model_files(artifact), smoke))
    return plans


def _golden_data(result: ResultManifest) -> str:
    baseline = next((a for a in result.artifacts if a.name == result.baseline.artifact), None)
    if baseline is None or baseline.smoke is None or baseline.signature is None:
        raise BundleError(f"the result has no golden data: the fp32 ONNX baseline ({result.baseline.artifact}) "
                          "wrote no smoke.npz (a torch source that did not export to ONNX cannot be bundled yet)",
                          reason="NoGoldenData")
    return baseline.smoke


def _model_files(artifact: ArtifactResult) -> tuple[tuple[str, str], ...]:
    kinds = _MODEL_FILES.get(artifact.runtime)
    if kinds is None or artifact.precision not in _PRECISIONS:
        raise BundleError(f"{artifact.name}: a {artifact.runtime} {artifact.precision} artifact is no edge artifact",
                          reason="NoChosenArtifact")
    files = []
    for suffix, name in kinds:
        matching = [f for f in artifact.files if f.endswith(suffix)]
        if len(matching) != 1:
            raise BundleError(f"{artifact.name}: expected one {suffix} file, the result lists {artifact.files}",
                              reason="InvalidResult")
        files.append((name, matching[0]))
    return tuple(files)


def source_files(plans: Sequence[BundlePlan]) -> list[str]:
    """Every result file the plans read (what to download from s3://)."""
    return list(dict.fromkeys(path for plan in plans for _, path in plan.files))


def smoke_check(artifact: ArtifactResult) -> SmokeCheck:
    """The smoke test's tolerance against the fp32 golden outputs, from what the pipeline measured.

    The pipeline measured the artifact's fidelity to fp32 on the whole evaluation set; its worst sample's cosine
    bounds the golden samples (taken from that set) from below. On the device the runtime may compute a little
    differently (other CPU features, fp16 arithmetic, thread counts), so the device may fall below that by as
    much again as the artifact already deviates (1 - min cosine), and by at least SMOKE_MARGIN: an fp32 artifact
    measured at 1.0 gets 0.995. The tolerance never goes below SMOKE_FLOOR, a cosine at which outputs are no
    longer the same model's, unless the measurement itself is that low (an SLO on SNR only), where only the
    margin applies. Rounded down, so the written figure is never tighter than the computed one.

    Results written before fidelity was measured carry only the largest absolute difference; then twice that.
    """
    fidelity = artifact.fidelity
    if fidelity is None or not math.isfinite(fidelity.min_cosine):
        return SmokeCheck(file=SMOKE_FILE, max_abs_diff=max(2 * artifact.agreement.max_abs_diff, 1e-3))
    measured = min(fidelity.min_cosine, 1.0)
    tolerance = measured - max(SMOKE_MARGIN, 1.0 - measured)
    tolerance = max(tolerance, SMOKE_FLOOR) if measured - SMOKE_MARGIN >= SMOKE_FLOOR else measured - SMOKE_MARGIN
    return SmokeCheck(file=SMOKE_FILE, min_cosine=max(-1.0, math.floor(tolerance * 1e4) / 1e4))


def _signature(plan: BundlePlan, baseline: ModelSignature, directory: Path) -> ModelSignature:
    """The model's interface as its runtime names it: pnnx names ncnn's blobs in0.. and out0.. (one sample per
    extractor, the baseline's shapes); TFLite's come from the interpreter (a full-integer model takes int8)."""
    if plan.artifact.runtime == "ncnn":
        return ModelSignature(
            inputs=[t.model_copy(update={"name": f"in{i}"}) for i, t in enumerate(baseline.inputs)],
            outputs=[t.model_copy(update={"name": f"out{i}"}) for i, t in enumerate(baseline.outputs)])
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(directory / plan.model_files[0][1]))

    def tensors(details: list[dict]) -> list[TensorSignature]:
        return [TensorSignature(name=d["name"], dtype=d["dtype"].__name__, shape=[int(n) for n in d["shape"]])
                for d in details]

    return ModelSignature(inputs=tensors(interpreter.get_input_details()),
                          outputs=tensors(interpreter.get_output_details()))


def _manifest(model: CompressedModel, plan: BundlePlan, signature: ModelSignature, files: list[BundleFile],
              now: datetime, valid_days: int) -> BundleManifest:
    created = now.astimezone(timezone.utc).replace(microsecond=0)
    return BundleManifest(
        namespace=model.metadata.namespace or "default", model=model.metadata.name, target=plan.target.name,
        version=plan.version, runtime=plan.artifact.runtime, precision=plan.artifact.precision, signature=signature,
        model_files=[name for name, _ in plan.model_files], files=files, smoke=smoke_check(plan.artifact),
        device_selector=plan.target.device_selector, created=created,
        expires=created + timedelta(days=valid_days), min_agent_version=MIN_AGENT_VERSION)


# --- building ----------------------------------------------------------------------------------------


def build(model: CompressedModel, result: ResultManifest, result_dir: Path, plans: Sequence[BundlePlan],
          out: Path | str, key: signing.Ed25519PrivateKey, progress: Progress, *, valid_days: int = DEFAULT_VALID_DAYS,
          now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> list[Built]:
    """Write each planned bundle under `out` (a local directory, or an s3:// prefix), manifest last.

    `result_dir` holds the result's files (downloaded first for s3://). Raises BundleConflict when a version
    exists with other content, before writing anything of that bundle.
    """
    if valid_days < 1:
        raise BundleError(f"--valid-days {valid_days}: a bundle must be valid for at least a day",
                          reason="InvalidArguments")
    baseline = next(a for a in result.artifacts if a.name == result.baseline.artifact).signature
    store = _S3Bundles(out) if isinstance(out, str) else _LocalBundles(out)
    built = []
    for plan in plans:
        sources = {name: _result_file(result_dir, path) for name, path in plan.files}
        files = [BundleFile(path=name, sha256=sha256_file(p), size_bytes=p.stat().st_size)
                 for name, p in sources.items()]
        where = store.location(plan)
        existing = store.existing_manifest(plan)
        if existing is not None:
            built.append(_unchanged(existing, files, plan, where))
            progress.step("bundle", f"{plan.target.name} version {plan.version}: {plan.artifact.name}, "
                                    f"complete already with the same files, left alone")
            continue
        signature = _signature(plan, baseline, result_dir)
        envelope = signing.sign(_manifest(model, plan, signature, files, now(), valid_days), key)
        store.write(plan, sources, envelope)
        digest = signing.sha256_hex(base64.b64decode(json.loads(envelope)["payload"]))
        built.append(Built(plan.target.name, plan.version, plan.artifact.name, where, False, digest))
        progress.step("bundle", f"{plan.target.name} version {plan.version}: {plan.artifact.name} "
                                f"({', '.join(f.path for f in files)}) signed by {signing.key_id(key)} -> {where}")
    return built


def _result_file(result_dir: Path, relative: str) -> Path:
    from modelfleet.store.paths import confined

    path = confined(result_dir, relative, f"{result_dir}/result.json")
    if not path.is_file():
        raise BundleError(f"{result_dir}/{relative}: missing from the result (listed in result.json)",
                          reason="ArtifactMissing")
    return path


def _unchanged(existing: bytes, files: list[BundleFile], plan: BundlePlan, where: str) -> Built:
    """A complete bundle of this version: the same file list and digests, or a BundleConflict."""
    try:
        envelope = SignedEnvelope.model_validate_json(existing)
        payload = base64.b64decode(envelope.payload, validate=True)
        listed = BundleManifest.model_validate_json(payload).files
    except ValueError as e:  # pydantic's ValidationError, binascii.Error and JSON errors are ValueErrors
        raise BundleConflict(f"{where}/{MANIFEST_FILE} exists and is no bundle manifest ({str(e).splitlines()[0]}); "
                             f"version {plan.version} of {plan.target.name} is never rewritten: build a new version "
                             "or delete it by hand") from None
    ours = sorted((f.path, f.sha256, f.size_bytes) for f in files)
    theirs = sorted((f.path, f.sha256, f.size_bytes) for f in listed)
    if ours != theirs:
        changed = sorted({p for p, *_ in set(ours) ^ set(theirs)})
        raise BundleConflict(f"{where} holds version {plan.version} of {plan.target.name} with other content "
                             f"(differs in {', '.join(changed)}); a version is never rewritten: give a new version")
    return Built(plan.target.name, plan.version, plan.artifact.name, where, True, signing.sha256_hex(payload))


class _LocalBundles:
    """Bundles in a local directory (file://, pvc://)."""

    def __init__(self, root: Path):
        self._root = root

    def _dir(self, plan: BundlePlan) -> Path:
        return self._root / plan.target.name / str(plan.version)

    def location(self, plan: BundlePlan) -> str:
        return str(self._dir(plan))

    def existing_manifest(self, plan: BundlePlan) -> bytes | None:
        try:
            return (self._dir(plan) / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, plan: BundlePlan, sources: dict[str, Path], envelope: bytes) -> None:
        directory = self._dir(plan)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.iterdir():  # an unfinished earlier attempt, perhaps of another artifact
            if leftover.name not in sources:
                shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        for name, source in sources.items():
            _copy_atomic(source, directory / name)
        _fsync_dir(directory)
        atomic_write_bytes(directory / MANIFEST_FILE, envelope)  # the commit marker
        _fsync_dir(directory)


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _S3Bundles:
    """Bundles under an s3:// prefix; each PUT appears whole, the manifest's last."""

    def __init__(self, root: str):
        self._root = root.rstrip("/")

    def location(self, plan: BundlePlan) -> str:
        return f"{self._root}/{plan.target.name}/{plan.version}"

    def existing_manifest(self, plan: BundlePlan) -> bytes | None:
        text = s3.read_text(f"{self.location(plan)}/{MANIFEST_FILE}")
        return None if text is None else text.encode()

    def write(self, plan: BundlePlan, sources: dict[str, Path], envelope: bytes) -> None:
        where = self.location(plan)
        for name, source in sources.items():
            s3.put_file(source, f"{where}/{name}")
        with tempfile.TemporaryDirectory(prefix="modelfleet-bundle-") as tmp:
            manifest = Path(tmp) / MANIFEST_FILE
            manifest.write_bytes(envelope)
            s3.put_file(manifest, f"{where}/{MANIFEST_FILE}")
