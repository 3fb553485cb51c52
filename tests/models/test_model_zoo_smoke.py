"""benchmarks/model_zoo.py on two tiny transformers (a torchvision ViT and timm DeiT-tiny at
32x32): every Explain method answers OK or a named FAILED_PRECONDITION / INVALID_ARGUMENT,
never INTERNAL, no map is all NaN, and every layer method's map has its layer's [h, w]."""

from __future__ import annotations

from pathlib import Path

from explainserve.methods.explain.registry import list_methods
from support import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_every_method_on_tiny_transformers_answers_ok_or_a_named_refusal():
    zoo = load_script(ROOT / "benchmarks" / "model_zoo.py", "model_zoo")
    configs = [c for c in zoo.zoo(quick=True) if c.name in ("small_vit", "timm_deit_32")]
    rows = [row for config in configs for row in zoo.check_model(config, list_methods())]
    bad = [(r["model"], r["method"], r["code"], r["message"]) for r in rows if not r["ok"]]
    assert not bad
    by_method = {(r["model"], r["method"]): r for r in rows}
    for model in ("small_vit", "timm_deit_32"):
        for method in ("gradcam", "attention_rollout", "attention_gradient", "activations"):
            assert by_method[(model, method)]["code"] == "OK", (model, method)
        assert by_method[(model, "guided_backprop")]["code"] == "FAILED_PRECONDITION"
    assert by_method[("small_vit", "gradcam")]["grid"] == [4, 4]
