"""schemas/: the generated JSON schemas of the edge documents are up to date and as strict as the models."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from modelfleet import crdgen, signing
from modelfleet.api.bundle import BundleManifest, DesiredState

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "schemas"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)

MANIFEST = BundleManifest(
    namespace="ml", model="digits", target="phones", version=3, runtime="tflite", precision="int8",
    signature={"inputs": [{"name": "input", "dtype": "float32", "shape": [1, 64]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 10]}]},
    model_files=["model.tflite"],
    files=[{"path": "model.tflite", "sha256": "a" * 64, "sizeBytes": 12_345},
           {"path": "smoke.npz", "sha256": "b" * 64, "sizeBytes": 2_048}],
    smoke={"maxAbsDiff": 0.05, "minCosine": 0.99}, device_selector={"modelfleet.io/class": "pi4"},
    created=NOW, expires=NOW + timedelta(days=90),
)
DESIRED = DesiredState(
    namespace="ml", device="pi-kitchen-1", sequence=42, issued=NOW, expires=NOW + timedelta(minutes=15),
    bundles=[{"model": "digits", "target": "phones", "version": 3, "manifestSha256": "c" * 64,
              "url": "bundles/ml/digits/phones/3/bundle.tar"}],
)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(crdgen.SCHEMAS))
def test_committed_schema_matches_the_models(name):
    path = SCHEMA_DIR / name
    assert path.is_file(), f"{path} is missing; run `python -m modelfleet.crdgen`"
    assert path.read_text() == crdgen.render_schema(name), (
        f"schemas/{name} is out of date with modelfleet.api; run `python -m modelfleet.crdgen`")


def test_check_covers_the_schemas(tmp_path, capsys):
    crds, schemas = tmp_path / "crds", tmp_path / "schemas"
    crdgen.write(crds)
    written = crdgen.write_schemas(schemas)
    assert crdgen.main(["--check", "--out", str(crds), "--schemas", str(schemas)]) == 0

    written[0].write_text(written[0].read_text().replace('"maxLength": 63', '"maxLength": 64'))
    assert crdgen.main(["--check", "--out", str(crds), "--schemas", str(schemas)]) == 1
    assert f"{written[0]} is out of date" in capsys.readouterr().err
    written[1].unlink()
    assert crdgen.main(["--check", "--out", str(crds), "--schemas", str(schemas)]) == 1


def test_schemas_carry_descriptions_and_no_generated_titles():
    text = (SCHEMA_DIR / "bundle-manifest.json").read_text()
    assert '"title"' not in text
    props = json.loads(text)["properties"]
    assert props["version"]["description"] == BundleManifest.model_fields["version"].description


@pytest.mark.parametrize(("name", "document"), [("bundle-manifest.json", MANIFEST), ("desired-state.json", DESIRED)])
def test_documents_from_the_models_validate_against_the_schemas(name, document):
    assert list(_validator(name).iter_errors(document.to_wire())) == []


def test_a_signed_envelope_validates_against_its_schema():
    envelope = json.loads(signing.sign(DESIRED, signing.generate_private_key()))
    assert list(_validator("signed-envelope.json").iter_errors(envelope)) == []


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a\\b", ".ssh/authorized_keys", "a//b", "x/./y"])
def test_hostile_paths_fail_the_schema_as_they_fail_the_model(path):
    manifest = MANIFEST.to_wire()
    manifest["files"][1]["path"] = path
    assert list(_validator("bundle-manifest.json").iter_errors(manifest)), path
    with pytest.raises(ValueError):
        BundleManifest.model_validate(manifest)


def test_unknown_fields_fail_the_schema():
    assert list(_validator("desired-state.json").iter_errors(DESIRED.to_wire() | {"trustMe": True}))
