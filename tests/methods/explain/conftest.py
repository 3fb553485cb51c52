"""Fixtures the attribution-method tests share: the references' networks and the server that
serves each model."""

from __future__ import annotations

import pytest
from support import reference_module
from torch import nn


@pytest.fixture(scope="session")
def reference_modules(models_by_name):
    """The served models rebuilt independently (same weights), one each, on first use. Their
    ReLUs are made out-of-place (the same function): Captum's backward hooks then need no
    support for in-place modules, which the served models' resnet and vgg ReLUs are."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            from explainserve.models.demo.repository import demo_model_config
            module = reference_module(demo_model_config() if name == "demo" else models_by_name[name])
            for submodule in module.modules():
                if isinstance(submodule, nn.ReLU):
                    submodule.inplace = False
            cache[name] = module
        return cache[name]
    return get


@pytest.fixture
def serving(request):
    """(background server, client) for a model: the shared server, or the demo server."""
    def get(model: str):
        if model == "demo":
            return request.getfixturevalue("demo_server"), request.getfixturevalue("demo_client")
        return request.getfixturevalue("server"), request.getfixturevalue("client")
    return get
