"""What the gradient and Grad-CAM family tests compare against, and how they make the server
batch: references computed with Captum, pytorch-grad-cam or by hand, at the batch size the
server ran, and a context that holds a model's queue until a batch of N rows is complete."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient,
                         LayerGradCam, NoiseTunnel, Saliency)
from pytorch_grad_cam import GradCAMPlusPlus
from support import batch_stats, random_input, relative_l2
from torch import nn

GRADIENT_METHODS = ("saliency", "input_x_gradient", "smoothgrad", "deconvnet", "guided_backprop")
CAM_METHODS = ("cam", "gradcam", "gradcam_counterfactual", "gradcam_plus_plus", "guided_gradcam")
ALL_METHODS = GRADIENT_METHODS + CAM_METHODS
LAYER_METHODS = ("gradcam", "gradcam_counterfactual", "gradcam_plus_plus", "guided_gradcam")

CAPTUM_GRADIENTS = {"saliency": Saliency, "input_x_gradient": InputXGradient,
                    "deconvnet": Deconvolution, "guided_backprop": GuidedBackprop}
# pytorch-grad-cam adds eps = 1e-6 to the denominator of Grad-CAM++ eq. 19, which our exact
# form does not; on random weights g^2 is of that order. The weights are homogeneous apart from
# that eps (alpha(A/s, s g) -> alpha(A, g) and w(A/s, s g) = s w(A, g) as s grows), so feeding
# its own formula A/s and s*g with a large s cancels the eps and leaves sum_k w_k A^k unchanged.
GRADCAM_PLUS_PLUS_SCALE = 1e6


def layer_of(module: nn.Module, name: str) -> nn.Module:
    return dict(module.named_modules())[name]


def activation_and_gradient(module: nn.Module, layer: str, images: torch.Tensor, targets: list[int]):
    """A = the layer's output for images [N,C,H,W] and dS_target/dA, by hand (a test hook)."""
    captured = {}
    handle = layer_of(module, layer).register_forward_hook(
        lambda _module, _args, output: captured.setdefault("A", output))
    try:
        logits = module(images.clone().requires_grad_(True))
    finally:
        handle.remove()
    scores = logits.gather(1, torch.tensor(targets)[:, None]).sum()
    (gradient,) = torch.autograd.grad(scores, captured["A"])
    return captured["A"].detach(), gradient


def our_seed(seed: int, sample: int) -> int:
    """The documented seed of SmoothGrad sample i: the 4-byte BLAKE2b digest of "seed:i"."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{sample}".encode(), digest_size=4).digest(), "little")


def our_noise(shape, sigma: float, seed: int, sample: int) -> torch.Tensor:
    """The documented SmoothGrad noise: randn from a CPU generator seeded with our_seed, times sigma."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(our_seed(seed, sample))) * sigma


def gradient_reference(method: str, module, images, targets) -> torch.Tensor:
    extra = {"abs": False} if method == "saliency" else {}
    return CAPTUM_GRADIENTS[method](module).attribute(images, target=list(targets), **extra).detach()


def smoothgrad_by_hand(module, images, targets, *, base="saliency", samples=50, noise_level=0.15,
                       seed=0, squared=False) -> torch.Tensor:
    """Eq. 3 of Smilkov et al. over our noisy copies, each batch [x_k + n_i]_k through Captum."""
    sigmas = [noise_level * float(image.max() - image.min()) for image in images]
    total = torch.zeros_like(images)
    for sample in range(samples):
        noisy = torch.stack([image + our_noise(image.shape, sigma, seed, sample)
                             for image, sigma in zip(images, sigmas)])
        attribution = gradient_reference(base, module, noisy, targets)
        total += attribution.pow(2) if squared else attribution
    return total / samples


def smoothgrad_reference(module, image, target, *, base="saliency", samples=50, noise_level=0.15,
                         seed=0, squared=False) -> torch.Tensor:
    """Captum's NoiseTunnel for one image, one sample per call with the global generator seeded
    as our sample i's generator is: torch.normal(0, sigma) then draws the very noise we draw."""
    sigma = noise_level * float(image.max() - image.min())
    tunnel = NoiseTunnel(CAPTUM_GRADIENTS[base](module))
    extra = {"abs": False} if base == "saliency" else {}
    total = torch.zeros_like(image)
    for sample in range(samples):
        with torch.random.fork_rng():
            torch.manual_seed(our_seed(seed, sample))
            total += tunnel.attribute(image[None], nt_type="smoothgrad_sq" if squared else "smoothgrad",
                                      nt_samples=1, stdevs=sigma, target=target, **extra)[0].detach()
    return total / samples


def gradcam_plus_plus_reference(module, images, targets, layer) -> torch.Tensor:
    """pytorch-grad-cam's per-layer CAM before its min-max scaling and resizing."""
    cam = GradCAMPlusPlus(module, [layer_of(module, layer)])
    try:
        inputs = images.clone().requires_grad_(True)
        outputs = cam.activations_and_grads(inputs)
        scores = outputs.gather(1, torch.tensor(targets)[:, None]).sum()
        torch.autograd.grad(scores, inputs)  # fires its gradient hook
        activations = cam.activations_and_grads.activations[0].double().numpy()
        gradients = cam.activations_and_grads.gradients[0].double().numpy()
        raw = cam.get_cam_image(inputs, layer_of(module, layer), None,
                                activations / GRADCAM_PLUS_PLUS_SCALE,
                                gradients * GRADCAM_PLUS_PLUS_SCALE)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.maximum(raw, 0))


def reference(method: str, module: nn.Module, images: torch.Tensor, targets: list[int], *,
              layer: str = "", cam_layer: str = "", head: str = "", **params) -> torch.Tensor:
    """The attributions of `method` for images [N,C,H,W], one target each, computed as ONE
    batch of N (check_alone_and_in_a_batch_of_8 says why the batch size matters)."""
    targets = list(targets)
    if method in CAPTUM_GRADIENTS:
        return gradient_reference(method, module, images, targets)
    if method == "smoothgrad":
        return smoothgrad_by_hand(module, images, targets, **params)
    if method == "gradcam":
        return LayerGradCam(module, layer_of(module, layer)).attribute(
            images, target=targets, relu_attributions=True)[:, 0].detach()
    if method == "guided_gradcam":
        return GuidedGradCam(module, layer_of(module, layer)).attribute(
            images, target=targets, interpolate_mode=params.get("upsample", "nearest")).detach()
    if method == "gradcam_plus_plus":
        return gradcam_plus_plus_reference(module, images, targets, layer)
    if method == "gradcam_counterfactual":  # Grad-CAM sec. 5: alpha_k from -dS/dA
        activations, gradients = activation_and_gradient(module, layer, images, targets)
        return torch.relu(torch.einsum("nk,nkhw->nhw", (-gradients).mean(dim=(2, 3)), activations))
    if method == "cam":  # Zhou et al. eq. 2: M_c = sum_k w^c_k f_k
        activations, _ = activation_and_gradient(module, cam_layer, images, targets)
        weights = layer_of(module, head).weight[targets].detach()
        return torch.einsum("nk,nkhw->nhw", weights, activations)
    raise ValueError(method)


def expected_heatmap(attribution: torch.Tensor, size: tuple[int, int],
                     upsample: str = "bilinear") -> torch.Tensor:
    """Input-sized maps: max over channels of |a| (Simonyan et al. sec. 3.1); layer maps:
    resized to the input. Both clipped at 0 and divided by their maximum."""
    if attribution.ndim == 3:
        heatmap = attribution.abs().amax(dim=0)
    else:
        extra = {"align_corners": False} if upsample == "bilinear" else {}
        heatmap = torch.nn.functional.interpolate(attribution[None, None].float(), size=size,
                                                  mode=upsample, **extra)[0, 0]
    heatmap = heatmap.clamp(min=0)
    return heatmap / heatmap.max() if heatmap.max() > 0 else heatmap


@contextlib.contextmanager
def batches_of(background, model: str, rows: int) -> Iterator[None]:
    """Make every pass for `model` exactly `rows` rows: the queue waits until that many rows
    are there (so concurrent requests share one pass) and a many-row job (SmoothGrad) is not
    cut into smaller, timing-dependent chunks."""
    batcher = background.server._batcher
    original = batcher._batching[model]
    held = dataclasses.replace(original, max_batch_size=rows, max_queue_delay_ms=20_000,
                               max_chunk_ms=1e9)

    async def configure(config):
        batcher._batching[model] = config

    background.call(configure(held))
    try:
        yield
    finally:
        background.call(configure(original))


def explain_together(background, client, model: str, method: str, images, targets, **options):
    """One request per (image, target), all at once in a batch of len(images) rows; returns the
    explanations and the (batches, rows) the server ran meanwhile."""
    before = batch_stats(model)
    with batches_of(background, model, len(images)), ThreadPoolExecutor(len(images)) as pool:
        futures = [pool.submit(client.explain, image, model=model, method=method, targets=[target],
                               **options) for image, target in zip(images, targets)]
        results = [future.result()[0] for future in futures]
    after = batch_stats(model)
    return results, (after[0] - before[0], after[1] - before[1])


@dataclasses.dataclass(frozen=True)
class ModelCase:
    layer: str  # the Grad-CAM layer the tests ask for
    targets: tuple[int, ...]  # one per image of the batch of 8
    cam_layer: str | None = None  # the global average pool's input; None: no CAM structure
    head: str | None = None  # the linear head


CASES = {
    "resnet18": ModelCase("layer4", (3, 0, 7, 1, 9, 4, 2, 5), "layer4", "fc"),
    # the last conv block's in-place ReLU, the layer Grad-CAM's paper uses for VGG
    "vgg16": ModelCase("features.29", (2, 8, 0, 5, 1, 6, 9, 3)),
    "demo": ModelCase("features.block4.relu", (3, 0, 7, 1, 6, 4, 2, 5), "features", "classifier"),
}
IMAGE_SHAPE = (3, 64, 64)


def check_alone_and_in_a_batch_of_8(serving, reference_modules, model: str, method: str, **params):
    """Image 0 alone, then 8 images with 8 targets as 8 concurrent requests that the server runs
    as batches of exactly 8 rows: every attribution and heatmap matches the reference to
    relative L2 < 1e-4 and each row gets its own target.

    The reference runs at the batch size the server ran: alone for the single request, as one
    batch of 8 for the 8 requests. Captum's rows are independent (its math is per row) and do
    not depend on which other rows share their batch or in what order, so a leak between the
    server's rows still shows. They do depend on the batch SIZE: nn.Linear's GEMM rounds
    differently for 1 row than for 8, and a ReLU or max-pool decision at a near-tie turns that
    last-bit difference into another gradient path. On these random-weight 64x64 networks that
    moves 2-8% of rows by more than 1e-4 between batch 1 and batch 8, in Captum as in any
    float32 computation; so alone is compared with alone and a batch of 8 with a batch of 8."""
    background, client = serving(model)
    case = CASES[model]
    images = [random_input(IMAGE_SHAPE, seed) for seed in range(len(case.targets))]
    layer = case.layer if method in LAYER_METHODS else None
    with batches_of(background, model, 1):
        (alone,) = client.explain(images[0], model=model, method=method,
                                  targets=[case.targets[0]], layer=layer, **params)
    batched, (batches, rows) = explain_together(background, client, model, method, images,
                                                case.targets, layer=layer, **params)
    assert batches >= 1 and rows == len(images) * batches  # every pass held 8 rows
    # SmoothGrad's noisy rows ran 8 to a pass too, in some mix of images and samples; its
    # reference runs sample i of all 8 images as one batch (rows do not depend on their mix).
    module = reference_modules(model)
    options = {"layer": case.layer, "cam_layer": case.cam_layer or "", "head": case.head or "", **params}
    stacked = torch.from_numpy(np.stack(images))
    expected_alone = reference(method, module, stacked[:1], case.targets[:1], **options)
    expected_batched = reference(method, module, stacked, list(case.targets), **options)
    upsample = params.get("upsample", "nearest" if method == "guided_gradcam" else "bilinear")
    pairs = [(alone, expected_alone[0], case.targets[0])]
    pairs += list(zip(batched, expected_batched, case.targets))
    for index, (result, expected, target) in enumerate(pairs):
        assert result.target == target
        assert relative_l2(result.attribution, expected) < 1e-4, (method, model, index)
        heatmap = expected_heatmap(expected, IMAGE_SHAPE[1:], upsample)
        assert relative_l2(result.heatmap, heatmap) < 1e-4, (method, model, index)
