"""Embed's limits through the real server and client: a bad item of any kind fails alone and the
stream goes on; the bytes a stream keeps (vectors and top-k crops) are bounded per stream and
over all open streams, and a stream's share comes back when it ends, however it ends."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from explainserve.config import LimitsConfig
from explainserve_client import Client, codec
from explainserve_client._proto import explainer_pb2 as pb
from support import random_input, running_server

# tiny_cnn at layer "conv" with pooling none: a [6, 8, 8] float32 map, 1,536 bytes per vector.
VECTOR_BYTES = 6 * 8 * 8 * 4
STREAM_BYTES = 8 * VECTOR_BYTES + 512  # eight vectors and their crops fit, a ninth does not
SERVER_BYTES = 12 * VECTOR_BYTES + 512
CONFIG = pb.EmbedConfig(model="tiny_cnn", layer="conv", pooling=pb.POOLING_NONE,
                        top_units=[pb.UnitRef(layer="conv", channel=1)], top_k=3)


def good_tensor(seed: int) -> pb.Tensor:
    return codec.encode(random_input((3, 8, 8), seed), "input")


def item(position: int, source: pb.Input | None = None) -> pb.EmbedRequest:
    source = source if source is not None else pb.Input(tensor=good_tensor(position))
    return pb.EmbedRequest(item=pb.EmbedItem(id=f"item-{position}", input=source))


def vectors_of(responses) -> dict[int, pb.EmbedVector]:
    return {r.vector.index: r.vector for r in responses if r.HasField("vector")}


BAD_INPUTS = {
    "dtype 99": pb.Input(tensor=pb.Tensor(dtype=99, shape=[3, 8, 8], data=bytes(3 * 8 * 8 * 4))),
    "shape [4294967296, 4294967296]": pb.Input(tensor=pb.Tensor(
        dtype=pb.DATA_TYPE_FLOAT32, shape=[2 ** 32, 2 ** 32], data=b"")),
    "neither encoded_image nor tensor": pb.Input(),
    "shape [3, 4, 4]": pb.Input(tensor=codec.encode(np.zeros((3, 4, 4), np.float32), "input")),
    "shape [2, 3, 8, 8]": pb.Input(tensor=codec.encode(np.zeros((2, 3, 8, 8), np.float32), "input")),
    "shape []": pb.Input(tensor=codec.encode(np.float32(1.0), "input")),
    "negative dimension": pb.Input(tensor=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[-1, 8, 8])),
    "NaN": pb.Input(tensor=codec.encode(np.full((3, 8, 8), np.nan, np.float32), "input")),
    "truncated PNG": pb.Input(encoded_image=b"\x89PNG\r\n\x1a\n\x00\x00"),
}


@pytest.mark.parametrize("expected", list(BAD_INPUTS))
def test_a_bad_item_fails_alone_and_later_items_are_answered(client, expected):
    requests = [pb.EmbedRequest(config=pb.EmbedConfig(model="tiny_cnn", neighbours=1)),
                item(0), item(1, BAD_INPUTS[expected]), item(2), item(3)]
    responses = list(client.stub.Embed(iter(requests), timeout=60))
    vectors = vectors_of(responses)
    assert sorted(vectors) == [0, 1, 2, 3]
    failure = vectors[1].error
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "item 1" in failure.message and "item-1" in failure.message
    naming = {"dtype 99": "99", "neither encoded_image nor tensor": "neither",
              "negative dimension": "negative", "NaN": "NaN", "truncated PNG": ""}
    assert naming.get(expected, expected.removeprefix("shape ")) in failure.message
    assert not any(vectors[i].HasField("error") for i in (0, 2, 3))
    summary = responses[-1].summary
    assert summary.complete and list(summary.indices) == [0, 2, 3]


@pytest.fixture(scope="module")
def bounded_server(models_by_name):
    limits = LimitsConfig(max_embed_stream_bytes=STREAM_BYTES, max_embed_server_bytes=SERVER_BYTES)
    with running_server((models_by_name["tiny_cnn"],), limits=limits) as background:
        yield background


@pytest.fixture
def bounded(bounded_server):
    with Client(bounded_server.address, timeout=60) as connection:
        yield connection


class HeldStream:
    """An Embed stream that sends `count` items, then stays open until released or cancelled,
    holding its share of the server's budget."""

    def __init__(self, connection: Client, count: int) -> None:
        self._release = threading.Event()
        requests = [pb.EmbedRequest(config=CONFIG), *(item(i) for i in range(count))]
        self.call = connection.stub.Embed(self._held(requests), timeout=60)
        self.vectors = [next(self.call) for _ in range(count)]  # all kept once answered

    def _held(self, requests):
        yield from requests
        self._release.wait(60)

    def finish(self) -> list[pb.EmbedResponse]:
        self._release.set()
        return list(self.call)

    def cancel(self) -> None:
        self.call.cancel()
        self._release.set()


def embed_count(connection: Client, count: int, first: int = 0):
    requests = [pb.EmbedRequest(config=CONFIG), *(item(first + i) for i in range(count))]
    return list(connection.stub.Embed(iter(requests), timeout=60))


def eventually_embeds(connection: Client, count: int) -> list[pb.EmbedResponse]:
    """The budget comes back when the server has finished with a stream, a moment after the
    client saw it end."""
    give_up = time.monotonic() + 10
    while True:
        try:
            return embed_count(connection, count)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def test_a_stream_over_its_byte_bound_ends_resource_exhausted_naming_it(bounded):
    responses = embed_count(bounded, 8)
    assert len(vectors_of(responses)) == 8 and responses[-1].summary.count == 8
    with pytest.raises(grpc.RpcError) as caught:
        embed_count(bounded, 9)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details()
    assert "max_embed_stream_bytes" in details and f"{STREAM_BYTES} bytes" in details
    assert "item 8" in details
    # Pushback -1: the same stream would fail again, so no client retry policy retries it.
    assert ("grpc-retry-pushback-ms", "-1") in tuple(caught.value.trailing_metadata())
    # The failed stream's share was given back: a whole bound's worth fits again.
    assert eventually_embeds(bounded, 8)[-1].summary.count == 8


def test_open_streams_share_the_server_budget_and_give_it_back_on_finish(bounded):
    holder = HeldStream(bounded, 8)
    with pytest.raises(grpc.RpcError) as caught:
        embed_count(bounded, 6, first=100)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details()
    assert "max_embed_server_bytes" in details and f"{SERVER_BYTES} bytes" in details
    assert embed_count(bounded, 3, first=200)[-1].summary.count == 3  # what fits still runs
    assert holder.finish()[-1].summary.count == 8
    assert eventually_embeds(bounded, 8)[-1].summary.count == 8


def test_a_cancelled_stream_gives_its_share_back(bounded):
    holder = HeldStream(bounded, 8)
    holder.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        list(holder.call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    # Without the release, 8 held + 8 new would stay over the 12-vector server budget.
    assert eventually_embeds(bounded, 8)[-1].summary.count == 8
    second = HeldStream(bounded, 8)  # and again: nothing leaked from either stream
    second.cancel()
    assert eventually_embeds(bounded, 8)[-1].summary.count == 8


def test_the_defaults_bound_a_stream_and_the_server():
    defaults = LimitsConfig()
    assert 0 < defaults.max_embed_stream_bytes <= defaults.max_embed_server_bytes


def test_top_k_crops_count_against_the_stream_bound(models_by_name):
    """Pooled vectors are 24 bytes each, so only the crops (12 units x 9 hits x at least
    2x2x3 bytes) can reach a 1,000-byte bound."""
    units = [pb.UnitRef(layer=layer, channel=c) for layer in ("conv", "relu") for c in range(6)]
    config = pb.EmbedConfig(model="tiny_cnn", pooling=pb.POOLING_MEAN, top_units=units, top_k=9)
    requests = [pb.EmbedRequest(config=config), *(item(i) for i in range(10))]
    limits = LimitsConfig(max_embed_stream_bytes=1000)
    with running_server((models_by_name["tiny_cnn"],), limits=limits) as background:
        with Client(background.address, timeout=60) as connection:
            with pytest.raises(grpc.RpcError) as caught:
                list(connection.stub.Embed(iter(requests), timeout=60))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_embed_stream_bytes = 1000 bytes" in caught.value.details()
