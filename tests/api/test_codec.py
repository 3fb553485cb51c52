"""The wire codec (client/explainserve_client/codec.py) and the api layer's Explain codec
(api/inputs.py, api/explain.py), without a server: every dtype round-trips byte for byte,
tensors split across messages come back whole, and bad dtypes, shapes and lengths are refused
with errors that name the value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from explainserve.api.explain import decode_explain, encode_explain
from explainserve.api.inputs import decode_input
from explainserve.engine.explain import ExplainResult
from explainserve.engine.rendering import Explanation
from explainserve.errors import InvalidArgument
from explainserve_client import codec
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client.client import Client, assemble_explanations
from google.protobuf import struct_pb2

WIRE_DTYPES = {pb.DATA_TYPE_FLOAT32: "<f4", pb.DATA_TYPE_FLOAT16: "<f2",
               pb.DATA_TYPE_FLOAT64: "<f8", pb.DATA_TYPE_INT64: "<i8",
               pb.DATA_TYPE_INT32: "<i4", pb.DATA_TYPE_UINT8: "u1"}


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that use the dtype's range: negatives, fractions, large magnitudes."""
    generator = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return np.asarray(generator.standard_normal(shape) * 1000).astype(kind)
    info = np.iinfo(kind)
    return np.asarray(generator.integers(info.min, info.max, shape, dtype=kind, endpoint=True))


def test_the_codec_covers_every_wire_dtype_of_the_contract():
    declared = {value for value in pb.DataType.values() if value != pb.DATA_TYPE_UNSPECIFIED}
    assert declared == set(WIRE_DTYPES)


@pytest.mark.parametrize("wire_type", sorted(WIRE_DTYPES), ids=pb.DataType.Name)
@pytest.mark.parametrize("shape", [(2, 3, 4), (7,), (), (0, 5)])
def test_every_dtype_round_trips_little_endian_and_row_major(wire_type, shape):
    little = np.dtype(WIRE_DTYPES[wire_type])
    array = sample(little.str, shape, seed=len(shape))
    for given in (array, array.astype(little.newbyteorder(">"))):  # either byte order in
        tensor = codec.encode(given, "x")
        assert (tensor.name, tensor.dtype, list(tensor.shape)) == ("x", wire_type, list(shape))
        assert tensor.data == array.astype(little).tobytes(order="C")
        decoded = codec.decode(tensor)
        assert decoded.dtype == little.newbyteorder("=") and decoded.shape == shape
        np.testing.assert_array_equal(decoded, array)


def test_a_non_contiguous_array_is_sent_row_major():
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T  # a transposed view
    tensor = codec.encode(array, "t")
    assert list(tensor.shape) == [4, 3]
    assert np.frombuffer(tensor.data, "<f4").tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    np.testing.assert_array_equal(codec.decode(tensor), array)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.int16, np.uint32])
def test_a_dtype_without_a_wire_type_is_refused_naming_it(dtype):
    with pytest.raises(TypeError, match=rf"dtype {np.dtype(dtype)} of tensor 'scores' has no wire type"):
        codec.encode(np.zeros(3, dtype), "scores")


@pytest.mark.parametrize("tensor, message", [
    (pb.Tensor(name="x", dtype=99, shape=[1], data=b"\0" * 4), "x has unsupported dtype 99"),
    (pb.Tensor(dtype=pb.DATA_TYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4),
     "tensor has unsupported dtype 0"),
    (pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2, -3]),
     "x has a negative dimension in shape [2, -3]"),
    (pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 3], data=b"\0" * 23),
     "x has 23 bytes of data but shape [2, 3] and dtype float32 need 24"),
    (pb.Tensor(name="x", dtype=pb.DATA_TYPE_INT64, shape=[2], data=b"\0" * 24),
     "x has 24 bytes of data but shape [2] and dtype int64 need 16"),
    # int64 arithmetic would wrap 2**32 x 2**32 elements to 0 and accept empty data
    (pb.Tensor(name="x", dtype=pb.DATA_TYPE_UINT8, shape=[2 ** 32, 2 ** 32]),
     f"x has 0 bytes of data but shape [{2 ** 32}, {2 ** 32}] and dtype uint8 need {2 ** 64}"),
])
def test_an_inconsistent_tensor_is_refused_naming_what_is_wrong(tensor, message):
    with pytest.raises(codec.TensorDecodeError) as error:
        codec.decode(tensor)
    assert str(error.value) == message


def test_a_tensor_that_fits_is_sent_whole():
    tensor = codec.encode(np.ones((4, 4), np.float32), "small")  # 64 bytes
    (only,) = codec.split(tensor, chunk_bytes=64)
    assert only is tensor and only.byte_offset == 0 and only.total_bytes == 0


@pytest.mark.parametrize("chunk_bytes", [768, 1000, 4000 - 1, 7])
def test_a_large_tensor_is_split_into_chunks_and_reassembled_in_order(chunk_bytes):
    array = sample("<f4", (10, 100), seed=3)  # 4,000 bytes
    chunks = list(codec.split(codec.encode(array, "big"), chunk_bytes))
    assert len(chunks) == math.ceil(4000 / chunk_bytes)
    assert [len(c.data) for c in chunks[:-1]] == [chunk_bytes] * (len(chunks) - 1)
    assert [c.byte_offset for c in chunks] == [i * chunk_bytes for i in range(len(chunks))]
    assert all((c.name, c.dtype, list(c.shape), c.total_bytes) ==
               ("big", pb.DATA_TYPE_FLOAT32, [10, 100], 4000) for c in chunks)
    assembler = codec.TensorAssembler()
    for index, chunk in enumerate(chunks):
        assert not assembler.complete
        assembler.add(pb.Tensor.FromString(chunk.SerializeToString()))  # as the wire has it
        assert assembler.complete == (index == len(chunks) - 1)
    np.testing.assert_array_equal(assembler.result(), array)


def test_chunks_out_of_order_or_missing_are_refused():
    chunks = list(codec.split(codec.encode(np.arange(100, dtype=np.int32), "ids"), 128))
    swapped = codec.TensorAssembler()
    swapped.add(chunks[0])
    with pytest.raises(codec.TensorDecodeError,
                       match=r"chunk of 'ids' at byte 256 arrived, expected byte 128"):
        swapped.add(chunks[2])
    cut = codec.TensorAssembler()
    for chunk in chunks[:-1]:
        cut.add(chunk)
    with pytest.raises(codec.TensorDecodeError, match="stream ended before its last chunk"):
        cut.result()
    with pytest.raises(codec.TensorDecodeError, match="incomplete"):
        codec.TensorAssembler().result()


def test_an_input_is_image_bytes_or_a_float32_tensor():
    assert decode_input(pb.Input(encoded_image=b"\x89PNG...")) == b"\x89PNG..."
    image = sample("<f4", (3, 8, 8))
    decoded = decode_input(pb.Input(tensor=codec.encode(image, "input")))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("source, field, message", [
    (pb.Input(), "input", "input holds neither encoded_image nor tensor"),
    (pb.Input(tensor=codec.encode(np.zeros(3, np.int64))), "input",
     "input.tensor must be float32, got dtype DATA_TYPE_INT64"),
    (pb.Input(tensor=codec.encode(np.zeros(3, np.float64))), "reference",
     "reference.tensor must be float32, got dtype DATA_TYPE_FLOAT64"),
    (pb.Input(tensor=pb.Tensor(dtype=77, shape=[3])), "input",
     "input.tensor must be float32, got dtype 77"),
    (pb.Input(tensor=pb.Tensor(name="input", dtype=pb.DATA_TYPE_FLOAT32, shape=[3, 2],
                               data=b"\0" * 8)), "input",
     "input.tensor: input has 8 bytes of data but shape [3, 2] and dtype float32 need 24"),
])
def test_a_bad_input_is_invalid_argument_naming_it(source, field, message):
    with pytest.raises(InvalidArgument) as error:
        decode_input(source, field)
    assert error.value.status == "INVALID_ARGUMENT" and error.value.message == message


def test_an_explain_request_decodes_to_its_query():
    request = Client.explain_request(np.zeros((3, 8, 8), np.float32), "demo", "occlusion",
                                     targets=[2, 5], layer="features", top_k=0,
                                     extra_layers=["a", "b"], outputs=("heatmap",), box=True,
                                     window=16, stride=4)
    query = decode_explain(request, time_remaining=None)
    assert (query.model, query.method, query.targets, query.layer) == ("demo", "occlusion", (2, 5), "features")
    assert query.extra_layers == ("a", "b") and query.deadline is None
    assert query.params == {"window": 16, "stride": 4}
    assert query.outputs == frozenset({"heatmap", "box"})
    assert query.image.shape == (3, 8, 8)
    default = decode_explain(pb.ExplainRequest(model="m", method="saliency",
                                               input=pb.Input(encoded_image=b"x")), 2.0)
    assert default.outputs == frozenset({"attribution", "heatmap"}) and default.deadline > 0


@pytest.mark.parametrize("request_, message", [
    (pb.ExplainRequest(method="gradcam"), "model is empty"),
    (pb.ExplainRequest(model="demo"), "method is empty"),
    (pb.ExplainRequest(model="demo", method="gradcam", input=pb.Input(encoded_image=b"x"),
                       outputs=[pb.OUTPUT_HEATMAP, 42]),
     "outputs [42] are not known values; choose from ['OUTPUT_ATTRIBUTION', 'OUTPUT_HEATMAP', "
     "'OUTPUT_OVERLAY_PNG', 'OUTPUT_BOX']"),
])
def test_a_bad_explain_request_is_invalid_argument_naming_it(request_, message):
    with pytest.raises(InvalidArgument) as error:
        decode_explain(request_, None)
    assert error.value.message == message


def test_explain_results_cross_messages_in_chunks_and_reassemble_exactly():
    attribution = sample("<f4", (3, 32, 32), seed=1)  # 12,288 bytes
    heatmap = sample("<f4", (32, 32), seed=2)  # 4,096 bytes
    tensors = {"layer:a": sample("<f4", (5, 5), seed=3), "layer:b": sample("<f4", (40, 40), seed=4)}
    items = [Explanation(target=3, label="star", score=1.5, probability=0.75,
                         attribution=attribution, heatmap=heatmap, tensors=tensors,
                         overlay_png=b"png!", box=(1, 2, 30, 31), grid_png=b"grid"),
             Explanation(target=0, label="circle", score=-0.5, probability=0.125, heatmap=heatmap)]
    chunk_bytes = 1000
    messages = [pb.ExplainResponse.FromString(m.SerializeToString())
                for m in encode_explain(ExplainResult(model=None, explanations=items), chunk_bytes)]
    for message in messages:
        carried = [t for t in (message.attribution, message.heatmap) if t.ByteSize()]
        carried += list(message.tensors)
        assert sum(len(t.data) for t in carried) <= chunk_bytes
        assert message.ByteSize() < chunk_bytes + 1024  # far below gRPC's 4 MiB
    by_target = [[m for m in messages if m.target_index == index] for index in (0, 1)]
    assert [m.complete for m in by_target[0]] == [False] * (len(by_target[0]) - 1) + [True]
    assert [m.complete for m in by_target[1]] == [False] * (len(by_target[1]) - 1) + [True]
    assert len(by_target[0]) > (12_288 + 4_096 + 100 + 6_400) // chunk_bytes
    head = by_target[0][0]
    assert (head.target, head.label, head.score, head.probability) == (3, "star", 1.5, 0.75)
    assert (head.box.x_min, head.box.y_min, head.box.x_max, head.box.y_max) == (1, 2, 30, 31)
    got = assemble_explanations(messages)
    assert [(e.target, e.label) for e in got] == [(3, "star"), (0, "circle")]
    np.testing.assert_array_equal(got[0].attribution, attribution)
    np.testing.assert_array_equal(got[0].heatmap, heatmap)
    assert sorted(got[0].tensors) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(got[0].tensors[name], array)
    assert (got[0].overlay_png, got[0].grid_png, got[0].box) == (b"png!", b"grid", (1, 2, 30, 31))
    assert got[1].attribution is None and got[1].tensors == {}
    np.testing.assert_array_equal(got[1].heatmap, heatmap)


def test_parameters_arrive_as_their_json_values():
    parameters = struct_pb2.Struct()
    parameters.update({"window": 16, "score": "logit", "squared": True, "noise_level": 0.25})
    request = pb.ExplainRequest(model="m", method="smoothgrad", parameters=parameters,
                                input=pb.Input(encoded_image=b"x"))
    assert decode_explain(request, None).params == {"window": 16, "score": "logit",
                                                    "squared": True, "noise_level": 0.25}
