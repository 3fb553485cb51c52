"""Decoding shared by every RPC: an image input and a call's deadline."""

from __future__ import annotations

import time

import numpy as np
from explainserve_client import codec as wire
from explainserve_client._proto import explainer_pb2 as pb

from explainserve.errors import InvalidArgument


def decode_input(message: pb.Input, field: str = "input") -> bytes | np.ndarray:
    """Encoded image bytes as they are, or a float32 tensor as a numpy array (the engine
    decodes and checks both off the event loop)."""
    source = message.WhichOneof("source")
    if source == "encoded_image":
        return message.encoded_image
    if source == "tensor":
        dtype = message.tensor.dtype
        if dtype != pb.DATA_TYPE_FLOAT32:
            name = pb.DataType.Name(dtype) if dtype in pb.DataType.values() else str(dtype)
            raise InvalidArgument(f"{field}.tensor must be float32, got dtype {name}")
        try:
            return wire.decode(message.tensor)
        except wire.TensorDecodeError as error:
            raise InvalidArgument(f"{field}.tensor: {error}") from None
    raise InvalidArgument(f"{field} holds neither encoded_image nor tensor")


def deadline_of(time_remaining: float | None) -> float | None:
    return None if time_remaining is None else time.monotonic() + time_remaining
