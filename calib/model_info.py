"""Reading an exported detector: its input, its head output, its layout and identity (sha256)."""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .artifact.interface import HEAD_LAYOUTS, is_patched_metadata
from .errors import DetcalError
from .layouts import LAYOUTS, guess_layout, num_classes_of
from .mask_coeffs import mask_count
from .model_input import InputConvention, read_input_convention

SELECTING_OPS = {"TopK", "NonMaxSuppression"}


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

    @property
    def is_patched(self) -> bool:
        return is_patched_metadata(self.metadata)


def _fits_layout(layout: str, shape: tuple) -> bool:
    """Could an output of this shape be `layout`? (Dynamic dims fit anything.)"""
    if len(shape) != 3:
        return False
    fixed = lambda d, ok: not isinstance(d, int) or ok(d)  # noqa: E731
    if layout == "end2end":
        return fixed(shape[2], lambda d: d == 6)
    if layout == "xywh_cls":
        return fixed(shape[1], lambda d: d > 4)
    if layout == "xywh_obj_cls":
        return fixed(shape[2], lambda d: d > 5)
    return True


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value_info_dims(value_info) -> tuple:
    """An ONNX ValueInfo's shape: ints where fixed, the dim_param string (or None) where dynamic."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
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
    if layout is not None and layout not in LAYOUTS:
        raise DetcalError(f"unknown layout {layout!r}; supported: {', '.join(LAYOUTS)}")
    has_select = any(n.op_type in SELECTING_OPS for n in graph.node)
    names = parse_names(metadata.get("names"))
    hint = num_classes if num_classes is not None else (len(names) if names else None)
    head_outputs, reason, seg_params = None, "", {}
    if not is_patched_metadata(metadata):
        # the layout is decided from the graph, the metadata and a probe (calib.head_recognition)
        from .head_recognition import recognise_head

        rec = recognise_head(model, str(p), layout=layout, num_classes=num_classes)
        if rec.layout in HEAD_LAYOUTS:
            return ModelInfo(
                path=p, sha256=sha256_file(p), input_name=inp.name, input_shape=value_info_dims(inp),
                input_dtype=value_info_dtype(inp), output_name=rec.outputs[0], output_shape=rec.output_shapes[0],
                layout=rec.layout, num_classes=rec.num_classes, class_names=names, metadata=metadata,
                opset=model_opset(model), outputs=list(rec.outputs), head_params=dict(rec.params),
                recognition=rec.reason, input_layout=convention.layout)
        layout, head_outputs, reason, seg_params = rec.layout, set(rec.outputs), rec.reason, dict(rec.params)
        if mask_count(seg_params):     # a seg head: C excludes the M mask coefficient rows
            num_classes = rec.num_classes
    probed = None
    found = []
    for out in graph.output:
        if head_outputs is not None and out.name not in head_outputs:
            continue
        shape = value_info_dims(out)
        if not all(isinstance(d, int) for d in shape[1:]):
            # exporters often leave output dims symbolic: run the model once on zeros to learn them
            probed = probed if probed is not None else _probe_output_shapes(p, inp, metadata, convention)
            if out.name in probed:
                shape = (shape[0],) + tuple(probed[out.name][1:])
        guess = layout or guess_layout(shape, has_topk_or_nms=has_select, num_classes=hint)
        if layout is None and guess is None and hint is not None:
            guess = guess_layout(shape, has_topk_or_nms=has_select)
        if guess is not None and probed and not all(isinstance(d, int) for d in convention.hw(value_info_dims(inp))):
            # a dynamic-size input keeps a dynamic candidate axis, whatever the probe saw
            n_axis = {"xywh_cls": 2, "xywh_obj_cls": 1}.get(guess)
            if n_axis is not None:
                shape = shape[:n_axis] + (value_info_dims(out)[n_axis],) + shape[n_axis + 1:]
        found.append((out, shape, guess))
        if guess is not None:
            break
    out, shape, guess = found[-1]
    if layout is not None and not _fits_layout(layout, shape):
        raise DetcalError(f"{p}: --layout {layout} needs an output {_layout_shapes()[layout]}, but {out.name} is "
                          f"{list(shape)}; leave --layout out to recognise the layout, or pick the matching one")
    if guess is None:
        listing = "; ".join(f"{o.name} {list(s)}" for o, s, _ in found)
        raise DetcalError(
            f"{p}: no output fits a supported layout (found: {listing}); supported: "
            "xywh_cls [B, 4+C, N], xywh_obj_cls [B, N, 5+C], end2end [B, K, 6]; use --layout to choose one"
        )
    opset = model_opset(model)
    return ModelInfo(
        path=p,
        sha256=sha256_file(p),
        input_name=inp.name,
        input_shape=value_info_dims(inp),
        input_dtype=value_info_dtype(inp),
        output_name=out.name,
        output_shape=shape,
        layout=guess,
        num_classes=(num_classes if mask_count(seg_params) else num_classes_of(guess, shape)) or (
            num_classes if guess == "end2end" else None) or (len(names) if guess == "end2end" and names else None),
        class_names=names,
        metadata=metadata,
        opset=opset,
        outputs=[out.name],
        head_params=seg_params if mask_count(seg_params) else {},   # seg heads: mask_coeffs, prototypes
        recognition=reason,
        input_layout=convention.layout,
    )


def _probe_output_shapes(path: Path, inp, metadata: dict, convention: InputConvention) -> dict[str, tuple]:
    """Output name -> concrete shape from one onnxruntime run on a zero image (batch 1); {} on failure."""
    from .session import make_session

    dims = value_info_dims(inp)
    size = metadata_imgsz(metadata) or (640, 640)
    h, w = (d if isinstance(d, int) else fallback for d, fallback in zip(convention.hw(dims), size))
    batch = dims[0] if isinstance(dims[0], int) else 1
    try:
        sess = make_session(path)
        x = convention.feed(np.zeros((batch, 3, h, w), np.float32), str(path))
        outs = sess.run(None, {inp.name: x})
    except Exception:
        return {}
    return {o.name: tuple(int(v) for v in a.shape) for o, a in zip(sess.get_outputs(), outs)}


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


def check_class_count(info: ModelInfo, dataset_names: list[str], data_path: str) -> int:
    """The class count both agree on, or a DetcalError naming both files."""
    n = len(dataset_names)
    if info.num_classes is not None and info.num_classes != n:
        raise DetcalError(
            f"class count mismatch: {info.path} predicts {info.num_classes} classes, "
            f"{data_path} names {n}"
        )
    return n


def _layout_shapes() -> dict:
    from .head_recognition import LAYOUT_SHAPES  # one table of layout shapes, beside the recognition
    return LAYOUT_SHAPES
