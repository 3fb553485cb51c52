"""The only module that registers PyTorch hooks.

Every context manager here installs its hooks for one pass and removes them in `finally`, so a
method that raises half-way leaves the model exactly as it found it, and requests for other
methods on the same replica never see another method's hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


class StopForward(Exception):
    """Raised inside a forward hook to skip the rest of the network once a layer is reached."""


@contextmanager
def _installed(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Captured:
    """Outputs of named modules, keyed by name; a module called twice keeps its last output."""

    outputs: dict[str, Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # first time each module finished
    # each output's in-place version counter when its module returned it: the same tensor
    # object at a later version holds other values (resnet's bn2 output after `+=` and ReLU_)
    versions: dict[str, int] = field(default_factory=dict)


@contextmanager
def capture_outputs(
    modules: dict[str, nn.Module], *, stop_after: str | None = None, for_gradient: bool = False
) -> Iterator[Captured]:
    """Record the outputs of `modules` during the forward passes inside the block.

    stop_after: raise StopForward after that module so the layers above it are never computed
    (the caller catches it). for_gradient: hand the network a fresh grad-requiring leaf in place
    of each output, so torch.autograd.grad(score, captured) reaches exactly that tensor and no
    gradient is computed below it; the clone also shields the captured values from a later
    in-place op (an inplace ReLU after a conv).
    """
    captured = Captured()
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            result = None
            if isinstance(output, Tensor):
                if for_gradient:
                    leaf = output.detach().requires_grad_(True)
                    captured.outputs[name] = leaf
                    result = leaf.clone()
                else:
                    captured.outputs[name] = output
                captured.versions[name] = output._version
            if name not in captured.order:
                captured.order.append(name)
            if name == stop_after:
                raise StopForward(name)
            return result
        return hook

    for name, module in modules.items():
        handles.append(module.register_forward_hook(make_hook(name)))
    with _installed(handles):
        yield captured


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward passes max(0, g), ignoring the forward mask (Zeiler & Fergus 2014)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.clamp(min=0)


class _RedirectedReLU(torch.autograd.Function):
    """For gradient ascent (grad is d objective / d output): the ReLU's gradient, except where
    it blocks a gradient that would raise the output (negative inputs pushed lower stay cut).
    A row whose `everywhere` flag is set gets that at every unit; any other row only when the
    ReLU blocks its whole gradient. Lucid's redirected ReLU (Olah et al. 2017): it lets an
    optimisation leave a start where every unit on its path is dead, and (everywhere) lets dead
    units that the objective needs come back instead of staying in a ReLU's local minimum."""

    @staticmethod
    def forward(ctx, x: Tensor, everywhere: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, everywhere)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, everywhere = ctx.saved_tensors
        normal = grad * (x > 0).to(grad.dtype)
        redirected = grad * ((x >= 0) | (grad > 0)).to(grad.dtype)
        alive = normal.flatten(1).abs().amax(dim=1) > 0  # decided per sample, never per batch
        use_normal = alive & ~everywhere
        return torch.where(use_normal.view(-1, *(1,) * (grad.ndim - 1)), normal, redirected), None


# Rules that keep ReLU's own backward, 1{s > 0} * g, and only transform the gradient g that
# arrives at its output. Guided backprop is 1{s > 0} * max(0, R^{l+1}): ReLU's backward of the
# positive part. Costs one clamp per ReLU and nothing in the forward pass.
OUTPUT_GRADIENT_RULES: dict[str, Callable[[Tensor], Tensor]] = {
    "guided": lambda grad: grad.clamp(min=0),
}

# Rules that replace ReLU's backward altogether (it ignores or redirects the forward mask).
RELU_RULES: dict[str, type[torch.autograd.Function]] = {
    "deconvnet": _DeconvReLU,
    "redirected": _RedirectedReLU,
}


@contextmanager
def relu_backward_rule(model: nn.Module, rule: str, *options: Tensor) -> Iterator[None]:
    """Give every nn.ReLU module's backward the rule `rule` for the passes in the block (both
    the forward and the backward must run inside it). Forward values never change.

    An output-gradient rule hooks the gradient of each ReLU call's output tensor, so resnet's
    one inplace ReLU module called twice per block gets a hook per call. A replacing rule keeps
    each call's input in a pre-hook (the module then works, in place or not, on a clone) and
    returns the rule's ReLU of that input in place of the module's output. No module is
    swapped; module and tensor hooks are all removed on the way out. `options` go to a
    replacing rule after the input (the redirected rule's per-row flags).
    """
    if rule in OUTPUT_GRADIENT_RULES:
        with _output_gradient_rule(model, OUTPUT_GRADIENT_RULES[rule]):
            yield
        return
    function = RELU_RULES[rule]
    pending: dict[int, list[Tensor]] = {}
    handles = []

    def keep_input(module: nn.Module, args: tuple) -> tuple:
        pending.setdefault(id(module), []).append(args[0])
        return (args[0].clone(),)  # the module may work in place on the clone only

    def apply_rule(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return function.apply(pending[id(module)].pop(), *options)

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_pre_hook(keep_input))
            handles.append(module.register_forward_hook(apply_rule))
    with _installed(handles):
        yield


@contextmanager
def _output_gradient_rule(model: nn.Module, transform: Callable[[Tensor], Tensor]
                          ) -> Iterator[None]:
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook_output(module: nn.Module, args: tuple, output: Tensor) -> None:
        if output.requires_grad:
            # registered after the (possibly inplace) ReLU ran: it sees d score / d output
            handles.append(output.register_hook(transform))

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(hook_output))
    with _installed(handles):
        yield


@contextmanager
def replace_output(module: nn.Module, replace: Callable[[int, Tensor], Tensor | None]
                   ) -> Iterator[None]:
    """Hand the network replace(call, output) in place of `module`'s tensor output for the
    passes in the block; `call` counts the module's calls from 0 within the block (a module
    called twice per forward is told which call it is) and None keeps the output. The network
    above the module then computes from the replacement (Ablation-CAM's zeroed channel), or a
    caller records a copy of the output without changing it."""
    calls = [0]

    def hook(module: nn.Module, args: tuple, output: object) -> object:
        index, calls[0] = calls[0], calls[0] + 1
        return replace(index, output) if isinstance(output, Tensor) else None

    with _installed([module.register_forward_hook(hook)]):
        yield


def named_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Look modules up by their named_modules() path only (never getattr on client input)."""
    table = dict(model.named_modules())
    return {name: table[name] for name in names}


@contextmanager
def capture_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """The first positional input of each of `modules` on its last call in the block (what a
    layer method needs where the tensor it reads is a module's input, not an output)."""
    inputs: dict[str, Tensor] = {}

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], Tensor):
                inputs[name] = args[0]
        return hook

    handles = [module.register_forward_pre_hook(make_hook(name)) for name, module in modules.items()]
    with _installed(handles):
        yield inputs


# recompute(name, module, args, kwargs, output) -> the output to use, or None to keep it
Recompute = Callable[[str, nn.Module, tuple, dict, object], object]


@contextmanager
def recomputed_outputs(modules: dict[str, nn.Module], recompute: Recompute) -> Iterator[None]:
    """Hand the network recompute(...)'s value in place of each module's output for the passes
    in the block. Attention methods use it to rebuild a fused attention's output from explicit
    weights, numerically equal, so the weights are in the graph of the score; the module itself
    is never changed."""
    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> object:
            return recompute(name, module, args, kwargs, output)
        return hook

    handles = [module.register_forward_hook(make_hook(name), with_kwargs=True)
               for name, module in modules.items()]
    with _installed(handles):
        yield


class _TraceGate:
    """Keeps torch.fx tracing apart from every model pass in the process.

    fx's symbolic tracer patches nn.Module.__call__ and __getattr__ on the class for as long
    as it traces, so a forward pass on any other thread meanwhile is routed into the tracer and
    fails. Passes share the gate; a trace holds it alone. A thread that traces from inside a
    pass (a kernel tracing on first use) gives up its own share while it waits, so two such
    threads cannot wait on each other."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._passes = 0
        self._tracing = False
        self._waiting_traces = 0
        self._held = threading.local()

    def _own(self) -> int:
        return getattr(self._held, "count", 0)

    @contextmanager
    def passes(self) -> Iterator[None]:
        with self._condition:
            if self._own() == 0:  # a nested pass on this thread never waits for itself
                self._condition.wait_for(lambda: not self._tracing and not self._waiting_traces)
            self._passes += 1
            self._held.count = self._own() + 1
        try:
            yield
        finally:
            with self._condition:
                self._passes -= 1
                self._held.count -= 1
                self._condition.notify_all()

    @contextmanager
    def trace(self) -> Iterator[None]:
        with self._condition:
            own = self._own()
            self._passes -= own
            self._waiting_traces += 1
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._passes == 0 and not self._tracing)
            self._waiting_traces -= 1
            self._tracing = True
        try:
            yield
        finally:
            with self._condition:
                self._tracing = False
                self._passes += own
                self._condition.notify_all()


_TRACE_GATE = _TraceGate()


def model_passes() -> contextmanager:
    """Held by a worker while it runs a batch (see _TraceGate)."""
    return _TRACE_GATE.passes()


def fx_tracing() -> contextmanager:
    """Held while torch.fx traces a model: no model pass runs anywhere meanwhile."""
    return _TRACE_GATE.trace()
