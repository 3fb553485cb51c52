"""hooks.py, the only module that registers PyTorch hooks: each context manager's hooks work
inside its block, and every one of them (module forward, forward pre- and tensor hooks) is gone
when the block raises, with the model's parameters, requires_grad flags and gradients as they
were; the next plain pass computes exactly what an untouched copy computes."""

from __future__ import annotations

import copy

import pytest
import torch
from explainserve import hooks
from support import assert_no_hooks
from torch import nn
from tiny_models import GuardedReLU


class Net(nn.Module):
    """conv -> ReLU -> conv -> the same (in-place) ReLU module again -> output: one module
    called twice, as resnet's blocks do, and a ReLU output that is the network's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, kernel_size=3, padding=1)
        self.relu = GuardedReLU(inplace=True)  # raises on inputs above GuardedReLU.limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))))


class Boom(Exception):
    pass


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    model = Net().eval()
    model.conv1.requires_grad_(False)  # a mix of frozen and trainable parameters
    return model


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(seed))


def state(model: nn.Module) -> dict:
    return {name: (p.detach().clone(), p.requires_grad, p.grad) for name, p in model.named_parameters()}


def plain_pass(model: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    """Output, and the input gradient for `upstream` at the output, without any hook."""
    x = x.clone().requires_grad_(True)
    output = model(x)
    (gradient,) = torch.autograd.grad(output, x, upstream)
    return output.detach(), gradient


def assert_as_found(model: nn.Module, before: dict, untouched: nn.Module) -> None:
    assert_no_hooks(model)
    after = state(model)
    assert after.keys() == before.keys()
    for name, (value, requires_grad, grad) in before.items():
        assert torch.equal(after[name][0], value), name
        assert after[name][1:] == (requires_grad, grad), name
    upstream = -torch.ones(2, 3, 5, 5)  # negative: the guided and deconvnet rules would change it
    for got, want in zip(plain_pass(model, inputs(2), upstream), plain_pass(untouched, inputs(2), upstream)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_capture_outputs_records_each_layer_and_leaves_nothing_when_the_body_raises(net):
    before, untouched = state(net), copy.deepcopy(net)
    x = inputs()
    with pytest.raises(Boom):
        with hooks.capture_outputs(hooks.named_layers(net, ["conv1", "relu"])) as captured:
            assert len(net.conv1._forward_hooks) == len(net.relu._forward_hooks) == 1
            with torch.no_grad():
                net(x)
            with torch.no_grad():
                first = untouched.relu(untouched.conv1(x))
                second = untouched.relu(untouched.conv2(first.clone()))
            torch.testing.assert_close(captured.outputs["relu"], second)  # the LAST call
            # conv1's output is the tensor the in-place ReLU then overwrote: its version says so
            conv1_output = captured.outputs["conv1"]
            assert conv1_output._version > captured.versions["conv1"]
            torch.testing.assert_close(conv1_output, first)
            assert captured.order == ["conv1", "relu"]
            raise Boom
    assert_as_found(net, before, untouched)


def test_stop_forward_skips_the_layers_above_and_removes_its_hook(net):
    before, untouched = state(net), copy.deepcopy(net)
    calls = []
    observer = net.conv2.register_forward_hook(lambda *args: calls.append("conv2"))
    try:
        with pytest.raises(hooks.StopForward, match="conv1"):
            with hooks.capture_outputs({"conv1": net.conv1}, stop_after="conv1") as captured:
                assert len(net.conv1._forward_hooks) == 1
                net(inputs())
    finally:
        observer.remove()
    assert calls == [] and list(captured.outputs) == ["conv1"]
    with torch.no_grad():
        torch.testing.assert_close(captured.outputs["conv1"], untouched.conv1(inputs()))
    assert_as_found(net, before, untouched)


def test_a_capture_for_gradient_hands_out_leaves_and_leaves_no_trace(net):
    before, untouched = state(net), copy.deepcopy(net)
    with pytest.raises(Boom):
        with hooks.capture_outputs({"conv2": net.conv2}, for_gradient=True) as captured:
            output = net(inputs())
            leaf = captured.outputs["conv2"]
            assert leaf.is_leaf and leaf.requires_grad
            (gradient,) = torch.autograd.grad(output.sum(), leaf)
            # d sum(ReLU(z)) / dz = 1 where z > 0: the ReLU's mask at the captured layer
            torch.testing.assert_close(gradient, (leaf > 0).to(gradient.dtype))
            raise Boom
    assert_as_found(net, before, untouched)


@pytest.mark.parametrize("rule", ["guided", "deconvnet", "redirected"])
def test_a_relu_rule_changes_the_backward_inside_its_block_and_nothing_after_a_raise(net, rule):
    before, untouched = state(net), copy.deepcopy(net)
    upstream = -torch.ones(2, 3, 5, 5)
    options = (torch.tensor([True, False]),) if rule == "redirected" else ()
    _, plain = plain_pass(untouched, inputs(), upstream)
    with pytest.raises(Boom):
        with hooks.relu_backward_rule(net, rule, *options):
            installed = len(net.relu._forward_hooks) + len(net.relu._forward_pre_hooks)
            assert installed == (1 if rule == "guided" else 2)
            x = inputs().clone().requires_grad_(True)
            output = net(x)
            if rule == "guided":  # a tensor hook on the output of each of the two calls
                assert len(output._backward_hooks) == 1
            (ruled,) = torch.autograd.grad(output, x, upstream)
            # An all-negative gradient at the output: guided backprop and deconvnet pass only
            # positive gradients through a ReLU, so nothing reaches the input. The redirected
            # rule gives the row without its flag the plain gradient (its ReLUs pass some), and
            # the flagged row more: a positive gradient also where a ReLU's input is negative.
            if rule == "redirected":
                torch.testing.assert_close(ruled[1], plain[1], rtol=0, atol=0)
                assert (ruled[0] - plain[0]).abs().max() > 1e-3
            else:
                torch.testing.assert_close(ruled, torch.zeros_like(ruled), rtol=0, atol=0)
                assert plain.abs().sum() > 0  # which the plain backward does not do
            raise Boom
    if rule == "guided":
        assert not output._backward_hooks  # the tensor hook went with the block
    assert_as_found(net, before, untouched)


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_a_forward_that_raises_inside_a_hooked_relu_leaves_no_trace(net, rule):
    """The ReLU raises after its forward pre-hook ran and before its forward hook runs."""
    before, untouched = state(net), copy.deepcopy(net)
    with pytest.raises(ValueError, match="activation overflow"):
        with hooks.relu_backward_rule(net, rule):
            net(torch.full((1, 2, 5, 5), 1e6))
    with pytest.raises(ValueError, match="activation overflow"):
        with hooks.capture_outputs(hooks.named_layers(net, ["conv1", "conv2", "relu"])):
            net(torch.full((1, 2, 5, 5), 1e6))
    assert_as_found(net, before, untouched)


def test_named_layers_looks_names_up_and_never_uses_getattr(net):
    assert hooks.named_layers(net, ["conv1", "relu"]) == {"conv1": net.conv1, "relu": net.relu}
    for name in ("forward", "__class__", "conv1.weight", "training"):
        with pytest.raises(KeyError):
            hooks.named_layers(net, [name])
