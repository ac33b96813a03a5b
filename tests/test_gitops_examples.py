"""examples/gitops: every file parses, every path a kustomization or the Argo CD Application names exists, and
each overlay, with its JSON patches applied by hand (`add` and `replace`), is still a CompressedModel the
pydantic model accepts. The patches are JSON patches only: a partial CompressedModel (a merge patch) under
examples/ would be taken for an example manifest by tests/test_crdgen.py. On the test cluster, kubectl's real
`kustomize build` must give the same objects, and the API server must accept them (server-side dry run)."""

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO

from modelfleet.api.compressedmodel import CompressedModel

GITOPS = REPO / "examples" / "gitops"
KUSTOMIZATIONS = sorted(GITOPS.rglob("kustomization.yaml"))
OVERLAYS = sorted(p.parent for p in KUSTOMIZATIONS if p.parent.parent.name == "overlays")


def _load(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", sorted(GITOPS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(GITOPS)))
def test_every_file_parses(path):
    assert _load(path)


def _referenced(kustomization: Path) -> list[Path]:
    doc = yaml.safe_load(kustomization.read_text())
    paths = [*doc.get("resources", []), *(p["path"] for p in doc.get("patches", []) if "path" in p)]
    return [kustomization.parent / p for p in paths]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(GITOPS)))
def test_kustomizations_reference_existing_files(kustomization):
    referenced = _referenced(kustomization)
    assert referenced
    for path in referenced:
        assert path.is_file() or (path / "kustomization.yaml").is_file(), path


def test_the_application_points_at_an_overlay():
    [app] = _load(GITOPS / "argocd" / "application.yaml")
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    overlay = REPO / app["spec"]["source"]["path"]
    assert overlay in OVERLAYS
    assert app["spec"]["destination"]["namespace"] == yaml.safe_load((overlay / "kustomization.yaml").read_text())["namespace"]


def _json_patch(document: dict, operations: list[dict]) -> dict:
    for op in operations:
        assert op["op"] in ("add", "replace"), op
        *parents, last = op["path"].lstrip("/").split("/")
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            assert op["op"] == "add" or last in node, op
            node[last] = copy.deepcopy(op["value"])
    return document


def _build(directory: Path) -> list[dict]:
    """A kustomization's resources with its JSON patches, namespace and labels applied (what the tests need of it)."""
    doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources = []
    for ref in doc.get("resources", []):
        path = directory / ref
        resources += _build(path) if path.is_dir() else _load(path)
    for patch in doc.get("patches", []):
        [operations] = _load(directory / patch["path"])
        assert isinstance(operations, list), f"{patch['path']}: expected a JSON patch"
        for resource in resources:
            if (resource["kind"], resource["metadata"]["name"]) == (patch["target"]["kind"], patch["target"]["name"]):
                _json_patch(resource, operations)
    for resource in resources:
        if "namespace" in doc:
            resource["metadata"]["namespace"] = doc["namespace"]
        for labels in doc.get("labels", []):
            resource["metadata"].setdefault("labels", {}).update(labels["pairs"])
    return resources


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_builds_a_valid_compressed_model_in_its_namespace(overlay):
    [resource] = _build(overlay)
    model = CompressedModel.model_validate(resource)
    assert model.metadata.namespace == f"ml-{overlay.name}"
    assert all(target.rollout.waves[-1] == 100 for target in model.spec.targets.edge)


def test_the_overlays_differ_in_slos_and_rollouts():
    staging, production = ({p.name: CompressedModel.model_validate(_build(p)[0]) for p in OVERLAYS}[name]
                           for name in ("staging", "production"))
    assert production.spec.slo.max_accuracy_drop_points < staging.spec.slo.max_accuracy_drop_points
    assert production.spec.targets.edge[0].rollout.bake_seconds > staging.spec.targets.edge[0].rollout.bake_seconds
    base = CompressedModel.model_validate(_load(GITOPS / "base" / "compressedmodel.yaml")[0])
    assert production.spec.source == base.spec.source


@pytest.mark.cluster
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_builds_each_overlay_as_above_and_the_api_server_accepts_it(kube, overlay):
    """The real `kustomize build` (kubectl's), against the reading above, then a server-side dry run of what it
    built, in its namespace: what Argo CD or Flux would apply."""
    built = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(overlay)).stdout) if d]
    assert built == _build(overlay)
    namespace = built[0]["metadata"]["namespace"]
    # a namespace an earlier run deleted may still be terminating: no object can be created in it
    kube.kubectl("wait", "--for=delete", f"namespace/{namespace}", "--timeout=120s", check=False)
    created = kube.kubectl("create", "namespace", namespace, check=False).returncode == 0
    try:
        applied = kube.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=argocd-controller",
                               "-f", "-", input=yaml.safe_dump_all(built))
        assert f"compressedmodel.modelfleet.io/{built[0]['metadata']['name']} serverside-applied (server dry run)" \
            in applied.stdout
    finally:
        if created:
            kube.kubectl("delete", "namespace", namespace, "--wait=true")
