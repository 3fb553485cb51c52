"""Train the demo model on generated shapes and write its weights and labels.

    PYTHONPATH=server python -m explainserve.models.demo.training --out server/explainserve/models/demo/assets
    PYTHONPATH=server python -m explainserve.models.demo.training --out ... --evaluate

Data, batch order, augmentation and initialisation are all seeded, and torch uses two CPU
threads, so a rerun repeats the committed training run. The script logs its time; accuracy
is measured by benchmarks/demo_model.py (docs/demo_model.md).
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from explainserve.models.demo import shapes
from explainserve.models.demo.network import (
    DEMO_ASSETS_DIR, DEMO_MEAN, DEMO_STD, DEMO_LABELS_PATH, DEMO_WEIGHTS_PATH, build_demo_model)

log = logging.getLogger(__name__)

TRAIN_SEED = 0  # evaluation seeds (12345, 12346) and test seeds must differ from this one


@dataclass(frozen=True)
class TrainConfig:
    images: int = 40_000
    epochs: int = 4
    two_object_fraction: float = 0.25  # soft 0.5/0.5 targets: both classes must score high
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4


def to_tensor(samples: list[shapes.Sample]) -> Tensor:
    """uint8 images -> normalised float32 [N, 3, 64, 64], as the server preprocesses them."""
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    mean = torch.tensor(DEMO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def soft_targets(samples: list[shapes.Sample]) -> Tensor:
    targets = torch.zeros(len(samples), len(shapes.CLASS_NAMES))
    for row, sample in enumerate(samples):
        targets[row, list(sample.labels)] = 1.0 / len(sample.labels)
    return targets


def _random_dihedral(images: Tensor, generator: torch.Generator) -> Tensor:
    """Rotate by a multiple of 90 degrees and maybe mirror: every class is invariant to both."""
    turns, mirror = torch.randint(0, 4, (2,), generator=generator).tolist()
    images = torch.rot90(images, turns, dims=(2, 3))
    return images.flip(3) if mirror % 2 else images


def train(config: TrainConfig) -> nn.Module:
    torch.manual_seed(TRAIN_SEED)
    started = time.perf_counter()
    samples = shapes.generate(config.images, TRAIN_SEED, config.two_object_fraction)
    images, targets = to_tensor(samples), soft_targets(samples)
    del samples
    log.info("generated %d training images in %.1f s", len(images), time.perf_counter() - started)

    model = build_demo_model(len(shapes.CLASS_NAMES))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(images) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            logits = model(_random_dihedral(images[batch], generator))
            loss = nn.functional.cross_entropy(logits, targets[batch])  # soft targets
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
        log.info("epoch %d/%d: mean loss %.4f, %.0f s elapsed", epoch + 1, config.epochs,
                 total_loss / steps_per_epoch, time.perf_counter() - started)
    return model.eval()


@torch.no_grad()
def _predict(model: nn.Module, samples: list[shapes.Sample], batch_size: int = 250) -> Tensor:
    logits = [model(to_tensor(samples[i:i + batch_size]))
              for i in range(0, len(samples), batch_size)]
    return torch.cat(logits)


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


if __name__ == "__main__":
    main()
