"""The demo model: its shape generator, its committed weights and their accuracy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from explainserve.models.demo import network as demo
from explainserve.models.demo import shapes
from safetensors.torch import load_file
from support import layer_outputs

UNSEEN_SEED = 4242  # training uses seed 0, evaluation 12345/12346


@pytest.fixture(scope="module")
def trained_model() -> torch.nn.Module:
    model = demo.build_demo_model(len(shapes.CLASS_NAMES))
    model.load_state_dict(load_file(str(demo.DEMO_WEIGHTS_PATH)), strict=True)
    return model.eval()


def _normalised(samples: list[shapes.Sample]) -> torch.Tensor:
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    mean = torch.tensor(demo.DEMO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(demo.DEMO_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def test_generate_is_deterministic_for_a_seed() -> None:
    first = shapes.generate(20, seed=7, two_object_fraction=0.5)
    second = shapes.generate(20, seed=7, two_object_fraction=0.5)
    for a, b in zip(first, second):
        assert a.labels == b.labels
        np.testing.assert_array_equal(a.image, b.image)
        for mask_a, mask_b in zip(a.masks, b.masks):
            np.testing.assert_array_equal(mask_a, mask_b)
    other = shapes.generate(20, seed=8, two_object_fraction=0.5)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other))


def test_samples_have_the_promised_shapes_and_types() -> None:
    for sample in shapes.generate(30, seed=3, two_object_fraction=0.5):
        assert sample.image.shape == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3)
        assert sample.image.dtype == np.uint8
        assert len(sample.labels) == len(sample.masks) in (1, 2)
        assert all(0 <= label < len(shapes.CLASS_NAMES) for label in sample.labels)


def test_two_object_masks_are_non_empty_disjoint_and_inside_the_image() -> None:
    samples = shapes.generate(50, seed=11, two_object_fraction=1.0)
    for sample in samples:
        first, second = sample.masks
        assert sample.labels[0] != sample.labels[1]
        assert first.shape == second.shape == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
        assert first.dtype == second.dtype == np.bool_
        assert first.sum() > 0 and second.sum() > 0
        assert not (first & second).any()
        for mask in sample.masks:  # objects lie fully inside: no mask pixel on the border
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_varied_images_are_deterministic_with_disjoint_masks_inside_the_image() -> None:
    first = shapes.generate(60, seed=5, two_object_fraction=0.5, varied=True)
    second = shapes.generate(60, seed=5, two_object_fraction=0.5, varied=True)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second))
    assert any(len(s.labels) == 1 for s in first) and any(len(s.labels) == 2 for s in first)
    for sample in first:
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
        assert len(sample.labels) == len(sample.masks)
        for mask in sample.masks:
            assert mask.sum() > 0
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if len(sample.masks) == 2:
            assert not (sample.masks[0] & sample.masks[1]).any()


def test_varied_sizes_span_12_to_48_pixels() -> None:
    widths = []
    for sample in shapes.generate(300, seed=6, varied=True):
        ys, xs = np.nonzero(sample.masks[0])
        widths.append(max(np.ptp(ys), np.ptp(xs)) + 1)
    assert min(widths) <= 14 and max(widths) >= 40


def test_an_occluded_object_loses_what_the_upper_one_covers() -> None:
    rng = np.random.default_rng(9)
    for _ in range(20):
        sample = shapes.draw_sample(rng, 2, classes=(0, 1), varied=True, occluded=True)
        lower, upper = sample.masks
        assert lower.sum() > 0 and upper.sum() > 0
        # the lower disc's mask stops where the square begins: grown by one pixel, it meets it
        grown = np.zeros_like(lower)
        grown[1:] |= lower[:-1]
        grown[:-1] |= lower[1:]
        grown[:, 1:] |= lower[:, :-1]
        grown[:, :-1] |= lower[:, 1:]
        assert (grown & upper).any()
    with pytest.raises(ValueError, match="varied"):
        shapes.draw_sample(np.random.default_rng(0), 2, occluded=True)


def test_draw_sample_honours_requested_classes() -> None:
    sample = shapes.draw_sample(np.random.default_rng(0), num_objects=2, classes=(5, 2))
    assert sample.labels == (5, 2)


@pytest.mark.parametrize("kwargs", [{"num_objects": 3}, {"num_objects": 2, "classes": (1, 1)},
                                    {"classes": (8,)}, {"num_objects": 1, "classes": (0, 1)}])
def test_draw_sample_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        shapes.draw_sample(np.random.default_rng(0), **kwargs)


def test_draw_shape_draws_each_named_class() -> None:
    for name in shapes.CLASS_NAMES:
        assert shapes.draw_shape(name).shape == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3)
    with pytest.raises(ValueError, match="pentagon"):
        shapes.draw_shape("pentagon")


def test_labels_file_lists_the_class_names() -> None:
    assert tuple(demo.DEMO_LABELS_PATH.read_text().splitlines()) == shapes.CLASS_NAMES


def test_default_layer_is_a_16x16_map_feeding_the_pool(trained_model: torch.nn.Module) -> None:
    zeros = torch.zeros(1, 3, demo.DEMO_INPUT_SIZE, demo.DEMO_INPUT_SIZE)
    captured, logits = layer_outputs(trained_model, [demo.DEMO_DEFAULT_LAYER], zeros)
    maps = captured[demo.DEMO_DEFAULT_LAYER]
    assert maps.shape[-2:] == (16, 16)  # a CAM cell per 4x4 pixels
    # CAM's identity: the logits are the classifier applied to the spatial mean of the map.
    with torch.no_grad():
        expected = trained_model.classifier(maps.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, expected)


def test_trained_model_classifies_unseen_single_object_images(
        trained_model: torch.nn.Module) -> None:
    samples = shapes.generate(200, seed=UNSEEN_SEED)
    with torch.no_grad():
        predicted = trained_model(_normalised(samples)).argmax(dim=1)
    truth = torch.tensor([s.labels[0] for s in samples])
    assert (predicted == truth).float().mean().item() >= 0.90
