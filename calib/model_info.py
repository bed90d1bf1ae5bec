"""Reading an exported detector: its input, its head output, its layout and identity (sha256)."""
from __future__ import annotations

import ast
import hashlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .artifact.interface import HEAD_LAYOUTS, is_patched_metadata
from .errors import DetcalError
from .layouts import num_classes_of
from .mask_coeffs import mask_count
from .model_input import InputConvention, read_input_convention

@dataclass
class ModelInfo:
    path: Path
    sha256: str
    input_name: str
    input_shape: tuple          # as declared, e.g. (1, 3, 640, 640), ('batch', 3, 'height', 'width') or (1, 640, 640, 3)
    input_dtype: str            # 'float32' | 'float16' | 'uint8'
    output_name: str
    output_shape: tuple
    layout: str
    num_classes: int | None     # None where the layout does not fix it (end2end)
    class_names: list[str] | None = None   # from Ultralytics metadata `names`, if present
    metadata: dict = field(default_factory=dict)
    opset: int = 0
    outputs: list[str] = field(default_factory=list)   # the head's outputs in decode order (several for gfl/detr)
    head_params: dict = field(default_factory=dict)    # decode parameters of HEAD_LAYOUTS (strides, reg_max, ...)
    recognition: str = ""                             # why this layout (calib.head_recognition), for inspect/reports
    input_layout: str = "NCHW"                        # 'NCHW' | 'NHWC' (calib.model_input)
    batch_coupled: bool = False                       # an image's outputs depend on its batch (BATCH_COUPLED_OPS)

    @property
    def input_convention(self) -> InputConvention:
        """What the image input takes; its `feed` converts detcal's float NCHW x to it."""
        return InputConvention(self.input_dtype, self.input_layout)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) where fixed, else None (dynamic spatial axes)."""
        h, w = self.input_convention.hw(self.input_shape)
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)


# ops that scale an activation by statistics of the whole tensor, batch included: an image's outputs then
# depend on the other images run with it (onnxruntime's dynamic quantization, and the fused form its
# optimizer makes of it)
BATCH_COUPLED_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul"})


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value_info_dims(value_info) -> tuple:
    """An ONNX ValueInfo's shape: ints where fixed, the dim_param string (or None) where dynamic (a
    dim_value of 0 or -1, which some exporters write for "unknown", too)."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None))
    return tuple(dims)


def value_info_dtype(value_info) -> str:
    """An ONNX ValueInfo's element type as a numpy dtype name ('float32', 'float16', ...)."""
    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of a model (1 if absent, per the ONNX spec)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def parse_names(text: str | None) -> list[str] | None:
    """Ultralytics' `names` metadata ("{0: 'person', 1: 'bicycle'}") -> list, or None."""
    if not text:
        return None
    try:
        obj = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(obj, dict):
        return [str(obj[k]) for k in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [str(v) for v in obj]
    return None


def check_model_path(path: str | Path) -> Path:
    """The one check every command makes before reading a model file: it exists, is a file
    (not a directory) and is not empty. DetcalError (one line, naming it) otherwise."""
    p = Path(path)
    if not p.exists():
        raise DetcalError(f"model file not found: {p}")
    if p.is_dir():
        raise DetcalError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise DetcalError(f"{p}: empty file (0 bytes), expected an ONNX model")
    return p


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file (with external data), or raise a one-line DetcalError naming it."""
    p = check_model_path(path)
    try:
        return onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError, google.protobuf errors, OSError...
        raise DetcalError(f"cannot read {p} as an ONNX model ({type(exc).__name__}); is the file complete?") from None


def read_model_info(
    path: str | Path, *, layout: str | None = None, num_classes: int | None = None, model: onnx.ModelProto | None = None,
    input_layout: str | None = None,
) -> ModelInfo:
    """Inspect an exported detector. layout: override the recognised one; num_classes: a hint
    (usually the dataset's class count) to disambiguate shapes; input_layout: 'NCHW' | 'NHWC'
    where the declared dims leave it open (calib.model_input.read_input_convention)."""
    p = Path(path)
    model = model if model is not None else load_onnx(p)
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) < 1:
        raise DetcalError(f"{p}: the model has no image input")
    image_inputs = [i for i in inputs if len(value_info_dims(i)) == 4]
    if not image_inputs:
        shapes = ", ".join(f"{i.name} {list(value_info_dims(i))}" for i in inputs)
        raise DetcalError(f"{p}: no 4-D image input [B, 3, H, W] or [B, H, W, 3] found (inputs: {shapes})")
    inp = image_inputs[0]
    metadata = {m.key: m.value for m in model.metadata_props}
    convention = read_input_convention(value_info_dims(inp), value_info_dtype(inp), metadata=metadata,
                                       layout=input_layout, source=str(p), name=inp.name)
    if is_patched_metadata(metadata):      # its outputs are final detections: there is no head to read
        outs = "; ".join(f"{o.name} {list(value_info_dims(o))}" for o in graph.output)
        raise DetcalError(f"{p} is already patched by detcal, its outputs are final detections ({outs}); "
                          "pass the raw exported model")
    # the layout is decided from the graph, the metadata and a probe (calib.head_recognition), which
    # also checks a --layout override against the shapes and names what fits when nothing does
    from .head_recognition import recognise_head

    rec = recognise_head(model, str(p), layout=layout, num_classes=num_classes)
    names = parse_names(metadata.get("names"))
    common = dict(path=p, sha256=sha256_file(p), input_name=inp.name, input_shape=value_info_dims(inp),
                  input_dtype=value_info_dtype(inp), class_names=names, metadata=metadata, opset=model_opset(model),
                  outputs=list(rec.outputs), recognition=rec.reason, input_layout=convention.layout,
                  batch_coupled=any(n.op_type in BATCH_COUPLED_OPS for n in graph.node))
    if rec.layout in HEAD_LAYOUTS:
        return ModelInfo(**common, output_name=rec.outputs[0], output_shape=rec.output_shapes[0], layout=rec.layout,
                         num_classes=rec.num_classes, head_params=dict(rec.params))
    out = next(o for o in graph.output if o.name == rec.outputs[0])
    shape = _dense_output_shape(value_info_dims(out), rec.output_shapes[0], rec.layout,
                                dynamic_hw=not all(isinstance(d, int) for d in convention.hw(value_info_dims(inp))))
    seg = mask_count(rec.params)      # a seg head: C excludes the M mask coefficient rows
    if seg:
        nc = rec.num_classes
    elif rec.layout == "end2end":      # the shape does not fix C: the hint, else the metadata's names
        nc = num_classes or (len(names) if names else None)
    else:
        nc = num_classes_of(rec.layout, shape)
    return ModelInfo(**common, output_name=out.name, output_shape=shape, layout=rec.layout, num_classes=nc,
                     head_params=dict(rec.params) if seg else {})    # seg heads: mask_coeffs, prototypes


def _dense_output_shape(declared: tuple, recognised: tuple, layout: str, *, dynamic_hw: bool) -> tuple:
    """A dense head's output shape as ModelInfo records it: the declared dims, with dynamic non-batch
    dims taken from the recognition's probe run (`recognised`); the batch axis stays as declared, and
    so does the candidate axis N where the input's height/width are dynamic (N follows the size fed).
    An output declared without a shape counts as all dims dynamic."""
    if not declared:
        declared = (None,) * len(recognised)
    if all(isinstance(d, int) for d in declared[1:]) or len(recognised) != len(declared):
        return declared
    shape = (declared[0],) + tuple(recognised[1:])
    n_axis = {"xywh_cls": 2, "xywh_obj_cls": 1}.get(layout)
    if dynamic_hw and n_axis is not None:
        shape = shape[:n_axis] + (declared[n_axis],) + shape[n_axis + 1:]
    return shape


def metadata_imgsz(metadata: dict) -> tuple[int, int] | None:
    """Ultralytics' `imgsz` metadata ("[640, 640]") -> (H, W), or None."""
    text = metadata.get("imgsz")
    if not text:
        return None
    try:
        vals = [int(v) for v in str(text).strip("[]() ").split(",") if v.strip()]
    except ValueError:
        return None
    return (vals[0], vals[-1]) if vals else None


def reorder_to_model_names(dataset, info: ModelInfo):
    """The data set with its class ids renumbered to the model's own order where the model's `names`
    metadata holds the same names in another order (a COCO JSON whose category ids sort otherwise,
    a classes.txt written in another order): the model's class k is the name it calls k. Else the
    data set as it is. The renumbering is recorded in dataset.report.class_order."""
    model_names, names = info.class_names, list(dataset.names)
    if not model_names or model_names == names or sorted(model_names) != sorted(names) \
            or len(set(names)) != len(names):
        return dataset
    to_model = np.array([model_names.index(n) for n in names], np.int64)
    samples = [dataclasses.replace(s, gt_classes=to_model[s.gt_classes], crowd_classes=to_model[s.crowd_classes])
               for s in dataset.samples]
    moved = [f"{n} {i}->{to_model[i]}" for i, n in enumerate(names) if to_model[i] != i]
    report = dataclasses.replace(dataset.report, class_order=(
        f"classes renumbered to the model's names order ({', '.join(moved[:6])}{', ...' if len(moved) > 6 else ''})"))
    return dataclasses.replace(dataset, names=list(model_names), samples=samples, report=report)


def classes_for_model(info: ModelInfo, dataset, data_path: str):
    """-> (the data set in the model's class order (reorder_to_model_names), the class count both
    agree on (check_class_count)): where a model meets its data set, in fit, eval and doctor."""
    dataset = reorder_to_model_names(dataset, info)
    return dataset, check_class_count(info, dataset.names, data_path)


def check_class_count(info: ModelInfo, dataset_names: list[str], data_path: str) -> int:
    """The class count both agree on, or a DetcalError naming both files."""
    n = len(dataset_names)
    if info.num_classes is not None and info.num_classes != n:
        raise DetcalError(
            f"class count mismatch: {info.path} predicts {info.num_classes} classes, "
            f"{data_path} names {n}"
        )
    return n
