"""The operator when things go wrong, on the real single-node Kubernetes: real API refusals (a quota, an
admission policy), stuck pods, retries asked for by annotation, spec changes that must not recompress.

Every test waits for the sign that the fault was handled (a condition, an Event, a Job), never for time.
"""

import shutil

import pytest
from kubernetes import client

from conftest import wait_until
from test_cluster_operator import (  # noqa: F401  (fixtures: inputs, claim)
    CLAIM, GROUP, PLURAL, VERSION, api, claim, conditions, create, events, get, inputs, jobs, resource, wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NO_EDGE = {"targets": {"edge": []}}


def triton(namespace: str) -> dict:
    return {"targets": {"edge": [], "triton": {"repository": f"pvc://{CLAIM}/triton/{namespace}", "modelName": "digits"}}}


def condition_is(kube, namespace: str, name: str, type_: str, status: str, reason: str | None = None,
                 timeout: float = 120, saying: str = "") -> dict:
    def check():
        found = conditions(get(kube, namespace, name)).get(type_)
        return found if (found and found["status"] == status and reason in (None, found["reason"])
                         and saying in found["message"]) else None

    return wait_until(check, timeout, f"{type_}={status} ({reason}) saying {saying!r} on {namespace}/{name}")


def test_a_job_refused_by_a_quota_is_named_in_the_status_and_created_once_the_quota_allows(kube, namespace, claim,
                                                                                           inputs, operator):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-jobs"},
                                                      "spec": {"hard": {"count/jobs.batch": "0"}}})
    wait_until(lambda: (core.read_namespaced_resource_quota("no-jobs", namespace).status.hard or {}), 30,
               "the quota controller to count the namespace's Jobs")
    create(kube, namespace, resource(inputs, changes=NO_EDGE))
    failing = condition_is(kube, namespace, "digits", "Reconciled", "False", "Forbidden")
    assert "exceeded quota" in failing["message"] and "retrying in" in failing["message"]
    assert conditions(get(kube, namespace, "digits"))["Ready"]["reason"] == "Forbidden"
    assert ("Forbidden" in [reason for reason, _ in events(kube, namespace)])
    assert jobs(kube, namespace) == []
    core.delete_namespaced_resource_quota("no-jobs", namespace)
    # the requeue with backoff creates the Job: no event on the resource was needed
    wait_until(lambda: jobs(kube, namespace), 120, "the compress Job after the quota went")
    recovered = condition_is(kube, namespace, "digits", "Reconciled", "True", "Reconciled")
    assert recovered["type"] == "Reconciled"
    wait_for(kube, namespace, "digits", "Ready", "True")


def test_a_clean_up_that_fails_keeps_the_finalizer_until_a_retry_succeeds(kube, namespace, claim, inputs, operator):
    admission = client.AdmissionregistrationV1Api(kube.api)
    name = f"freeze-jobs-{namespace}"
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                         "operations": ["DELETE"], "resources": ["jobs"]}]},
                 "validations": [{"expression": "false", "message": "Job deletion is frozen in this namespace"}]}})
    try:
        create(kube, namespace, resource(inputs, changes=NO_EDGE))
        wait_until(lambda: jobs(kube, namespace), 60, "the compress Job")
        admission.create_validating_admission_policy_binding({
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
        # the binding takes effect within a second or so; the deletion below then meets it
        [job] = jobs(kube, namespace)
        wait_until(lambda: _deletion_refused(kube, namespace, job.metadata.name), 30, "the policy to refuse Job deletions")
        api(kube).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits")
        failing = condition_is(kube, namespace, "digits", "Reconciled", "False", "CleanupFailed")
        assert "frozen" in failing["message"]
        assert get(kube, namespace, "digits")["metadata"]["finalizers"] == ["modelfleet.io/cleanup"]
        admission.delete_validating_admission_policy_binding(name)
        wait_until(lambda: _gone(kube, namespace, "digits"), 120, "the resource to go once clean-up succeeded")
        assert "CleanedUp" in [reason for reason, _ in events(kube, namespace)]
    finally:
        for delete in (admission.delete_validating_admission_policy_binding, admission.delete_validating_admission_policy):
            try:
                delete(name)
            except client.exceptions.ApiException:
                pass


def _deletion_refused(kube, namespace: str, job: str) -> bool:
    try:
        client.BatchV1Api(kube.api).delete_namespaced_job(job, namespace, dry_run="All")
    except client.exceptions.ApiException as e:
        return e.status in (403, 422) and "frozen" in (e.body or "")
    return False


def _gone(kube, namespace: str, name: str) -> bool:
    try:
        get(kube, namespace, name)
        return False
    except client.exceptions.ApiException as e:
        return e.status == 404


@pytest.mark.parametrize("changes, reason, phrase", [
    ({"source": {"uri": "pvc://no-such-claim/digits.torchscript.pt"}}, "Unschedulable", 'persistentvolumeclaim "no-such-claim" not found'),
    ({"worker": {"resources": {"requests": {"cpu": "64"}}}}, "Unschedulable", "Insufficient cpu"),
])
def test_a_pod_that_cannot_start_shows_in_the_status_within_a_minute(kube, namespace, claim, inputs, operator,
                                                                    changes, reason, phrase):
    create(kube, namespace, resource(inputs, changes={**NO_EDGE, **changes}))
    # the scheduler's message may first name a claim still binding; the status follows it as it changes
    condition_is(kube, namespace, "digits", "Compressed", "Unknown", reason, timeout=60, saying=phrase)
    assert conditions(get(kube, namespace, "digits"))["Ready"]["reason"] == reason
    wait_until(lambda: reason in [r for r, _ in events(kube, namespace)], 30, f"a {reason} Event")


def test_a_missing_credentials_secret_shows_in_the_status(kube, namespace, claim, inputs, operator):
    changes = triton(namespace)
    changes["targets"]["triton"]["credentialsSecret"] = "no-such-secret"
    create(kube, namespace, resource(inputs, changes=changes))
    stuck = condition_is(kube, namespace, "digits", "Published", "Unknown", "CreateContainerConfigError", timeout=600)
    assert 'secret "no-such-secret" not found' in stuck["message"]


def test_a_failed_publish_is_retried_by_annotation_without_recompressing(kube, namespace, claim, inputs, operator,
                                                                        artifact_root):
    foreign = artifact_root / CLAIM / "triton" / namespace / "digits"
    foreign.mkdir(parents=True)
    for directory in (foreign.parent.parent, foreign.parent, foreign):
        directory.chmod(0o777)  # the worker (uid 10001) shares the claim with this root test process
    (foreign / "config.pbtxt").write_text('name: "digits"\n')  # someone else's model: publishing must refuse it
    create(kube, namespace, resource(inputs, changes=triton(namespace)))
    failed = condition_is(kube, namespace, "digits", "Published", "False", "ModelNameConflict", timeout=600)
    assert "not published by modelfleet" in failed["message"]
    shutil.rmtree(foreign)  # the owner gave the name up
    api(kube).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits",
                                             {"metadata": {"annotations": {"modelfleet.io/retry": "1"}}})
    body = wait_for(kube, namespace, "digits", "Ready", "True", timeout=300)
    assert body["status"]["retry"] == "1" and conditions(body)["Published"]["reason"] == "Written"
    stages = sorted(j.metadata.labels["modelfleet.io/stage"] for j in jobs(kube, namespace))
    assert stages == ["compress", "publish", "publish"]  # compressed once, published twice
    assert (artifact_root / CLAIM / "triton" / namespace / "digits" / "1" / "model.onnx").is_file()


def test_what_is_published_changes_without_recompressing_and_how_jobs_run_changes_nothing(kube, namespace, claim,
                                                                                          inputs, operator,
                                                                                          artifact_root):
    changes = triton(namespace)
    # A named precision: under `auto` the SLOs decide what is published, so changing them republishes.
    changes["targets"]["triton"]["precision"] = "int8-static"
    create(kube, namespace, resource(inputs, changes=changes))
    wait_for(kube, namespace, "digits", "Ready", "True")
    before = {j.metadata.name for j in jobs(kube, namespace)}
    # how Jobs run and the accuracy gate: neither recompresses nor republishes
    patched = api(kube).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits", {"spec": {
        "worker": {"ttlSecondsAfterFinished": 3600}, "slo": {"maxAccuracyDropPoints": 0.9}}})
    wait_for(kube, namespace, "digits", "Ready", "True", generation=patched["metadata"]["generation"])
    assert {j.metadata.name for j in jobs(kube, namespace)} == before
    # what is published: a new publish Job, the same compress Job, version 2 of the same artifact
    patched = api(kube).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits", {"spec": {
        "targets": {"triton": {"keepVersions": 3}}}})
    wait_for(kube, namespace, "digits", "Ready", "True", generation=patched["metadata"]["generation"])
    after = {j.metadata.labels["modelfleet.io/stage"]: j.metadata.name for j in jobs(kube, namespace)
             if not j.metadata.deletion_timestamp}
    assert after["compress"] in before and after["publish"] not in before
    versions = sorted(p.name for p in (artifact_root / CLAIM / "triton" / namespace / "digits").iterdir() if p.name.isdigit())
    assert versions == ["1", "2"]
