"""The Maximize priors (methods/maximize/priors.py) against their formulas; no server needed."""

from __future__ import annotations

import torch
from explainserve.methods.maximize import priors


def test_priors_match_their_formulas():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    # every right neighbour differs by 1, every lower one by 5: TV = 1 + 25 per pixel
    torch.testing.assert_close(priors.total_variation(image), torch.tensor([26.0, 26.0]))
    torch.testing.assert_close(priors.l2_penalty(image), image.pow(2).flatten(1).mean(1))
    shifted = priors.transform(image, [priors.mix_seed(1, 2)] * 2, jitter=0, scale=0,
                                     rotate=0)
    assert shifted is image
    theta = priors.random_affine([7, 7, 8], jitter=3, scale=0.1, rotate=10, size=(4, 5))
    torch.testing.assert_close(theta[0], theta[1])
    assert not torch.equal(theta[0], theta[2])
