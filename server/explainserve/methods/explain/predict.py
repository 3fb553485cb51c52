"""The plain forward pass: logits for top-k target selection and for scoring."""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve.methods.base import ModelHandle


def logits_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        return {"logits": model.module(inputs)}
