"""Hostile manifests and inputs: each is refused early, with its reason and a message that says what is
wrong, a permanent exit code (1-127), and nothing written over the previous result.

Manifests are checked three ways: the pydantic model, the generated CRD (its OpenAPI schema, or the CEL
rule whose message the API server would return), and `modelfleet run`, which must stop with exit code 3
before any work. Inputs (models, datasets, result files, paths) go through `modelfleet run` or
`modelfleet publish triton` against a copy of the session's real digits result.
"""

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from modelfleet.api.compressedmodel import MAX_BATCH_ELEMENTS, MAX_NAME_LENGTH, NAME_TOO_LONG, CompressedModel
from modelfleet.cli import main
from modelfleet.pipeline import dataset

from conftest import digits_example
from test_crdgen import CRD_FILE, DROP, _as_json_schema, _cel_rules, mutated

FAST = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10}, "compression": {"precisions": ["fp16"]},
        "targets": {"edge": []}}


@pytest.fixture(scope="module")
def schema() -> dict:
    (version,) = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def crd_validator(schema) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_as_json_schema(schema))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(digits_result, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A copy of the session's real result (result.json and every artifact) and its bytes."""
    out = tmp_path / "out"
    shutil.copytree(digits_result, out)
    return out, snapshot(out)


def refused_by_the_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# --- manifests -----------------------------------------------------------------------------------

SCHEMA = "the CRD's OpenAPI schema"
PRUNED = "pruned by the API server (kubectl's strict field validation reports it)"
KUBERNETES = "the API server's own validation of apiVersion and metadata"
OPERATOR = "accepted by the CRD; the operator's model refuses it (SpecValid=False, no Job)"
LONG_NAME = "n" * (MAX_NAME_LENGTH + 1)
TRITON = {"repository": "pvc://models/triton", "modelName": "digits", "precision": "fp16"}

BAD_MANIFESTS = [
    # id, path from the document's root, new value, what the model says (a substring), how admission refuses it
    # Paths in URIs: '..', '.', empty segments, backslashes, NUL, bad claims.
    ("source-pvc-dot-dot", ("spec", "source", "uri"), "pvc://models/../../etc/passwd", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-pvc-deep-dot-dot", ("spec", "source", "uri"), "pvc://models/a/b/../../../../etc/shadow", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-pvc-trailing-dot-dot", ("spec", "source", "uri"), "pvc://models/digits/..", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-pvc-dot", ("spec", "source", "uri"), "pvc://models/./digits.pt", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-pvc-absolute-after-claim", ("spec", "source", "uri"), "pvc://models//etc/passwd", "is absolute", SCHEMA),
    ("source-pvc-backslashes", ("spec", "source", "uri"), "pvc://models/..\\..\\etc\\passwd", "NUL character or a backslash", SCHEMA),
    ("source-pvc-nul", ("spec", "source", "uri"), "pvc://models/digits.pt\x00.onnx", "NUL character or a backslash", SCHEMA),
    ("source-pvc-no-path", ("spec", "source", "uri"), "pvc://models", "expected pvc://<claim>/<path>", SCHEMA),
    ("source-pvc-claim-uppercase", ("spec", "source", "uri"), "pvc://Models/digits.pt", "got claim 'Models'", SCHEMA),
    ("source-pvc-claim-dot-dot", ("spec", "source", "uri"), "pvc://../digits.pt", "got claim '..'", SCHEMA),
    ("source-pvc-claim-underscore", ("spec", "source", "uri"), "pvc://my_models/digits.pt", "got claim 'my_models'", SCHEMA),
    ("source-pvc-claim-empty", ("spec", "source", "uri"), "pvc:///etc/passwd", "got claim ''", SCHEMA),
    ("source-file-dot-dot", ("spec", "source", "uri"), "file:///data/../etc/passwd", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-relative-file-dot-dot", ("spec", "source", "uri"), "file://../../secrets/model.pt", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-file-empty", ("spec", "source", "uri"), "file://", "expected file://<path>", SCHEMA),
    ("source-s3-dot-dot", ("spec", "source", "uri"), "s3://models/a/../../other/m.pt", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-s3-bucket-dot-dot", ("spec", "source", "uri"), "s3://../m.pt", "bucket: '..' is not normalised", SCHEMA),
    ("source-https-dot-dot", ("spec", "source", "uri"), "https://models.example/a/../../m.pt", "'..', '.' and empty segments are refused", SCHEMA),
    ("source-ftp", ("spec", "source", "uri"), "ftp://models.example/m.pt", "must start with file://, https://, s3://, pvc://", SCHEMA),
    ("source-bare-path", ("spec", "source", "uri"), "/data/digits.pt", "must start with file://", SCHEMA),
    ("source-uri-too-long", ("spec", "source", "uri"), "s3://models/" + "a" * 2048, "at most 2048 characters", SCHEMA),
    ("calibration-dot-dot", ("spec", "dataset", "calibration", "uri"), "pvc://data/../../etc/passwd", "'..', '.' and empty segments are refused", SCHEMA),
    ("evaluation-dot-dot", ("spec", "dataset", "evaluation", "uri"), "file:///data/sets/../../../root/eval.npz", "'..', '.' and empty segments are refused", SCHEMA),
    ("evaluation-bad-claim", ("spec", "dataset", "evaluation", "uri"), "pvc://-data/eval.npz", "got claim '-data'", SCHEMA),
    ("triton-repository-dot-dot", ("spec", "targets", "triton"), TRITON | {"repository": "pvc://models/../../var/lib/triton"}, "'..', '.' and empty segments are refused", SCHEMA),
    ("triton-repository-https", ("spec", "targets", "triton"), TRITON | {"repository": "https://models.example/triton"}, "must start with file://, s3://, pvc://", SCHEMA),
    ("triton-repository-bad-claim", ("spec", "targets", "triton"), TRITON | {"repository": "pvc://Models/triton"}, "got claim 'Models'", SCHEMA),
    # Names: Job names and label values are built from metadata.name.
    ("name-one-too-long", ("metadata", "name"), LONG_NAME, f"metadata.name must be at most {MAX_NAME_LENGTH} characters", NAME_TOO_LONG),
    ("name-63-characters", ("metadata", "name"), "n" * 63, f"has 63", NAME_TOO_LONG),
    ("name-not-a-dns-label", ("metadata", "name"), "Digits_v2", "metadata.name", KUBERNETES),
    ("api-version", ("apiVersion",), "modelfleet.io/v1", "apiVersion", KUBERNETES),
    # Shapes: huge, malformed, or impossible.
    ("shape-huge-sample", ("spec", "source", "inputs", 0, "shape"), [-1, 100000, 100000, 100], "more than the 268435456 modelfleet loads at once", OPERATOR),
    ("shape-huge-fixed-batch", ("spec", "source", "inputs", 0, "shape"), [100000, 3, 224, 224], "15052800000 elements", OPERATOR),
    ("shape-zero-dimension", ("spec", "source", "inputs", 0, "shape"), [-1, 0, 8, 8], "non-batch dimensions must be positive", "batch dimension must be -1 (dynamic) or positive, other dimensions positive"),
    ("shape-negative-batch", ("spec", "source", "inputs", 0, "shape"), [-2, 1, 8, 8], "batch dimension must be -1", "batch dimension must be -1 (dynamic) or positive, other dimensions positive"),
    ("shape-nine-dimensions", ("spec", "source", "inputs", 0, "shape"), [-1] + [1] * 8, "at most 8 items", SCHEMA),
    ("shape-empty", ("spec", "source", "inputs", 0, "shape"), [], "a batched input needs its batch dimension", "batch dimension must be -1 (dynamic) or positive, other dimensions positive"),
    ("shape-a-string", ("spec", "source", "inputs", 0, "shape"), "1x8x8", "valid list", SCHEMA),
    ("shape-fractional", ("spec", "source", "inputs", 0, "shape"), [-1, 1.5, 8, 8], "fractional part", SCHEMA),
    ("input-name-empty", ("spec", "source", "inputs", 0, "name"), "", "at least 1 character", SCHEMA),
    ("input-name-too-long", ("spec", "source", "inputs", 0, "name"), "x" * 129, "at most 128 characters", SCHEMA),
    ("input-dtype-float8", ("spec", "source", "inputs", 0, "dtype"), "float8", "'float32', 'float16', 'int64', 'int32' or 'uint8'", SCHEMA),
    ("seventeen-inputs", ("spec", "source", "inputs"), [{"name": f"x{i}", "shape": [-1, 4]} for i in range(17)], "at most 16 items", SCHEMA),
    ("no-inputs", ("spec", "source", "inputs"), [], "at least 1 item", SCHEMA),
    # Source, data, compression.
    ("sha256-not-hex", ("spec", "source", "sha256"), "g" * 64, "spec.source.sha256", SCHEMA),
    ("sha256-short", ("spec", "source", "sha256"), "abc123", "spec.source.sha256", SCHEMA),
    ("format-keras", ("spec", "source", "format"), "keras", "spec.source.format", SCHEMA),
    ("metric-top5", ("spec", "dataset", "metric"), "top5", "spec.dataset.metric", SCHEMA),
    ("no-calibration", ("spec", "dataset", "calibration"), DROP, "spec.dataset.calibration", SCHEMA),
    ("no-precisions", ("spec", "compression", "precisions"), [], "at least 1 item", SCHEMA),
    ("five-precisions", ("spec", "compression", "precisions"), ["fp16"] * 5, "at most 4 items", SCHEMA),
    ("precision-int4", ("spec", "compression", "precisions"), ["int4"], "spec.compression.precisions.0", SCHEMA),
    ("calibration-samples-zero", ("spec", "compression", "calibrationSamples"), 0, "greater than or equal to 1", SCHEMA),
    ("calibration-samples-huge", ("spec", "compression", "calibrationSamples"), 100001, "less than or equal to 100000", SCHEMA),
    ("opset-24", ("spec", "compression", "opset"), 24, "less than or equal to 23", SCHEMA),
    # Targets.
    ("triton-model-name-uppercase", ("spec", "targets", "triton"), TRITON | {"modelName": "Digits"}, "spec.targets.triton.modelName", SCHEMA),
    ("triton-tensorrt-on-cpu", ("spec", "targets", "triton"), TRITON | {"tensorrt": True}, "tensorrt needs instanceGroup.kind GPU", "tensorrt needs instanceGroup.kind GPU"),
    ("triton-max-batch-zero", ("spec", "targets", "triton"), TRITON | {"maxBatchSize": 0}, "greater than or equal to 1", SCHEMA),
    ("triton-server-url-ftp", ("spec", "targets", "triton"), TRITON | {"serverUrl": "ftp://triton:8000"}, "spec.targets.triton.serverUrl", SCHEMA),
    ("triton-secret-name", ("spec", "targets", "triton"), TRITON | {"credentialsSecret": "../kube-system/admin"}, "spec.targets.triton.credentialsSecret", SCHEMA),
    ("seventeen-edge-targets", ("spec", "targets", "edge"), [{"name": f"e{i}", "runtime": "ncnn"} for i in range(17)], "at most 16 items", SCHEMA),
    ("edge-name-64-characters", ("spec", "targets", "edge"), [{"name": "e" * 64, "runtime": "ncnn"}], "spec.targets.edge.0.name", SCHEMA),
    ("edge-runtime-coreml", ("spec", "targets", "edge"), [{"name": "macs", "runtime": "coreml"}], "spec.targets.edge.0.runtime", SCHEMA),
    # SLOs, benchmark, worker.
    ("accuracy-drop-negative", ("spec", "slo", "maxAccuracyDropPoints"), -1, "greater than or equal to 0", SCHEMA),
    ("accuracy-drop-over-100", ("spec", "slo", "maxAccuracyDropPoints"), 101, "less than or equal to 100", SCHEMA),
    ("size-limit-zero", ("spec", "slo", "maxSizeBytes"), 0, "greater than or equal to 1", SCHEMA),
    ("threads-zero", ("spec", "benchmark", "threads"), 0, "greater than or equal to 1", SCHEMA),
    ("runs-too-many", ("spec", "benchmark", "runs"), 100001, "less than or equal to 100000", SCHEMA),
    ("worker-cpu-words", ("spec", "worker"), {"resources": {"requests": {"cpu": "lots"}}}, "spec.worker.resources.requests.cpu", SCHEMA),
    ("worker-memory-spaces", ("spec", "worker"), {"resources": {"limits": {"memory": "8 GB"}}}, "spec.worker.resources.limits.memory", SCHEMA),
    ("backoff-limit-21", ("spec", "worker"), {"backoffLimit": 21}, "less than or equal to 20", SCHEMA),
    ("deadline-59-seconds", ("spec", "worker"), {"activeDeadlineSeconds": 59}, "greater than or equal to 60", SCHEMA),
    ("artifact-policy-purge", ("spec", "artifactPolicy"), "Purge", "spec.artifactPolicy", SCHEMA),
    ("spec-a-string", ("spec",), "compress it please", "valid dictionary", SCHEMA),
    ("unknown-spec-field", ("spec", "sourceUri"), "s3://models/digits.pt", "Extra inputs are not permitted", PRUNED),
]


def test_the_suite_covers_at_least_fifty_bad_manifests():
    assert len(BAD_MANIFESTS) >= 50
    assert len({case[0] for case in BAD_MANIFESTS}) == len(BAD_MANIFESTS)


@pytest.mark.parametrize(("path", "value", "message", "admission"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_MANIFESTS])
def test_bad_manifest_is_refused_by_the_model_the_crd_and_the_cli(path, value, message, admission, digits_data,
                                                                   previous, crd_validator, schema, tmp_path, capsys):
    manifest = mutated(digits_example(digits_data, FAST), path, value)
    with pytest.raises(ValidationError) as invalid:
        CompressedModel.model_validate(manifest)
    assert message in str(invalid.value)

    errors = list(crd_validator.iter_errors(manifest))
    cel_messages = [rule["message"] for rules in _cel_rules(schema).values() for rule in rules]
    if admission == SCHEMA:
        # A missing property is reported on its parent, everything else on the field itself (or inside it).
        located = [tuple(e.absolute_path) for e in errors]
        assert any(where[: len(path)] == path or where == path[:-1] for where in located), errors
    else:
        assert errors == []  # the OpenAPI schema lets it through: a CEL rule, the API server or the operator must not
        if admission in (PRUNED, KUBERNETES, OPERATOR):
            assert admission != OPERATOR or not any(message in m for m in cel_messages)
        else:
            assert admission in cel_messages

    out, before = previous
    file = tmp_path / "manifest.yaml"
    file.write_text(yaml.safe_dump(manifest))
    code, err = refused_by_the_cli(["run", "-q", "-f", str(file), "-o", str(out)], capsys)
    assert code == 3, err
    assert "[InvalidSpec]" in err and message in err
    assert snapshot(out) == before


# --- hostile inputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_onnx(digits_data, tmp_path_factory) -> Path:
    """The digits CNN as ONNX with a dynamic batch."""
    from test_pipeline_sources import export_digits_onnx

    return export_digits_onnx(digits_data, tmp_path_factory.mktemp("onnx") / "digits.onnx")


def _onnx_with_external_data(digits_onnx: Path, directory: Path, location: str | None = None) -> Path:
    """The digits model with its weights in `weights.bin` beside it; `location` then rewrites where the
    model says they are (the file itself stays put)."""
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx.load(str(digits_onnx)), str(directory / "model.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    if location is not None:
        model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        (directory / "model.onnx").write_bytes(model.SerializeToString())
    return directory / "model.onnx"


def _two_input_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    shape = ["n", 1, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "extra"], ["logits"])], "two-inputs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("extra", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class Inputs:
    """Builds each hostile input under tmp_path; every method returns the spec changes that use it."""

    def __init__(self, tmp_path: Path, digits_data: Path, digits_onnx: Path, monkeypatch):
        self.tmp, self.data, self.onnx, self.monkeypatch = tmp_path, digits_data, digits_onnx, monkeypatch
        evaluation = np.load(digits_data / "evaluation.npz")
        self.inputs, self.labels = evaluation["inputs"], evaluation["labels"]

    def source(self, path: Path, fmt: str = "torchscript", shape=(-1, 1, 8, 8), name="input", dtype="float32") -> dict:
        return {"source": {"uri": f"file://{path}", "format": fmt,
                           "inputs": [{"name": name, "shape": list(shape), "dtype": dtype}]}}

    def evaluation(self, name: str, **arrays) -> dict:
        np.savez(self.tmp / name, **arrays)
        return self.evaluation_uri(self.tmp / name)

    def evaluation_uri(self, path: Path) -> dict:
        return {"dataset": {"evaluation": {"uri": f"file://{path}"}}}

    def truncated(self, original: Path, fmt: str) -> dict:
        cut = self.tmp / f"truncated{original.suffix}"
        cut.write_bytes(original.read_bytes()[: original.stat().st_size // 2])
        return self.source(cut, fmt)

    def external(self, location: str | None, prepare=None) -> dict:
        directory = self.tmp / "model"
        model = _onnx_with_external_data(self.onnx, directory, location)
        if prepare:
            prepare(directory)
        return self.source(model, "onnx")

    def fixed_batch_onnx(self) -> dict:
        from test_pipeline_sources import export_digits_onnx

        return self.source(export_digits_onnx(self.data, self.tmp / "fixed.onnx", fixed_batch=1), "onnx")

    def claim_symlink(self) -> dict:
        root = self.tmp / "pvc"
        (root / "models").mkdir(parents=True)
        (root / "models" / "digits.pt").symlink_to(self.data / "digits.torchscript.pt")
        self.monkeypatch.setenv("MODELFLEET_PVC_ROOT", str(root))
        return {"source": {"uri": "pvc://models/digits.pt"}}

    def manifest_dir_symlink(self) -> dict:
        (self.tmp / "data").symlink_to(self.data)  # the manifest sits in tmp; relative file:// means under it
        return {"source": {"uri": "file://data/digits.torchscript.pt"}}

    def huge_header(self) -> dict:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**10, 1, 8, 8)})
        with zipfile.ZipFile(self.tmp / "huge.npz", "w") as archive:
            archive.writestr("inputs.npy", header.getvalue() + b"\x00" * 256)
            archive.writestr("labels.npy", _npy_bytes(self.labels))
        return self.evaluation_uri(self.tmp / "huge.npz")

    def bomb(self) -> dict:
        self.monkeypatch.setattr(dataset, "MAX_ARRAY_BYTES", 1 << 20)
        np.savez_compressed(self.tmp / "bomb.npz", inputs=np.zeros((8192, 1, 8, 8), np.float32),
                            labels=np.zeros(8192, np.int64))
        assert (self.tmp / "bomb.npz").stat().st_size < 64 << 10  # 2 MiB of arrays in a few KiB
        return self.evaluation_uri(self.tmp / "bomb.npz")

    def with_bad_values(self, value: float) -> dict:
        inputs = self.inputs.copy()
        inputs[3, 0, 2, 2] = inputs[7, 0, 0, 0] = inputs[9, 0, 7, 7] = value
        return self.evaluation("bad-values.npz", inputs=inputs, labels=self.labels)

    def empty(self) -> dict:
        (self.tmp / "empty.pt").write_bytes(b"")
        return self.source(self.tmp / "empty.pt")

    def garbage(self, name: str) -> Path:
        (self.tmp / name).write_bytes(b"\x00this is not what it claims to be\xff" * 64)
        return self.tmp / name


ONNX_SHAPE_PROBLEM = "input does not match the spec"
HOSTILE_INPUTS = [
    # id, build (Inputs -> spec changes), exit code, reason, message
    # Models that are not what they say.
    ("truncated-onnx", lambda i: i.truncated(i.onnx, "onnx"), 4, "InvalidSource", "not a valid ONNX model"),
    ("truncated-torchscript", lambda i: i.truncated(i.data / "digits.torchscript.pt", "torchscript"), 4, "InvalidSource", "not a torchscript model"),
    ("empty-model-file", lambda i: i.empty(), 4, "InvalidSource", "not a torchscript model"),
    ("garbage-as-exported-program", lambda i: i.source(i.garbage("model.pt2"), "exported-program"), 4, "InvalidSource", "not a exported-program model"),
    # Models whose signature is not the spec's.
    ("onnx-input-name", lambda i: i.source(i.onnx, "onnx", name="pixels"), 4, "InputMismatch", "name 'input' != 'pixels'"),
    ("onnx-input-shape", lambda i: i.source(i.onnx, "onnx", shape=(-1, 3, 8, 8)), 4, "InputMismatch", "shape [-1, 1, 8, 8] != [-1, 3, 8, 8]"),
    ("onnx-input-rank", lambda i: i.source(i.onnx, "onnx", shape=(-1, 64)), 4, "InputMismatch", "shape [-1, 1, 8, 8] != [-1, 64]"),
    ("onnx-input-dtype", lambda i: i.source(i.onnx, "onnx", dtype="float16"), 4, "InputMismatch", "dtype float32 != float16"),
    ("onnx-fixed-batch-declared-dynamic", lambda i: i.fixed_batch_onnx(), 4, "InputMismatch", "the batch dimension is fixed at 1, the spec declares it dynamic (-1): declare shape [1, 1, 8, 8]"),
    ("onnx-two-inputs", lambda i: i.source(_two_input_onnx(i.tmp / "two.onnx"), "onnx"), 4, "InputMismatch", "the model has 2 inputs, the spec declares 1"),
    ("torchscript-input-shape", lambda i: i.source(i.data / "digits.torchscript.pt", shape=(-1, 1, 16, 16)), 4, "InputMismatch", "does not accept the declared inputs (input[-1, 1, 16, 16]:float32)"),
    # ONNX external data that leaves the model's directory, or is no file.
    ("onnx-external-data-parent", lambda i: i.external("../weights.bin"), 4, "PathEscape", "external data of tensor"),
    ("onnx-external-data-absolute", lambda i: i.external("/etc/passwd"), 4, "PathEscape", "'/etc/passwd' is absolute"),
    ("onnx-external-data-symlink", lambda i: i.external("link.bin", lambda d: (d / "link.bin").symlink_to(i.data / "calibration.npz")), 4, "PathEscape", "'link.bin' leads to"),
    ("onnx-external-data-fifo", lambda i: i.external("fifo.bin", lambda d: os.mkfifo(d / "fifo.bin")), 4, "SourceNotFound", "fifo.bin is not a file beside the model"),
    ("onnx-external-data-missing", lambda i: i.external("missing.bin"), 4, "SourceNotFound", "missing.bin is not a file beside the model"),
    # Paths that leave their root at run time (the URI itself is clean).
    ("source-symlink-out-of-the-claim", lambda i: i.claim_symlink(), 4, "PathEscape", "pvc://models/digits.pt: 'digits.pt' leads to"),
    ("source-symlink-out-of-the-manifest-dir", lambda i: i.manifest_dir_symlink(), 4, "PathEscape", "file://data/digits.torchscript.pt: 'data/digits.torchscript.pt' leads to"),
    ("source-is-dev-zero", lambda i: {"source": {"uri": "file:///dev/zero"}}, 4, "SourceNotFound", "file:///dev/zero: not a regular file"),
    ("evaluation-is-a-directory", lambda i: i.evaluation_uri(i.tmp), 4, "SourceNotFound", "not a regular file"),
    # Data files that are not npz, or promise more than they hold.
    ("npz-garbage", lambda i: i.evaluation_uri(i.garbage("garbage.npz")), 6, "InvalidDataset", "not a readable .npz file: File is not a zip file"),
    ("npz-is-a-plain-npy", lambda i: (np.save(i.tmp / "plain.npy", i.inputs), i.evaluation_uri(i.tmp / "plain.npy"))[1], 6, "InvalidDataset", "not a readable .npz file"),
    ("npz-huge-declared-shape", lambda i: i.huge_header(), 6, "InvalidDataset", "'inputs' declares shape [10000000000, 1, 8, 8] of float32 (2560000000000 bytes), more than the"),
    ("npz-zip-bomb", lambda i: i.bomb(), 6, "InvalidDataset", "more than the 1048576 bytes a dataset array may hold"),
    ("npz-pickled-objects", lambda i: i.evaluation("objects.npz", inputs=np.array([{"x": 1}] * 4, dtype=object), labels=i.labels[:4]), 6, "InvalidDataset", "Object arrays cannot be loaded when allow_pickle=False"),
    ("npz-missing-inputs", lambda i: i.evaluation("renamed.npz", x=i.inputs, labels=i.labels), 6, "InvalidDataset", "missing the 'inputs' array (found: ['labels', 'x'])"),
    # Inputs that lie.
    ("inputs-strings", lambda i: i.evaluation("strings.npz", inputs=np.array(["1.0"] * 540), labels=i.labels), 6, "InvalidDataset", "'inputs' must hold numbers, got <U3"),
    ("inputs-a-single-value", lambda i: i.evaluation("scalar.npz", inputs=np.float32(1.0), labels=i.labels), 6, "InvalidDataset", "'inputs' must hold samples along its first axis"),
    ("inputs-flattened", lambda i: i.evaluation("flat.npz", inputs=i.inputs.reshape(len(i.inputs), -1), labels=i.labels), 6, "InvalidDataset", "samples have shape [64], the model input 'input' expects [1, 8, 8]"),
    ("inputs-nan", lambda i: i.with_bad_values(np.nan), 6, "InvalidDataset", "'inputs' holds 3 NaN or infinite values"),
    ("inputs-infinite", lambda i: i.with_bad_values(np.inf), 6, "InvalidDataset", "'inputs' holds 3 NaN or infinite values"),
    # Labels that lie.
    ("labels-too-few", lambda i: i.evaluation("short.npz", inputs=i.inputs, labels=i.labels[:-1]), 6, "InvalidDataset", "'labels' must be one integer per sample (540), got shape [539]"),
    ("labels-two-dimensional", lambda i: i.evaluation("2d.npz", inputs=i.inputs, labels=i.labels[:, None]), 6, "InvalidDataset", "got shape [540, 1]"),
    ("labels-negative", lambda i: i.evaluation("negative.npz", inputs=i.inputs, labels=i.labels - 1), 6, "InvalidDataset", "'labels' holds negative class indices"),
    ("labels-booleans", lambda i: i.evaluation("bool.npz", inputs=i.inputs, labels=i.labels > 4), 6, "InvalidDataset", "'labels' must be integers, got bool"),
    ("labels-out-of-range", lambda i: i.evaluation("range.npz", inputs=i.inputs, labels=i.labels * 3), 6, "InvalidDataset", "label 27 is out of range for a model with 10 outputs"),
]


def test_the_suite_covers_at_least_twenty_hostile_inputs():
    assert len(HOSTILE_INPUTS) + len(HOSTILE_RESULTS) >= 20
    assert len({case[0] for case in HOSTILE_INPUTS}) == len(HOSTILE_INPUTS)


@pytest.mark.parametrize(("build", "exit_code", "reason", "message"),
                         [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_INPUTS])
def test_hostile_input_is_refused_and_the_previous_result_stays(build, exit_code, reason, message, digits_data,
                                                                digits_onnx, previous, tmp_path, monkeypatch, capsys):
    changes = build(Inputs(tmp_path, digits_data, digits_onnx, monkeypatch))
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, {**FAST, **changes})))
    out, before = previous
    code, err = refused_by_the_cli(["run", "-q", "-f", str(manifest), "-o", str(out)], capsys)
    assert code == exit_code and err.rstrip().endswith(f"[{reason}]"), err
    assert 1 <= code <= 127  # permanent: retrying cannot help
    assert message in err
    assert snapshot(out) == before


# --- hostile result files ------------------------------------------------------------------------

HOSTILE_RESULTS = [
    # id, change to the published artifact's entry in result.json, message
    ("files-parent", {"files": ["../../../../etc/passwd"]}, "'..', '.' and empty segments are refused"),
    ("files-absolute", {"files": ["/etc/passwd"]}, "'/etc/passwd' is absolute"),
    ("files-dot-segment", {"files": ["onnx-fp16/./model.onnx"]}, "'..', '.' and empty segments are refused"),
    ("files-backslashes", {"files": ["..\\..\\etc\\passwd"]}, "NUL character or a backslash"),
    ("files-empty-list", {"files": []}, "at least 1 item"),
    ("smoke-parent", {"smoke": "../smoke.npz"}, "'..', '.' and empty segments are refused"),
    ("smoke-absolute", {"smoke": "/root/.ssh/id_rsa"}, "'/root/.ssh/id_rsa' is absolute"),
]


@pytest.mark.parametrize(("change", "message"), [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_RESULTS])
def test_a_result_naming_files_outside_its_directory_is_not_published(change, message, digits_data, previous,
                                                                       tmp_path, capsys):
    out, _ = previous
    result = json.loads((out / "result.json").read_text())
    (artifact,) = [a for a in result["artifacts"] if a["name"] == "onnx-fp16"]
    artifact.update(change)
    (out / "result.json").write_text(json.dumps(result))
    before = snapshot(out)
    repository = tmp_path / "repository"
    manifest = tmp_path / "manifest.yaml"
    triton = {"repository": f"file://{repository}", "modelName": "digits", "precision": "fp16"}
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, {**FAST, "targets": {"triton": triton}})))

    code, err = refused_by_the_cli(["publish", "triton", "-q", "-f", str(manifest), "-r", str(out)], capsys)
    assert code == 3, err
    assert "[InvalidResult]" in err and "invalid result manifest" in err and message in err
    assert not repository.exists()
    assert snapshot(out) == before


# --- controls: what the checks must let through ----------------------------------------------------


def test_onnx_external_data_beside_the_model_is_folded_into_one_file(digits_data, digits_onnx, tmp_path):
    model = _onnx_with_external_data(digits_onnx, tmp_path / "model")
    changes = {**FAST, "source": {"uri": f"file://{model}", "format": "onnx"}}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["baseline"]["accuracy"] >= 95.0
    assert sorted(p.name for p in (tmp_path / "out" / "onnx-fp32").iterdir()) == ["model.onnx", "smoke.npz"]


def test_the_largest_allowed_name_and_batch_pass(digits_data):
    manifest = digits_example(digits_data)
    manifest["metadata"]["name"] = "n" * MAX_NAME_LENGTH
    manifest["spec"]["source"]["inputs"][0]["shape"] = [-1, 1, MAX_BATCH_ELEMENTS // 1024, 1024]
    CompressedModel.model_validate(manifest)
    manifest["spec"]["source"]["inputs"][0]["shape"] = [2, 1, MAX_BATCH_ELEMENTS // 1024, 1024]
    with pytest.raises(ValidationError, match="modelfleet loads at once"):
        CompressedModel.model_validate(manifest)
