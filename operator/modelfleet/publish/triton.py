"""Publish an ONNX artifact to a Triton model repository, load it, verify it, and measure it.

A new version that fails to load, to verify or to meet the latency SLO is removed again and the
previous version stays served; the outcome carries Triton's own error text. Any other way an attempt
ends before its version is verified (an error, SIGTERM, SIGKILL) is undone too: by the attempt
itself, or from the write-ahead record by the next one (publish/recovery.py).
"""

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlparse

import numpy as np

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.publication import PublishedVersion, RepositoryRecord, ServingLatency, TritonPublication
from modelfleet.api.result import ArtifactResult, ModelSignature, ResultManifest
from modelfleet.domain.choice import TRITON, triton_artifact
from modelfleet.errors import ChecksumMismatch, PermanentError, PublishConflict, RetryableError, first_line
from modelfleet.pipeline.dataset import Inputs
from modelfleet.pipeline.signature import read_smoke
from modelfleet.progress import Progress
from modelfleet.publish.recovery import begin, prune, recover, restore, settle
from modelfleet.publish.repository import CONFIG_FILE, ModelRepository, open_repository, read_record
from modelfleet.publish.triton_config import PUBLICATION_PARAMETER, TRITON_TYPES, model_config
from modelfleet.store import sha256_file

PUBLICATION_FILE = "triton-publication.json"
ALLOWED_SERVERS_ENV = "MODELFLEET_TRITON_SERVERS"


class VerificationFailed(Exception):
    """The new version is not fit to serve; `reason` is a CamelCase word, the message Triton's text."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def publish(result: ResultManifest, result_dir: Path, target: TritonTarget, owner: str,
            base_dir: Path | None, progress: Progress, latency_slo_ms: float | None = None) -> TritonPublication:
    artifact = _artifact(result, target)
    server = None
    if target.server_url:
        check_server_allowed(target.server_url, os.environ.get(ALLOWED_SERVERS_ENV, ""))
        server = TritonServer(target.server_url)
        server.check_live()  # before anything is written: a dead server must not leave an unserved version
    repository = open_repository(target.repository, base_dir)
    record = _claim(repository, target.model_name, owner)
    recover(repository, record, target, server, progress)
    version = max([record.last_version, *repository.versions(target.model_name)]) + 1
    model_file = result_dir / artifact.files[0]
    digest = sha256_file(model_file)
    if digest != artifact.sha256:
        raise ChecksumMismatch(f"{model_file}: sha256 {digest[:12]}… differs from the result manifest's "
                               f"{artifact.sha256[:12]}…; refusing to publish")

    progress.step("publish", f"{artifact.name} -> {target.repository}/{target.model_name}/{version}")
    previous_config = repository.read(target.model_name, CONFIG_FILE)
    entry = PublishedVersion(version=version, artifact=artifact.name, sha256=digest, generation=result.generation,
                             state="pending", previous_config=previous_config)
    publication = f"{version}:{digest[:16]}"
    outcome = TritonPublication(model_name=target.model_name, repository=target.repository, artifact=artifact.name,
                                version=version, state="Written", reason="Written",
                                message=f"version {version} written; no server to load it", latency_slo_ms=latency_slo_ms)
    try:
        begin(repository, record, target.model_name, entry)  # the number is never handed out twice
        repository.put_version(target.model_name, version, model_file)
        repository.write(target.model_name, CONFIG_FILE,
                         model_config(target.model_name, artifact.signature, target, artifact.precision, publication))
        if server:
            outcome = _serve(server, target, artifact, result_dir, version, publication, outcome, progress)
        settle(repository, record, target.model_name, entry, "served" if server else "written")  # the commit
    except VerificationFailed as failure:
        progress.step("publish", f"version {version} failed ({failure.reason}); rolling back")
        # A server reading another repository never saw this write: leave what it serves alone.
        _roll_back(repository, record, target, entry, previous_config,
                   None if failure.reason == "WrongRepository" else server, progress)
        outcome = outcome.model_copy(update={
            "state": "Failed", "reason": failure.reason, "message": str(failure), "latency": None,
            "served_versions": _quietly(server.served_versions, target.model_name) or [],
        })
    except BaseException as interruption:  # RetryableError, SIGTERM (cli), Ctrl-C: undo, then report the original
        # Also when the commit itself was interrupted: restoring the previous state is right either way.
        progress.step("publish", f"version {version} interrupted ({first_line(interruption)}); rolling back")
        _roll_back(repository, record, target, entry, previous_config, server, progress)
        raise
    else:
        prune(repository, record, target, version)  # after the commit only: a rollback needs the previous versions
    progress.step("publish", f"{outcome.state}: {outcome.message}")
    return outcome


def check_server_allowed(url: str, allowed: str) -> None:
    """Refuse a server that is not on the comma-separated allow-list `allowed` (empty: any server).

    Entries match on scheme, host and port; a path is ignored. A list without a usable entry refuses all.
    """
    if not allowed.strip():
        return
    origins = {_origin(entry) for entry in allowed.split(",") if entry.strip()} - {None}
    if _origin(url) not in origins:
        raise PermanentError(f"Triton server {url} is not on the allow-list ({ALLOWED_SERVERS_ENV}="
                             f"{allowed}); the operator's setting decides which servers publishing may reach",
                             reason="ServerNotAllowed")


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parsed = urlparse(url.strip())
    try:
        port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme.lower())
    except ValueError:  # a port that is not a number matches nothing
        return None
    return parsed.scheme.lower(), (parsed.hostname or "").lower(), port


def _artifact(result: ResultManifest, target: TritonTarget) -> ArtifactResult:
    name = triton_artifact(result, target.precision)
    if name is None:
        choice = next((c for c in result.choices if c.target == TRITON), None)
        why = ("; ".join(f"{lost.artifact}: {lost.reason}" for lost in choice.losers) if choice
               else "the result holds no choice for triton: it was made without a Triton target")
        raise PermanentError(f"precision auto: no ONNX artifact to publish ({why})", reason="NoArtifactQualifies")
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
    progress.step("publish", f"verifying version {version}: config, metadata, smoke test")
    server.check_publication(name, publication, target.repository)
    server.check_metadata(name, version, artifact.signature)
    inputs, expected = read_smoke(result_dir / artifact.smoke, artifact.signature)
    diff = server.smoke_test(name, version, artifact.signature, inputs, expected)
    if diff > target.verification.smoke_tolerance:
        raise VerificationFailed("SmokeMismatch", f"Triton's outputs differ from {artifact.name}'s own by up to "
                                                  f"{diff:.3g} (tolerance {target.verification.smoke_tolerance:g})")
    progress.step("publish", f"measuring version {version}: {target.verification.latency_requests} requests")
    latency = server.latency(name, version, artifact.signature, inputs.feed(0, 1), target.verification.latency_requests)
    message = (f"version {version} ready in {ready_s:.2f} s, smoke max diff {diff:.2g}, "
               f"p50 {latency.p50_ms:.2f} ms, p95 {latency.p95_ms:.2f} ms")
    if outcome.latency_slo_ms is not None and latency.p95_ms > outcome.latency_slo_ms:
        raise VerificationFailed("LatencySLONotMet", f"Triton p95 {latency.p95_ms:.2f} ms exceeds the SLO of "
                                                     f"{outcome.latency_slo_ms:g} ms ({message})")
    return outcome.model_copy(update={"state": "Served", "reason": "Served", "message": message, "latency": latency,
                                      "ready_seconds": round(ready_s, 3), "served_versions": server.served_versions(name)})


def _roll_back(repository: ModelRepository, record: RepositoryRecord, target: TritonTarget, entry: PublishedVersion,
               previous_config: str | None, server: "TritonServer | None", progress: Progress) -> None:
    """Restore what was there before `entry`; Triton goes back to serving the previous version.

    Best effort, since the failure being reported matters more than a second one: a rollback that
    cannot finish leaves the version pending in the record, and the next attempt completes it.
    """
    try:
        restore(repository, target, entry.version, previous_config, server)
        settle(repository, record, target.model_name, entry, "rolledBack")
    except Exception as e:
        progress.step("publish", f"rollback of version {entry.version} unfinished ({first_line(e)}); "
                                 "the next attempt completes it")


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
        self._base, self._timeout = f"{parsed.scheme}://{parsed.netloc}", 120.0
        self._http = triton_http
        self._client = triton_http.InferenceServerClient(
            parsed.netloc, ssl=parsed.scheme == "https", connection_timeout=10.0, network_timeout=self._timeout)

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

    def reload(self, name: str, has_versions: bool) -> None:
        """Serve what the repository holds now: load the model again, or unload it when no version is left.

        A plain HTTP request of its own: rollbacks follow exceptions raised into tritonclient calls
        (SIGTERM), after which its gevent connections and hub cannot be trusted. Unreachable is raised
        (the reload must happen later); Triton refusing is not: the repository is what it was
        before, and whatever Triton makes of it is what it served then.
        """
        action = "load" if has_versions else "unload"
        request = urllib.request.Request(f"{self._base}/v2/repository/models/{quote(name)}/{action}", data=b"{}",
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout):
                pass
        except urllib.error.HTTPError as e:
            answer = e.read().decode(errors="replace")
            if e.code >= 500 and "load failed" not in answer:
                raise RetryableError(f"Triton at {self.url}: {action}: HTTP {e.code} {answer}") from e
        except OSError as e:
            raise RetryableError(f"Triton at {self.url} is unreachable ({action}): {first_line(e)}") from e

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

    def _infer(self, name: str, version: int, signature: ModelSignature,
               feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output for one request with every input."""
        requests = []
        for tensor in signature.inputs:
            value = np.asarray(feed[tensor.name]).astype(tensor.dtype)
            request = self._http.InferInput(tensor.name, list(value.shape), _wire_type(tensor.dtype))
            request.set_data_from_numpy(value, binary_data=True)
            requests.append(request)
        outputs = [self._http.InferRequestedOutput(t.name, binary_data=True) for t in signature.outputs]
        response = self._call("inference", self._client.infer, name, requests, model_version=str(version),
                              outputs=outputs)
        return [response.as_numpy(t.name) for t in signature.outputs]

    def smoke_test(self, name: str, version: int, signature: ModelSignature,
                   inputs: Inputs, expected: list[np.ndarray]) -> float:
        """Largest absolute difference between Triton's outputs and the artifact's own, one sample a request,
        over every output."""
        calls = [self._infer(name, version, signature, inputs.feed(i, i + 1)) for i in range(len(inputs))]
        return max(float(np.max(np.abs(np.stack([np.asarray(call[k]).reshape(-1) for call in calls])
                                       - expected[k].reshape(len(inputs), -1)))) for k in range(len(expected)))

    def latency(self, name: str, version: int, signature: ModelSignature, sample: dict[str, np.ndarray],
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
