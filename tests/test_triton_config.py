"""config.pbtxt generation: table tests, each parsed with Triton's own model_config.proto."""

import pytest
from google.protobuf import text_format
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.api.result import ModelSignature
from modelfleet.publish.triton_config import has_dynamic_batch, model_config

DIGITS = ModelSignature.model_validate({
    "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 10]}],
})
FIXED = ModelSignature.model_validate({
    "inputs": [{"name": "pixels", "dtype": "uint8", "shape": [1, 3, -1, -1]}],
    "outputs": [{"name": "boxes", "dtype": "float32", "shape": [1, 100, 4]},
                {"name": "classes", "dtype": "int64", "shape": [1, 100]}],
})


def target(**changes) -> TritonTarget:
    return TritonTarget.model_validate({"repository": "file:///models", "modelName": "digits"} | changes)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_dynamic_batch_model_gets_batching_and_dims_without_the_batch():
    config = parse(model_config("digits", DIGITS, target(), "int8-static", "1:abc"))
    assert config.name == "digits" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", model_config_pb2.TYPE_FP32, [1, 8, 8])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", [10])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.version_policy.latest.num_versions == 2
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert config.parameters["modelfleet_publication"].string_value == "1:abc"


def test_fixed_batch_model_is_not_batched_and_keeps_every_dim():
    config = parse(model_config("detector", FIXED, target(), "fp32", "1:abc"))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, -1, -1]
    assert config.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert [(o.name, o.data_type) for o in config.output] == [("boxes", model_config_pb2.TYPE_FP32),
                                                              ("classes", model_config_pb2.TYPE_INT64)]


@pytest.mark.parametrize("changes, check", [
    ({"maxBatchSize": 64}, lambda c: c.max_batch_size == 64),
    ({"dynamicBatching": {"enabled": False}}, lambda c: not c.HasField("dynamic_batching")),
    ({"dynamicBatching": {"maxQueueDelayMicroseconds": 2500}},
     lambda c: c.dynamic_batching.max_queue_delay_microseconds == 2500),
    ({"keepVersions": 3}, lambda c: c.version_policy.latest.num_versions == 3),
    ({"instanceGroup": {"kind": "GPU", "count": 2}},
     lambda c: [(g.kind, g.count) for g in c.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]),
    ({"warmup": False}, lambda c: not c.model_warmup),
])
def test_spec_settings_reach_the_config(changes, check):
    assert check(parse(model_config("digits", DIGITS, target(**changes), "fp32", "1:abc")))


@pytest.mark.parametrize("precision, mode", [("fp32", "FP32"), ("fp16", "FP16"), ("int8-static", "INT8")])
def test_tensorrt_accelerator_on_gpu(precision, mode):
    config = parse(model_config("digits", DIGITS, target(instanceGroup={"kind": "GPU"}, tensorrt=True), precision, "1:abc"))
    [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == mode


def test_tensorrt_without_gpu_instances_is_refused():
    with pytest.raises(ValidationError, match="tensorrt needs instanceGroup.kind GPU"):
        target(tensorrt=True)


def test_warmup_feeds_zeros_of_a_concrete_shape():
    [warmup] = parse(model_config("detector", FIXED, target(), "fp32", "1:abc")).model_warmup
    assert warmup.batch_size == 1
    pixels = warmup.inputs["pixels"]
    assert pixels.zero_data and list(pixels.dims) == [1, 3, 1, 1]  # dynamic dims become 1
    [digits_warmup] = parse(model_config("digits", DIGITS, target(), "fp32", "1:abc")).model_warmup
    assert list(digits_warmup.inputs["input"].dims) == [1, 8, 8]


def test_names_with_quotes_survive_the_text_format():
    odd = ModelSignature.model_validate({
        "inputs": [{"name": 'in"put:0', "dtype": "float32", "shape": [-1, 4]}],
        "outputs": [{"name": "out\\0", "dtype": "float32", "shape": [-1, 2]}],
    })
    config = parse(model_config("digits", odd, target(), "fp32", "1:abc"))
    assert (config.input[0].name, config.output[0].name) == ('in"put:0', "out\\0")


def test_unservable_element_type_is_a_clear_error():
    strings = ModelSignature.model_validate({"inputs": [{"name": "text", "dtype": "complex64", "shape": [-1]}],
                                             "outputs": [{"name": "y", "dtype": "float32", "shape": [-1]}]})
    with pytest.raises(ValueError, match="'text' has element type complex64"):
        model_config("m", strings, target(), "fp32", "1:abc")


@pytest.mark.parametrize("shapes, batched", [
    (([-1, 3], [-1, 2]), True),
    (([1, 3], [-1, 2]), False),
    (([-1, 3], [2]), False),
    (([], [-1]), False),
])
def test_batching_needs_a_dynamic_first_dim_everywhere(shapes, batched):
    signature = ModelSignature.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": shapes[0]}],
                                               "outputs": [{"name": "y", "dtype": "float32", "shape": shapes[1]}]})
    assert has_dynamic_batch(signature) is batched
