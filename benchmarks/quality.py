"""How well each map method localises on the demo model. One command writes
docs/results/quality.json:

    python benchmarks/quality.py [--quick] [--out FILE.json]

Pointing game (Zhang et al. 2016, strict form): on freshly generated single-object shape images,
a hit is a heatmap maximum inside the object's mask; the map explains the object's true class.
Class-discriminativeness: on two-object images with classes A and B, the map for A "points at
A" when its maximum over A's mask exceeds its maximum over B's mask; each image counts twice
(A's map and B's map), so 50% is what a map blind to the class would score. Because a peak can
favour A for reasons other than the class (A is simply the more salient object), the table also
gives the correlation between the maps for A and for B of the same image: a class-blind method
draws nearly the same map for both. The images come
from seeds the demo model was not trained or evaluated on (explainserve.models.demo.training
uses 0, 12345 and 12346).
Everything goes through a real server and the client, as a user would see it.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config
from explainserve.methods.explain import sanity
from explainserve_client import Client

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "quality"
SINGLE_SEED, PAIR_SEED = 2024, 2025
# (row label, method, parameters)
METHODS: tuple[tuple[str, str, dict], ...] = (
    ("saliency", "saliency", {}),
    ("input_x_gradient", "input_x_gradient", {}),
    ("smoothgrad", "smoothgrad", {"samples": 25}),
    ("smoothgrad, noise 0.05", "smoothgrad", {"samples": 25, "noise_level": 0.05}),
    ("deconvnet", "deconvnet", {}),
    ("guided_backprop", "guided_backprop", {}),
    ("cam", "cam", {}),
    ("gradcam", "gradcam", {}),
    ("gradcam_counterfactual", "gradcam_counterfactual", {}),
    ("gradcam_plus_plus", "gradcam_plus_plus", {}),
    ("guided_gradcam", "guided_gradcam", {}),
    # a 16-pixel window (about half an object) with stride 4: 13 x 13 positions on 64 x 64
    ("occlusion", "occlusion", {"window": 16, "stride": 4}),
)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    return np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)


def pointing_game(client: Client, method: str, params: dict, samples) -> dict:
    """Hit rate of the heatmap maximum on the object's mask; an all-zero map is a miss."""
    def explain(sample) -> tuple[bool, bool]:
        (explanation,) = client.explain(sample.image, model="demo", method=method,
                                        targets=list(sample.labels), outputs=("heatmap",), **params)
        empty = not explanation.heatmap.any()
        return (not empty and bool(sample.masks[0][peak(explanation.heatmap)])), empty
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent requests share batches
        hits, empties = zip(*pool.map(explain, samples))
    return {"pointing_game": float(np.mean(hits)), "empty_maps": float(np.mean(empties))}


def discriminativeness(client: Client, method: str, params: dict, samples) -> dict:
    """On two-object images: how often the map for A peaks higher on A's mask than on B's
    (ties, e.g. two all-zero maps, are counted apart), and how alike the maps for A and B
    are (Pearson correlation; 1 means the map ignores which class it explains)."""
    def explain(sample) -> tuple[list[int], float]:
        explanations = client.explain(sample.image, model="demo", method=method,
                                      targets=list(sample.labels), outputs=("heatmap",), **params)
        verdicts = []
        for own, explanation in enumerate(explanations):
            on_own = explanation.heatmap[sample.masks[own]].max()
            on_other = explanation.heatmap[sample.masks[1 - own]].max()
            verdicts.append(int(np.sign(on_own - on_other)))
        maps = [explanation.heatmap.ravel() for explanation in explanations]
        similar = (float(np.corrcoef(*maps)[0, 1]) if all(m.std() > 0 for m in maps)
                   else float("nan"))
        return verdicts, similar
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(explain, samples))
    verdicts = np.array([v for pair, _ in results for v in pair])
    return {"a_over_b": float(np.mean(verdicts > 0)), "ties": float(np.mean(verdicts == 0)),
            "map_correlation": float(np.nanmean([similar for _, similar in results]))}


# Deletion and insertion (Petsiuk et al. 2018), computed by the server: 32 steps of 128 pixels.
FAITHFULNESS_STEPS = 32


def faithfulness_scores(client: Client, method: str, params: dict, samples) -> dict:
    """Mean deletion AUC (lower is better) and insertion AUC (higher is better) of the map for
    the true class, with each score's RISE baseline (constant 0 / blurred image)."""
    def explain(sample) -> tuple[float, float]:
        (explanation,) = client.explain(sample.image, model="demo", method=method,
                                        targets=list(sample.labels), outputs=("heatmap",),
                                        evaluate=("deletion", "insertion"),
                                        evaluation_steps=FAITHFULNESS_STEPS, **params)
        return explanation.quality["deletion_auc"], explanation.quality["insertion_auc"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        deletion, insertion = zip(*pool.map(explain, samples))
    return {"deletion_auc": float(np.mean(deletion)), "insertion_auc": float(np.mean(insertion))}


def predicted_accuracy(client: Client, samples) -> float:
    """The demo model's top-1 accuracy on the same single-object images, for context."""
    def correct(sample) -> bool:
        (explanation,) = client.explain(sample.image, model="demo", method="cam",
                                        outputs=("heatmap",))
        return explanation.target == sample.labels[0]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return float(np.mean(list(pool.map(correct, samples))))


def measure(count: int) -> dict:
    singles = shapes.generate(count, SINGLE_SEED)
    pairs = shapes.generate(count, PAIR_SEED, two_object_fraction=1.0)
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="cpu",
                          models=(demo_model_config(),))
    rows = []
    with BackgroundServer(config) as server, Client(server.address, timeout=600) as client:
        accuracy = predicted_accuracy(client, singles)
        for label, method, params in METHODS:
            started = time.perf_counter()
            row = {"label": label, "method": method, "params": params,
                   **pointing_game(client, method, params, singles),
                   **discriminativeness(client, method, params, pairs),
                   **faithfulness_scores(client, method, params, singles),
                   "sanity": sanity.verdict(method).verdict}
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            print(f"{label:24s} pointing {row['pointing_game']:.3f} "
                  f"(empty {row['empty_maps']:.2f})  "
                  f"A over B {row['a_over_b']:.3f} (ties {row['ties']:.2f})  "
                  f"corr(A, B) {row['map_correlation']:.2f}  ({row['seconds']:.1f} s)", flush=True)
    # the share of the image an object covers: what a map peaking at a random pixel would score
    coverage = float(np.mean([sample.masks[0].mean() for sample in singles]))
    return {"images": count, "single_seed": SINGLE_SEED, "pair_seed": PAIR_SEED,
            "demo_accuracy": accuracy, "mean_object_fraction": coverage, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 images of each kind, not 300")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    count = 50 if args.quick else 300
    result = measure(count)
    settings = {"quick": args.quick, "model": "demo", "images": count,
                "single_seed": SINGLE_SEED, "pair_seed": PAIR_SEED, "concurrent_requests": 8,
                "methods": [{"label": label, "method": method, "params": params}
                            for label, method, params in METHODS]}
    write_result(NAME, settings, result, args.out)


if __name__ == "__main__":
    main()
