"""Embed's default layer (methods/embed/features.py): the input of the final linear layer."""

from __future__ import annotations

import torch
import torchvision
from explainserve.methods.embed.features import penultimate_layer
from explainserve.models.registry import describe_layers


def test_penultimate_layer_feeds_the_final_linear(resnet18, demo_network):
    demo = demo_network
    assert penultimate_layer(resnet18, describe_layers(resnet18, (3, 64, 64))) == "avgpool"
    with torch.device("meta"):  # shapes only: no 138M weights to initialise
        vgg = torchvision.models.vgg16(num_classes=10).eval()
        assert penultimate_layer(vgg, describe_layers(vgg, (3, 64, 64))) == "classifier.5"  # FC7
    assert penultimate_layer(demo, describe_layers(demo, (3, 64, 64))) == "flatten"
