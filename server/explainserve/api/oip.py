"""The Open Inference Protocol (KServe v2) wire: tensors and parameters in, an ExplainQuery out;
an ExplainResult in, typed output tensors out. Both the gRPC service and the HTTP/JSON routes
use it, so an inference request takes the same engine path as Explain. No torch here.

A request carries one image input, in one of three forms (ModelMetadata lists them):
  image        UINT8 [H, W, 3]   RGB pixels; the model's own preprocessing applies
  image_bytes  BYTES [1]         one PNG, JPEG or WebP file
  input        FP32  [1, C, H, W] an already preprocessed tensor
and names the explanation in its request parameters: `method` (required), `targets` (a class
index or comma-separated indices), `top_k`, `layer`; every other parameter is one of the
method's own parameters.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from explainserve_client._proto import grpc_predict_v2_pb2 as oip_pb
from PIL import Image

from explainserve.api.inputs import deadline_of
from explainserve.engine.explain import ExplainQuery, ExplainResult
from explainserve.errors import InvalidArgument, echo

PLATFORM = "explainserve"
MODEL_VERSION = "1"
# Request parameters that shape the query; any other one is a parameter of the method.
QUERY_PARAMETERS = ("method", "targets", "top_k", "layer")

NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
# Which InferTensorContents field holds each data type (the spec's table).
CONTENTS_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                   "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                   "UINT16": "uint_contents", "UINT32": "uint_contents",
                   "UINT64": "uint64_contents", "FP32": "fp32_contents",
                   "FP64": "fp64_contents", "BYTES": "bytes_contents"}

# The outputs a request may ask for: name -> (datatype, shape with -1 for a variable size,
# the engine's output that produces it or None when every explanation carries it).
OUTPUTS: dict[str, tuple[str, tuple[int, ...], str | None]] = {
    "targets": ("INT64", (-1,), None),
    "scores": ("FP32", (-1,), None),
    "probabilities": ("FP32", (-1,), None),
    "labels": ("BYTES", (-1,), None),
    "heatmap": ("FP32", (-1, -1, -1), "heatmap"),
    "attribution": ("FP32", (-1, -1, -1, -1), "attribution"),
    "overlay": ("BYTES", (-1,), "overlay"),
    "box": ("INT32", (-1, 4), "box"),
}
DEFAULT_OUTPUTS = ("targets", "scores", "probabilities", "labels", "heatmap", "attribution")


@dataclass(frozen=True)
class WireTensor:
    """One tensor of either transport: numpy data, or a list of byte strings for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


class TensorMismatch(InvalidArgument):
    """A well-formed request whose tensor has the wrong data type, shape or element count:
    INVALID_ARGUMENT over gRPC, 422 Unprocessable Content over HTTP (the body parsed; its
    tensor does not fit)."""

    code = 422


def check_header(name: str, datatype: str, shape: Sequence[int]) -> tuple[int, ...]:
    if datatype not in DATATYPES:
        raise TensorMismatch(f"input {echo(name)} has datatype {echo(datatype)}; "
                              f"valid: {', '.join(DATATYPES)}")
    shape = tuple(int(dim) for dim in shape)
    if any(dim < 0 for dim in shape):
        raise TensorMismatch(f"input {echo(name)} has a negative dimension in shape {list(shape)}")
    return shape


def tensor_from_values(name: str, datatype: str, shape: Sequence[int],
                       values: Sequence[Any]) -> WireTensor:
    """A tensor given as a flat list of elements (gRPC contents, JSON data)."""
    shape = check_header(name, datatype, shape)
    count = math.prod(shape)
    if len(values) != count:
        raise TensorMismatch(f"input {echo(name)} has {len(values)} elements but shape "
                              f"{list(shape)} needs {count}")
    if datatype == "BYTES":
        return WireTensor(name, datatype, shape, [bytes(v) for v in values])
    dtype = NUMPY_TYPES[datatype]
    if isinstance(values, np.ndarray):
        return WireTensor(name, datatype, shape, _checked_cast(name, datatype, values, dtype).reshape(shape))
    try:
        data = np.asarray(values, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as error:
        raise TensorMismatch(f"input {echo(name)}: its elements are not {datatype}: {error}") from None
    return WireTensor(name, datatype, shape, data)


def _checked_cast(name: str, datatype: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Parsed JSON numbers as `dtype`, refusing what a cast would change (a fraction or an
    out-of-range value for an integer type, a number for BOOL) rather than wrapping it."""
    kind = values.dtype.kind
    fits = (kind == "b" if dtype.kind == "b" else
            kind in "biu" if dtype.kind in "iu" else kind in "biuf")
    if fits and dtype.kind in "iu" and values.size:
        limits = np.iinfo(dtype)
        fits = limits.min <= values.min() and values.max() <= limits.max
    if not fits:
        raise TensorMismatch(f"input {echo(name)}: its elements are not {datatype} "
                             f"(got {values.dtype.name} values)")
    return values.astype(dtype, copy=False)


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> WireTensor:
    """A tensor given as raw little-endian bytes; BYTES elements each follow a 4-byte length."""
    shape = check_header(name, datatype, shape)
    count = math.prod(shape)
    if datatype == "BYTES":
        return WireTensor(name, datatype, shape, _split_bytes(name, raw, count))
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise TensorMismatch(f"input {echo(name)} has {len(raw)} bytes of data but shape "
                              f"{list(shape)} and datatype {datatype} need {count * dtype.itemsize}")
    return WireTensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype).reshape(shape))


def _split_bytes(name: str, raw: bytes, count: int) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorMismatch(f"input {echo(name)}: BYTES data ends inside a length prefix")
        length = int.from_bytes(raw[offset:offset + 4], "little")
        offset += 4
        if offset + length > len(raw):
            raise TensorMismatch(f"input {echo(name)}: a BYTES element of {length} bytes runs "
                                  f"past the end of the data ({len(raw)} bytes)")
        items.append(raw[offset:offset + length])
        offset += length
    if len(items) != count:
        raise TensorMismatch(f"input {echo(name)} has {len(items)} BYTES elements but its "
                              f"shape needs {count}")
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def image_of(inputs: Sequence[WireTensor]) -> bytes | np.ndarray:
    """The request's one image: encoded bytes (UINT8 pixels are encoded as a lossless PNG, so
    they take the same decoding path as an uploaded file) or a float32 array."""
    if len(inputs) != 1:
        raise TensorMismatch(f"a request takes exactly one image input, got {len(inputs)}: "
                              f"{[tensor.name for tensor in inputs]}")
    tensor = inputs[0]
    if tensor.datatype == "BYTES":
        if len(tensor.data) != 1:
            raise TensorMismatch(f"input {echo(tensor.name)} holds {len(tensor.data)} BYTES "
                                  "elements; send one encoded image, shape [1]")
        return tensor.data[0]
    if tensor.datatype == "UINT8":
        if len(tensor.shape) != 3 or tensor.shape[2] != 3 or 0 in tensor.shape:
            raise TensorMismatch(f"input {echo(tensor.name)} has UINT8 shape "
                                  f"{list(tensor.shape)}; RGB pixels take [H, W, 3]")
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(tensor.data), "RGB").save(buffer, "PNG",
                                                                       compress_level=1)
        return buffer.getvalue()
    if tensor.datatype == "FP32":
        return np.asarray(tensor.data, dtype=np.float32)
    raise TensorMismatch(f"input {echo(tensor.name)} has datatype {tensor.datatype}; an image "
                          "is UINT8 [H, W, 3], BYTES [1] (PNG/JPEG/WebP) or FP32 [1, C, H, W]")


def _targets(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise InvalidArgument(f"parameter 'targets' must be class indices, got {value!r}")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, float) and value.is_integer():
        return (int(value),)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    if isinstance(value, str):
        try:
            return tuple(int(part) for part in value.split(",") if part.strip())
        except ValueError:
            pass
    raise InvalidArgument(f"parameter 'targets' must be a class index or comma-separated "
                          f"indices, got {echo(str(value))}")


def _text(parameters: Mapping[str, Any], key: str) -> str:
    value = parameters.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(f"parameter {key!r} must be a string, got {value!r}")
    return value


def requested_outputs(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InvalidArgument(f"unknown outputs {[echo(n) for n in unknown]}; valid: "
                              f"{', '.join(OUTPUTS)}")
    return tuple(dict.fromkeys(names)) or DEFAULT_OUTPUTS


def explain_query(model: str, image: bytes | np.ndarray, parameters: Mapping[str, Any],
                  outputs: tuple[str, ...], time_remaining: float | None) -> ExplainQuery:
    """The ExplainQuery an inference request asks for (the same one Explain would build)."""
    if not model:
        raise InvalidArgument("model_name is empty")
    method = _text(parameters, "method")
    if not method:
        raise InvalidArgument("request parameter 'method' is missing; name an explanation "
                              "method (GET /v1/methods lists them)")
    top_k = parameters.get("top_k", 0)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidArgument(f"parameter 'top_k' must be a non-negative integer, got {top_k!r}")
    return ExplainQuery(
        model=model, method=method, image=image,
        targets=_targets(parameters["targets"]) if "targets" in parameters else (),
        top_k=top_k, layer=_text(parameters, "layer"),
        params={k: v for k, v in parameters.items() if k not in QUERY_PARAMETERS},
        deadline=deadline_of(time_remaining),
        outputs=frozenset(OUTPUTS[name][2] for name in outputs if OUTPUTS[name][2]),
    )


def result_tensors(result: ExplainResult, outputs: tuple[str, ...],
                   include_extra: bool) -> list[WireTensor]:
    """The requested outputs, one row per target; the method's own tensors follow when the
    request named no outputs."""
    items = result.explanations
    columns: dict[str, Any] = {
        "targets": lambda: np.array([i.target for i in items], dtype=np.int64),
        "scores": lambda: np.array([i.score for i in items], dtype=np.float32),
        "probabilities": lambda: np.array([i.probability for i in items], dtype=np.float32),
        "labels": lambda: [i.label.encode() for i in items],
        "heatmap": lambda: _stack([i.heatmap for i in items]),
        "attribution": lambda: _stack([i.attribution for i in items]),
        "overlay": lambda: [i.overlay_png for i in items] if all(
            i.overlay_png is not None for i in items) else None,
        "box": lambda: np.array([i.box for i in items], dtype=np.int32) if all(
            i.box is not None for i in items) else None,
    }
    tensors = []
    for name in outputs:
        data = columns[name]()
        if data is not None:
            tensors.append(_tensor(name, OUTPUTS[name][0], data))
    if include_extra and items:
        for name in items[0].tensors:
            tensors.append(_tensor(name, None, _stack([i.tensors[name] for i in items])))
    return tensors


def _stack(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    if not arrays or any(a is None for a in arrays):
        return None
    return np.stack(arrays)


def _tensor(name: str, datatype: str | None, data: np.ndarray | list[bytes]) -> WireTensor:
    if isinstance(data, list):
        return WireTensor(name, "BYTES", (len(data),), data)
    if datatype is None:
        by_dtype = {dtype: wire for wire, dtype in NUMPY_TYPES.items()}
        datatype = by_dtype.get(data.dtype.newbyteorder("<"), by_dtype.get(data.dtype, "FP32"))
    data = np.ascontiguousarray(data, dtype=NUMPY_TYPES[datatype])
    return WireTensor(name, datatype, tuple(data.shape), data)


def raw_bytes(tensor: WireTensor) -> bytes:
    if tensor.datatype == "BYTES":
        return join_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()


def model_metadata(model) -> dict[str, Any]:
    """A model's inputs and outputs, in the shape both transports send."""
    channels, height, width = model.input_shape
    inputs = [("image", "UINT8", [-1, -1, 3]), ("image_bytes", "BYTES", [1]),
              ("input", "FP32", [1, channels, height, width])]
    outputs = [(name, datatype, list(shape)) for name, (datatype, shape, _) in OUTPUTS.items()]
    return {
        "name": model.name, "versions": [MODEL_VERSION], "platform": PLATFORM,
        "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
        "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs],
    }


# gRPC: messages <-> the neutral form above.

def parameters_of(parameters: Mapping[str, oip_pb.InferParameter]) -> dict[str, Any]:
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidArgument(f"request parameter {echo(key)} holds no value")
        values[key] = getattr(parameter, choice)
    return values


def inputs_of(request: oip_pb.ModelInferRequest) -> list[WireTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for "
                              f"{len(request.inputs)} inputs")
    tensors = []
    for index, item in enumerate(request.inputs):
        if raw:
            tensors.append(tensor_from_raw(item.name, item.datatype, item.shape, raw[index]))
        else:
            field = CONTENTS_FIELDS.get(item.datatype)
            check_header(item.name, item.datatype, item.shape)
            tensors.append(tensor_from_values(item.name, item.datatype, item.shape,
                                              list(getattr(item.contents, field))))
    return tensors


def infer_response(model: str, request_id: str,
                   tensors: Sequence[WireTensor]) -> oip_pb.ModelInferResponse:
    """Outputs as raw_output_contents, as Triton and KServe servers answer."""
    return oip_pb.ModelInferResponse(
        model_name=model, model_version=MODEL_VERSION, id=request_id,
        outputs=[oip_pb.ModelInferResponse.InferOutputTensor(
            name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in tensors],
        raw_output_contents=[raw_bytes(t) for t in tensors])


def metadata_response(model) -> oip_pb.ModelMetadataResponse:
    meta = model_metadata(model)
    tensor = oip_pb.ModelMetadataResponse.TensorMetadata
    return oip_pb.ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"],
        inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])
