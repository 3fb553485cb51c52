"""Compute only what a method needs (issue 3, speed): CAM methods build no autograd graph below
their layer, occlusion, activations and filters none at all. Each method runs in-process through
its own orchestration, with a context that hands its rows straight to a Replica."""

from __future__ import annotations

import asyncio

import pytest
import torch
from explainserve.config import LimitsConfig
from explainserve.methods.base import parse_params
from explainserve.methods.explain.registry import get_method
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from support import random_input


class DirectContext:
    def __init__(self, loaded, replica) -> None:
        self.model, self.limits, self.extra_layers = loaded.facts, LimitsConfig(), ()
        self.replica = replica

    async def run(self, kernel, rows):
        inputs, targets = rows.take(0, len(rows))
        outputs = kernel(self.replica, inputs, targets)
        return {name: value.detach() for name, value in outputs.items()}  # as a worker does


@pytest.fixture(scope="module")
def resnet(models_by_name):
    loaded = load_model(models_by_name["resnet18"])
    return loaded, Replica(loaded, torch.device("cpu"))


def modules_with_a_graph(loaded, replica, method: str, params: dict) -> list[str]:
    """Modules, in forward order, whose output is part of an autograd graph during `method`."""
    seen: list[str] = []
    handles = [module.register_forward_hook(
        lambda _m, _a, output, name=name: seen.append(name)
        if isinstance(output, torch.Tensor) and output.requires_grad else None)
        for name, module in replica.module.named_modules() if name]
    spec = get_method(method)
    layer = loaded.default_layer if spec.uses_layer else ""
    image = torch.from_numpy(random_input((3, 64, 64)))
    try:
        asyncio.run(spec.run(DirectContext(loaded, replica), image, [3], layer,
                             parse_params(method, spec.params, params)))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_saliency_builds_its_graph_from_the_first_layer(resnet):
    assert modules_with_a_graph(*resnet, "saliency", {})[0] == "conv1"


@pytest.mark.parametrize("method",
                         ["gradcam", "gradcam_plus_plus", "gradcam_counterfactual", "cam"])
def test_cam_methods_build_no_graph_below_their_layer(resnet, method):
    loaded, _ = resnet
    below = {name for name, _ in loaded.module.named_modules()
             if name and not name.startswith("layer4") and name not in ("avgpool", "fc")}
    assert not below & set(modules_with_a_graph(*resnet, method, {}))


@pytest.mark.parametrize("method,params", [("occlusion", {"window": 32, "stride": 16}),
                                           ("activations", {}), ("filters", {})])
def test_forward_only_methods_build_no_graph_at_all(resnet, method, params):
    assert modules_with_a_graph(*resnet, method, params) == []
