"""Train the demo model on generated shapes and write its weights and labels.

    PYTHONPATH=server python -m explainserve.models.demo.training --out server/explainserve/models/demo/assets
    PYTHONPATH=server python -m explainserve.models.demo.training --out ... --evaluate

Data, batch order, augmentation and initialisation are all seeded, and torch uses two CPU
threads, so a rerun repeats the committed training run. The script logs its time and the
held-out figures; benchmarks/demo_model.py measures them through the server (docs/demo_model.md).
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from explainserve.models.demo import pil_shapes, shapes
from explainserve.models.demo.network import (
    DEMO_ASSETS_DIR, DEMO_MEAN, DEMO_STD, DEMO_LABELS_PATH, DEMO_WEIGHTS_PATH, build_demo_model)

log = logging.getLogger(__name__)

# Training draws classic images from seed 0 and varied ones from seed 1; evaluation (12345,
# 12346, 12347, 12348), tests and benchmarks use other seeds.
TRAIN_SEED = 0
VARIED_TRAIN_SEED = 1
VARIED_EVAL_SEED = 12347  # varied single-object images
PIL_EVAL_SEED = 12348  # images drawn with PIL's primitives (pil_shapes), never trained on
CELL = 4  # input pixels per cell of the 16x16 class map


@dataclass(frozen=True)
class TrainConfig:
    classic_images: int = 12_000  # the classic generator, a quarter of them two-object
    varied_images: int = 36_000  # the varied generator: sizes, backgrounds, occlusion, JPEG
    epochs: int = 6
    two_object_fraction: float = 0.25  # soft 0.5/0.5 targets: both classes must score high
    varied_two_object_fraction: float = 0.3  # half of these overlap
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    pointing_weight: float = 0.1  # weight of pointing_loss beside the cross-entropy


def _normalise(images: Tensor) -> Tensor:
    """uint8 [N, 3, H, W] -> float32 in [0, 1] normalised with DEMO_MEAN / DEMO_STD."""
    mean = torch.tensor(DEMO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def to_tensor(samples: Sequence) -> Tensor:
    """uint8 images -> normalised float32 [N, 3, 64, 64], as the server preprocesses them."""
    return _normalise(_uint8_batch(samples))


def _uint8_batch(samples: Sequence) -> Tensor:
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()


def soft_targets(samples: list[shapes.Sample]) -> Tensor:
    targets = torch.zeros(len(samples), len(shapes.CLASS_NAMES))
    for row, sample in enumerate(samples):
        targets[row, list(sample.labels)] = 1.0 / len(sample.labels)
    return targets


def _cell_coverage(samples: list[shapes.Sample]) -> tuple[Tensor, Tensor]:
    """Per object slot (2), the share of each 4x4 cell its mask covers, [N, 2, 16, 16], and
    its label, [N, 2] (-1 for an empty slot)."""
    size = shapes.IMAGE_SIZE // CELL
    cells = torch.zeros(len(samples), 2, size, size)
    labels = torch.full((len(samples), 2), -1, dtype=torch.long)
    for row, sample in enumerate(samples):
        for slot, (label, mask) in enumerate(zip(sample.labels, sample.masks)):
            cells[row, slot] = torch.from_numpy(
                mask.reshape(size, CELL, size, CELL).mean(axis=(1, 3)))
            labels[row, slot] = label
    return cells, labels


def _random_dihedral(tensors: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Rotate by a multiple of 90 degrees and maybe mirror, the same way for every tensor
    (images and their mask cells): every class is invariant to both."""
    turns, mirror = torch.randint(0, 4, (2,), generator=generator).tolist()
    turned = [torch.rot90(t, turns, dims=(2, 3)) for t in tensors]
    return [t.flip(3) if mirror % 2 else t for t in turned]


def class_maps(model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
    """CAM (Zhou et al. 2016, eq. 2 without the bias): M_c(x, y) = sum_k w_ck f_k(x, y), for
    row i's class classes[i]; [N, h, w]. The logit of c is the mean of M_c plus b_c."""
    weights = model.classifier.weight[classes]  # [N, K]
    return torch.einsum("nkhw,nk->nhw", features, weights)


def pointing_loss(maps: Tensor, cells: Tensor) -> Tensor:
    """-log of the softmax mass (over the map's cells) that falls on the object's cells: the
    cells its mask covers at least half, or its single best-covered cell for an object too
    small for that. Zero when the map's peak is far above every cell off the object; it only
    moves evidence within the map, the classifier is still judged by its cross-entropy."""
    flat_maps, flat_cells = maps.flatten(1), cells.flatten(1)
    inside = flat_cells >= 0.5
    inside[torch.arange(len(inside)), flat_cells.argmax(dim=1)] = True
    log_share = torch.logsumexp(flat_maps.log_softmax(dim=1).masked_fill(~inside, -torch.inf), 1)
    return -log_share.mean()


def _training_set(config: TrainConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    samples = (shapes.generate(config.classic_images, TRAIN_SEED, config.two_object_fraction)
               + shapes.generate(config.varied_images, VARIED_TRAIN_SEED,
                                 config.varied_two_object_fraction, varied=True))
    cells, labels = _cell_coverage(samples)
    return _uint8_batch(samples), soft_targets(samples), cells, labels


def train(config: TrainConfig) -> nn.Module:
    torch.manual_seed(TRAIN_SEED)
    started = time.perf_counter()
    images, targets, cells, labels = _training_set(config)
    log.info("generated %d training images in %.1f s", len(images), time.perf_counter() - started)

    # Channels-last runs these convolutions faster on CPU; the saved weights are contiguous.
    model = build_demo_model(len(shapes.CLASS_NAMES)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(images) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        total_loss = total_pointing = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch_images, batch_cells = _random_dihedral(
                [_normalise(images[batch]), cells[batch]], generator)
            batch_images = batch_images.contiguous(memory_format=torch.channels_last)
            features = model.features(batch_images)
            logits = model.classifier(model.flatten(model.pool(features)))
            loss = nn.functional.cross_entropy(logits, targets[batch])  # soft targets
            rows, slots = (labels[batch] >= 0).nonzero(as_tuple=True)
            pointing = pointing_loss(class_maps(model, features[rows], labels[batch][rows, slots]),
                                     batch_cells[rows, slots])
            optimizer.zero_grad(set_to_none=True)
            (loss + config.pointing_weight * pointing).backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            total_pointing += pointing.item()
        log.info("epoch %d/%d: mean cross-entropy %.4f, pointing loss %.4f, %.0f s elapsed",
                 epoch + 1, config.epochs, total_loss / steps_per_epoch,
                 total_pointing / steps_per_epoch, time.perf_counter() - started)
    return model.eval()


@torch.no_grad()
def _predict(model: nn.Module, samples: Sequence, batch_size: int = 250) -> Tensor:
    logits = [model(to_tensor(samples[i:i + batch_size]))
              for i in range(0, len(samples), batch_size)]
    return torch.cat(logits)


@torch.no_grad()
def gradcam_peaks(model: nn.Module, samples: Sequence, classes: Sequence[int],
                  batch_size: int = 250) -> list[tuple[int, int] | None]:
    """Where Grad-CAM at the default layer peaks for class classes[i] of samples[i], after
    bilinear resizing to the input, as the server computes it; None for an all-zero map.
    For this model Grad-CAM is ReLU(CAM) / area (its head is GAP + linear), so CAM suffices."""
    peaks: list[tuple[int, int] | None] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        features = model.features(to_tensor(chunk))
        maps = torch.relu(class_maps(model, features, torch.tensor(classes[start:start + len(chunk)])))
        maps = nn.functional.interpolate(maps[:, None], size=(shapes.IMAGE_SIZE,) * 2,
                                         mode="bilinear", align_corners=False)[:, 0]
        for heatmap in maps:
            index = int(heatmap.flatten().argmax())
            peaks.append(divmod(index, shapes.IMAGE_SIZE) if heatmap.max() > 0 else None)
    return peaks


def _pointing(model: nn.Module, samples: Sequence, classes: Sequence[int],
              masks: Sequence[np.ndarray]) -> float:
    peaks = gradcam_peaks(model, samples, classes)
    return float(np.mean([peak is not None and bool(mask[peak])
                          for peak, mask in zip(peaks, masks)]))


def evaluate(model: nn.Module, count: int = 2000, seed: int = 12345,
             pair_count: int = 500) -> dict[str, float]:
    """Top-1 accuracy on `count` single-object images from `seed`, and how often both classes
    of a two-object image (seed + 1) are the model's top-2 predictions."""
    model.eval()
    singles = shapes.generate(count, seed)
    predicted = _predict(model, singles).argmax(dim=1)
    truth = torch.tensor([s.labels[0] for s in singles])
    pairs = shapes.generate(pair_count, seed + 1, two_object_fraction=1.0)
    top2 = _predict(model, pairs).topk(2, dim=1).indices.tolist()
    both_in_top2 = [set(t) == set(p.labels) for t, p in zip(top2, pairs)]
    return {"accuracy": (predicted == truth).float().mean().item(),
            "pair_top2_rate": float(np.mean(both_in_top2))}


def evaluate_robustness(model: nn.Module, count: int = 2000) -> dict[str, float]:
    """Top-1 accuracy and Grad-CAM pointing (true class, strict) in-process on `count` varied
    single-object images (VARIED_EVAL_SEED), on as many PIL-drawn ones (PIL_EVAL_SEED) and
    on classic ones (seed 12345, as evaluate)."""
    model.eval()
    figures = {}
    sets = {"classic": shapes.generate(count, 12345),
            "varied": shapes.generate(count, VARIED_EVAL_SEED, varied=True)}
    for name, samples in sets.items():
        truth = [s.labels[0] for s in samples]
        predicted = _predict(model, samples).argmax(dim=1).tolist()
        figures[f"{name}_accuracy"] = float(np.mean(np.equal(predicted, truth)))
        figures[f"{name}_pointing"] = _pointing(model, samples, truth, [s.masks[0] for s in samples])
    drawn = pil_shapes.generate(count, PIL_EVAL_SEED)
    truth = [s.label for s in drawn]
    predicted = _predict(model, drawn).argmax(dim=1).tolist()
    figures["pil_accuracy"] = float(np.mean(np.equal(predicted, truth)))
    figures["pil_pointing"] = _pointing(model, drawn, truth, [s.mask for s in drawn])
    return figures


def save(model: nn.Module, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / DEMO_WEIGHTS_PATH.name))
    (out_dir / DEMO_LABELS_PATH.name).write_text("\n".join(shapes.CLASS_NAMES) + "\n")


def load(out_dir: Path) -> nn.Module:
    model = build_demo_model(len(shapes.CLASS_NAMES))
    model.load_state_dict(load_file(str(out_dir / DEMO_WEIGHTS_PATH.name)), strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_ASSETS_DIR)
    parser.add_argument("--evaluate", action="store_true",
                        help="only evaluate the weights already in --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(2)

    started, cpu_started = time.perf_counter(), time.process_time()
    if args.evaluate:
        model = load(args.out)
    else:
        model = train(TrainConfig())
        save(model, args.out)
    # CPU time over 2 threads approximates the wall time on an otherwise idle machine.
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    scores = evaluate(model)
    log.info("done: %s %.1f s wall (%.1f s CPU); held-out accuracy %.4f (2000 images, "
             "seed 12345); two-object top-2 rate %.4f (500 images, seed 12346)",
             "loaded in" if args.evaluate else "trained in", elapsed, cpu,
             scores["accuracy"], scores["pair_top2_rate"])
    robustness = evaluate_robustness(model)
    log.info("in-process Grad-CAM pointing and accuracy, 2000 images each: %s",
             ", ".join(f"{key} {value:.4f}" for key, value in robustness.items()))


if __name__ == "__main__":
    main()
