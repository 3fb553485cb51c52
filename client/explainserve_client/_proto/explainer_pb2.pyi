from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]

class Output(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_UNSPECIFIED: _ClassVar[Output]
    OUTPUT_ATTRIBUTION: _ClassVar[Output]
    OUTPUT_HEATMAP: _ClassVar[Output]
    OUTPUT_OVERLAY_PNG: _ClassVar[Output]
    OUTPUT_BOX: _ClassVar[Output]

class Faithfulness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAITHFULNESS_UNSPECIFIED: _ClassVar[Faithfulness]
    FAITHFULNESS_DELETION: _ClassVar[Faithfulness]
    FAITHFULNESS_INSERTION: _ClassVar[Faithfulness]

class Baseline(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASELINE_UNSPECIFIED: _ClassVar[Baseline]
    BASELINE_BLUR: _ClassVar[Baseline]
    BASELINE_CONSTANT: _ClassVar[Baseline]

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_CLASS: _ClassVar[Objective]
    OBJECTIVE_CHANNEL: _ClassVar[Objective]
    OBJECTIVE_NEURON: _ClassVar[Objective]
    OBJECTIVE_INVERSION: _ClassVar[Objective]

class Initialization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INITIALIZATION_UNSPECIFIED: _ClassVar[Initialization]
    INITIALIZATION_ZEROS: _ClassVar[Initialization]
    INITIALIZATION_NOISE: _ClassVar[Initialization]
    INITIALIZATION_IMAGE: _ClassVar[Initialization]

class FrameFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_FORMAT_UNSPECIFIED: _ClassVar[FrameFormat]
    FRAME_FORMAT_PNG: _ClassVar[FrameFormat]
    FRAME_FORMAT_TENSOR: _ClassVar[FrameFormat]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_MAX: _ClassVar[Pooling]
    POOLING_NONE: _ClassVar[Pooling]

class Projection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROJECTION_UNSPECIFIED: _ClassVar[Projection]
    PROJECTION_PCA: _ClassVar[Projection]
    PROJECTION_TSNE: _ClassVar[Projection]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_UINT8: DataType
OUTPUT_UNSPECIFIED: Output
OUTPUT_ATTRIBUTION: Output
OUTPUT_HEATMAP: Output
OUTPUT_OVERLAY_PNG: Output
OUTPUT_BOX: Output
FAITHFULNESS_UNSPECIFIED: Faithfulness
FAITHFULNESS_DELETION: Faithfulness
FAITHFULNESS_INSERTION: Faithfulness
BASELINE_UNSPECIFIED: Baseline
BASELINE_BLUR: Baseline
BASELINE_CONSTANT: Baseline
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_CLASS: Objective
OBJECTIVE_CHANNEL: Objective
OBJECTIVE_NEURON: Objective
OBJECTIVE_INVERSION: Objective
INITIALIZATION_UNSPECIFIED: Initialization
INITIALIZATION_ZEROS: Initialization
INITIALIZATION_NOISE: Initialization
INITIALIZATION_IMAGE: Initialization
FRAME_FORMAT_UNSPECIFIED: FrameFormat
FRAME_FORMAT_PNG: FrameFormat
FRAME_FORMAT_TENSOR: FrameFormat
POOLING_UNSPECIFIED: Pooling
POOLING_MEAN: Pooling
POOLING_MAX: Pooling
POOLING_NONE: Pooling
PROJECTION_UNSPECIFIED: Projection
PROJECTION_PCA: Projection
PROJECTION_TSNE: Projection
METRIC_UNSPECIFIED: Metric
METRIC_COSINE: Metric
METRIC_L2: Metric

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data", "byte_offset", "total_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BYTE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    byte_offset: int
    total_bytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., byte_offset: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("encoded_image", "tensor")
    ENCODED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    encoded_image: bytes
    tensor: Tensor
    def __init__(self, encoded_image: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "method", "input", "targets", "top_k", "layer", "extra_layers", "parameters", "outputs", "evaluate", "evaluation", "baseline")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXTRA_LAYERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    model: str
    method: str
    input: Input
    targets: _containers.RepeatedScalarFieldContainer[int]
    top_k: int
    layer: str
    extra_layers: _containers.RepeatedScalarFieldContainer[str]
    parameters: _struct_pb2.Struct
    outputs: _containers.RepeatedScalarFieldContainer[Output]
    evaluate: _containers.RepeatedScalarFieldContainer[Faithfulness]
    evaluation: EvaluationOptions
    baseline: Tensor
    def __init__(self, model: _Optional[str] = ..., method: _Optional[str] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., targets: _Optional[_Iterable[int]] = ..., top_k: _Optional[int] = ..., layer: _Optional[str] = ..., extra_layers: _Optional[_Iterable[str]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[Output, str]]] = ..., evaluate: _Optional[_Iterable[_Union[Faithfulness, str]]] = ..., evaluation: _Optional[_Union[EvaluationOptions, _Mapping]] = ..., baseline: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class EvaluationOptions(_message.Message):
    __slots__ = ("steps", "baseline", "constant", "blur_sigma")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    steps: int
    baseline: Baseline
    constant: float
    blur_sigma: float
    def __init__(self, steps: _Optional[int] = ..., baseline: _Optional[_Union[Baseline, str]] = ..., constant: _Optional[float] = ..., blur_sigma: _Optional[float] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: int
    y_min: int
    x_max: int
    y_max: int
    def __init__(self, x_min: _Optional[int] = ..., y_min: _Optional[int] = ..., x_max: _Optional[int] = ..., y_max: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("target_index", "target", "label", "score", "probability", "attribution", "heatmap", "overlay_png", "box", "tensors", "grid_png", "complete", "quality")
    class QualityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    GRID_PNG_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    target_index: int
    target: int
    label: str
    score: float
    probability: float
    attribution: Tensor
    heatmap: Tensor
    overlay_png: bytes
    box: BoundingBox
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    grid_png: bytes
    complete: bool
    quality: _containers.ScalarMap[str, float]
    def __init__(self, target_index: _Optional[int] = ..., target: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ..., attribution: _Optional[_Union[Tensor, _Mapping]] = ..., heatmap: _Optional[_Union[Tensor, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., box: _Optional[_Union[BoundingBox, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., grid_png: _Optional[bytes] = ..., complete: bool = ..., quality: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MaximizeRequest(_message.Message):
    __slots__ = ("model", "objective", "classes", "layer", "channels", "neuron_y", "neuron_x", "reference", "initialization", "steps", "frame_every", "seed", "parameters", "frame_formats")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NEURON_Y_FIELD_NUMBER: _ClassVar[int]
    NEURON_X_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    INITIALIZATION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_EVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FORMATS_FIELD_NUMBER: _ClassVar[int]
    model: str
    objective: Objective
    classes: _containers.RepeatedScalarFieldContainer[int]
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    neuron_y: int
    neuron_x: int
    reference: Input
    initialization: Initialization
    steps: int
    frame_every: int
    seed: int
    parameters: _struct_pb2.Struct
    frame_formats: _containers.RepeatedScalarFieldContainer[FrameFormat]
    def __init__(self, model: _Optional[str] = ..., objective: _Optional[_Union[Objective, str]] = ..., classes: _Optional[_Iterable[int]] = ..., layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., neuron_y: _Optional[int] = ..., neuron_x: _Optional[int] = ..., reference: _Optional[_Union[Input, _Mapping]] = ..., initialization: _Optional[_Union[Initialization, str]] = ..., steps: _Optional[int] = ..., frame_every: _Optional[int] = ..., seed: _Optional[int] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., frame_formats: _Optional[_Iterable[_Union[FrameFormat, str]]] = ...) -> None: ...

class MaximizeResponse(_message.Message):
    __slots__ = ("image_index", "unit", "step", "final_frame", "objective_value", "image_png", "image", "predicted_class", "probability")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FINAL_FRAME_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PNG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    unit: int
    step: int
    final_frame: bool
    objective_value: float
    image_png: bytes
    image: Tensor
    predicted_class: int
    probability: float
    def __init__(self, image_index: _Optional[int] = ..., unit: _Optional[int] = ..., step: _Optional[int] = ..., final_frame: bool = ..., objective_value: _Optional[float] = ..., image_png: _Optional[bytes] = ..., image: _Optional[_Union[Tensor, _Mapping]] = ..., predicted_class: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class UnitRef(_message.Message):
    __slots__ = ("layer", "channel")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channel: int
    def __init__(self, layer: _Optional[str] = ..., channel: _Optional[int] = ...) -> None: ...

class EmbedConfig(_message.Message):
    __slots__ = ("model", "layer", "pooling", "projection", "projection_dims", "neighbours", "metric", "top_units", "top_k", "return_vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_DIMS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TOP_UNITS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    pooling: Pooling
    projection: Projection
    projection_dims: int
    neighbours: int
    metric: Metric
    top_units: _containers.RepeatedCompositeFieldContainer[UnitRef]
    top_k: int
    return_vectors: bool
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., projection: _Optional[_Union[Projection, str]] = ..., projection_dims: _Optional[int] = ..., neighbours: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., top_units: _Optional[_Iterable[_Union[UnitRef, _Mapping]]] = ..., top_k: _Optional[int] = ..., return_vectors: bool = ...) -> None: ...

class EmbedItem(_message.Message):
    __slots__ = ("id", "input", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    input: Input
    label: int
    def __init__(self, id: _Optional[str] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., label: _Optional[int] = ...) -> None: ...

class EmbedFinish(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("config", "item", "finish")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    config: EmbedConfig
    item: EmbedItem
    finish: EmbedFinish
    def __init__(self, config: _Optional[_Union[EmbedConfig, _Mapping]] = ..., item: _Optional[_Union[EmbedItem, _Mapping]] = ..., finish: _Optional[_Union[EmbedFinish, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbedVector(_message.Message):
    __slots__ = ("index", "id", "vector", "predicted_class", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    vector: Tensor
    predicted_class: int
    error: ItemError
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., vector: _Optional[_Union[Tensor, _Mapping]] = ..., predicted_class: _Optional[int] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class PatchHit(_message.Message):
    __slots__ = ("index", "id", "activation", "y", "x", "box", "patch_png")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    PATCH_PNG_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    activation: float
    y: int
    x: int
    box: BoundingBox
    patch_png: bytes
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., activation: _Optional[float] = ..., y: _Optional[int] = ..., x: _Optional[int] = ..., box: _Optional[_Union[BoundingBox, _Mapping]] = ..., patch_png: _Optional[bytes] = ...) -> None: ...

class UnitPatches(_message.Message):
    __slots__ = ("unit", "hits")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    unit: UnitRef
    hits: _containers.RepeatedCompositeFieldContainer[PatchHit]
    def __init__(self, unit: _Optional[_Union[UnitRef, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[PatchHit, _Mapping]]] = ...) -> None: ...

class EmbedSummary(_message.Message):
    __slots__ = ("count", "indices", "projection", "neighbour_indices", "neighbour_distances", "top_patches", "complete")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOUR_INDICES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOUR_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    TOP_PATCHES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    count: int
    indices: _containers.RepeatedScalarFieldContainer[int]
    projection: Tensor
    neighbour_indices: Tensor
    neighbour_distances: Tensor
    top_patches: _containers.RepeatedCompositeFieldContainer[UnitPatches]
    complete: bool
    def __init__(self, count: _Optional[int] = ..., indices: _Optional[_Iterable[int]] = ..., projection: _Optional[_Union[Tensor, _Mapping]] = ..., neighbour_indices: _Optional[_Union[Tensor, _Mapping]] = ..., neighbour_distances: _Optional[_Union[Tensor, _Mapping]] = ..., top_patches: _Optional[_Iterable[_Union[UnitPatches, _Mapping]]] = ..., complete: bool = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vector", "summary")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    vector: EmbedVector
    summary: EmbedSummary
    def __init__(self, vector: _Optional[_Union[EmbedVector, _Mapping]] = ..., summary: _Optional[_Union[EmbedSummary, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "arch", "num_classes", "devices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    arch: str
    num_classes: int
    devices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., arch: _Optional[str] = ..., num_classes: _Optional[int] = ..., devices: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "type", "output_shape", "layout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    layout: LayerLayout
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., output_shape: _Optional[_Iterable[int]] = ..., layout: _Optional[_Union[LayerLayout, _Mapping]] = ...) -> None: ...

class LayerLayout(_message.Message):
    __slots__ = ("kind", "channels", "height", "width", "prefix_tokens")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    channels: int
    height: int
    width: int
    prefix_tokens: int
    def __init__(self, kind: _Optional[str] = ..., channels: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., prefix_tokens: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "arch", "num_classes", "input_channels", "input_height", "input_width", "mean", "std", "labels", "layers", "default_layer", "methods", "devices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYER_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    arch: str
    num_classes: int
    input_channels: int
    input_height: int
    input_width: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    labels: _containers.RepeatedScalarFieldContainer[str]
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    default_layer: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    devices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., arch: _Optional[str] = ..., num_classes: _Optional[int] = ..., input_channels: _Optional[int] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., labels: _Optional[_Iterable[str]] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., default_layer: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., devices: _Optional[_Iterable[str]] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MethodParameter(_message.Message):
    __slots__ = ("name", "type", "default_value", "minimum", "maximum", "choices", "help")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default_value: _struct_pb2.Value
    minimum: float
    maximum: float
    choices: _containers.RepeatedScalarFieldContainer[str]
    help: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., choices: _Optional[_Iterable[str]] = ..., help: _Optional[str] = ...) -> None: ...

class SanityCheck(_message.Message):
    __slots__ = ("verdict", "detail")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    detail: str
    def __init__(self, verdict: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "description", "parameters", "needs_target", "uses_layer", "spatial_layer", "needs_gradients", "smoothgrad_base", "sanity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_TARGET_FIELD_NUMBER: _ClassVar[int]
    USES_LAYER_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_LAYER_FIELD_NUMBER: _ClassVar[int]
    NEEDS_GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    SMOOTHGRAD_BASE_FIELD_NUMBER: _ClassVar[int]
    SANITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _containers.RepeatedCompositeFieldContainer[MethodParameter]
    needs_target: bool
    uses_layer: bool
    spatial_layer: bool
    needs_gradients: bool
    smoothgrad_base: bool
    sanity: SanityCheck
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[MethodParameter, _Mapping]]] = ..., needs_target: bool = ..., uses_layer: bool = ..., spatial_layer: bool = ..., needs_gradients: bool = ..., smoothgrad_base: bool = ..., sanity: _Optional[_Union[SanityCheck, _Mapping]] = ...) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ...) -> None: ...
