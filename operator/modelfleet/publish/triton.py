"""Publish an ONNX artifact to a Triton model repository, load it, verify it, and measure it.

A new version that fails to load, to verify or to meet the latency SLO is removed again and the
previous version stays served; the outcome carries Triton's own error text.
"""

import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.publication import PublishedVersion, RepositoryRecord, ServingLatency, TritonPublication
from modelfleet.api.result import ArtifactResult, ModelSignature, ResultManifest
from modelfleet.errors import ChecksumMismatch, PermanentError, PublishConflict, RetryableError, first_line
from modelfleet.progress import Progress
from modelfleet.publish.repository import CONFIG_FILE, ModelRepository, open_repository, read_record, write_record
from modelfleet.publish.triton_config import PUBLICATION_PARAMETER, TRITON_TYPES, model_config
from modelfleet.store import sha256_file

RECORD_HISTORY = 20
PUBLICATION_FILE = "triton-publication.json"


class VerificationFailed(Exception):
    """The new version is not fit to serve; `reason` is a CamelCase word, the message Triton's text."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def publish(result: ResultManifest, result_dir: Path, target: TritonTarget, owner: str,
            base_dir: Path | None, progress: Progress, latency_slo_ms: float | None = None) -> TritonPublication:
    artifact = _artifact(result, target)
    server = TritonServer(target.server_url) if target.server_url else None
    if server:
        server.check_live()  # before anything is written: a dead server must not leave an unserved version
    repository = open_repository(target.repository, base_dir)
    record = _claim(repository, target.model_name, owner)
    version = max([record.last_version, *repository.versions(target.model_name)]) + 1
    model_file = result_dir / artifact.files[0]
    digest = sha256_file(model_file)
    if digest != artifact.sha256:
        raise ChecksumMismatch(f"{model_file}: sha256 {digest[:12]}… differs from the result manifest's "
                               f"{artifact.sha256[:12]}…; refusing to publish")

    progress.step("publish", f"{artifact.name} -> {target.repository}/{target.model_name}/{version}")
    # The version number is recorded before anything else, so it is never handed out twice.
    record.last_version = version
    write_record(repository, target.model_name, record)
    previous_config = repository.read(target.model_name, CONFIG_FILE)
    repository.put_version(target.model_name, version, model_file)
    publication = f"{version}:{digest[:16]}"
    repository.write(target.model_name, CONFIG_FILE,
                     model_config(target.model_name, artifact.signature, target, artifact.precision, publication))
    entry = PublishedVersion(version=version, artifact=artifact.name, sha256=digest,
                             generation=result.generation, state="written")
    outcome = TritonPublication(model_name=target.model_name, repository=target.repository, artifact=artifact.name,
                                version=version, state="Written", reason="Written",
                                message=f"version {version} written; no server to load it", latency_slo_ms=latency_slo_ms)
    if server:
        try:
            outcome = _serve(server, target, artifact, result_dir, version, publication, outcome, progress)
            entry.state = "served"
        except VerificationFailed as failure:
            progress.step("publish", f"version {version} failed ({failure.reason}); rolling back")
            # A server reading another repository never saw this write: leave what it serves alone.
            _roll_back(None if failure.reason == "WrongRepository" else server, repository, target, version,
                       previous_config)
            entry.state = "rolledBack"
            outcome = outcome.model_copy(update={
                "state": "Failed", "reason": failure.reason, "message": str(failure), "latency": None,
                "served_versions": _quietly(server.served_versions, target.model_name) or [],
            })
    if outcome.state != "Failed":
        _prune(repository, target, version)
    record.versions = (record.versions + [entry])[-RECORD_HISTORY:]
    write_record(repository, target.model_name, record)
    progress.step("publish", f"{outcome.state}: {outcome.message}")
    return outcome


def _artifact(result: ResultManifest, target: TritonTarget) -> ArtifactResult:
    name = f"onnx-{target.precision}"
    artifact = next((a for a in result.artifacts if a.name == name), None)
    if artifact is None:
        raise PermanentError(f"the result has no {name} artifact to publish "
                             f"(built: {', '.join(a.name for a in result.artifacts)})", reason="ArtifactMissing")
    if artifact.signature is None:
        raise PermanentError(f"{name} carries no signature; rebuild it with this modelfleet version",
                             reason="ArtifactMissing")
    return artifact


def _claim(repository: ModelRepository, model: str, owner: str) -> RepositoryRecord:
    """The model's record, or a new one; a model someone else put there is never touched."""
    record = read_record(repository, model)
    if record is None and repository.exists(model):
        raise PublishConflict(f"{repository.uri}/{model} exists and was not published by modelfleet; "
                              "choose another targets.triton.modelName or remove it")
    if record is not None and record.owner != owner:
        raise PublishConflict(f"{repository.uri}/{model} belongs to {record.owner}, not {owner}")
    return record or RepositoryRecord(owner=owner, last_version=0)


def _serve(server: "TritonServer", target: TritonTarget, artifact: ArtifactResult, result_dir: Path, version: int,
           publication: str, outcome: TritonPublication, progress: Progress) -> TritonPublication:
    name, timeout = target.model_name, target.verification.timeout_seconds
    started = time.monotonic()
    if target.model_control == "explicit":
        progress.step("publish", f"loading {name} on {server.url}")
        server.load(name)
    else:
        progress.step("publish", f"waiting for {server.url} to pick up {name} version {version}")
    server.wait_ready(name, version, timeout)
    ready_s = time.monotonic() - started
    server.check_publication(name, publication, target.repository)
    server.check_metadata(name, version, artifact.signature)
    smoke = np.load(result_dir / artifact.smoke)
    diff = server.smoke_test(name, version, artifact.signature, smoke["inputs"], smoke["outputs"])
    if diff > target.verification.smoke_tolerance:
        raise VerificationFailed("SmokeMismatch", f"Triton's outputs differ from {artifact.name}'s own by up to "
                                                  f"{diff:.3g} (tolerance {target.verification.smoke_tolerance:g})")
    latency = server.latency(name, version, artifact.signature, smoke["inputs"][:1], target.verification.latency_requests)
    message = (f"version {version} ready in {ready_s:.2f} s, smoke max diff {diff:.2g}, "
               f"p50 {latency.p50_ms:.2f} ms, p95 {latency.p95_ms:.2f} ms")
    if outcome.latency_slo_ms is not None and latency.p95_ms > outcome.latency_slo_ms:
        raise VerificationFailed("LatencySLONotMet", f"Triton p95 {latency.p95_ms:.2f} ms exceeds the SLO of "
                                                     f"{outcome.latency_slo_ms:g} ms ({message})")
    return outcome.model_copy(update={"state": "Served", "reason": "Served", "message": message, "latency": latency,
                                      "ready_seconds": round(ready_s, 3), "served_versions": server.served_versions(name)})


def _roll_back(server: "TritonServer | None", repository: ModelRepository, target: TritonTarget, version: int,
               previous_config: str | None) -> None:
    """Remove the failed version; Triton goes back to serving what it served before."""
    repository.delete_version(target.model_name, version)
    if previous_config is not None:
        repository.write(target.model_name, CONFIG_FILE, previous_config)
    if server is None or target.model_control != "explicit":
        return  # a polling server drops the version on its next scan
    if repository.versions(target.model_name):
        _quietly(server.load, target.model_name)
    else:
        _quietly(server.unload, target.model_name)


def _prune(repository: ModelRepository, target: TritonTarget, version: int) -> None:
    """Delete versions the version policy no longer serves (the newest keep_versions stay)."""
    kept = [v for v in repository.versions(target.model_name) if v <= version][-target.keep_versions:]
    for old in repository.versions(target.model_name):
        if old not in kept and old < version:
            repository.delete_version(target.model_name, old)


def _quietly(call, *args):
    """Best effort during rollback: the failure being reported matters more than a second one."""
    try:
        return call(*args)
    except Exception:
        return None


class TritonServer:
    """The model-control, metadata and inference calls modelfleet makes, over Triton's HTTP API."""

    def __init__(self, url: str):
        import tritonclient.http as triton_http

        parsed = urlparse(url)
        self.url = url
        self._http = triton_http
        self._client = triton_http.InferenceServerClient(
            parsed.netloc, ssl=parsed.scheme == "https", connection_timeout=10.0, network_timeout=120.0)

    def _call(self, what: str, call, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return call(*args, **kwargs)
        except InferenceServerException as e:
            status = str(e.status() or "")
            if status.startswith("5") and "load failed" not in (e.message() or ""):
                raise RetryableError(f"Triton at {self.url}: {what}: {e.message()}") from e
            raise VerificationFailed("TritonRejected", f"Triton at {self.url}: {what}: {e.message()}") from e
        except (OSError, TimeoutError) as e:
            raise RetryableError(f"Triton at {self.url} is unreachable ({what}): {first_line(e)}") from e

    def check_live(self) -> None:
        if not self._call("liveness", self._client.is_server_live):
            raise RetryableError(f"Triton at {self.url} answers but is not live")

    def load(self, name: str) -> None:
        try:
            self._call("load", self._client.load_model, name)
        except VerificationFailed as e:
            raise VerificationFailed("LoadFailed", str(e)) from e

    def unload(self, name: str) -> None:
        self._call("unload", self._client.unload_model, name)

    def wait_ready(self, name: str, version: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._call("readiness", self._client.is_model_ready, name, str(version)):
            state = self._version_state(name, version)
            if state and state.get("state") == "UNAVAILABLE" and state.get("reason"):
                raise VerificationFailed("LoadFailed", f"Triton at {self.url}: version {version} of {name} is "
                                                       f"unavailable: {state['reason']}")
            if time.monotonic() > deadline:
                raise VerificationFailed("NotReady", f"Triton at {self.url}: {name} version {version} not ready "
                                                     f"after {timeout_s:g} s")
            time.sleep(0.25)

    def _version_state(self, name: str, version: int) -> dict | None:
        index = self._call("repository index", self._client.get_model_repository_index)
        return next((m for m in index if m.get("name") == name and m.get("version") == str(version)), None)

    def served_versions(self, name: str) -> list[int]:
        index = self._call("repository index", self._client.get_model_repository_index)
        return sorted(int(m["version"]) for m in index
                      if m.get("name") == name and m.get("state") == "READY" and m.get("version", "").isdigit())

    def check_publication(self, name: str, publication: str, repository: str) -> None:
        config = self._call("model config", self._client.get_model_config, name)
        served = config.get("parameters", {}).get(PUBLICATION_PARAMETER, {}).get("string_value")
        if served != publication:
            raise VerificationFailed("WrongRepository", f"Triton at {self.url} serves {name} from another repository "
                                                        f"(its publication is {served!r}, this one is {publication!r}); "
                                                        f"is its --model-repository {repository}?")

    def check_metadata(self, name: str, version: int, signature: ModelSignature) -> None:
        metadata = self._call("metadata", self._client.get_model_metadata, name, str(version))
        for kind, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
            want = {t.name: (_wire_type(t.dtype), t.shape) for t in tensors}
            got = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in metadata.get(kind, [])}
            if want != got:
                raise VerificationFailed("MetadataMismatch", f"Triton reports {kind} {got} for {name} version "
                                                             f"{version}; the artifact declares {want}")

    def _infer(self, name: str, version: int, signature: ModelSignature, batch: np.ndarray) -> np.ndarray:
        tensor = signature.inputs[0]
        request = self._http.InferInput(tensor.name, list(batch.shape), _wire_type(tensor.dtype))
        request.set_data_from_numpy(batch.astype(tensor.dtype), binary_data=True)
        output = self._http.InferRequestedOutput(signature.outputs[0].name, binary_data=True)
        response = self._call("inference", self._client.infer, name, [request], model_version=str(version),
                              outputs=[output])
        return response.as_numpy(signature.outputs[0].name)

    def smoke_test(self, name: str, version: int, signature: ModelSignature,
                   inputs: np.ndarray, expected: np.ndarray) -> float:
        """Largest absolute difference between Triton's outputs and the artifact's own, one sample a request."""
        outputs = [self._infer(name, version, signature, inputs[i:i + 1]).reshape(-1) for i in range(len(inputs))]
        return float(np.max(np.abs(np.stack(outputs) - expected.reshape(len(inputs), -1))))

    def latency(self, name: str, version: int, signature: ModelSignature, sample: np.ndarray,
                requests: int) -> ServingLatency:
        before = self._stats(name, version)
        timings = np.empty(requests)
        for i in range(requests):
            start = time.perf_counter()
            self._infer(name, version, signature, sample)
            timings[i] = time.perf_counter() - start
        after = self._stats(name, version)
        count = after[0] - before[0]
        return ServingLatency(p50_ms=float(np.percentile(timings, 50) * 1000),
                              p95_ms=float(np.percentile(timings, 95) * 1000), requests=requests,
                              server_avg_us=(after[1] - before[1]) / count / 1000 if count else None)

    def _stats(self, name: str, version: int) -> tuple[int, int]:
        """(successful requests, their total duration in ns), as Triton's statistics extension counts them."""
        stats = self._call("statistics", self._client.get_inference_statistics, name, str(version))
        success = stats["model_stats"][0]["inference_stats"]["success"]
        return int(success["count"]), int(success["ns"])


def _wire_type(dtype: str) -> str:
    return TRITON_TYPES[dtype].removeprefix("TYPE_")
