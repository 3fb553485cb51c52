"""The quadrature rules of integrated gradients' path integral (arXiv:1703.01365).

Eq. 1 integrates the gradient along the straight path from the baseline x' to the input x,

    IG_i(x) = (x_i - x'_i) * int_0^1 dF(x' + a (x - x')) / dx_i da
            ~ (x_i - x'_i) * sum_k w_k dF(x' + a_k (x - x')) / dx_i         (sec. 3, Riemann sum)

and completeness (their axiom, prop. 1) says sum_i IG_i(x) = F(x) - F(x'), so the gap between
the two says how far the quadrature is from the integral. Nodes a_k and weights w_k:

    riemann_left     a_k = k/n,          w_k = 1/n          (k = 0 .. n-1)
    riemann_right    a_k = (k+1)/n,      w_k = 1/n
    riemann_middle   a_k = (k+1/2)/n,    w_k = 1/n
    riemann_trapezoid a_k = k/(n-1),     w_k = 1/(n-1), halved at both ends
    gausslegendre    Gauss-Legendre nodes and weights on [0, 1]

The nodes are made as Captum makes them (float32 linspace, numpy's leggauss), so the two
quadratures agree. Captum's trapezoid weights are 1/n (halved at the ends) and so sum to
1 - 1/n; ours sum to 1, as a quadrature rule must.

Refinement reuses what it can: doubling left/right/trapezoid (2n-1 points for the trapezoid) or
tripling the midpoint rule keeps every old node, each with its weight scaled by one factor c,
so the refined sum is c * old sum + the new nodes' terms. Gauss-Legendre nodes do not nest:
doubling recomputes every node.
"""

from __future__ import annotations

import numpy as np
import torch

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
               "riemann_trapezoid")
_SAME_NODE = 1e-6  # float32 linspace rounding between two refinement levels


def nodes(method: str, steps: int) -> tuple[list[float], list[float]]:
    """The nodes a_k in [0, 1] and weights w_k of `steps`-point `method`."""
    n = steps
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * (1 + points)).tolist(), (0.5 * weights).tolist()
    if method == "riemann_trapezoid":
        weights = [1 / (n - 1)] * n
        weights[0] /= 2
        weights[-1] /= 2
        return torch.linspace(0, 1, n).tolist(), weights
    start, stop = {"riemann_left": (0, 1 - 1 / n), "riemann_right": (1 / n, 1),
                   "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n))}[method]
    return torch.linspace(start, stop, n).tolist(), [1 / n] * n


def minimum_steps(method: str) -> int:
    return 2 if method == "riemann_trapezoid" else 1


def refined_steps(method: str, steps: int) -> int:
    """The next, finer rule: one whose nodes contain the old ones where the rule allows it."""
    if method == "riemann_middle":
        return 3 * steps
    if method == "riemann_trapezoid":
        return 2 * steps - 1
    return 2 * steps


def reuse(old: tuple[list[float], list[float]], new: tuple[list[float], list[float]]
          ) -> tuple[float, list[int]]:
    """(c, indices of the new nodes to evaluate) with new sum = c * old sum + those terms;
    c = 0 and every index when the old nodes are not a scaled part of the new rule."""
    old_alphas, old_weights = np.array(old[0]), np.array(old[1])
    new_alphas, new_weights = np.array(new[0]), np.array(new[1])
    distance = np.abs(new_alphas[:, None] - old_alphas[None, :])
    match = distance.argmin(axis=1)
    kept = distance[np.arange(len(new_alphas)), match] < _SAME_NODE
    if kept.sum() == len(old_alphas) and len(set(match[kept].tolist())) == len(old_alphas):
        ratios = new_weights[kept] / old_weights[match[kept]]
        if np.allclose(ratios, ratios[0], rtol=1e-9, atol=0):
            return float(ratios[0]), np.flatnonzero(~kept).tolist()
    return 0.0, list(range(len(new_alphas)))
