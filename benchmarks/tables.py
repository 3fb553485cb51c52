"""Regenerate every measured table in docs/ from the benchmarks' JSON files in docs/results/.

    python benchmarks/tables.py            # rewrite the tables in docs/*.md
    python benchmarks/tables.py --check    # exit 1 when a table differs from its JSON

A table lives between `<!-- table:NAME -->` and `<!-- /table -->` in a markdown file; NAME picks
the renderer below, and each renderer reads one JSON, docs/results/<source>.json, written by
benchmarks/<source>.py (see benchmarks/results.py for its form). The block also says which
command, date, machine and commit the numbers came from. A block whose JSON does not exist yet
says how to measure it; --check counts that as a failure, and so a JSON from a --quick run.
Only the standard library is used, so the check is fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(?P<open><!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)",
                   re.DOTALL)
PLACEHOLDER = "Not yet measured"


@dataclass(frozen=True)
class Table:
    source: str  # docs/results/<source>.json
    render: Callable[[dict], list[str]]
    command: str = ""  # what writes it; "" means `python benchmarks/<source>.py`

    @property
    def run(self) -> str:
        return self.command or f"python benchmarks/{self.source}.py"

    @property
    def script(self) -> str:
        return self.run.split()[1]


TABLES: dict[str, Table] = {}


def table(name: str, source: str | None = None, command: str = "") -> Callable:
    def register(render: Callable[[dict], list[str]]) -> Callable[[dict], list[str]]:
        TABLES[name] = Table(source or name, render, command)
        return render
    return register


# ------------------------------------------------------------------ formatting
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def met(condition: bool) -> str:
    return "yes" if condition else "**no**"


def span(values: list[float], digits: int = 2) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low} to {high}"


def layout(name: str) -> str:
    return "channels last" if "channels_last" in name else "contiguous"


def provenance(result: dict, source: str) -> str:
    git, machine = result["git"], result["machine"]
    commit = (git.get("commit") or "unknown")[:7]
    if git.get("dirty"):
        commit += f" plus uncommitted changes to {len(git.get('changed', []))} files"
    device = f"GPU {machine['gpu_name']}" if machine.get("gpu") else "CPU only"
    seconds = result.get("duration_s", 0)
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    date = result["date"].replace("T", " ")[:16]
    return (f"*Measured by `{result['command']}` on {date} UTC ({took}), "
            f"commit `{commit}`; {machine['cpu']}, {machine['cores']} cores, {device}, torch "
            f"{machine['torch']} with {machine['torch_threads']} threads, load average "
            f"{machine['load_average_at_start']:.2f} at the start. Generated from "
            f"`docs/results/{source}.json` by `python benchmarks/tables.py`.*")


# ------------------------------------------------------------------ load.py
@table("load")
def load_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    floor, ratios = f["floor"], f["ratios"]
    formed = str(f["formed_batch"])
    b1, bf = floor["per_image"]["1"], floor["per_image"][formed]
    one, sixteen, over = f["served_1_client"], f["served_16_clients"], f["overload_256_clients"]
    fair, memory = f["fairness"], f["memory"]
    clients = s["clients"]
    codes = over["codes"]
    others = {code: n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED")}
    other_text = ", ".join(f"{n:,} {code}" for code, n in others.items()) or "nothing else"
    mib = 1024 * 1024
    rows = [
        ("1", f"saturation: served Grad-CAM throughput at {clients['saturation']} clients / "
              f"in-process floor at the batch formed ({sixteen['mean_batch']:.1f})",
         f"{sixteen['throughput']:.1f} img/s vs {1 / bf:.1f} img/s ({ms(bf)} ms per image) = "
         f"**{ratios['1_saturation']:.2f}**", ">= 0.85", met(ratios["1_saturation"] >= 0.85)),
        ("2", f"batching gain realised: (served {clients['saturation']} / served 1) / "
              f"(floor per image b1 / b{formed})",
         f"({sixteen['throughput']:.1f} / {one['throughput']:.1f}) / ({ms(b1)} ms / {ms(bf)} ms) "
         f"= **{ratios['2_batching_gain_realised']:.2f}**", ">= 0.9",
         met(ratios["2_batching_gain_realised"] >= 0.9)),
        ("3", f"served at {clients['saturation']} clients vs Captum LayerGradCam once per image "
              "in-process",
         f"{sixteen['throughput']:.1f} vs {1 / floor['captum_per_image']:.1f} img/s = "
         f"**{ratios['3_vs_captum']:.2f}x**", "faster", met(ratios["3_vs_captum"] > 1)),
        ("3", "... vs pytorch-grad-cam GradCAM once per image",
         f"{sixteen['throughput']:.1f} vs {1 / floor['pytorch_grad_cam_per_image']:.1f} img/s = "
         f"**{ratios['3_vs_pytorch_grad_cam']:.2f}x**", "faster",
         met(ratios["3_vs_pytorch_grad_cam"] > 1)),
        ("4", f"latency at 1 client: p50 / p99 vs in-process batch-1 time ({ms(b1)} ms)",
         f"p50 {ms(one['p50'])} ms (excess **{ratios['4_p50_excess_ms']:.1f} ms**), p99 "
         f"{ms(one['p99'])} ms (excess {ratios['4_p99_excess_ms']:.1f} ms)",
         "p50 excess < 2 + 5 ms", met(ratios["4_p50_excess_ms"] < 7)),
        ("5", f"overload: {clients['overload']} clients, queue of "
              f"{s['batching']['max_queue_size']}",
         f"answers: {codes.get('OK', 0):,} OK, {codes.get('RESOURCE_EXHAUSTED', 0):,} "
         f"RESOURCE_EXHAUSTED, {other_text}; accepted p50 {over['p50']:.2f} s, p99 "
         f"{over['p99']:.2f} s; throughput {over['throughput']:.1f} img/s = "
         f"**{ratios['5_overload_throughput_vs_saturation']:.2f}** of saturation",
         "only results or RESOURCE_EXHAUSTED; bounded p99; ~1.0",
         f"answers: {met(not others)}"),
        ("6", f"fairness: Grad-CAM p50 at 1 client while an occlusion request (window "
              f"{s['fairness_occlusion']['window']}, stride {s['fairness_occlusion']['stride']})"
              " runs beside it / idle p50",
         f"{ms(fair['busy_p50'])} ms / {ms(fair['idle_p50'])} ms = "
         f"**{ratios['6_fairness_p50_ratio']:.2f}x**", "< 3x",
         met(ratios["6_fairness_p50_ratio"] < 3)),
        ("7", f"memory: server RSS after {memory['requests']:,} mixed requests "
              f"({', '.join(s['memory']['methods'])}; {s['memory']['input']}) vs after the "
              f"first {memory['first']:,}",
         f"{memory['rss_after_all'] / mib:.1f} MiB vs {memory['rss_after_first'] / mib:.1f} MiB "
         f"= **{ratios['7_rss_growth']:+.1%}**", "within 5%",
         met(abs(ratios["7_rss_growth"]) <= 0.05)),
    ]
    lines = ["| # | what | measured | goal | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines


@table("load_deadlines", command="python benchmarks/load.py --only deadlines,alone")
def load_deadlines_table(result: dict) -> list[str]:
    f = result["figures"]
    ratios = f["ratios"]
    rows = []
    if "overload_with_deadlines" in f:
        late = f["overload_with_deadlines"]
        codes = ", ".join(f"{n:,} {code}" for code, n in late["codes"].items())
        rows.append(("8", f"overload with deadlines: occlusion requests offered at 2x the "
                          f"saturated rate ({late['offered_rate']:.2f}/s vs "
                          f"{late['saturated_throughput']:.2f}/s), each with a "
                          f"{late['deadline_s']:.1f} s deadline; successful responses per second "
                          "/ saturated throughput",
                     f"{codes}; {late['goodput']:.2f}/s = "
                     f"**{ratios['8_goodput_under_2x_overload_with_deadlines']:.2f}**",
                     ">= 0.9", met(ratios["8_goodput_under_2x_overload_with_deadlines"] >= 0.9)))
    if "many_row_alone" in f:
        alone = f["many_row_alone"]
        rows.append(("9", "a many-row job alone (SmoothGrad) on an idle server: in-process time "
                          "/ served time",
                     f"{alone['in_process_s']:.2f} s / {alone['served_s']:.2f} s = "
                     f"**{ratios['9_many_row_alone_vs_in_process']:.2f}**", ">= 0.9",
                     met(ratios["9_many_row_alone_vs_in_process"] >= 0.9)))
    lines = ["| # | what | measured | goal | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines


@table("load_layout", source="load")
def load_layout_table(result: dict) -> list[str]:
    floor = result["figures"]["floor"]
    served = layout(floor["layout"])
    lines = [f"| forward + backward to layer4, batch | server's layout ({served}): ms per image "
             "| contiguous: ms per image | contiguous / server's layout |",
             "| --- | --- | --- | --- |"]
    for batch in sorted(floor["per_image"], key=int):
        ours, plain = floor["per_image"][batch], floor["per_image_contiguous"][batch]
        lines.append(f"| {batch} | {ms(ours)} | {ms(plain)} | {plain / ours:.2f} |")
    return lines


# ------------------------------------------------------------------ explain_methods.py
@table("explain_methods")
def explain_methods_table(result: dict) -> list[str]:
    rows = result["figures"]["rows"]
    lines = ["| method | batch | input | ours: wall / 1-thread CPU (ms/img) | served wall | "
             "reference: wall / 1-thread CPU (ms/img) | CPU ours / best ref | "
             "fwd+bwd: wall / CPU | lowest module with a graph |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        refs = "<br>".join(f"{name}: {ms(value['wall'])} / {ms(value['cpu'])}"
                           for name, value in row["references"].items())
        best = min(value["cpu"] for value in row["references"].values())
        served = ms(row["served"]) if row.get("served") is not None else "-"
        ours, floor = row["ours"], row["floor_fwd_bwd"]
        ours_cell, ratio = f"{ms(ours['wall'])} / {ms(ours['cpu'])}", f"{ours['cpu'] / best:.2f}"
        if "ours_max_batch_128" in row:
            large = row["ours_max_batch_128"]
            ours_cell += f"<br>max_batch_size 128: {ms(large['wall'])} / {ms(large['cpu'])}"
            ratio += f"<br>{large['cpu'] / best:.2f}"
        lines.append(f"| {row['method']} | {row['batch']} | {row['input']} | {ours_cell} | "
                     f"{served} | {refs} | {ratio} | {ms(floor['wall'])} / {ms(floor['cpu'])} | "
                     f"{row.get('lowest_graph_module', '')} |")
    lines += [""] + explain_methods_summary(result)
    return lines


def explain_methods_summary(result: dict) -> list[str]:
    rows = [row for row in result["figures"]["rows"] if row["method"] != "occlusion"]

    def ratio(row: dict) -> float:
        return row["ours"]["cpu"] / min(value["cpu"] for value in row["references"].values())
    lines = []
    for batch in sorted({row["batch"] for row in rows}):
        at = [row for row in rows if row["batch"] == batch]
        single = [row for row in at if row["method"] != "smoothgrad"]
        if not single:
            continue
        worst = max(single, key=ratio)
        floors = [row["floor_fwd_bwd"] for row in at]
        text = (f"- Batch {batch}: CPU ours / best reference {span([ratio(r) for r in single])} "
                f"over the single-pass methods (highest: {worst['method']})")
        smooth = [row for row in at if row["method"] == "smoothgrad"]
        if smooth:
            text += f", SmoothGrad {ratio(smooth[0]):.2f}"
        served = [row["served"] - row["ours"]["wall"] for row in single
                  if row.get("served") is not None]
        if served:
            text += f"; served minus ours {span([s * 1000 for s in served], 0)} ms of wall time per image"
        text += (f"; the fwd+bwd floor, the same work in every row, read "
                 f"{span([f['wall'] * 1000 for f in floors], 1)} ms wall and "
                 f"{span([f['cpu'] * 1000 for f in floors], 1)} ms CPU across the rows.")
        lines.append(text)
    return lines


# ------------------------------------------------------------------ cam_family.py
@table("cam_family")
def cam_family_table(result: dict) -> list[str]:
    s = result["settings"]
    lines = [f"torchvision resnet18 (random weights) at {s['size']}x{s['size']}, layer "
             f"`{s['layer']}`, on {s['device']}; ours at max_batch_size {s['max_batch_size']}, "
             f"the references at their default batch sizes; best of {s['repeats']} interleaved "
             "rounds.", "",
             "| method | batch | ours (ms/img) | reference | reference (ms/img) | speed-up | goal | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["figures"]["rows"]:
        lines.append(f"| {row['method']} | {row['batch']} | {ms(row['ours'])} | {row['reference']} | "
                     f"{ms(row['reference_s'])} | {row['speedup']:.2f}x | {row['goal']}x | "
                     f"{met(row['speedup'] >= row['goal'])} |")
    return lines


# ------------------------------------------------------------------ protocols.py
@table("protocols")
def protocols_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    names = {"explain": "ExplainerService (our client)", "oip_grpc": "OIP gRPC (tritonclient)",
             "http": "OIP v2 REST, JSON bodies (httpx)"}
    lines = [f"{s['method']} on {s['model']} at {s['size']}x{s['size']} on {s['device']}, "
             f"{s['clients']} concurrent clients, {s['rounds']} rounds of {s['seconds']:g} s per "
             "protocol, interleaved (the order rotates each round), one server process.", "",
             "| protocol | throughput (req/s) | p50 (ms) | p99 (ms) | errors | of Explain | goal | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("explain", "oip_grpc", "http"):
        row = f[key]
        ratio = row.get("ratio_to_explain")
        goal = s["goals"].get(key)
        lines.append(f"| {names[key]} | {row['throughput_rps']:.1f} | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['errors']} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} | "
                     f"{'-' if goal is None else f'>= {goal}'} | "
                     f"{'-' if goal is None else met(ratio >= goal)} |")
    return lines


# ------------------------------------------------------------------ occlusion_seeds.py
@table("occlusion_seeds")
def occlusion_seeds_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    configurations = f["configurations"]
    best = min(c["seconds"] for c in configurations if c["name"].startswith("Captum"))
    fastest = min(c["seconds"] for c in configurations)
    side = int(round(f["positions"] ** 0.5))
    lines = [f"{s['size']}x{s['size']}, window {s['window']}, stride {s['stride']}: "
             f"{side} x {side} = {f['positions']:,} occluded copies, one image, "
             f"{s['threads']} threads; ours laid out {layout(s['layout'])}, Captum on the "
             "contiguous model.", "",
             "| configuration | s per image | ms per copy | / Captum's best |",
             "| --- | --- | --- | --- |"]
    for c in configurations:
        seconds = f"**{c['seconds']:.1f}**" if c["seconds"] == fastest else f"{c['seconds']:.1f}"
        lines.append(f"| {c['name']} | {seconds} | {c['seconds'] / f['positions'] * 1000:.2f} | "
                     f"{c['seconds'] / best:.2f} |")
    return lines


# ------------------------------------------------------------------ sanity.py
@table("sanity")
def sanity_table(result: dict) -> list[str]:
    """Cascading randomisation: per model, the rank correlation of |map| with the unchanged
    model's after each step; then each method's verdict."""
    f = result["figures"]
    lines = [f"{f['images']} shape images (seed {f['image_seed']}), each explained for its true "
             "class. Each column re-initialises one more layer group, from the logits down; a "
             "cell is the mean Spearman rank correlation of |map| with the unchanged model's "
             "map (1: the same ranking, 0: unrelated). \"class maps\" correlates, on the "
             "unchanged model, the map for the true class with the map for another class.", ""]
    for model, entry in f["models"].items():
        groups = entry["groups"]
        lines += [f"**{model}** ({entry['input_size']}x{entry['input_size']}; weights: "
                  f"{entry['weights']})", "",
                  "| method | " + " | ".join(f"`{g}`" for g in groups) + " | class maps |",
                  "| --- |" + " --- |" * (len(groups) + 1)]
        for row in entry["rows"]:
            cells = " | ".join(f"{value:.2f}" for value in row["absolute"])
            lines.append(f"| {row['method']} | {cells} | {row['class_map_correlation']:.2f} |")
        lines.append("")
    models = list(f["models"])
    lines += [f"Verdict: fails when the mean over the cascade is at least {f['fail_at']} on "
              "either model.", "",
              "| method | " + " | ".join(f"mean on {m}" for m in models) + " | verdict |",
              "| --- |" + " --- |" * (len(models) + 1)]
    for method, entry in f["verdicts"].items():
        means = " | ".join(f"{entry['mean_absolute'][m]:.2f}" if m in entry["mean_absolute"]
                           else "-" for m in models)
        verdict = entry["verdict"] if entry["verdict"] == "passes" else f"**{entry['verdict']}**"
        lines.append(f"| {method} | {means} | {verdict} |")
    return lines


# ------------------------------------------------------------------ quality.py
@table("quality")
def quality_table(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"{f['images']} single-object images (seed {f['single_seed']}) and {f['images']} "
             f"two-object images (seed {f['pair_seed']}); the demo model's top-1 accuracy on the "
             f"single-object ones: {f['demo_accuracy']:.3f}; an object covers "
             f"{f['mean_object_fraction']:.1%} of its image on average, so a map that peaks at a "
             f"random pixel would score about {f['mean_object_fraction']:.2f} in the pointing "
             "game.", "",
             "| method | parameters | pointing game | all-zero maps | map for A peaks on A, not B "
             "| ties | correlation of the maps for A and B | deletion AUC (lower is better) "
             "| insertion AUC (higher is better) | sanity check |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in f["rows"]:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "defaults"
        correlation = ("-" if row["map_correlation"] is None
                       else f"{row['map_correlation']:.2f}")
        lines.append(f"| {row['method']} | {params} | {row['pointing_game']:.3f} | "
                     f"{row['empty_maps']:.3f} | {row['a_over_b']:.3f} | {row['ties']:.3f} | "
                     f"{correlation} | {_figure(row, 'deletion_auc')} | "
                     f"{_figure(row, 'insertion_auc')} | {row.get('sanity', '-')} |")
    return lines


def _figure(row: dict, key: str) -> str:
    """A figure a quality.json from before the faithfulness scores lacks: "-" until rerun."""
    return "-" if row.get(key) is None else f"{row[key]:.3f}"


@table("demo_pointing", source="quality")
def demo_pointing_table(result: dict) -> list[str]:
    f = result["figures"]
    row = next(r for r in f["rows"] if r["method"] == "gradcam" and not r["params"])
    n = f["images"]
    return ["| Grad-CAM at the default layer, for the true class | images (seed) | result |",
            "| --- | --- | --- |",
            f"| pointing game: the map's maximum lies inside the object's mask | {n} single-object "
            f"({f['single_seed']}) | **{row['pointing_game']:.3f}** "
            f"({round(row['pointing_game'] * n)} of {n}) |",
            f"| the map for one class peaks higher on its own object than on the other | {n} "
            f"two-object ({f['pair_seed']}) | {round(row['a_over_b'] * 2 * n)} of {2 * n} maps |"]


# ------------------------------------------------------------------ demo_model.py
@table("demo_model")
def demo_model_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    errors = f["errors"]
    return ["| Measure | Images (seed) | Result |", "|---|---|---|",
            f"| Top-1 accuracy, single-object images | {s['singles']:,} (seed {s['single_seed']}) "
            f"| **{f['accuracy']:.2%}** ({errors} error{'' if errors == 1 else 's'}) |",
            f"| Both true classes are the top-2 predictions, two-object images | {s['pairs']:,} "
            f"(seed {s['pair_seed']}) | **{f['pair_top2_rate']:.1%}** |",
            f"| One forward pass, batch 1, {s['threads']} threads, {layout(s['layout'])} "
            f"(fastest of {s['forward_runs']}) | - | {f['forward_ms']:.2f} ms |",
            f"| Drawing one generated image (mean of {s['forward_runs']}) | - | "
            f"{f['draw_ms_per_image']:.2f} ms |"] + demo_robustness_rows(s, f)


def demo_robustness_rows(s: dict, f: dict) -> list[str]:
    """Served accuracy and Grad-CAM pointing per kind of image (absent from older runs)."""
    kinds = (("classic", "generated, classic", s.get("single_seed")),
             ("varied", "generated, varied", s.get("varied_seed")),
             ("pil", "drawn with PIL's primitives", s.get("pil_seed")))
    rows = []
    for key, words, seed in kinds:
        scores = f.get("robustness", {}).get(key)
        if scores is None:
            continue
        where = f"{scores['images']:,} (seed {seed})"
        rows += [f"| Top-1 accuracy through the server, {words} | {where} | "
                 f"**{scores['accuracy']:.1%}** |",
                 f"| Grad-CAM pointing game (strict), {words} | {where} | "
                 f"**{scores['pointing']:.3f}** |"]
    return rows


# ------------------------------------------------------------------ embed_throughput.py
@table("embed_throughput")
def embed_throughput_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    return [f"| {s['images']:,} images, {s['size']}x{s['size']}, resnet18, {s['threads']} threads "
            "| images/s (wall) | images per CPU-second |", "|---|---|---|",
            f"| served: `client.embed` through the server (mean batch formed: "
            f"{f['server_mean_batch']:.1f}) | {f['served_images_per_s']:.1f} | "
            f"{f['served_images_per_cpu_s']:.1f} |",
            f"| floor: forward only, batch {f['forward_floor_batch']}, "
            f"{layout(s['floor_layout'])} | {f['forward_floor_images_per_s']:.1f} | - |",
            f"| floor: decode ({f['decode_ms_per_image']:.2f} ms/image) + forward | "
            f"{f['decode_forward_floor_images_per_s']:.1f} | "
            f"{f['decode_forward_floor_images_per_cpu_s']:.1f} |",
            f"| served / (decode + forward) | **{f['served_over_decode_forward']:.2f}** | "
            f"**{f['served_over_decode_forward_per_cpu_s']:.2f}** |"]


# ------------------------------------------------------------------ embed_quality.py
@table("embed_quality")
def embed_quality_table(result: dict) -> list[str]:
    s, f = result["settings"], result["figures"]
    ks = [str(k) for k in s["ks"]]
    head = " | ".join(f"k = {k}" for k in ks)
    cosine = " | ".join(f"{f['knn_accuracy_cosine'][k]:.1%}" for k in ks)
    pixels = " | ".join(f"{f['knn_accuracy_raw_pixels'][k]:.1%}" for k in ks)
    return [f"| k-NN class accuracy ({f['images']:,} unseen images, seed {s['seed']}) | {head} |",
            "|---" * (len(ks) + 1) + "|",
            f"| demo model, penultimate layer ({f['vector_dim']} numbers), cosine | {cosine} |",
            f"| raw pixels (centred), cosine, for contrast | {pixels} |", "",
            f"Failed items: {f['failures']}. The classifier's own top-1 accuracy on these images: "
            f"{f['top1_accuracy_of_the_classifier']:.1%}. The whole run, t-SNE included, took "
            f"{f['seconds_with_tsne']:.0f} s."]


# ------------------------------------------------------------------ maximize.py
@table("maximize")
def maximize_table(result: dict) -> list[str]:
    s, rows = result["settings"], result["figures"]["rows"]
    floor = rows[0]["seconds_per_step"]
    lines = [f"torchvision resnet18 (random weights), {s['size']}x{s['size']}, objective "
             f"`{s['objective']}` (class {s['class']}), {s['steps_per_call']} steps per call, "
             f"median of {s['rounds']} interleaved rounds; in-process rows on a replica laid out "
             f"{layout(s['layout'])}, as the server's.", "",
             "| what | ms per step | x forward+backward |", "|---|---:|---:|"]
    for row in rows:
        value = row["seconds_per_step"]
        if value is None:
            lines.append(f"| {row['what']} | {row['note']} | |")
        else:
            lines.append(f"| {row['what']} | {ms(value)} | {value / floor:.2f} |")
    return lines


# ------------------------------------------------------------------ transport_security.py
@table("transport_security")
def transport_security_table(result: dict) -> list[str]:
    s, rows = result["settings"], result["figures"]["rows"]
    base = next(row for row in rows if row["mode"] == "plaintext")
    lines = [f"Median and 90th percentile per call, ms, after {s['warm_up_calls']} warm-up calls each; "
             f"{s['list_models_calls']} ListModels and {s['explain_calls']} Explain calls per "
             f"transport ({s['explain_input']}).", "",
             "| transport | ListModels: median / p90 | ListModels median - plaintext | "
             "Explain: median / p90 | Explain median - plaintext |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        unary, explain = row["list_models"], row["explain_saliency"]
        lines.append(
            f"| {row['mode']} | {unary['median_ms']:.3f} / {unary['p90_ms']:.3f} | "
            f"{unary['median_ms'] - base['list_models']['median_ms']:+.3f} | "
            f"{explain['median_ms']:.2f} / {explain['p90_ms']:.2f} | "
            f"{explain['median_ms'] - base['explain_saliency']['median_ms']:+.2f} |")
    return lines


# ------------------------------------------------------------------ inversion.py
@table("inversion")
def inversion_table(result: dict) -> list[str]:
    s, rows = result["settings"], result["figures"]["rows"]
    steps = sorted({row["steps"] for row in rows})
    return [f"| layer `{s['layer']}` | {' | '.join(row['class'] for row in rows)} |",
            "|---" * (len(rows) + 1) + "|",
            "| relative code error | " + " | ".join(f"{row['error']:.3f}" for row in rows) + " |",
            "| reconstruction has the original's class | "
            + " | ".join("yes" if row["same_class"] else "**no**" for row in rows) + " |",
            "| seconds per request | " + " | ".join(f"{row['seconds']:.1f}" for row in rows) + " |",
            "", f"Steps per image: {', '.join(str(n) for n in steps)}; request parameters: "
            f"{plain_params(s['request_params'])}."]


def plain_params(params) -> str:
    if isinstance(params, dict):
        return ", ".join(f"`{key}={value}`" for key, value in params.items()) or "the defaults"
    return str(params)


# ------------------------------------------------------------------ rolling_restart.py
@table("rolling_restart")
def rolling_restart_table(result: dict) -> list[str]:
    f, settings = result["figures"], result["settings"]
    drained = [step["drained_s"] for step in f["steps"]]
    return [
        "| Figure | Value |", "|---|---|",
        f"| replicas replaced, one at a time | {len(f['steps'])} of {settings['replicas']} |",
        f"| Explain calls (during the rollout) | {f['explain_calls']} ({f['calls_during']}) |",
        f"| failed Explain calls | **{f['explain_failures']}** |",
        f"| Embed streams / items, each item answered once | {f['embed_streams']} / "
        f"{f['embed_items_sent']}, {f['embed_streams_answered_exactly_once']} streams exact |",
        f"| Explain p50 / p99 before the rollout (ms) | {ms(f['p50_before_s'])} / "
        f"{ms(f['p99_before_s'])} |",
        f"| Explain p50 / p99 during the rollout (ms) | {ms(f['p50_during_s'])} / "
        f"**{ms(f['p99_during_s'])}** |",
        f"| SIGTERM to exit per replica (s) | {span(drained, 1)} |",
    ]


# ------------------------------------------------------------------ integrated_gradients.py
@table("integrated_gradients")
def integrated_gradients_table(result: dict) -> list[str]:
    fixed, gap = result["figures"]["fixed_steps"], result["figures"]["to_gap"]
    times = fixed["times"]
    best = min(value["cpu"] for name, value in times.items() if name.startswith("Captum"))
    lines = [f"(a) {fixed['steps']} Gauss-Legendre steps, black baseline, resnet18 at "
             f"{fixed['size']}x{fixed['size']}, one image:", "",
             "| implementation | wall (ms/img) | 1-thread CPU (ms/img) | CPU / Captum's best |",
             "| --- | --- | --- | --- |"]
    for name, value in times.items():
        lines.append(f"| {name} | {ms(value['wall'])} | {ms(value['cpu'])} | {value['cpu'] / best:.2f} |")
    steps = gap["steps_used"]
    lines += ["", f"(b) to a completeness gap of at most {gap['gap']} on {gap['images']} demo "
              f"images (ours from {gap['start_steps']} steps, refined per image; Captum's "
              "default, Gauss-Legendre with 50 steps):", "",
              "| | s per image | images above the gap | steps |", "| --- | --- | --- | --- |",
              f"| ours, adaptive | {gap['ours_s_per_image']:.3f} | {gap['ours_above_gap']} | "
              f"{span(steps, 0)} (median {steps[len(steps) // 2]:.0f}) |",
              f"| Captum IntegratedGradients | {gap['captum_s_per_image']:.3f} | "
              f"{gap['captum_above_gap']} | 50 |", "",
              f"Ours is {gap['speedup']:.2f}x faster (goal 2.5x: {met(gap['speedup'] >= 2.5)})."]
    return lines


# ------------------------------------------------------------------ xrai.py
@table("xrai")
def xrai_table(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"XRAI end to end, resnet18 at {f['size']}x{f['size']}, {f['steps']} steps per "
             f"path, black and white baselines, mean of {f['images']} demo images:", "",
             "| implementation | s per image |", "| --- | --- |"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in f["s_per_image"].items()]
    lines += ["", f"Ours is {f['speedup_vs_best_pair']:.2f}x faster than PAIR's best "
              f"(goal 2x: {met(f['speedup_vs_best_pair'] >= 2)})."]
    return lines


# ------------------------------------------------------------------ model_zoo.py, vit.py
# model_zoo is registered (with @table("model_zoo") and a block in docs/) once its JSON
# exists: a block without its JSON fails --check.
def model_zoo_table(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"{f['models']} models x {f['methods']} methods, random weights, default layers; "
             f"{f['failures']} answers outside OK / FAILED_PRECONDITION / INVALID_ARGUMENT, "
             "all-NaN or off the layer's grid.", "",
             "| model | OK | refused (FAILED_PRECONDITION / INVALID_ARGUMENT) | other |",
             "| --- | --- | --- | --- |"]
    models: dict[str, dict[str, list[str]]] = {}
    for row in f["rows"]:
        kind = "ok" if row["code"] == "OK" else "refused" if row["ok"] else "other"
        models.setdefault(row["model"], {"ok": [], "refused": [], "other": []})[kind].append(row["method"])
    for model, kinds in models.items():
        lines.append(f"| {model} | {len(kinds['ok'])} | {', '.join(kinds['refused']) or '-'} | "
                     f"{', '.join(kinds['other']) or '-'} |")
    return lines


@table("vit")
def vit_table(result: dict) -> list[str]:
    f, s = result["figures"], result["settings"]
    return [f"torchvision vit_b_16 at {s['size']}x{s['size']}, layer `{s['layer']}`.", "",
            "| figure | value | goal | met |", "| --- | --- | --- | --- |",
            f"| served Grad-CAM, 16 clients / in-process floor at batch {f['in_process']['batch']} "
            f"| {f['served_vs_floor']:.2f} | >= 0.85 | {met(f['served_vs_floor'] >= 0.85)} |",
            f"| attention rollout / bare forward | {f['rollout_vs_forward']:.2f}x | <= 1.3x | "
            f"{met(f['rollout_vs_forward'] <= 1.3)} |"]


# ------------------------------------------------------------------ the blocks
def load_results(folder: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def placeholder(spec: Table) -> list[str]:
    return [f"*{PLACEHOLDER}: run `{spec.run}`, then "
            "`python benchmarks/tables.py`.*"]


def render_block(name: str, results: dict[str, dict]) -> str:
    spec = TABLES[name]
    result = results.get(spec.source)
    if result is None:
        lines = placeholder(spec)
    else:
        lines = [provenance(result, spec.source), "", *spec.render(result)]
    return "\n".join(lines) + "\n"


def update(text: str, results: dict[str, dict], where: str = "") -> tuple[str, list[str]]:
    """The text with every table block regenerated, and the problems found."""
    problems: list[str] = []

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            problems.append(f"{where}: unknown table {name!r} (known: {sorted(TABLES)})")
            return match[0]
        spec = TABLES[name]
        try:
            body = render_block(name, results)
        except (KeyError, TypeError, ValueError, StopIteration, ZeroDivisionError) as error:
            problems.append(f"{where}: table {name!r}: docs/results/{spec.source}.json lacks "
                            f"what the table needs ({type(error).__name__}: {error}); rerun "
                            f"`{spec.run}`")
            return match[0]
        result = results.get(spec.source)
        if result is None:
            problems.append(f"{where}: table {name!r} is {PLACEHOLDER.lower()}: there is no "
                            f"docs/results/{spec.source}.json; run `{spec.run}`, then "
                            "`python benchmarks/tables.py`")
        elif result.get("settings", {}).get("quick"):
            problems.append(f"{where}: table {name!r} comes from a --quick run "
                            f"({result['command']}); run `{spec.run}`")
        if body != match["body"]:
            problems.append(f"{where}: table {name!r} differs from what docs/results/"
                            f"{spec.source}.json generates; run `python benchmarks/tables.py`")
        return match["open"] + body + match["close"]

    return BLOCK.sub(replace, text), problems


def documents(docs: Path) -> list[Path]:
    return sorted(docs.glob("*.md"))


def check(docs: Path = DOCS, results_dir: Path = RESULTS) -> list[str]:
    """Every problem with the tables in `docs`, as messages; empty when all are current."""
    results = load_results(results_dir)
    problems = []
    for path in documents(docs):
        _, found = update(path.read_text(), results, str(path.relative_to(docs.parent)))
        problems += found
    return problems


def regenerate(docs: Path = DOCS, results_dir: Path = RESULTS) -> list[str]:
    """Rewrite the blocks in place; return what is still missing (placeholders, quick runs)."""
    results = load_results(results_dir)
    remaining = []
    for path in documents(docs):
        text = path.read_text()
        new, problems = update(text, results, str(path.relative_to(docs.parent)))
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(docs.parent)}")
        remaining += [p for p in problems if "differs from" not in p]
    return remaining


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a table is stale, unmeasured or quick")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the markdown folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON folder")
    args = parser.parse_args(argv)
    problems = (check if args.check else regenerate)(args.docs, args.results)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
