"""The running top-k of Embed's most activating patches (engine/embed_top.py)."""

from __future__ import annotations

from explainserve.engine.embed_top import TopK


def test_top_k_keeps_the_best_and_crops_only_what_enters():
    made = []
    top = TopK(3)
    for index, activation in enumerate([0.5, 2.0, 1.0, 0.1, 3.0, 2.0, 0.0]):
        top.offer(activation, index, lambda i=index, a=activation: made.append(i) or (a, i))
    assert top.hits() == [(3.0, 4), (2.0, 1), (2.0, 5)]  # equal activations: earlier first
    assert made == [0, 1, 2, 4, 5]  # items 3 and 6 never beat the third best
