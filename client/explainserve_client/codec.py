"""Wire tensors <-> numpy arrays, the one codec both the client and the server use.

A wire tensor is little-endian, row-major and contiguous (the KServe v2 / Open Inference
Protocol convention). A tensor larger than one message allows is sent as consecutive chunks
that carry the same name, dtype and shape, and their byte offset within the whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ._proto import explainer_pb2 as pb

_DTYPES: dict[int, np.dtype] = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
}
_WIRE_TYPES: dict[np.dtype, int] = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}

# Stay well under gRPC's default 4 MiB message limit, with room for the other fields.
DEFAULT_CHUNK_BYTES = 3 * 1024 * 1024


class TensorDecodeError(ValueError):
    """A wire tensor whose dtype, shape or byte length is inconsistent."""


def encode(array: np.ndarray, name: str = "") -> pb.Tensor:
    """Encode a numpy array as one wire tensor."""
    array = np.asarray(array)
    wire_type = _WIRE_TYPES.get(array.dtype.newbyteorder("="))
    if wire_type is None:
        raise TypeError(f"dtype {array.dtype} of tensor {name!r} has no wire type")
    data = np.ascontiguousarray(array, dtype=_DTYPES[wire_type]).tobytes()
    return pb.Tensor(name=name, dtype=wire_type, shape=array.shape, data=data)


def decode(tensor: pb.Tensor) -> np.ndarray:
    """Decode one complete wire tensor, checking its byte length against dtype and shape."""
    dtype = _DTYPES.get(tensor.dtype)
    label = tensor.name or "tensor"
    if dtype is None:
        raise TensorDecodeError(f"{label} has unsupported dtype {tensor.dtype}")
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise TensorDecodeError(f"{label} has a negative dimension in shape {list(shape)}")
    # Python integers: an int64 product of [2**32, 2**32] wraps to 0 and would pass the check.
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorDecodeError(
            f"{label} has {len(tensor.data)} bytes of data but shape {list(shape)} and dtype "
            f"{np.dtype(dtype).name} need {expected}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def split(tensor: pb.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[pb.Tensor]:
    """Yield the tensor whole if it fits in chunk_bytes, else as consecutive chunks."""
    total = len(tensor.data)
    if total <= chunk_bytes:
        yield tensor
        return
    for offset in range(0, total, chunk_bytes):
        yield pb.Tensor(
            name=tensor.name, dtype=tensor.dtype, shape=tensor.shape,
            data=tensor.data[offset:offset + chunk_bytes], byte_offset=offset, total_bytes=total,
        )


class TensorAssembler:
    """Joins the chunks of one tensor back together, in the order they were sent."""

    def __init__(self) -> None:
        self._head: pb.Tensor | None = None
        self._parts: list[bytes] = []
        self._received = 0

    def add(self, chunk: pb.Tensor) -> None:
        if self._head is None:
            self._head = chunk
        if chunk.byte_offset != self._received:
            raise TensorDecodeError(
                f"chunk of {chunk.name!r} at byte {chunk.byte_offset} arrived, expected byte "
                f"{self._received}"
            )
        self._parts.append(chunk.data)
        self._received += len(chunk.data)

    @property
    def complete(self) -> bool:
        if self._head is None:
            return False
        return self._head.total_bytes == 0 or self._received == self._head.total_bytes

    def result(self) -> np.ndarray:
        if self._head is None or not self.complete:
            raise TensorDecodeError("tensor is incomplete: its stream ended before its last chunk")
        whole = pb.Tensor(name=self._head.name, dtype=self._head.dtype, shape=self._head.shape,
                          data=b"".join(self._parts))
        return decode(whole)
