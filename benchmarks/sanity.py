"""Sanity checks for saliency maps (Adebayo et al. 2018, arXiv:1810.03292, sec. 3.1): cascading
model-parameter randomisation. The layers of a model are re-initialised one group at a time
from the logits down; after each step every map method explains the same images again, and
the map is compared with the one of the unchanged model by Spearman rank correlation, of the
absolute map and of the signed one. A map that shows what the model learned must change once
the weights it learned are gone; one that barely changes draws the image, not the model.

    python benchmarks/sanity.py [--quick] [--out FILE.json] [--resnet18-weights FILE]

writes docs/results/sanity.json (the table in docs/quality.md), docs/sanity.png (the plot) and
the per-method verdicts that ListMethods reports
(server/explainserve/methods/explain/sanity_verdicts.json; the file records the command).
The demo model is trained; resnet18 is torchvision's, with the weights of --resnet18-weights
(a safetensors file, e.g. ImageNet weights) or else a seeded random initialisation, which the
result says. Every map goes through a real server and the client, as a user would see it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision
from explainserve.app import BackgroundServer
from explainserve.config import ModelConfig, ServerConfig
from explainserve.methods.explain import sanity
from explainserve.methods.explain.registry import get_method, list_methods
from explainserve.models.demo import shapes
from explainserve.models.demo.network import build_demo_model
from explainserve.models.demo.repository import demo_model_config
from explainserve_client import Client, ExplainServeError
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr

from results import ROOT, add_out_argument, default_path, write_result  # benchmarks/ is on the path

NAME = "sanity"
IMAGE_SEED = 2026  # not a seed the demo model was trained or evaluated on
PLOT = ROOT / "docs" / "sanity.png"
# A map fails when its rank correlation with the unchanged model's map, averaged over the
# cascade's steps, is at or above this on either model: it stays much the same while the
# weights it should depend on are replaced (Adebayo et al.'s guided backprop stays near 0.9
# until the lowest layers go, plain gradients fall below 0.3 once the top layers do).
FAIL_AT = 0.5
# Layer groups, top (logits) first; randomising group k re-initialises it and all above it.
GROUPS = {
    "demo": ("classifier", "features.block4", "features.block3", "features.block2",
             "features.block1"),
    "resnet18": ("fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0",
                 "layer1.1", "layer1.0", "conv1,bn1"),
}
# Every registered method with a map is checked; these two draw layers, not a class's map.
NO_MAP = ("activations", "filters")
# (parameters for the full run, for --quick) of the costly methods; a name the method does not
# take is left out, so the list can name methods another server version lacks.
PARAMS = {
    "smoothgrad": ({"samples": 25}, {"samples": 4}),
    "occlusion": ({"window": 16, "stride": 4}, {"window": 16, "stride": 8}),
    # a fixed number of steps: refining until the completeness gap is small can take minutes on
    # a randomised network, and the map's ranking is what is compared here
    "integrated_gradients": ({"steps": 32, "max_completeness_gap": 0.0},
                             {"steps": 16, "max_completeness_gap": 0.0}),
    "xrai": ({}, {"steps": 16}),
}


def methods(quick: bool, skip: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """(name, parameters) of every registered map method but those skipped."""
    chosen = []
    for name in list_methods():
        if name in NO_MAP or name in skip:
            continue
        taken = {param.name for param in get_method(name).params}
        wanted = PARAMS.get(name, ({}, {}))[1 if quick else 0]
        chosen.append((name, {key: value for key, value in wanted.items() if key in taken}))
    return chosen


def randomised(state: dict[str, torch.Tensor], build, groups: tuple[str, ...]) -> dict:
    """The state with `groups` re-initialised by each module's own reset_parameters (BatchNorm
    back to the identity with fresh running statistics). Group g always gets the same random
    values (seed 1000 + its index), so each cascade step adds one group to the last one's."""
    module = build()
    module.load_state_dict(state)
    names = list(GROUPS_BY_BUILD[build])
    for group in groups:
        for path in group.split(","):
            torch.manual_seed(1000 + names.index(group))
            for submodule in module.get_submodule(path).modules():
                if hasattr(submodule, "reset_parameters"):
                    submodule.reset_parameters()
                if hasattr(submodule, "reset_running_stats"):
                    submodule.reset_running_stats()
    return {key: value.contiguous() for key, value in module.state_dict().items()}


def build_resnet18() -> torch.nn.Module:
    return torchvision.models.resnet18(num_classes=shapes_classes())


def shapes_classes() -> int:
    return demo_model_config().num_classes


GROUPS_BY_BUILD = {build_demo_model: GROUPS["demo"], build_resnet18: GROUPS["resnet18"]}


def cascade_configs(folder: Path, size: int, resnet_weights: Path | None) -> dict[str, list]:
    """Per model, the ModelConfig of each cascade step: step 0 is the unchanged model."""
    demo = demo_model_config()
    torch.manual_seed(0)
    resnet_state = (load_file(str(resnet_weights)) if resnet_weights
                    else build_resnet18().state_dict())
    plans = {"demo": (demo, build_demo_model, load_file(str(demo.weights))),
             "resnet18": (ModelConfig(name="resnet18", arch="torchvision:resnet18", weights=None,
                                      num_classes=shapes_classes(), input_size=(size, size),
                                      labels=demo.labels),
                          build_resnet18, resnet_state)}
    configs = {}
    for model, (base, build, state) in plans.items():
        groups = GROUPS[model]
        configs[model] = []
        for step in range(len(groups) + 1):
            path = folder / f"{model}_{step}.safetensors"
            save_file(randomised(state, build, groups[:step]), str(path))
            configs[model].append(dataclasses.replace(base, name=f"{model}_{step}", weights=path))
    return configs


def signed_map(attribution: np.ndarray) -> np.ndarray:
    """[C, H, W] gradient-type maps summed over channels; [h, w] maps as they are."""
    return attribution.sum(axis=0) if attribution.ndim == 3 else attribution


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; 0 where a map is constant (no ranking to compare)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def maps(client: Client, model: str, method: str, params: dict, images, targets) -> list:
    def one(index):
        (explanation,) = client.explain(images[index], model=model, method=method,
                                        targets=[int(targets[index])], outputs=("attribution",),
                                        **params)
        return signed_map(explanation.attribution.astype(np.float64))
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent requests share batches
        return list(pool.map(one, range(len(images))))


def cascade(client: Client, steps: list, method: str, params: dict, images, targets,
            others) -> dict:
    """One method down one model's cascade: the rank correlations after each step."""
    reference = maps(client, steps[0].name, method, params, images, targets)
    other = maps(client, steps[0].name, method, params, images, others)
    row = {"method": method, "params": params, "absolute": [], "signed": [],
           "class_map_correlation": float(np.mean(
               [rank_correlation(a, b) for a, b in zip(reference, other)]))}
    for config in steps[1:]:
        changed = maps(client, config.name, method, params, images, targets)
        row["absolute"].append(float(np.mean(
            [rank_correlation(np.abs(a), np.abs(b)) for a, b in zip(reference, changed)])))
        row["signed"].append(float(np.mean(
            [rank_correlation(a, b) for a, b in zip(reference, changed)])))
    return row


def measure(count: int, size: int, quick: bool, resnet_weights: Path | None,
            skip: tuple[str, ...] = (), timeout: float = 600.0) -> dict:
    samples = shapes.generate(count, IMAGE_SEED)
    images = [sample.image for sample in samples]
    targets = [sample.labels[0] for sample in samples]  # the true class, fixed across steps
    others = [(t + 1) % shapes_classes() for t in targets]  # another class, for class-blindness
    figures = {"images": count, "image_seed": IMAGE_SEED, "fail_at": FAIL_AT, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        configs = cascade_configs(Path(scratch), size, resnet_weights)
        every = tuple(config for steps in configs.values() for config in steps)
        server_config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="auto",
                                     models=every)
        with BackgroundServer(server_config) as server, Client(server.address,
                                                                timeout=timeout) as client:
            for model, steps in configs.items():
                rows = []
                for method, params in methods(quick, skip):
                    started = time.perf_counter()
                    try:
                        row = cascade(client, steps, method, params, images, targets, others)
                    except ExplainServeError as error:  # e.g. CAM on a head it cannot read
                        print(f"{model:9s} {method:18s} left out: {error}", flush=True)
                        continue
                    row["seconds"] = time.perf_counter() - started
                    rows.append(row)
                    print(f"{model:9s} {method:18s} absolute "
                          f"{' '.join(f'{v:+.2f}' for v in row['absolute'])}  "
                          f"class-map {row['class_map_correlation']:+.2f}  "
                          f"({row['seconds']:.1f} s)", flush=True)
                figures["models"][model] = {
                    "groups": list(GROUPS[model]), "input_size": steps[0].input_size[0],
                    "weights": ("trained on the demo shapes" if model == "demo" else
                                str(resnet_weights) if resnet_weights else
                                "random initialisation (torch seed 0), no trained weights"),
                    "rows": rows}
    figures["verdicts"] = verdicts(figures)
    return figures


def verdicts(figures: dict) -> dict[str, dict]:
    """Per method: fails when the absolute map's rank correlation with the unchanged model's,
    averaged over the cascade's steps, is at or above FAIL_AT on any model."""
    found: dict[str, dict] = {}
    names = dict.fromkeys(row["method"] for entry in figures["models"].values()
                          for row in entry["rows"])
    for method in names:
        mean = {model: float(np.mean(row["absolute"])) for model, entry in figures["models"].items()
                for row in entry["rows"] if row["method"] == method}
        verdict = sanity.FAILS if max(mean.values()) >= FAIL_AT else sanity.PASSES
        detail = (f"Spearman rank correlation of |map| with the unchanged model's, mean over "
                  f"the cascade from the logits down ({figures['images']} images): "
                  + ", ".join(f"{value:.2f} on {model}" for model, value in mean.items())
                  + f"; fails at {FAIL_AT}")
        found[method] = {"verdict": verdict, "detail": detail, "mean_absolute": mean}
    return found


def write_verdicts(path: Path, figures: dict, command: str, quick: bool) -> None:
    path.write_text(json.dumps({
        "generated_by": command, "quick": quick, "images": figures["images"],
        "fail_at": FAIL_AT,
        "methods": {method: {"verdict": entry["verdict"], "detail": entry["detail"]}
                    for method, entry in figures["verdicts"].items()}}, indent=2) + "\n")


def plot(figures: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    models = figures["models"]
    figure, axes = pyplot.subplots(1, len(models), figsize=(11, 3.8), dpi=72, sharey=True)
    names = list(dict.fromkeys(row["method"] for entry in models.values() for row in entry["rows"]))
    colours = pyplot.get_cmap("tab20")
    for axis, (model, entry) in zip(np.atleast_1d(axes), models.items()):
        steps = ["none", *entry["groups"]]
        for row in entry["rows"]:
            index = names.index(row["method"])
            axis.plot(range(len(steps)), [1.0, *row["absolute"]], marker=".",
                      color=colours(index % 20), linestyle="-" if index < 10 else "--",
                      label=row["method"] if model == next(iter(models)) else None)
        axis.set_xticks(range(len(steps)), steps, rotation=60, ha="right", fontsize=7)
        axis.set_title(f"{model}: randomised down to", fontsize=9)
        axis.axhline(FAIL_AT, color="grey", linewidth=0.5, linestyle="--")
        axis.set_ylim(-0.2, 1.05)
    np.atleast_1d(axes)[0].set_ylabel("Spearman rho, |map|", fontsize=8)
    figure.legend(fontsize=7, loc="center right")
    figure.tight_layout(rect=(0, 0, 0.84, 1))
    figure.savefig(path)
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 images, resnet18 at 112x112, fewer SmoothGrad samples and "
                             "occlusion positions (default: 24 images, resnet18 at 224x224)")
    parser.add_argument("--resnet18-weights", type=Path, default=None,
                        help="trained resnet18 weights (safetensors, 8-class head); "
                             "default: a seeded random initialisation")
    parser.add_argument("--verdicts", type=Path, default=sanity.VERDICTS,
                        help="where ListMethods' verdicts go (default: the package's file)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="the PNG (default: docs/sanity.png; with --quick, beside the JSON)")
    parser.add_argument("--skip", action="append", default=[], metavar="METHOD",
                        help="leave a method out (repeatable); its verdict is not_checked")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one Explain call may take (default 600)")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    count, size = (4, 112) if args.quick else (24, 224)
    skip = tuple(args.skip)
    figures = measure(count, size, args.quick, args.resnet18_weights, skip, args.timeout)
    settings = {"quick": args.quick, "images": count, "resnet18_input_size": size,
                "image_seed": IMAGE_SEED, "fail_at": FAIL_AT, "concurrent_requests": 8,
                "skipped": list(skip), "timeout_s": args.timeout,
                "methods": [{"method": m, "params": p} for m, p in methods(args.quick, skip)]}
    write_result(NAME, settings, figures, args.out)
    command = shlex.join(["python", "benchmarks/sanity.py", *sys.argv[1:]])
    write_verdicts(args.verdicts, figures, command, args.quick)
    plot_path = args.plot or (default_path(NAME, True).with_suffix(".png") if args.quick else PLOT)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(figures, plot_path)
    print(f"wrote {args.verdicts} and {plot_path}")


if __name__ == "__main__":
    main()
