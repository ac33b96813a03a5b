"""The generated CRDs (CompressedModel, EdgeDevice): up to date, structural, and as strict as the pydantic models."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from modelfleet import crdgen
from modelfleet.api.compressedmodel import (EDGE_PRECISION_RULE, MAX_NAME_LENGTH, NAME_TOO_LONG, WAVES_RULE,
                                            CompressedModel, Compression, Precision)
from modelfleet.api.edgedevice import EdgeDevice
from modelfleet.api.paths import INPUT_URI_PATTERN, REPOSITORY_URI_PATTERN

REPO = Path(__file__).resolve().parents[1]
CRD_FILE = REPO / "crds" / f"{crdgen.CRD_NAME}.yaml"
DEVICE_CRD_FILE = REPO / "crds" / crdgen.EDGE_DEVICE.file_name
CANARY_RULE = "canary takes exactly one of count and percent"


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


@pytest.fixture(scope="module")
def version(crd: dict) -> dict:
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def schema(version: dict) -> dict:
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def crd_validator(schema: dict) -> jsonschema.Draft4Validator:
    # Kubernetes reads OpenAPI v3.0 schemas, whose bounds (boolean exclusiveMinimum) are draft 4's.
    return jsonschema.Draft4Validator(_as_json_schema(schema))


@pytest.fixture(scope="module", params=crdgen.KINDS, ids=lambda kind: kind.kind)
def any_schema(request) -> dict:
    """The committed schema of each kind in turn."""
    (only,) = yaml.safe_load((REPO / "crds" / request.param.file_name).read_text())["spec"]["versions"]
    return only["schema"]["openAPIV3Schema"]


def _as_json_schema(node: dict) -> dict:
    """A CRD schema node as plain JSON Schema: `nullable` becomes a null type, x-kubernetes-* keys go."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {name: _as_json_schema(prop) for name, prop in node["properties"].items()}
    if "items" in node:
        out["items"] = _as_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _as_json_schema(node["additionalProperties"])
    return out


def _schema_nodes(node: dict, path: str = ""):
    """Every schema node under node, with a readable path (`[]` for items, `{}` for map values)."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _schema_nodes(prop, f"{path}.{name}")
    if "items" in node:
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}{{}}")


def _cel_rules(schema: dict) -> dict[str, list[dict]]:
    return {path: node["x-kubernetes-validations"] for path, node in _schema_nodes(schema) if "x-kubernetes-validations" in node}


# --- up to date ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda kind: kind.kind)
def test_committed_crd_matches_the_models(kind):
    path = REPO / "crds" / kind.file_name
    assert path.is_file(), f"{path} is missing; run `python -m modelfleet.crdgen`"
    assert path.read_text() == crdgen.render(kind), (
        f"{path.relative_to(REPO)} is out of date with modelfleet.api; run `python -m modelfleet.crdgen`"
    )


def test_one_file_per_kind_and_nothing_else_in_crds():
    # hack/cluster.sh applies every file in crds/, so a stale one would reach the cluster too.
    assert sorted(p.name for p in (REPO / "crds").iterdir()) == sorted(kind.file_name for kind in crdgen.KINDS)


@pytest.mark.parametrize(("kind", "old", "new"), [
    (crdgen.COMPRESSED_MODEL, "maxItems: 16", "maxItems: 17"),
    (crdgen.EDGE_DEVICE, "maxLength: 253", "maxLength: 254"),
], ids=["CompressedModel", "EdgeDevice"])
def test_check_passes_on_fresh_output_and_fails_with_a_hint_on_drift(kind, old, new, tmp_path, capsys):
    paths = crdgen.write(tmp_path)
    assert [p.name for p in paths] == [k.file_name for k in crdgen.KINDS]
    crdgen.write_schemas(tmp_path / "schemas")
    check = ["--check", "--out", str(tmp_path), "--schemas", str(tmp_path / "schemas")]
    assert crdgen.main(check) == 0

    path = tmp_path / kind.file_name
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    assert crdgen.main(check) == 1
    err = capsys.readouterr().err
    assert kind.file_name in err and "run `python -m modelfleet.crdgen`" in err


def test_check_fails_when_the_crd_file_is_missing(tmp_path):
    assert crdgen.main(["--check", "--out", str(tmp_path / "nowhere")]) == 1
    crdgen.write(tmp_path)
    (tmp_path / crdgen.EDGE_DEVICE.file_name).unlink()
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_render_starts_with_the_generated_header():
    assert crdgen.render().startswith("# Generated by `python -m modelfleet.crdgen`; do not edit.\n")


# --- structural ---------------------------------------------------------------------------------

# Keywords a structural schema may not contain (or that Kubernetes' OpenAPI v3.0 does not know).
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title"}


def test_schema_is_structural(any_schema):
    problems = []
    for path, node in _schema_nodes(any_schema):
        where = path or "<root>"
        problems += [f"{where}: has {key}" for key in FORBIDDEN_KEYWORDS & node.keys()]
        if "type" not in node and not (node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")):
            problems.append(f"{where}: has no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
        if node.get("type") == "null":
            problems.append(f"{where}: null type instead of nullable")
    assert problems == []


def test_metadata_is_left_to_kubernetes(schema):
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["type"] == "object"
    assert schema["required"] == ["spec"]


def test_defaults_validate_against_their_own_schema(any_schema):
    # The API server refuses a CRD whose defaults do not validate.
    defaults = [(path, node) for path, node in _schema_nodes(any_schema) if "default" in node]
    assert defaults, "expected some defaults, e.g. spec.benchmark.runs"
    for path, node in defaults:
        errors = list(jsonschema.Draft4Validator(_as_json_schema(node)).iter_errors(node["default"]))
        assert errors == [], f"{path}: default {node['default']!r} is invalid"


def test_descriptions_reach_kubectl_explain(schema):
    described = {path for path, node in _schema_nodes(schema) if node.get("description")}
    assert {".spec.source.uri", ".spec.targets.edge[].deviceSelector", ".spec.targets.edge[].rollout.waves",
            ".status.conditions[].reason", ".status.rollouts[].failed"} <= described


def test_optional_fields_are_nullable(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert spec["targets"]["properties"]["triton"]["nullable"] is True
    assert spec["source"]["properties"]["sha256"] == {
        "description": spec["source"]["properties"]["sha256"]["description"],
        "nullable": True,
        "pattern": "^[a-f0-9]{64}$",
        "type": "string",
    }


# --- status, names, printer columns -----------------------------------------------------------


def test_conditions_are_a_list_map_keyed_by_type(any_schema):
    conditions = any_schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_rollouts_are_a_list_map_keyed_by_target(schema):
    # One entry per edge target, patched on its own: advancing a wave writes that entry, nothing per device.
    rollouts = schema["properties"]["status"]["properties"]["rollouts"]
    assert (rollouts["x-kubernetes-list-type"], rollouts["x-kubernetes-list-map-keys"]) == ("map", ["target"])
    assert {"target", "version", "salt"} <= set(rollouts["items"]["required"])


def test_status_is_a_subresource_with_only_the_operators_fields(version, schema):
    # kopf keeps no state on the resource (level-based event handlers), so nothing else is preserved.
    assert version["subresources"] == {"status": {}}
    assert set(schema["properties"]["status"]["properties"]) == {"observedGeneration", "conditions", "artifacts",
                                                                  "evaluation", "chosen", "choices", "specHashes",
                                                                  "retry", "bundles", "rollouts"}


def test_names_and_scope(crd):
    assert crd["metadata"]["name"] == "compressedmodels.modelfleet.io"
    assert crd["spec"]["group"] == "modelfleet.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "CompressedModel",
        "listKind": "CompressedModelList",
        "plural": "compressedmodels",
        "singular": "compressedmodel",
        "shortNames": ["cmodel"],
        "categories": ["modelfleet"],
    }


def test_single_served_storage_version(version):
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_printer_columns(version):
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason'),
        ("Int8Drop", "number", ".status.evaluation.int8AccuracyDropPoints"),
        ("Int8Size", "integer", ".status.evaluation.int8SizeBytes"),
        ("Chosen", "string", ".status.chosen"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


# --- CEL rules ----------------------------------------------------------------------------------


def test_cel_rules_mirror_the_model_validators(schema):
    messages = {path: [r["message"] for r in rules] for path, rules in _cel_rules(schema).items()}
    assert messages == {
        "": [NAME_TOO_LONG],
        ".spec": ["targets.triton.precision must be auto, fp32 or one of compression.precisions"],
        ".spec.source.inputs[]": ["batch dimension must be -1 (dynamic) or positive, other dimensions positive"],
        ".spec.targets.edge": ["edge target names must be unique"],
        ".spec.targets.edge[]": [EDGE_PRECISION_RULE],
        ".spec.targets.edge[].rollout.canary": [CANARY_RULE],
        ".spec.targets.edge[].rollout.waves": [WAVES_RULE],
        ".spec.targets.triton": ["tensorrt needs instanceGroup.kind GPU"],
    }


def test_the_name_rule_at_the_root_keeps_job_names_within_63_characters(schema):
    (rule,) = schema["x-kubernetes-validations"]
    assert rule == {"rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}", "message": NAME_TOO_LONG}
    assert len(f"{'n' * MAX_NAME_LENGTH}-compress-{'0' * 10}") <= 63  # Job names are label values too


def test_every_uri_field_carries_the_path_pattern(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert spec["source"]["properties"]["uri"]["pattern"] == INPUT_URI_PATTERN
    assert spec["dataset"]["properties"]["calibration"]["properties"]["uri"]["pattern"] == INPUT_URI_PATTERN
    assert spec["dataset"]["properties"]["evaluation"]["properties"]["uri"]["pattern"] == INPUT_URI_PATTERN
    assert spec["targets"]["properties"]["triton"]["properties"]["repository"]["pattern"] == REPOSITORY_URI_PATTERN


def test_triton_rule_knows_the_default_precisions(schema):
    # The rule spells out compression.precisions' default for specs that leave it unset.
    assert Compression().precisions == [Precision.int8_static]
    assert "['int8-static']" in schema["properties"]["spec"]["x-kubernetes-validations"][0]["rule"]


def test_cel_rule_inputs_are_bounded(schema):
    # The API server estimates each rule's worst-case cost from maxItems and maxLength and refuses
    # a CRD whose rules could be too expensive; the spec-wide rule sees every list in spec.
    spec = schema["properties"]["spec"]
    unbounded = [path for path, node in _schema_nodes(spec, ".spec") if node.get("type") == "array" and "maxItems" not in node]
    assert unbounded == []
    assert spec["properties"]["targets"]["properties"]["edge"]["items"]["properties"]["name"]["maxLength"] == 63


# --- examples and bad specs ---------------------------------------------------------------------


def _example_manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((REPO / "examples").glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CompressedModel":
                found.append((str(path.relative_to(REPO)), doc))
    return found


def test_examples_validate_against_the_model_and_the_crd(crd_validator):
    examples = _example_manifests()
    assert examples, "no CompressedModel manifest under examples/**/*.yaml; examples/digits/compressedmodel.yaml should be one"
    for name, manifest in examples:
        CompressedModel.model_validate(manifest)
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator.iter_errors(manifest)]
        assert errors == [], f"{name} does not validate against the CRD"


VALID = {
    "apiVersion": "modelfleet.io/v1alpha1",
    "kind": "CompressedModel",
    "metadata": {"name": "digits", "namespace": "ml"},
    "spec": {
        "source": {
            "uri": "s3://models/digits.onnx",
            "format": "onnx",
            "sha256": "0" * 64,
            "inputs": [{"name": "input", "shape": [-1, 64]}],
        },
        "dataset": {"calibration": {"uri": "s3://data/calib.npz"}, "evaluation": {"uri": "s3://data/eval.npz"}},
        "compression": {"precisions": ["fp16", "int8-static"]},
        "targets": {
            "triton": {"repository": "s3://triton", "modelName": "digits", "precision": "int8-static"},
            "edge": [
                {"name": "phones", "runtime": "ncnn", "precision": "fp16",
                 "rollout": {"canary": {"percent": 5}, "waves": [20, 100], "bakeSeconds": 600,
                             "failureThreshold": {"count": 2, "percent": 10}, "gates": {"maxP95Ms": 20}}},
                {"name": "pis", "runtime": "tflite"},
            ],
        },
        "slo": {"maxAccuracyDropPoints": 1.0, "latencyP95Ms": {"onnxruntime": 5.0}},
        "benchmark": {"runs": 50},
    },
}

DROP = object()
# How the API server refuses a bad spec: through the OpenAPI schema, by a CEL rule (its message),
# or not at all because it prunes unknown fields (kubectl's strict field validation reports them).
SCHEMA = "schema"
PRUNED = "pruned"

BAD_SPECS = [
    # id, path under spec, new value, pydantic error (regex), how the API server refuses it
    ("unknown-source-format", ("source", "format"), "keras", r"spec\.source\.format", SCHEMA),
    ("missing-source-uri", ("source", "uri"), DROP, r"spec\.source\.uri\s+Field required", SCHEMA),
    ("ftp-source-uri", ("source", "uri"), "ftp://host/digits.onnx", r"spec\.source\.uri", SCHEMA),
    ("uppercase-sha256", ("source", "sha256"), "A" * 64, r"spec\.source\.sha256", SCHEMA),
    ("no-inputs", ("source", "inputs"), [], r"spec\.source\.inputs", SCHEMA),
    ("edge-name-not-a-dns-label", ("targets", "edge", 0, "name"), "Phones_1", r"spec\.targets\.edge\.0\.name", SCHEMA),
    ("negative-runs", ("benchmark", "runs"), -5, r"spec\.benchmark\.runs", SCHEMA),
    ("zero-latency-budget", ("slo", "latencyP95Ms", "onnxruntime"), 0, r"spec\.slo\.latencyP95Ms\.onnxruntime", SCHEMA),
    ("opset-too-old", ("compression", "opset"), 13, r"spec\.compression\.opset", SCHEMA),
    ("unknown-metric", ("dataset", "metric"), "top5", r"spec\.dataset\.metric", SCHEMA),
    ("tflite-fp16", ("targets", "edge", 1, "precision"), "fp16", re.escape(EDGE_PRECISION_RULE), EDGE_PRECISION_RULE),
    (
        "duplicate-edge-names",
        ("targets", "edge", 1, "name"),
        "phones",
        "edge target names must be unique, repeated: phones",
        "edge target names must be unique",
    ),
    (
        "triton-precision-not-built",
        ("targets", "triton", "precision"),
        "int8-dynamic",
        "must be one of compression.precisions",
        "targets.triton.precision must be auto, fp32 or one of compression.precisions",
    ),
    (
        "zero-batch-dimension",
        ("source", "inputs", 0, "shape"),
        [0, 64],
        "batch dimension must be -1",
        "batch dimension must be -1 (dynamic) or positive, other dimensions positive",
    ),
    ("unknown-field", ("sourceUri",), "s3://models/digits.onnx", "Extra inputs are not permitted", PRUNED),
    # rollouts
    ("waves-falling", ("targets", "edge", 0, "rollout", "waves"), [50, 20, 100], re.escape(WAVES_RULE), WAVES_RULE),
    ("waves-repeated", ("targets", "edge", 0, "rollout", "waves"), [20, 20, 100], re.escape(WAVES_RULE), WAVES_RULE),
    ("waves-short-of-100", ("targets", "edge", 0, "rollout", "waves"), [20, 60], re.escape(WAVES_RULE), WAVES_RULE),
    ("no-waves", ("targets", "edge", 0, "rollout", "waves"), [], r"rollout\.waves", SCHEMA),
    ("zero-wave", ("targets", "edge", 0, "rollout", "waves", 0), 0, r"rollout\.waves\.0", SCHEMA),
    ("wave-over-100", ("targets", "edge", 0, "rollout", "waves", 0), 120, r"rollout\.waves\.0", SCHEMA),
    ("canary-count-and-percent", ("targets", "edge", 0, "rollout", "canary"), {"count": 1, "percent": 5},
     re.escape(CANARY_RULE), CANARY_RULE),
    ("canary-empty", ("targets", "edge", 0, "rollout", "canary"), {}, re.escape(CANARY_RULE), CANARY_RULE),
    ("canary-zero-percent", ("targets", "edge", 0, "rollout", "canary", "percent"), 0, r"rollout\.canary\.percent",
     SCHEMA),
    ("negative-bake", ("targets", "edge", 0, "rollout", "bakeSeconds"), -1, r"rollout\.bakeSeconds", SCHEMA),
    ("threshold-over-100-percent", ("targets", "edge", 0, "rollout", "failureThreshold", "percent"), 150,
     r"rollout\.failureThreshold\.percent", SCHEMA),
    ("threshold-zero-count", ("targets", "edge", 0, "rollout", "failureThreshold", "count"), 0,
     r"rollout\.failureThreshold\.count", SCHEMA),
    ("zero-p95-gate", ("targets", "edge", 0, "rollout", "gates", "maxP95Ms"), 0, r"rollout\.gates\.maxP95Ms",
     SCHEMA),
    ("report-timeout-too-short", ("targets", "edge", 0, "rollout", "reportTimeoutSeconds"), 5,
     r"rollout\.reportTimeoutSeconds", SCHEMA),
    ("negative-retries", ("targets", "edge", 0, "rollout", "installRetries"), -1, r"rollout\.installRetries", SCHEMA),
    ("paused-not-a-bool", ("targets", "edge", 0, "rollout", "paused"), "soon", r"rollout\.paused", SCHEMA),
]


def mutated(base: dict, path: tuple, value) -> dict:
    """A copy of `base` with the value at `path` replaced, or removed when `value` is DROP."""
    manifest = copy.deepcopy(base)
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    if value is DROP:
        del node[last]
    else:
        node[last] = copy.deepcopy(value)
    return manifest


def test_the_valid_base_passes_both(crd_validator):
    CompressedModel.model_validate(VALID)
    assert list(crd_validator.iter_errors(VALID)) == []


@pytest.mark.parametrize(("path", "value", "model_error", "api_server"), [pytest.param(*case[1:], id=case[0]) for case in BAD_SPECS])
def test_bad_spec_is_rejected(path, value, model_error, api_server, crd_validator, schema):
    manifest = mutated(VALID, ("spec", *path), value)
    with pytest.raises(ValidationError, match=model_error):
        CompressedModel.model_validate(manifest)

    errors = list(crd_validator.iter_errors(manifest))
    if api_server == SCHEMA:
        field = ("spec", *path)
        # A missing property is reported on its parent, everything else on the field itself.
        assert any(tuple(e.absolute_path) in (field, field[:-1]) for e in errors), errors
    else:
        # The OpenAPI schema cannot express it: a CEL rule must, unless the API server prunes it.
        assert errors == []
        if api_server != PRUNED:
            messages = [rule["message"] for rules in _cel_rules(schema).values() for rule in rules]
            assert api_server in messages



# --- EdgeDevice ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_version() -> dict:
    (only,) = yaml.safe_load(DEVICE_CRD_FILE.read_text())["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def device_schema(device_version) -> dict:
    return device_version["schema"]["openAPIV3Schema"]


def test_edge_device_names_and_scope():
    crd = yaml.safe_load(DEVICE_CRD_FILE.read_text())
    assert crd["metadata"]["name"] == "edgedevices.modelfleet.io"
    assert (crd["spec"]["group"], crd["spec"]["scope"]) == ("modelfleet.io", "Namespaced")
    assert crd["spec"]["names"] == {
        "kind": "EdgeDevice",
        "listKind": "EdgeDeviceList",
        "plural": "edgedevices",
        "singular": "edgedevice",
        "shortNames": ["edev"],
        "categories": ["modelfleet"],
    }


def test_edge_device_printer_columns_make_a_fleet_view(device_version):
    columns = [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in device_version["additionalPrinterColumns"]]
    assert columns == [
        ("Class", "string", r".metadata.labels.modelfleet\.io/class", 0),  # kubectl's escape for the dot in the key
        ("Health", "string", ".status.health", 0),
        ("Installed", "string", ".status.installed", 0),
        ("P95ms", "number", ".status.p95Ms", 0),
        ("Agent", "string", ".status.agentVersion", 1),  # -o wide
        ("LastSeen", "date", ".status.lastSeen", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]
    # Every status column names a field the schema has.
    status = device_version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {c["jsonPath"].split(".")[2] for c in device_version["additionalPrinterColumns"]
            if c["jsonPath"].startswith(".status.")} <= set(status)


def test_edge_device_status_is_a_subresource_with_targets_keyed_by_model_and_target(device_version, device_schema):
    assert device_version["subresources"] == {"status": {}}
    assert (device_version["name"], device_version["served"], device_version["storage"]) == ("v1alpha1", True, True)
    status = device_schema["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "conditions", "agentVersion", "lastSeen", "targets", "health",
                           "installed", "p95Ms"}
    targets = status["targets"]
    assert (targets["x-kubernetes-list-type"], targets["x-kubernetes-list-map-keys"]) == ("map", ["model", "target"])
    assert set(targets["items"]["properties"]) == {"model", "target", "installed", "previous", "health", "lastSmoke",
                                                   "latency", "lastError"}
    assert targets["items"]["properties"]["health"]["enum"] == ["Healthy", "Degraded", "Failed", "Unknown"]


def test_edge_device_spec_is_optional_and_has_no_rules(device_schema):
    # A device is enrolled with metadata (name, class label) alone; no rule reads its name.
    assert "required" not in device_schema
    assert device_schema["properties"]["metadata"] == {"type": "object"}
    assert _cel_rules(device_schema) == {}


def _device_examples() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((REPO / "examples").glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "EdgeDevice":
                found.append((str(path.relative_to(REPO)), doc))
    return found


def test_edge_device_examples_validate_against_the_model_and_the_crd(device_schema):
    examples = _device_examples()
    assert examples, "examples/edge/edgedevice.yaml should hold an EdgeDevice with a reported status"
    validator = jsonschema.Draft4Validator(_as_json_schema(device_schema))
    for name, manifest in examples:
        EdgeDevice.model_validate(manifest)
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
        assert errors == [], f"{name} does not validate against the CRD"


@pytest.mark.parametrize(("path", "value", "model_error"), [
    (("metadata", "name"), "Pi_4", r"metadata\.name"),
    (("status", "targets", 0, "health"), "Sick", r"status\.targets\.0\.health"),
    (("status", "targets", 0, "installed", "bundleSha256"), "abc", r"bundleSha256"),
    (("status", "targets", 0, "lastError"), {"reason": "download failed", "at": "2025-12-01T12:00:00Z"},
     r"lastError\.reason"),
    (("status", "targets", 0, "lastSmoke", "agreement"), 1.5, r"lastSmoke\.agreement"),
    (("status", "targets", 0, "latency", "p95Ms"), -1, r"latency\.p95Ms"),
], ids=["name", "health", "sha256", "reason", "agreement", "p95"])
def test_bad_edge_device_is_rejected(path, value, model_error, device_schema):
    (_, example), *_ = _device_examples()
    manifest = mutated(example, path, value)
    with pytest.raises(ValidationError, match=model_error):
        EdgeDevice.model_validate(manifest)
    if path[0] == "status":  # metadata.name is the API server's own check
        validator = jsonschema.Draft4Validator(_as_json_schema(device_schema))
        assert any(tuple(e.absolute_path)[:len(path)] == path for e in validator.iter_errors(manifest))
