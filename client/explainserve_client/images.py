"""Turn what a caller holds (a path, bytes, a PIL image, a numpy array) into a wire Input."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from . import codec
from ._proto import explainer_pb2 as pb

ImageLike = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]


def to_input(image: ImageLike) -> pb.Input:
    """Encoded bytes travel as they are; a float array is a preprocessed tensor.

    A uint8 array (H,W), (H,W,3) or (H,W,4) is a picture and travels as PNG, so the server
    applies the model's preprocessing to it exactly as to a file.
    """
    if isinstance(image, (str, Path)):
        return pb.Input(encoded_image=Path(image).read_bytes())
    if isinstance(image, (bytes, bytearray)):
        return pb.Input(encoded_image=bytes(image))
    if isinstance(image, Image.Image):
        return pb.Input(encoded_image=encode_png(image))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            return pb.Input(encoded_image=encode_png(Image.fromarray(image)))
        if np.issubdtype(image.dtype, np.floating):
            return pb.Input(tensor=codec.encode(image.astype(np.float32), name="input"))
        raise TypeError(f"an image array must be uint8 (pixels) or float (a tensor), not {image.dtype}")
    raise TypeError(f"cannot send an image of type {type(image).__name__}")


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
