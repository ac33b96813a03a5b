"""Kubernetes API calls the operator makes, with the official client (sync; kopf runs it in threads)."""

import datetime
import functools
import json
import logging
from typing import Any

from modelfleet.api.compressedmodel import API_VERSION, GROUP, VERSION
from modelfleet.domain.plan import CONTAINER, MANAGED_BY, MODEL_LABEL
from modelfleet.domain.status import JobState, container_failure
from modelfleet.errors import KubernetesApiError, first_line

PLURAL = "compressedmodels"
MONITORING = "monitoring.coreos.com"  # prometheus-operator's API group (PrometheusRule)
FIELD_MANAGER = "modelfleet-operator"
log = logging.getLogger("modelfleet.k8s")


def _api_call(method):
    """Every failure of a call becomes a KubernetesApiError naming the call and the API's own message, so the
    reconcile's requeue and the status say what went wrong (a 5xx, a quota's 403, a policy's 422, a dead server)."""
    what = method.__name__.replace("_", " ")

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        from urllib3.exceptions import HTTPError

        try:
            return method(self, *args, **kwargs)
        except self._errors as e:
            raise KubernetesApiError(f"{what}: {e.status} {e.reason}: {_api_message(e)}", e.status) from e
        except (HTTPError, OSError) as e:
            raise KubernetesApiError(f"{what}: the API server is unreachable: {first_line(e)}", None) from e

    return call


def _api_message(error) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.body or error.reason or "")[:500]


class Cluster:
    def __init__(self, api_client=None):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = 64  # above the handler threads (48): no reconnect storms
            api_client = client.ApiClient(configuration)
        self._api = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._errors = client.exceptions.ApiException

    def _plain(self, obj) -> Any:
        return self._api.sanitize_for_serialization(obj)

    @_api_call
    def get_model(self, namespace: str, name: str) -> dict | None:
        try:
            return self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except self._errors as e:
            if e.status == 404:
                return None
            raise

    @_api_call
    def patch_status(self, namespace: str, name: str, status: dict) -> str:
        """The resourceVersion the patch produced."""
        response = self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                                      {"status": status}, _preload_content=False)
        return json.loads(response.data)["metadata"]["resourceVersion"]

    @_api_call
    def patch_finalizers(self, namespace: str, name: str, finalizers: list[str], resource_version: str) -> dict | None:
        """The updated resource, or None when it changed since `resource_version` (409) or is gone (404)."""
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        try:
            response = self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                                   _preload_content=False)
        except self._errors as e:
            if e.status in (404, 409):
                return None
            raise
        return json.loads(response.data)

    @_api_call
    def edge_devices(self, namespace: str) -> list[dict]:
        """Every EdgeDevice of the namespace, as plain dicts."""
        response = self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "edgedevices",
                                                              _preload_content=False)
        return json.loads(response.data)["items"]

    @_api_call
    def jobs(self, namespace: str, model: str) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in {**MANAGED_BY, MODEL_LABEL: model}.items())
        # Raw JSON: the client's model classes cost more CPU than the request itself.
        response = self._batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False)
        return json.loads(response.data)["items"]

    @_api_call
    def create_job(self, manifest: dict) -> bool:
        """True when created, False when a Job of that name exists already (deterministic names)."""
        try:
            self._batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest, _preload_content=False)
            return True
        except self._errors as e:
            if e.status == 409 or _namespace_terminating(e):  # exists; or its resource is going away too
                return False
            raise

    @_api_call
    def delete_job(self, namespace: str, name: str, foreground: bool = False) -> None:
        """Foreground: the Job object stays (with a deletionTimestamp) until its pods are gone."""
        try:
            self._batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground" if foreground else "Background")
        except self._errors as e:
            if e.status != 404:
                raise

    @_api_call
    def apply_prometheus_rule(self, manifest: dict) -> bool:
        """Create or update a PrometheusRule (server-side apply). False when the API server has no such kind:
        the prometheus-operator CRDs are not installed."""
        meta = manifest["metadata"]
        try:
            self._custom.patch_namespaced_custom_object(
                MONITORING, "v1", meta["namespace"], "prometheusrules", meta["name"], manifest,
                field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml")
            return True
        except self._errors as e:
            if e.status == 404:  # apply creates a missing object: a 404 means the kind itself is unknown
                return False
            raise

    @_api_call
    def delete_prometheus_rule(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(MONITORING, "v1", namespace, "prometheusrules", name)
        except self._errors as e:
            if e.status != 404:
                raise

    @_api_call
    def job_state(self, job: dict) -> JobState:
        """Running, Succeeded, or Failed with the worker's own reason and message when a pod left one."""
        conditions = {c["type"]: c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Complete" in conditions:
            return JobState("Succeeded")
        if "Failed" not in conditions:
            return JobState("Running")
        failed = conditions["Failed"]
        reason, message = self._worker_message(job)
        return JobState("Failed", reason or failed.get("reason") or "JobFailed",
                        message or failed.get("message") or "the worker Job failed")

    def _worker_message(self, job: dict) -> tuple[str, str]:
        """Why the Job's last failed worker container ended: its termination message (`Reason: message`), or
        WorkerOOMKilled when the kernel killed it for memory."""
        meta = job["metadata"]
        pods = self._core.list_namespaced_pod(meta["namespace"], label_selector=f"job-name={meta['name']}").items
        terminated = [s.state.terminated for p in pods for s in (p.status.container_statuses or [])
                      if s.name == CONTAINER and s.state and s.state.terminated and s.state.terminated.exit_code]
        if not terminated:
            return "", ""
        last = max(terminated, key=lambda t: t.finished_at or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc))
        return container_failure({"reason": last.reason, "exitCode": last.exit_code, "message": last.message}, job)

    # --- the fleet gateway: EdgeDevices, CompressedModels' rollouts, the bootstrap Secret ---

    @_api_call
    def list_all(self, plural: str) -> tuple[list[dict], str]:
        """Every object of one of our kinds in every namespace, and the list's resourceVersion (for a watch)."""
        response = self._custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False)
        data = json.loads(response.data)
        return data["items"], data["metadata"]["resourceVersion"]

    def watch_all(self, plural: str, resource_version: str, timeout_s: int):
        """(type, object) of every change after `resource_version`, for at most `timeout_s` seconds; a
        KubernetesApiError with status 410 when that version is too old."""
        from kubernetes import watch

        stream = watch.Watch().stream(self._custom.list_cluster_custom_object, GROUP, VERSION, plural,
                                      resource_version=resource_version, timeout_seconds=timeout_s,
                                      allow_watch_bookmarks=True)
        try:
            for event in stream:
                if event["type"] == "ERROR":
                    status = event["raw_object"] or {}
                    raise KubernetesApiError(f"watch {plural}: {status.get('message', '')}", status.get("code"))
                if event["type"] != "BOOKMARK":
                    yield event["type"], event["raw_object"]
        except self._errors as e:
            raise KubernetesApiError(f"watch {plural}: {e.status} {e.reason}: {_api_message(e)}", e.status) from e

    @_api_call
    def create_edge_device(self, manifest: dict) -> dict | None:
        """The created EdgeDevice, or None when one of that name exists."""
        try:
            response = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, manifest["metadata"]["namespace"], "edgedevices", manifest, _preload_content=False)
        except self._errors as e:
            if e.status == 409:
                return None
            raise
        return json.loads(response.data)

    @_api_call
    def patch_edge_device_status(self, namespace: str, name: str, status: dict) -> None:
        self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "edgedevices", name,
                                                           {"status": status}, _preload_content=False)

    @_api_call
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (values base64), or None when it does not exist."""
        try:
            response = self._core.read_namespaced_secret(name, namespace, _preload_content=False)
        except self._errors as e:
            if e.status == 404:
                return None
            raise
        return json.loads(response.data).get("data") or {}

    def event(self, model: dict, kind: str, reason: str, message: str) -> None:
        meta = model["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {"apiVersion": API_VERSION, "kind": "CompressedModel", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message[:1024], "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "modelfleet-operator"},
            "reportingComponent": "modelfleet.io/operator", "reportingInstance": "modelfleet-operator",
        }
        try:
            self._core.create_namespaced_event(meta["namespace"], event, _preload_content=False)
        except self._errors as e:  # Events are best effort (as for Kubernetes' own recorders): the status has it all
            log.warning("event %s on %s/%s not posted: %s %s", reason, meta["namespace"], meta["name"], e.status, e.reason)


def _namespace_terminating(error) -> bool:
    return error.status == 403 and "NamespaceTerminating" in (error.body or "")
