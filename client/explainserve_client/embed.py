"""The Embed stream from the client's side: requests made lazily from any iterable of images,
and the answers gathered into one Embedding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import codec, wire_names
from ._proto import explainer_pb2 as pb
from .images import ImageLike, to_input
from .wire_names import METRICS, POOLINGS

PROJECTIONS = {None: pb.PROJECTION_UNSPECIFIED, **wire_names.PROJECTIONS}


@dataclass(frozen=True)
class PatchHit:
    """One image region that drives a unit."""

    index: int  # the item's position in the stream
    id: str
    activation: float
    y: int  # feature-map position of the unit's maximum
    x: int
    box: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max in input pixels, inclusive
    patch_png: bytes


@dataclass(frozen=True)
class ItemFailure:
    index: int
    id: str
    code: int  # gRPC status code number, e.g. 3 for INVALID_ARGUMENT
    message: str


@dataclass
class Embedding:
    """Row i of every array is the i-th item that succeeded, in stream order."""

    vectors: np.ndarray  # float32 [N, D] (empty [N, 0] when vectors were not asked for)
    ids: list[str]
    indices: np.ndarray  # int64 [N]: each row's position in the stream
    predicted: np.ndarray  # int64 [N]; -1 where the pass stopped below the classifier
    labels: np.ndarray | None = None  # int64 [N] as sent, -1 where none was given
    projection: np.ndarray | None = None  # float32 [N, dims]
    neighbours: np.ndarray | None = None  # int64 [N, k]: ROW numbers, nearest first
    neighbour_distances: np.ndarray | None = None  # float32 [N, k]
    top_patches: dict[tuple[str, int], list[PatchHit]] = field(default_factory=dict)
    failures: list[ItemFailure] = field(default_factory=list)

    def knn_accuracy(self, labels: np.ndarray | None = None) -> float:
        """Leave-one-out k-nearest-neighbour accuracy: the majority label of each row's
        neighbours (ties to the nearer) against its own label; rows without a label skipped."""
        labels = self.labels if labels is None else np.asarray(labels)
        if labels is None or self.neighbours is None or self.neighbours.shape[1] == 0:
            raise ValueError("knn_accuracy needs labels and neighbours (embed(..., neighbours=k))")
        hits = [_vote(labels[row]) == labels[i] for i, row in enumerate(self.neighbours) if labels[i] >= 0]
        return float(np.mean(hits)) if hits else float("nan")


def _vote(labels: np.ndarray) -> int:
    counts = Counter(int(label) for label in labels)
    best = max(counts.values())
    return next(int(label) for label in labels if counts[int(label)] == best)


def embed_config(model: str, layer: str | None, pooling: str, project: str | None, dims: int,
                 neighbours: int, metric: str, top_patches: Iterable[tuple[str, int]],
                 top_k: int, return_vectors: bool) -> pb.EmbedConfig:
    for name, value, table in (("pooling", pooling, POOLINGS), ("project", project, PROJECTIONS),
                               ("metric", metric, METRICS)):
        if value not in table:
            raise ValueError(f"{name} must be one of {[k for k in table]}, got {value!r}")
    return pb.EmbedConfig(
        model=model, layer=layer or "", pooling=POOLINGS[pooling], projection=PROJECTIONS[project],
        projection_dims=dims, neighbours=neighbours, metric=METRICS[metric],
        top_units=[pb.UnitRef(layer=layer_name, channel=int(channel)) for layer_name, channel in top_patches],
        top_k=top_k, return_vectors=return_vectors)


def embed_requests(config: pb.EmbedConfig, images: Iterable[ImageLike],
                   ids: Iterable[str] | None = None, labels: Iterable[int | None] | None = None,
                   sent_labels: list[int] | None = None) -> Iterator[pb.EmbedRequest]:
    """The config, then one item per image, read from `images` one at a time (a generator of
    paths is never loaded whole). Labels sent are appended to `sent_labels` (-1 for none)."""
    yield pb.EmbedRequest(config=config)
    id_iter = iter(ids) if ids is not None else None
    label_iter = iter(labels) if labels is not None else None
    for position, image in enumerate(images):
        item_id = next(id_iter) if id_iter is not None else (
            str(image) if isinstance(image, (str, Path)) else str(position))
        label = next(label_iter) if label_iter is not None else None
        if sent_labels is not None:
            sent_labels.append(-1 if label is None else int(label))
        item = pb.EmbedItem(id=str(item_id), input=to_input(image))
        if label is not None:
            item.label = int(label)
        yield pb.EmbedRequest(item=item)


def assemble_embedding(responses: Iterable[pb.EmbedResponse], sent_labels: list[int] | None = None,
                       progress: Callable[[int], None] | None = None) -> Embedding:
    """Join the stream: vectors (chunked ones reassembled), failures, and the last summary."""
    vectors: dict[int, codec.TensorAssembler] = {}
    ids: dict[int, str] = {}
    predicted: dict[int, int] = {}
    failures: list[ItemFailure] = []
    summary: list[pb.EmbedSummary] = []
    done = 0
    for response in responses:
        if response.HasField("summary"):
            summary = [] if summary and summary[-1].complete else summary
            summary.append(response.summary)
            continue
        message = response.vector
        if message.index not in ids:
            ids[message.index], predicted[message.index] = message.id, message.predicted_class
            done += 1
            if progress is not None:
                progress(done)
        if message.HasField("error"):
            failures.append(ItemFailure(message.index, message.id, message.error.code, message.error.message))
        elif message.HasField("vector"):
            vectors.setdefault(message.index, codec.TensorAssembler()).add(message.vector)
    return _build(summary, vectors, ids, predicted, failures, sent_labels)


def _build(parts: list[pb.EmbedSummary], vectors, ids, predicted, failures, sent_labels) -> Embedding:
    tensors: dict[str, codec.TensorAssembler] = {}
    indices: list[int] = []
    top: dict[tuple[str, int], list[PatchHit]] = {}
    for part in parts:
        indices.extend(part.indices)
        for name in ("projection", "neighbour_indices", "neighbour_distances"):
            if part.HasField(name):
                tensors.setdefault(name, codec.TensorAssembler()).add(getattr(part, name))
        for group in part.top_patches:
            top.setdefault((group.unit.layer, group.unit.channel), []).extend(
                PatchHit(h.index, h.id, h.activation, h.y, h.x,
                         (h.box.x_min, h.box.y_min, h.box.x_max, h.box.y_max), h.patch_png)
                for h in group.hits)
    if not parts:  # no summary: the rows are the items that returned a vector
        indices = sorted(vectors)
    order = np.asarray(indices, dtype=np.int64)
    rows = [vectors[i].result() for i in indices if i in vectors]
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((len(order), 0), np.float32)
    result = {name: assembler.result() for name, assembler in tensors.items()}
    neighbours = result.get("neighbour_indices")
    return Embedding(
        vectors=matrix, ids=[ids.get(i, str(i)) for i in indices], indices=order,
        predicted=np.asarray([predicted.get(i, -1) for i in indices], dtype=np.int64),
        labels=(np.asarray(sent_labels, dtype=np.int64)[order] if sent_labels else None),
        projection=result.get("projection"),
        neighbours=np.searchsorted(order, neighbours) if neighbours is not None else None,
        neighbour_distances=result.get("neighbour_distances"), top_patches=top, failures=failures)
