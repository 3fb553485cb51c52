"""Embed through the real server and client: vectors against a direct forward hook, the set
results, the true top-k patches, per-item failures, the stream's limits and its CLI."""

from __future__ import annotations

import io
import threading

import grpc
import numpy as np
import pytest
import torch
from explainserve.config import LimitsConfig
from explainserve.methods.embed.receptive_field import receptive_field
from explainserve.models import preprocess
from explainserve_client import Client, ExplainServeError, codec
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client.render import image_png
from PIL import Image
from support import layer_outputs, random_inputs, reference_module, relative_l2, running_server


def pooled(features: torch.Tensor, pooling: str) -> np.ndarray:
    if pooling == "none" or features.ndim == 2:
        return features.flatten(1).numpy()
    return (features.mean(dim=(2, 3)) if pooling == "mean" else features.amax(dim=(2, 3))).numpy()


def lockstep(images, received: threading.Semaphore):
    """A client that sends the next image only after the previous one's vector came back."""
    for position, image in enumerate(images):
        if position:
            assert received.acquire(timeout=60), "the server held back a finished vector"
        yield image


@pytest.mark.parametrize("layer, pooling", [(None, "mean"), ("layer3", "mean"), ("layer3", "max"),
                                            ("layer2.1", "none")])
def test_vectors_equal_a_forward_hook_one_at_a_time_and_in_bursts(client, models_by_name, layer, pooling):
    module = reference_module(models_by_name["resnet18"])
    images = random_inputs(6, (3, 64, 64))
    seen, logits = layer_outputs(module, [layer or "avgpool"], images)
    expected = pooled(seen[layer or "avgpool"], pooling)
    burst = client.embed(images, model="resnet18", layer=layer, pooling=pooling)
    received = threading.Semaphore(0)
    single = client.embed(lockstep(images, received), model="resnet18", layer=layer,
                          pooling=pooling, progress=lambda done: received.release())
    for result in (burst, single):
        assert result.vectors.shape == expected.shape
        assert relative_l2(result.vectors, expected) < 1e-5
        assert result.ids == [str(i) for i in range(6)]
    # The default layer feeds the classifier, so the pass goes on to the logits; a lower layer
    # stops the pass early and reports no prediction.
    wanted = logits.argmax(1).numpy() if layer is None else np.full(6, -1)
    np.testing.assert_array_equal(burst.predicted, wanted)


def test_set_results_have_their_shapes_and_neighbours_are_nearest(client):
    images = random_inputs(12, (3, 64, 64), seed=2)
    result = client.embed(images, model="resnet18", project="tsne", dims=3, neighbours=4, metric="l2")
    assert result.projection.shape == (12, 3)
    assert result.neighbours.shape == result.neighbour_distances.shape == (12, 4)
    distances = np.linalg.norm(result.vectors[:, None] - result.vectors[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(result.neighbours, np.argsort(distances, axis=1)[:, :4])
    np.testing.assert_allclose(result.neighbour_distances, np.sort(distances, axis=1)[:, :4], rtol=1e-4)
    pca = client.embed(images, model="resnet18", return_vectors=False)
    assert pca.projection.shape == (12, 2) and pca.vectors.shape == (12, 0)  # PCA by default


def test_top_patches_are_the_true_top_k(client, models_by_name):
    config = models_by_name["resnet18"]
    module = reference_module(config)
    images = random_inputs(10, (3, 64, 64), seed=3)
    units = [("layer2", 5), ("layer1.0.bn1", 3)]  # bn1 is followed by an in-place ReLU
    result = client.embed(images, model="resnet18", top_patches=units, top_k=3)
    seen, _ = layer_outputs(module, [layer for layer, _ in units], images)
    for layer, channel in units:
        maps = seen[layer][:, channel]
        peaks, flat = maps.flatten(1).max(dim=1)
        order = torch.argsort(peaks, descending=True)[:3].tolist()
        hits = result.top_patches[(layer, channel)]
        assert [hit.index for hit in hits] == order
        field = receptive_field(module, layer, (3, 64, 64))
        for hit, index in zip(hits, order):
            y, x = divmod(int(flat[index]), maps.shape[-1])
            assert (hit.y, hit.x) == (y, x)
            assert hit.activation == pytest.approx(float(peaks[index]), rel=1e-5)
            assert hit.box == field.box(y, x)
            x_min, y_min, x_max, y_max = hit.box
            crop = preprocess.denormalize(torch.from_numpy(images[index])[:, y_min:y_max + 1, x_min:x_max + 1],
                                          config.mean, config.std)
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(hit.patch_png))), crop)


def test_a_corrupt_item_at_position_500_fails_alone(client, models_by_name):
    generator = np.random.default_rng(5)
    pictures = [generator.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(510)]
    items = [image_png(p) for p in pictures]
    items[500] = items[500][:20]  # a truncated PNG
    items[503] = np.zeros((3, 4, 4), np.float32)  # a tensor of the wrong shape
    result = client.embed(iter(items), model="tiny_cnn", neighbours=2)
    assert [(f.index, f.code) for f in result.failures] == [(500, 3), (503, 3)]
    assert "item 500" in result.failures[0].message and "[3, 4, 4]" in result.failures[1].message
    assert len(result.vectors) == 508 and 500 not in result.indices and 503 not in result.indices
    config = models_by_name["tiny_cnn"]
    good = [i for i in range(510) if i not in (500, 503)]
    tensors = [preprocess.normalize(Image.fromarray(pictures[i]), config.mean, config.std).numpy()
               for i in good]
    seen, _ = layer_outputs(reference_module(config), ["flatten"], tensors)
    assert relative_l2(result.vectors, seen["flatten"].numpy()) < 1e-5
    assert result.neighbours.shape == (508, 2)


def test_first_message_must_be_a_config_and_only_the_first(client):
    item = pb.EmbedRequest(item=pb.EmbedItem(id="a", input=pb.Input(encoded_image=b"x")))
    config = pb.EmbedRequest(config=pb.EmbedConfig(model="tiny_cnn"))
    for requests in ([item, config], [config, item, config], []):
        with pytest.raises(grpc.RpcError) as caught:
            list(client.stub.Embed(iter(requests), timeout=30))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config" in caught.value.details()


@pytest.mark.parametrize("options, code", [
    ({"layer": "nope"}, grpc.StatusCode.NOT_FOUND),
    ({"top_patches": [("conv", 99)]}, grpc.StatusCode.OUT_OF_RANGE),
    ({"dims": 4}, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_configs_end_the_stream_with_their_status(client, options, code):
    with pytest.raises(ExplainServeError) as caught:
        client.embed(random_inputs(1, (3, 8, 8)), model="tiny_cnn", **options)
    assert caught.value.code == code


@pytest.fixture(scope="module")
def small_server(models_by_name):
    """A server whose set limit is 5 items and whose messages are cut at 600 bytes."""
    with running_server((models_by_name["tiny_cnn"],),
                        limits=LimitsConfig(max_embed_items=5, chunk_bytes=600)) as background:
        yield background


def test_more_items_than_the_set_limit_is_resource_exhausted(small_server):
    with Client(small_server.address, timeout=60) as small:
        with pytest.raises(ExplainServeError) as caught:
            small.embed(random_inputs(6, (3, 8, 8)), model="tiny_cnn")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 5 items" in caught.value.details


def test_big_vectors_and_summaries_arrive_in_chunks(client, small_server):
    images = random_inputs(5, (3, 8, 8), seed=6)
    options = dict(model="tiny_cnn", layer="conv", pooling="none", neighbours=3,
                   top_patches=[("conv", 1), ("relu", 2)], top_k=5)
    with Client(small_server.address, timeout=60) as small:
        responses = list(small.stub.Embed(iter(_requests(images, options)), timeout=60))
        chunked = small.embed(images, **options)
    whole = client.embed(images, **options)
    assert len(responses) > 5 + 1 and responses[-1].summary.complete  # 384 floats > 600 bytes
    assert not any(r.summary.complete for r in responses[:-1])
    np.testing.assert_allclose(chunked.vectors, whole.vectors, rtol=1e-5, atol=1e-6)  # other batches
    np.testing.assert_array_equal(chunked.neighbours, whole.neighbours)
    for unit in options["top_patches"]:
        assert [h.index for h in chunked.top_patches[unit]] == [h.index for h in whole.top_patches[unit]]


def _requests(images, options):
    from explainserve_client.embed import embed_config, embed_requests
    config = embed_config(options["model"], options["layer"], options["pooling"], None, 2,
                          options["neighbours"], "cosine", options["top_patches"],
                          options["top_k"], True)
    return embed_requests(config, images)


def test_finish_gives_a_summary_mid_stream(client):
    config = pb.EmbedRequest(config=pb.EmbedConfig(model="tiny_cnn", neighbours=1))
    items = [pb.EmbedRequest(item=pb.EmbedItem(id=str(i),
                                              input=pb.Input(tensor=codec.encode(t, "input"))))
             for i, t in enumerate(random_inputs(4, (3, 8, 8), seed=7))]
    finish = pb.EmbedRequest(finish=pb.EmbedFinish())
    responses = list(client.stub.Embed(iter([config, *items[:2], finish, *items[2:]]), timeout=30))
    summaries = [r.summary for r in responses if r.HasField("summary")]
    assert [s.count for s in summaries] == [2, 4]
    assert list(summaries[1].indices) == [0, 1, 2, 3]
