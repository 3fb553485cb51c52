"""SmoothGrad (Smilkov et al. 2017, arXiv:1706.03825, eq. 3): a wrapper around any gradient
kernel, as Captum's NoiseTunnel wraps any attribution method:

    M_hat_c(x) = 1/n sum_{i=1..n} M_c(x + N(0, sigma^2)),   sigma = noise_level * (x_max - x_min)

`squared` averages M_c^2 instead (SmoothGrad-squared, Hooker et al. 2019). The noisy copies
are rows like any others: the base kernel's batch key is used unchanged, so they share device
passes with plain requests for the base method. Sample i's noise depends only on (seed, i), so
the result does not depend on how the batcher cuts the rows into chunks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import PREDICTED, Attribution, Kernel, Param, TensorRows, gradient_heatmap
from explainserve.methods.explain.guided import DECONVNET, GUIDED_BACKPROP
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.registry import register_method
from explainserve.methods.explain.saliency import input_x_gradient_kernel, saliency_kernel

BASES: dict[str, Kernel] = {
    "saliency": Kernel.of(saliency_kernel),
    "input_x_gradient": Kernel.of(input_x_gradient_kernel),
    "guided_backprop": GUIDED_BACKPROP,
    "deconvnet": DECONVNET,
}
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


@dataclass(frozen=True, eq=False)
class RowWindow:
    """Rows [start, stop) of other rows."""

    rows: NoisyRows
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.rows.take(self.start + start, self.start + stop)


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


@register_method("smoothgrad", params=(
    Param("base", str, "saliency", choices=tuple(BASES), help="the gradient method averaged"),
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
    # The predicted class, score and probability are the clean image's, found once: a noisy
    # copy may well predict another class.
    logits = (await ctx.run(Kernel.of(logits_kernel), TensorRows.repeat(image, [0])))["logits"][0]
    resolved = tuple(int(logits.argmax()) if t == PREDICTED else t for t in targets)
    sigma = params["noise_level"] * float(image.max() - image.min())
    rows = NoisyRows(image, resolved, params["samples"], sigma, params["seed"])
    means = await mean_attribution(ctx, BASES[params["base"]], rows, params["squared"])
    heatmaps = gradient_heatmap(means)
    probabilities = logits.softmax(0)
    return [Attribution(target=t, score=float(logits[t]), probability=float(probabilities[t]),
                        attribution=means[i], heatmap=heatmaps[i]) for i, t in enumerate(resolved)]
