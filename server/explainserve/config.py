"""Configuration: frozen dataclasses, read from flags and a TOML model repository."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# ImageNet statistics: the torchvision default for models without their own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A model repository or flag value that stops start-up; the message names it."""


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are coalesced (Triton's dynamic batcher: size or oldest-request delay)."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256  # requests waiting per model; beyond it RESOURCE_EXHAUSTED
    # A job of many rows (occlusion, SmoothGrad) gets at most this much device time per batch,
    # sized from the measured time per row, so small requests beside it keep a bounded latency.
    max_chunk_ms: float = 50.0


@dataclass(frozen=True)
class LayoutDeclaration:
    """A layer's layout as the model repository declares it, for a layer whose output shape
    alone does not say how it reads as channel maps (`[models.NAME.layouts]`)."""

    kind: str  # nchw | nhwc | tokens | none
    prefix_tokens: int = 0  # tokens: class, distillation and register tokens before the patches
    height: int = 0  # tokens: the patch grid; 0 means the model's own patch grid
    width: int = 0


LAYOUT_KINDS = ("nchw", "nhwc", "tokens", "none")
_LAYOUT_KEYS = {"kind", "prefix_tokens", "height", "width"}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    # "torchvision:<name>", "timm:<name>", "hf:<directory>" or "python:<module>:<callable>"
    arch: str
    weights: Path | None
    num_classes: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: Path | None = None
    default_layer: str | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # How convolution weights and activations are laid out on the device. "auto": channels
    # last (NHWC) on a CPU, where oneDNN's convolutions run faster that way at batch sizes
    # above 1 (measured in docs/benchmarks.md), if the model's forward accepts it; the model's
    # own layout elsewhere.
    memory_format: str = "auto"  # auto | channels_last | contiguous
    # layer name -> declared layout, overriding what is inferred from the layer's shape
    layouts: tuple[tuple[str, LayoutDeclaration], ...] = ()
    # keyword arguments for the architecture's constructor (torchvision and timm), e.g.
    # {"img_size": 64} for a timm ViT at another input size
    options: tuple[tuple[str, Any], ...] = ()


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what one request may ask for; beyond them INVALID_ARGUMENT."""

    max_image_pixels: int = 40_000_000  # decoded pixels; stops decompression bombs
    max_encoded_bytes: int = 32 * 1024 * 1024
    max_targets: int = 16
    max_smoothgrad_samples: int = 512
    # Path points of one target's integrated gradients, the adaptive refinement's included.
    max_integrated_gradients_steps: int = 1024
    # XRAI regions over all segmentation scales (each is an [H, W] mask kept during selection).
    max_xrai_segments: int = 4096
    max_occlusion_positions: int = 20_000
    # Channels of the layer that Score-CAM and Ablation-CAM read: each is one forward pass
    # (all the request's targets share it).
    max_cam_channels: int = 4096
    # Steps of a deletion or insertion curve: each is one forward pass per target and score.
    max_evaluate_steps: int = 256
    max_maximize_steps: int = 4096
    max_maximize_images: int = 32
    max_maximize_size: int = 512
    max_maximize_frames: int = 256  # frames per image (steps / frame_every): the frame rate
    max_embed_items: int = 100_000
    # Bytes an Embed stream keeps until its summary: its vectors and its top-k crops. 256 MiB
    # holds max_embed_items pooled 512-d vectors (100,000 x 2 KiB) with room for crops, but
    # only ~2,600 unpooled resnet layer4 maps (100 KiB each). The summary briefly needs up to
    # ~5x what is kept (a stacked copy; float64 and normalised copies for cosine neighbours),
    # so a full stream peaks near 1.3 GiB. Beyond the bound the stream ends RESOURCE_EXHAUSTED.
    max_embed_stream_bytes: int = 256 * 1024 * 1024
    # The same bytes over all open Embed streams of one server: four full streams at once.
    max_embed_server_bytes: int = 1024 * 1024 * 1024
    chunk_bytes: int = 3 * 1024 * 1024


@dataclass(frozen=True)
class FaultInjection:
    """Test-only switches that provoke the failures the worker pool must survive."""

    oom_above_rows: int | None = None  # batches with more rows raise torch.OutOfMemoryError
    poison_value: float | None = None  # a row whose first element equals it fails its batch
    kill_value: float | None = None  # a row whose first element equals it kills the worker


@dataclass(frozen=True)
class SecurityConfig:
    """TLS, mutual TLS and bearer tokens; all off by default (plaintext, no auth)."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate it signed
    tokens: tuple[str, ...] = field(default=(), repr=False)  # never logged
    open_services: tuple[str, ...] = ("grpc.health.v1.Health",)  # reachable without a token


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9090
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cpu_workers: int = 1
    grace_period_s: float = 10.0
    # After SIGTERM: seconds of serving on while health reports NOT_SERVING, so that load
    # balancers and health-checking clients see it and stop sending before the listener closes.
    drain_delay_s: float = 0.0
    models: tuple[ModelConfig, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    faults: FaultInjection | None = None  # tests only
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # Connections close after this age (plus the grace for calls on them), so clients
    # re-resolve and spread over replicas added by a scale-up. None: never.
    max_connection_age_s: float | None = None
    max_connection_age_grace_s: float | None = None
    health_port: int | None = None  # a plaintext health-only port, for probes when TLS is on
    # HTTP/JSON (Open Inference Protocol v2 REST, KServe v1, the page at /); None: off.
    http_port: int | None = None


_MODEL_KEYS = {"arch", "weights", "num_classes", "input_size", "mean", "std", "labels",
               "default_layer", "max_batch_size", "max_queue_delay_ms", "max_queue_size",
               "max_chunk_ms", "memory_format", "layouts", "options"}


def load_model_repository(path: Path) -> tuple[ModelConfig, ...]:
    """Read `[models.NAME]` tables; relative file paths are relative to the TOML file."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"model repository {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"model repository {path} is not valid TOML: {error}") from None
    tables = document.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"model repository {path} has no [models.NAME] tables")
    base = Path(path).resolve().parent
    return tuple(_model_config(name, table, base) for name, table in tables.items())


def _model_config(name: str, table: dict[str, Any], base: Path) -> ModelConfig:
    unknown = sorted(set(table) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"model {name!r}: unknown keys {unknown}; valid: {sorted(_MODEL_KEYS)}")
    if str(table.get("arch", "")).startswith("hf:"):
        table = _hf_defaults(name, table, base)
    for key in ("arch", "num_classes", "input_size"):
        if key not in table:
            raise ConfigError(f"model {name!r}: missing required key {key!r}")
    size = table["input_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"model {name!r}: input_size {table['input_size']!r} is not an int or [H, W]")

    def file(key: str) -> Path | None:
        value = table.get(key)
        if value is None:
            return None
        resolved = (base / value).resolve()
        if not resolved.is_file():
            raise ConfigError(f"model {name!r}: {key} file {resolved} does not exist")
        return resolved

    memory_format = table.get("memory_format", "auto")
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError(f"model {name!r}: memory_format {memory_format!r} is not one of "
                          f"{list(MEMORY_FORMATS)}")
    batching_keys = {f.name for f in fields(BatchingConfig)}
    batching = BatchingConfig(**{k: table[k] for k in batching_keys if k in table})
    return ModelConfig(
        name=name, arch=table["arch"], weights=file("weights"),
        num_classes=int(table["num_classes"]), input_size=size,
        mean=tuple(table.get("mean", IMAGENET_MEAN)), std=tuple(table.get("std", IMAGENET_STD)),
        labels=file("labels"), default_layer=table.get("default_layer"), batching=batching,
        memory_format=memory_format, layouts=_layouts(name, table.get("layouts", {})),
        options=_options(name, table.get("options", {})),
    )


def _hf_defaults(name: str, table: dict[str, Any], base: Path) -> dict[str, Any]:
    """An hf:<directory> model (relative to the TOML file) takes its mean, std and input size
    from the directory's preprocessor_config.json unless the table gives them."""
    directory = (base / table["arch"][3:]).resolve()
    table = {**table, "arch": f"hf:{directory}"}
    preprocessor = directory / "preprocessor_config.json"
    if not preprocessor.is_file():
        return table
    try:
        settings = json.loads(preprocessor.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"model {name!r}: {preprocessor} is not valid JSON: {error}") from None
    size = settings.get("size")
    if isinstance(size, dict) and {"height", "width"} <= set(size):
        size = [size["height"], size["width"]]
    elif isinstance(size, dict) and "shortest_edge" in size:
        size = size["shortest_edge"]
    defaults = {"mean": settings.get("image_mean"), "std": settings.get("image_std"),
                "input_size": size}
    return {**{k: v for k, v in defaults.items() if v is not None}, **table}


def _layouts(name: str, table: Any) -> tuple[tuple[str, LayoutDeclaration], ...]:
    """`[models.NAME.layouts]`: "layer" = { kind = "tokens", prefix_tokens = 1 }."""
    if not isinstance(table, dict):
        raise ConfigError(f"model {name!r}: layouts must be a table of layer = {{ kind = ... }}")
    declared = []
    for layer, entry in table.items():
        where = f"model {name!r}: layout of layer {layer!r}"
        if not isinstance(entry, dict) or entry.get("kind") not in LAYOUT_KINDS:
            raise ConfigError(f"{where} needs kind = one of {list(LAYOUT_KINDS)}, got {entry!r}")
        unknown = sorted(set(entry) - _LAYOUT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid: {sorted(_LAYOUT_KEYS)}")
        numbers = {key: entry.get(key, 0) for key in ("prefix_tokens", "height", "width")}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: {key} must be a non-negative integer, got {value!r}")
        if entry["kind"] != "tokens" and any(numbers.values()):
            raise ConfigError(f"{where}: prefix_tokens, height and width are for kind 'tokens' only")
        if (numbers["height"] == 0) != (numbers["width"] == 0):
            raise ConfigError(f"{where}: give both height and width, or neither")
        declared.append((layer, LayoutDeclaration(entry["kind"], **numbers)))
    return tuple(declared)


def _options(name: str, table: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"model {name!r}: options must be a table of constructor arguments")
    return tuple(sorted((key, tuple(v) if isinstance(v, list) else v) for key, v in table.items()))
