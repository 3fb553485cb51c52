"""The Maximize objective registry: its built-ins and their specs, its errors, and that the step
kernel and the server follow a spec rather than an objective's name."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from explainserve.engine.maximize import unit_field
from explainserve.errors import NotFound
from explainserve.methods.maximize import registry
from explainserve.methods.maximize.objectives import UNIT_PARAMS, channel_mean, class_score
from explainserve.methods.maximize.plan import COUNT, REPORT, STEP, AscentPlan, pack, unpack
from explainserve.methods.maximize.registry import (Unit, get_objective, list_objectives,
                                                    register_objective)
from explainserve.methods.maximize.step import ascent_kernel
from explainserve.models.demo import shapes
from explainserve_client import ExplainServeError
from grpc import StatusCode

CHANNEL_LAYER = "features.block3.relu"

# name: unit, needs_layer, spatial_layer, needs_reference, default_start, default_steps,
# one_image, request_field
BUILT_INS = {
    "class": (Unit.CLASS, False, False, False, "zeros", 256, False, "classes"),
    "channel": (Unit.CHANNEL, True, False, False, "noise", 256, False, "channels"),
    "neuron": (Unit.NEURON, True, True, False, "noise", 256, False, "channels"),
    "inversion": (Unit.NONE, True, False, True, "noise", 1024, True, None),
}


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for one test: whatever it registers is gone afterwards."""
    registry.list_objectives()  # the built-ins are in before the copy
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))


def test_the_built_in_objectives_are_listed():
    assert list_objectives() == ["channel", "class", "inversion", "neuron"]


def test_an_unknown_objective_is_not_found_and_the_valid_ones_are_named():
    with pytest.raises(NotFound) as error:
        get_objective("dreaming")
    assert error.value.status == "NOT_FOUND"
    assert error.value.message == ("unknown objective 'dreaming'; valid: channel, class, "
                                   "inversion, neuron")


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_each_spec_says_what_a_request_needs(name):
    spec = get_objective(name)
    unit, layer, spatial, reference, start, steps, one_image, field = BUILT_INS[name]
    assert (spec.name, spec.unit) == (name, unit)
    assert (spec.needs_layer, spec.spatial_layer) == (layer, spatial)
    assert spec.needs_reference == reference
    assert (spec.default_start, spec.default_steps) == (start, steps)
    assert (spec.one_image, spec.unit.request_field, unit_field(name)) == (one_image, field, field)
    assert spec.start("") == start and spec.start("image") == "image"
    assert (spec.reference_code is not None) == reference
    assert spec.description  # the function's docstring, first line


def test_the_specs_carry_their_objectives_defaults():
    params = {name: {p.name: p.default for p in get_objective(name).params} for name in BUILT_INS}
    assert params["inversion"]["redirect_steps"] == 256 and params["inversion"]["restarts"] == 4
    assert params["inversion"]["tv"] == 0.01 and params["inversion"]["jitter"] == 0
    class_params = params["class"]
    assert (class_params["l2"], class_params["jitter"], class_params["blur_every"]) == (0.05, 2, 4)
    assert params["channel"]["learning_rate"] == params["neuron"]["learning_rate"] == 0.1
    assert all(p["redirect_relu"] for p in params.values())
    assert get_objective("class").function is class_score
    assert Unit.CLASS.index_kind == "class" and Unit.NEURON.index_kind == "channel"


def test_a_name_registered_twice_is_refused_and_the_first_stays():
    with pytest.raises(ValueError, match="'channel' is registered twice"):
        register_objective("channel", UNIT_PARAMS, unit=Unit.CHANNEL)(class_score)
    assert get_objective("channel").function is channel_mean


@pytest.mark.parametrize("settings, words", [
    (dict(unit=Unit.NEURON), "spatial_layer"),
    (dict(unit=Unit.CHANNEL, needs_layer=False), "needs_layer"),
    (dict(unit=Unit.NONE, default_start="grey"), "default_start 'grey'"),
    (dict(unit=Unit.NONE, default_steps=0), "default_steps"),
])
def test_a_spec_the_engine_cannot_serve_is_refused_at_import(scratch_registry, settings, words):
    with pytest.raises(ValueError, match=words):
        register_objective("broken", UNIT_PARAMS, **settings)(channel_mean)
    assert "broken" not in list_objectives()


def test_the_step_kernel_runs_whatever_objective_the_registry_holds(scratch_registry):
    """A new objective, registered alone: the mean pixel, with no layer and no unit. One plain
    gradient step of size lr raises every pixel by lr / pixels (d mean / d pixel), and the
    report is the mean of the stepped image with the model's own prediction."""
    @register_objective("mean_pixel", UNIT_PARAMS, unit=Unit.NONE, needs_layer=False)
    def mean_pixel(model, images, targets, code, plan, full):
        """The mean of each row's pixels."""
        return images.flatten(1).mean(dim=1), model.module(images) if full else None

    assert "mean_pixel" in list_objectives()
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3)).eval()
    model = SimpleNamespace(module=linear, device=torch.device("cpu"), layer=lambda name: linear)
    plan = AscentPlan(objective="mean_pixel", layer="", image_shape=(2, 4, 4), mean=(0.0, 0.0),
                      std=(1.0, 1.0), optimizer="sgd", learning_rate=3.2)
    zeros = torch.zeros(2, 2, 4, 4)
    targets = torch.zeros(2, 7, dtype=torch.long)
    targets[:, COUNT], targets[:, REPORT], targets[:, STEP] = 1, 1, 0
    outputs = ascent_kernel(model, pack(zeros, zeros, zeros, torch.zeros(2, 0)), targets, plan=plan)
    expected = torch.full((2, 2, 4, 4), 3.2 / 32)
    torch.testing.assert_close(outputs["image"], expected)
    torch.testing.assert_close(unpack(plan, outputs["state"])[0], expected)
    torch.testing.assert_close(outputs["objective"], torch.full((2,), 0.1))
    logits = linear(expected)
    assert outputs["predicted"].tolist() == logits.argmax(dim=1).tolist()
    torch.testing.assert_close(outputs["probability"], logits.softmax(dim=1).amax(dim=1))


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_the_server_serves_each_objective_as_its_spec_says(demo_client, name):
    """One image per unit (or one), each unit echoed, and no initialization means the spec's
    default start: the same frame as asking for it, another than the other start."""
    spec = get_objective(name)
    units = [] if spec.one_image else [1, 2]
    reference = shapes.draw_shape("star", seed=3) if spec.needs_reference else None
    call = dict(layer=CHANNEL_LAYER if spec.needs_layer else None, reference=reference, steps=1,
                formats=("tensor",), seed=3)
    default = demo_client.maximize("demo", units, name, **call)
    asked = demo_client.maximize("demo", units, name, initialization=spec.default_start, **call)
    other_start = "noise" if spec.default_start == "zeros" else "zeros"
    other = demo_client.maximize("demo", units, name, initialization=other_start, **call)
    assert [(f.image_index, f.unit, f.step) for f in default] == \
        [(index, unit, 1) for index, unit in enumerate(units or [0])]
    for frame, same, changed in zip(default, asked, other):
        # Equal to float32 rounding: the two calls' passes may be batched differently (the
        # channels-last CPU layout rounds a row by its batch size, docs/operations.md).
        np.testing.assert_allclose(frame.tensor, same.tensor, rtol=1e-5, atol=1e-6)
        assert not np.array_equal(frame.tensor, changed.tensor)


def test_the_server_takes_the_default_steps_from_the_spec(demo_client, monkeypatch):
    spec = get_objective("channel")
    monkeypatch.setitem(registry._OBJECTIVES, "channel",
                        dataclasses.replace(spec, default_steps=3))
    frames = list(demo_client.maximize_frames("demo", [4], "channel", layer=CHANNEL_LAYER,
                                              frame_every=1, formats=("tensor",)))
    assert [f.step for f in frames] == [1, 2, 3] and frames[-1].final


def test_the_size_rule_names_the_objectives_that_need_a_reference(demo_client):
    """The message lists the registry's objectives with a reference: today exactly the one it
    always named."""
    with pytest.raises(ExplainServeError) as error:
        demo_client.maximize("demo", objective="inversion", layer=CHANNEL_LAYER, size=32,
                             reference=shapes.draw_shape("star", seed=3))
    assert error.value.code == StatusCode.INVALID_ARGUMENT
    assert error.value.details == ("parameter 'size' must be 0 for inversion and for a start "
                                   "image: the reference image has the model's input size")
