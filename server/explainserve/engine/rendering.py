"""Results in the form the wire carries: numpy arrays, PNG pictures and boxes. Called in a
worker thread (asyncio.to_thread), never on the event loop: colour maps, PNG encoding and
connected components take milliseconds per image."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
from explainserve_client import render
from torch import Tensor

from explainserve.errors import FailedPrecondition
from explainserve.methods.base import Attribution
from explainserve.methods.explain.boxes import box_from_heatmap
from explainserve.models import preprocess
from explainserve.models.registry import LoadedModel


@dataclass(frozen=True)
class Explanation:
    """One target's answer: the attribution's numbers and the pictures made from them."""

    target: int
    label: str  # "" for a target without a class (activations without a score)
    score: float
    probability: float
    attribution: np.ndarray | None = None
    heatmap: np.ndarray | None = None  # [H, W] in [0, 1]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    overlay_png: bytes | None = None
    box: tuple[int, int, int, int] | None = None  # x_min, y_min, x_max, y_max, inclusive
    grid_png: bytes | None = None
    quality: dict[str, float] = field(default_factory=dict)  # faithfulness and method figures


def explanations(model: LoadedModel, image: Tensor, attributions: list[Attribution],
                 outputs: Collection[str]) -> list[Explanation]:
    """`outputs` names what the caller asked for (wire_names.OUTPUTS); tensors a method adds
    of its own are always returned."""
    picture = None
    answers = []
    for item in attributions:
        heatmap = item.heatmap.numpy() if item.heatmap is not None else None
        _check_finite(model, item)
        overlay = box = None
        if "overlay" in outputs and heatmap is not None:
            if picture is None:
                picture = preprocess.denormalize(image, model.config.mean, model.config.std)
            overlay = render.overlay_png(picture, heatmap)
        if "box" in outputs and heatmap is not None:
            box = box_from_heatmap(heatmap)
        answers.append(Explanation(
            target=item.target, label=model.labels[item.target] if item.target >= 0 else "",
            score=item.score, probability=item.probability,
            attribution=(item.attribution.numpy() if "attribution" in outputs
                         and item.attribution is not None else None),
            heatmap=heatmap if "heatmap" in outputs else None,
            tensors={name: tensor.numpy() for name, tensor in item.tensors.items()},
            overlay_png=overlay, box=box,
            grid_png=render.image_png(item.grid.numpy()) if item.grid is not None else None,
            quality={name: float(value) for name, value in item.quality.items()}))
    return answers


def _check_finite(model: LoadedModel, item: Attribution) -> None:
    """A map with NaN or Inf in it is a wrong answer, never a result: parameters at the edge of
    their range or a model that overflows end the call with a status instead."""
    for name, tensor in (("attribution", item.attribution), ("heatmap", item.heatmap),
                         *item.tensors.items()):
        if tensor is not None and tensor.is_floating_point() and not np.isfinite(tensor.numpy()).all():
            raise FailedPrecondition(
                f"the {name} for target {item.target} of model {model.name!r} has NaN or Inf "
                "values (the model's scores overflow for this input and these parameters)")
    bad = sorted(name for name, value in item.quality.items() if not np.isfinite(value))
    if bad:
        raise FailedPrecondition(f"the quality figures {bad} for target {item.target} of model "
                                 f"{model.name!r} are NaN or Inf")


def frame_png(image: Tensor, model: LoadedModel) -> bytes:
    """A Maximize frame [C, H, W] in model space as a PNG picture (grey for one channel)."""
    return render.image_png(preprocess.denormalize(image, model.config.mean,
                                                   model.config.std).squeeze())
