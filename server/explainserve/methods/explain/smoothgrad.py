"""SmoothGrad (Smilkov et al. 2017, arXiv:1706.03825, eq. 3): a wrapper around any gradient
kernel, as Captum's NoiseTunnel wraps any attribution method:

    M_hat_c(x) = 1/n sum_{i=1..n} M_c(x + N(0, sigma^2)),   sigma = noise_level * (x_max - x_min)

`squared` averages M_c^2 instead (SmoothGrad-squared, Hooker et al. 2019). The base is any
registered method that declares a gradient kernel (saliency, input x gradient, guided backprop,
deconvnet, integrated gradients, ...); `base_parameters` (a JSON object) sets its parameters,
which it validates itself. The noisy copies are rows like any others: the base kernel's batch
key is used unchanged, so they share device passes with plain requests for the base method.
Sample i's noise depends only on (seed, i), so the result does not depend on how the batcher
cuts the rows into chunks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import (PREDICTED, Attribution, Kernel, Param, RowWindow, TensorRows, gradient_heatmap,
                                      parse_params)
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.registry import get_method, list_methods, register_method

# Rows whose attributions exist at once: bounds memory for many samples of a large image.
ROWS_PER_WINDOW = 64


def sample_seed(seed: int, sample: int) -> int:
    """The seed of sample i's generator. The CPU generator (mt19937) keeps only 32 bits of its
    seed, so (seed, i) is hashed into 32 bits rather than packed side by side."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{sample}".encode(), digest_size=4).digest(), "little")


def sample_noise(shape: torch.Size, sigma: float, seed: int, sample: int) -> Tensor:
    """N(0, sigma^2) noise of sample `sample`, drawn on the CPU from its own generator so any
    sample can be produced without the others, identically on every device."""
    generator = torch.Generator().manual_seed(sample_seed(seed, sample))
    return torch.randn(shape, generator=generator) * sigma


@dataclass(frozen=True, eq=False)
class NoisyRows:
    """Rows r = t * samples + i: target t's i-th noisy copy of the image; made on demand."""

    image: Tensor
    targets: tuple[int, ...]
    samples: int
    sigma: float
    seed: int

    def __len__(self) -> int:
        return len(self.targets) * self.samples

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        rows = range(start, stop)
        inputs = torch.stack([self.image + sample_noise(self.image.shape, self.sigma, self.seed,
                                                        row % self.samples) for row in rows])
        targets = torch.tensor([self.targets[row // self.samples] for row in rows], dtype=torch.long)
        return inputs, targets


async def mean_attribution(ctx, kernel: Kernel, rows: NoisyRows, squared: bool) -> Tensor:
    """Eq. 3: the per-target mean of the base attribution over the noisy copies, summed window
    by window so that at most ROWS_PER_WINDOW attributions are held at once."""
    sums = torch.zeros(len(rows.targets), *rows.image.shape)
    for start in range(0, len(rows), ROWS_PER_WINDOW):
        stop = min(start + ROWS_PER_WINDOW, len(rows))
        attribution = (await ctx.run(kernel, RowWindow(rows, start, stop)))["attribution"]
        owners = torch.arange(start, stop) // rows.samples
        sums.index_add_(0, owners, attribution.pow(2) if squared else attribution)
    return sums / rows.samples


def gradient_bases() -> list[str]:
    """The methods SmoothGrad can wrap: those that declare a gradient kernel."""
    return [name for name in list_methods() if get_method(name).gradient_kernel is not None]


def base_kernel(ctx, base: str, raw: str) -> Kernel:
    """The base method's gradient kernel with its parameters, which it parses and checks; the
    model's facts and the limits go along (under "facts" and "limits") for kernels that need
    them, such as integrated gradients' black and white baselines."""
    valid = gradient_bases()
    if base not in valid:
        raise InvalidArgument(f"parameter 'base' of method 'smoothgrad' must be a method with a "
                              f"gradient kernel, one of {valid}; {base!r} has none")
    try:
        values = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"parameter 'base_parameters' of method 'smoothgrad' must be a JSON "
                              f"object, got {raw!r} ({error.msg})") from None
    if not isinstance(values, dict):
        raise InvalidArgument(f"parameter 'base_parameters' of method 'smoothgrad' must be a JSON "
                              f"object, got {raw!r}")
    spec = get_method(base)
    params = parse_params(base, spec.params, values)
    return spec.gradient_kernel({**params, "facts": ctx.model, "limits": ctx.limits})


@register_method("smoothgrad", params=(
    Param("base", str, "saliency", help="the gradient method averaged: any method with a "
                                        "gradient kernel"),
    Param("base_parameters", str, "{}", help="the base method's parameters, as a JSON object"),
    Param("samples", int, 50, minimum=1, help="noisy copies (at most limits.max_smoothgrad_samples)"),
    Param("noise_level", float, 0.15, minimum=0.0, help="sigma / (max - min) of the input"),
    Param("seed", int, 0, minimum=0, maximum=2**31 - 1, help="seed of the noise"),
    Param("squared", bool, False, help="average the squared attributions (SmoothGrad-squared)"),
))
async def smoothgrad(ctx, image, targets, layer, params):
    """SmoothGrad: a gradient method averaged over noisy copies of the input (Smilkov 2017)."""
    limit = ctx.limits.max_smoothgrad_samples
    if params["samples"] > limit:
        raise InvalidArgument(f"parameter 'samples' of method 'smoothgrad' must be at most "
                              f"{limit}, got {params['samples']}")
    kernel = base_kernel(ctx, params["base"], params["base_parameters"])
    # The predicted class, score and probability are the clean image's, found once: a noisy
    # copy may well predict another class.
    logits = (await ctx.run(Kernel.of(logits_kernel), TensorRows.repeat(image, [0])))["logits"][0]
    resolved = tuple(int(logits.argmax()) if t == PREDICTED else t for t in targets)
    sigma = params["noise_level"] * float(image.max() - image.min())
    rows = NoisyRows(image, resolved, params["samples"], sigma, params["seed"])
    means = await mean_attribution(ctx, kernel, rows, params["squared"])
    heatmaps = gradient_heatmap(means)
    probabilities = logits.softmax(0)
    return [Attribution(target=t, score=float(logits[t]), probability=float(probabilities[t]),
                        attribution=means[i], heatmap=heatmaps[i]) for i, t in enumerate(resolved)]
