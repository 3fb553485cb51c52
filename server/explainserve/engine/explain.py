"""Explain: validate a decoded request against its model, run the method's orchestration with
a context whose `run` goes through the batcher, and render what the caller asked for."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainserve.engine import rendering
from explainserve.engine.core import BatchedContext, Engine, ImageInput
from explainserve.errors import InvalidArgument, OutOfRange
from explainserve.methods.base import PREDICTED, Kernel, TensorRows, parse_params
from explainserve.methods.explain import faithfulness
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.registry import MethodSpec, get_method
from explainserve.models.registry import LoadedModel

# A wider Gaussian than this is a constant image in all but name, at the price of a huge kernel.
MAX_BLUR_SIGMA = 100.0


@dataclass(frozen=True)
class ExplainQuery:
    """An ExplainRequest decoded into plain values (the api layer builds it)."""

    model: str
    method: str
    image: ImageInput
    targets: tuple[int, ...] = ()
    top_k: int = 0
    layer: str = ""
    extra_layers: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic()
    outputs: frozenset[str] = frozenset({"attribution", "heatmap"})  # wire_names.OUTPUTS keys
    evaluate: tuple[str, ...] = ()  # faithfulness.METRICS
    evaluation_steps: int = 0  # 0: faithfulness.DEFAULT_STEPS
    baseline: str = ""  # "", "blur" or "constant"; "": each metric's RISE default
    baseline_constant: float = 0.0
    blur_sigma: float = 0.0  # 0: faithfulness.DEFAULT_BLUR_SIGMA
    path_baseline: Any = None  # float32 numpy array sent by the caller (path methods)


@dataclass(frozen=True)
class ExplainResult:
    model: LoadedModel
    explanations: list[rendering.Explanation]  # one per target, in wire-ready form


async def explain(engine: Engine, query: ExplainQuery) -> ExplainResult:
    model = engine.registry.get(query.model)
    method = get_method(query.method)
    layer = _layer(model, method, query.layer)
    for extra in query.extra_layers:
        model.check_layer(extra)
    params = parse_params(method.name, method.params, query.params)
    evaluation = _evaluation(engine, query)
    image = await engine.prepare(model, query.image)
    if query.path_baseline is not None:
        params = {**params, "baseline_image": await asyncio.to_thread(
            _path_baseline, method, query.path_baseline, image)}
    elif method.takes_baseline:
        params = {**params, "baseline_image": None}
    context = engine.context(model, query.deadline, query.extra_layers)
    targets = await _targets(context, engine, model, image, query)
    attributions = await method.run(context, image, targets, layer, params)
    if evaluation is not None:
        await faithfulness.evaluate(context, image, method.name, attributions, evaluation)
    explanations = await asyncio.to_thread(rendering.explanations, model, image, attributions,
                                           query.outputs)
    return ExplainResult(model, explanations)


def _evaluation(engine: Engine, query: ExplainQuery) -> faithfulness.Evaluation | None:
    """The request's faithfulness scores, checked before any device work is spent."""
    if not query.evaluate:
        return None
    unknown = [name for name in query.evaluate if name not in faithfulness.METRICS]
    if unknown:
        raise InvalidArgument(f"evaluate {unknown} are not known scores; choose from "
                              f"{list(faithfulness.METRICS)}")
    steps = query.evaluation_steps or faithfulness.DEFAULT_STEPS
    most = engine.limits.max_evaluate_steps
    if not 1 <= steps <= most:
        raise InvalidArgument(f"evaluation steps must be between 1 and {most}, got {steps}")
    if query.baseline not in ("", faithfulness.BLUR, faithfulness.CONSTANT):
        raise InvalidArgument(f"baseline {query.baseline!r} is not known; choose from "
                              f"{[faithfulness.BLUR, faithfulness.CONSTANT]}")
    sigma = query.blur_sigma or faithfulness.DEFAULT_BLUR_SIGMA
    if not (math.isfinite(sigma) and 0 < sigma <= MAX_BLUR_SIGMA):
        raise InvalidArgument(f"blur_sigma must be in (0, {MAX_BLUR_SIGMA}] pixels, got {sigma}")
    if not math.isfinite(query.baseline_constant):
        raise InvalidArgument(f"baseline constant must be finite, got {query.baseline_constant}")
    return faithfulness.Evaluation(tuple(dict.fromkeys(query.evaluate)), steps, query.baseline,
                                   query.baseline_constant, sigma)


def _path_baseline(method: MethodSpec, array, image: Tensor) -> Tensor:
    """The caller's baseline image as a [C, H, W] tensor shaped like the prepared input."""
    if not method.takes_baseline:
        raise InvalidArgument(f"method {method.name!r} takes no baseline tensor; send one only "
                              "to a path method (integrated_gradients with baseline 'tensor')")
    baseline = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if baseline.ndim == 4 and baseline.shape[0] == 1:
        baseline = baseline[0]
    if tuple(baseline.shape) != tuple(image.shape):
        raise InvalidArgument(f"baseline tensor has shape {list(array.shape)}; the preprocessed "
                              f"input is {list(image.shape)} (or [1, {', '.join(map(str, image.shape))}])")
    if not torch.isfinite(baseline).all():
        raise InvalidArgument("baseline tensor holds NaN or infinite values")
    return baseline


def _layer(model: LoadedModel, method: MethodSpec, requested: str) -> str:
    if not method.uses_layer:
        return requested
    if not (requested or model.default_layer):
        raise InvalidArgument(f"method {method.name!r} needs a layer and model "
                              f"{model.name!r} has no default layer; name one")
    layer = model.check_layer(requested or model.default_layer)
    if method.spatial_layer and not layer.layout.spatial:
        raise InvalidArgument(
            f"layer {layer.name!r} has output shape {list(layer.output_shape)}, which has no "
            f"spatial [K, h, w] form that method {method.name!r} needs; if it holds channel "
            f"maps, declare their layout in the model repository: [models.{model.name}.layouts] "
            f"\"{layer.name}\" = {{ kind = \"nchw\" }} (or \"nhwc\" for [h, w, K], or "
            f"\"tokens\" with prefix_tokens = P for [P + h*w, K])")
    return layer.name


async def _targets(context: BatchedContext, engine: Engine, model: LoadedModel, image: Tensor,
                   query: ExplainQuery) -> list[int]:
    num_classes = model.config.num_classes
    for target in query.targets:
        if not 0 <= target < num_classes:
            raise OutOfRange(f"target class {target} is out of range [0, {num_classes}) "
                             f"for model {model.name!r}")
    top_k = query.top_k or 1
    wanted = len(query.targets) or top_k
    most = min(engine.limits.max_targets, num_classes)
    if wanted > most:
        raise InvalidArgument(f"{wanted} targets requested; at most {most} per request")
    if query.targets:
        return list(query.targets)
    if top_k == 1:
        return [PREDICTED]  # resolved inside the method's own forward pass
    logits = (await context.run(Kernel.of(logits_kernel), TensorRows.repeat(image, [0])))["logits"]
    return logits[0].topk(top_k).indices.tolist()
