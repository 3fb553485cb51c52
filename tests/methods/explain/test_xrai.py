"""XRAI through the real server and client: against PAIR's saliency.core.XRAI given the same
integrated-gradients attribution (PAIR segments the image itself), the rank heatmap, the
region limit and bad parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from explainserve.config import LimitsConfig
from explainserve_client import Client, ExplainServeError
from path_references import baseline_for, captum_ig
from saliency.core import xrai as pair_xrai
from support import random_input, reference_module, relative_l2, running_server


def smooth_image(shape, seed):
    """A random image with regions worth segmenting: cumulative sums of noise, rescaled."""
    noise = random_input(shape, seed)
    image = np.cumsum(np.cumsum(noise, axis=1), axis=2)
    return ((image - image.mean()) / image.std()).astype(np.float32)


def pair_reference(module, config, image: np.ndarray, target: int, steps: int, **options):
    """PAIR's XRAI over the mean of the black- and white-baseline IG maps (Captum, same rule)."""
    tensor = torch.from_numpy(image)
    maps = [captum_ig(module, tensor, baseline_for(config, tensor, name), target, steps)[0]
            for name in ("black", "white")]
    attribution = ((maps[0] + maps[1]) / 2).permute(1, 2, 0).numpy()
    parameters = pair_xrai.XRAIParameters(return_xrai_segments=True, **options)
    return pair_xrai.XRAI().GetMaskWithDetails(np.transpose(image, (1, 2, 0)), None,
                                               base_attribution=attribution,
                                               extra_parameters=parameters)


@pytest.mark.parametrize(("model", "shape", "targets", "options"), [
    ("resnet18", (3, 64, 64), [1, 4], {}),
    ("tiny_cnn", (3, 8, 8), [0, 3], {}),
    ("resnet18", (3, 64, 64), [7], {"area_threshold": 0.5}),
])
def test_matches_pair_xrai_given_the_same_attribution(client, models_by_name, model, shape, targets, options):
    config = models_by_name[model]
    module = reference_module(config)
    image = smooth_image(shape, seed=61)
    results = client.explain(image, model=model, method="xrai", targets=targets, steps=8, **options)
    for got in results:
        expected = pair_reference(module, config, image, got.target, 8, **options)
        ranks = got.tensors["ranks"]
        # the same regions in the same order, and each pixel's gain density
        np.testing.assert_array_equal(ranks, expected.segments)
        assert relative_l2(got.attribution, expected.attribution_mask) < 1e-4
        regions = int(ranks.max())
        np.testing.assert_allclose(got.heatmap, (regions + 1 - ranks) / regions, rtol=1e-6)
        assert got.quality["regions"] == regions and got.quality["steps"] == 8


def test_more_regions_than_the_limit_is_an_invalid_argument_naming_the_parameter(models_by_name):
    config = models_by_name["tiny_cnn"]
    with running_server((config,), limits=dataclasses.replace(LimitsConfig(), max_xrai_segments=5)) as small, \
            Client(small.address, timeout=60) as client:
        with pytest.raises(ExplainServeError) as caught:
            client.explain(smooth_image((3, 8, 8), 62), model="tiny_cnn", method="xrai", steps=2)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert "'min_segment_size'" in caught.value.details and "limit of 5" in caught.value.details


@pytest.mark.parametrize(("params", "named"), [
    ({"steps": 1025}, "1025"),
    ({"quadrature": "simpson"}, "simpson"),
    ({"min_segment_size": 0}, "min_segment_size"),
    ({"area_threshold": 1.5}, "area_threshold"),
])
def test_bad_parameters_are_invalid_arguments_naming_the_value(client, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8), seed=0), model="tiny_cnn", method="xrai", **params)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert named in caught.value.details


@pytest.mark.parametrize(("shape", "dilation"), [((3, 50, 70), 5), ((3, 64, 64), 0)])
def test_regions_are_pairs_felzenszwalb_masks(shape, dilation):
    # the sparse dilation by label offsets, reflected at the borders, is skimage's dilation of
    # each mask on its own, in PAIR's order (scale by scale, label by label)
    from explainserve.methods.explain import segments
    image = np.transpose(smooth_image(shape, seed=63), (1, 2, 0))
    expected = pair_xrai._get_segments_felzenszwalb(image, dilation_rad=dilation)
    regions = segments.region_matrix(segments.label_maps(image, 150), dilation)
    got = regions.toarray().astype(bool).reshape(-1, *shape[1:])
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        np.testing.assert_array_equal(ours, theirs)
