"""Explanation methods by name: a dict, a decorator, a clear error and a list function
(the shape of torchvision's models/_api.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from torch import Tensor

from explainserve.errors import not_found
from explainserve.methods.base import Attribution, Context, Kernel, Param

# orchestration(ctx, image [C,H,W], targets, layer, params) -> one Attribution per target
Orchestration = Callable[[Context, Tensor, list[int], str, dict], Awaitable[list[Attribution]]]
# gradient_kernel(params) -> the kernel whose "attribution" output is an input-space [C,H,W]
# gradient-type map per row; wrappers (SmoothGrad) average it over perturbed copies.
GradientKernel = Callable[[dict], Kernel]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    run: Orchestration
    params: tuple[Param, ...] = ()
    uses_layer: bool = False  # reads the request's layer (default: the model's default layer)
    spatial_layer: bool = False  # that layer must have a spatial [K, h, w] output
    description: str = ""
    needs_target: bool = True  # False: the map does not depend on the target class
    needs_gradients: bool = False  # runs a backward pass
    gradient_kernel: GradientKernel | None = None  # wrappable by SmoothGrad
    takes_baseline: bool = False  # params["baseline_image"]: the caller's tensor or None


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, params: tuple[Param, ...] = (), uses_layer: bool = False,
    spatial_layer: bool = False, needs_target: bool = True, needs_gradients: bool = False,
    gradient_kernel: GradientKernel | None = None, takes_baseline: bool = False,
) -> Callable[[Orchestration], Orchestration]:
    """Register an orchestration coroutine under `name`."""
    def decorator(run: Orchestration) -> Orchestration:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        description = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else ""
        _METHODS[name] = MethodSpec(name, run, params, uses_layer, spatial_layer, description,
                                    needs_target, needs_gradients or gradient_kernel is not None,
                                    gradient_kernel, takes_baseline)
        return run
    return decorator


def get_method(name: str) -> MethodSpec:
    _load_builtin_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise not_found("method", name, list_methods()) from None


def list_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_METHODS)


def _load_builtin_methods() -> None:
    """Import the method modules once; each registers itself on import."""
    from explainserve.methods.explain import builtin  # noqa: F401
