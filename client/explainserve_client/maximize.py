"""Maximize on the client side: build the request, join a frame's chunks, decode its image.

`Client.maximize_frames` and `Client.maximize` (client.py) use these; `class_visualisations`
is the one-call gallery the demo writes (one picture per class of a model).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import struct_pb2
from PIL import Image

from . import codec, wire_names
from ._proto import explainer_pb2 as pb
from .images import ImageLike, to_input
from .wire_names import FRAME_FORMATS as FORMATS
from .wire_names import OBJECTIVES

# None: the objective's own default start.
INITIALIZATIONS = {None: pb.INITIALIZATION_UNSPECIFIED, **wire_names.INITIALIZATIONS}


@dataclass
class MaximizeFrame:
    """One frame of one synthesised image."""

    image_index: int
    unit: int  # the class or channel maximised (0 for inversion)
    step: int
    final: bool
    objective_value: float
    predicted_class: int
    probability: float
    png: bytes | None = None
    tensor: np.ndarray | None = None  # float32 [C, H, W] in the model's normalised space

    @property
    def pixels(self) -> np.ndarray | None:
        """The PNG decoded to a uint8 [H, W, 3] (or [H, W]) array."""
        if not self.png:
            return None
        return np.asarray(Image.open(io.BytesIO(self.png)))


def maximize_request(
    model: str, objective: str = "class", units: Iterable[int] | int = (), *,
    layer: str | None = None, neuron: tuple[int, int] = (-1, -1),
    reference: ImageLike | None = None, initialization: str | None = None, steps: int = 0,
    frame_every: int = 0, seed: int = 0, formats: Sequence[str] = ("png",),
    params: Mapping[str, Any] | None = None,
) -> pb.MaximizeRequest:
    """The MaximizeRequest for one call; units are classes (objective "class") or channels."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {sorted(OBJECTIVES)}")
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"unknown initialization {initialization!r}; choose from "
                         f"{sorted(k for k in INITIALIZATIONS if k)}")
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ValueError(f"unknown frame formats {unknown}; choose from {sorted(FORMATS)}")
    units = [int(units)] if isinstance(units, (int, np.integer)) else [int(u) for u in units]
    if objective == "inversion" and units:
        raise ValueError("objective 'inversion' reconstructs one reference image; it takes no units")
    parameters = struct_pb2.Struct()
    parameters.update({k: (v.item() if isinstance(v, np.generic) else v)
                       for k, v in (params or {}).items()})
    return pb.MaximizeRequest(
        model=model, objective=OBJECTIVES[objective],
        classes=units if objective == "class" else [],
        channels=units if objective in ("channel", "neuron") else [],
        layer=layer or "", neuron_y=neuron[0], neuron_x=neuron[1],
        reference=to_input(reference) if reference is not None else None,
        initialization=INITIALIZATIONS[initialization], steps=steps, frame_every=frame_every,
        seed=seed, parameters=parameters, frame_formats=[FORMATS[f] for f in dict.fromkeys(formats)],
    )


def assemble_frames(responses: Iterable[pb.MaximizeResponse]) -> Iterator[MaximizeFrame]:
    """Join each frame's messages (a large tensor continues in messages with the same
    image_index and step) and yield frames in the order they arrive."""
    frame: MaximizeFrame | None = None
    pending: codec.TensorAssembler | None = None
    for response in responses:
        key = (response.image_index, response.step)
        if frame is not None and key != (frame.image_index, frame.step):
            yield _finish(frame, pending)
            frame = pending = None
        if frame is None:
            frame = MaximizeFrame(
                image_index=response.image_index, unit=response.unit, step=response.step,
                final=response.final_frame, objective_value=response.objective_value,
                predicted_class=response.predicted_class, probability=response.probability,
                png=response.image_png or None)
        if response.HasField("image"):
            pending = pending or codec.TensorAssembler()
            pending.add(response.image)
    if frame is not None:
        yield _finish(frame, pending)


def _finish(frame: MaximizeFrame, pending: codec.TensorAssembler | None) -> MaximizeFrame:
    if pending is not None:
        frame.tensor = pending.result()
    return frame


def class_visualisations(client: Any, model: str = "demo", classes: Iterable[int] | None = None,
                         *, steps: int = 0, seed: int = 0, timeout: float | None = None,
                         **params: Any) -> dict[int, bytes]:
    """One class model visualisation (Simonyan et al. 2013) per class: {class: PNG bytes}.
    All classes go in one request, so the server optimises them as one batch."""
    if classes is None:
        classes = range(client.get_model(model, timeout=timeout).num_classes)
    frames = client.maximize(model, list(classes), steps=steps, seed=seed, timeout=timeout, **params)
    return {frame.unit: frame.png for frame in frames}
