"""Recognising the detector head in a graph and choosing where the inserted part taps it.

`calib.model_info.read_model_info` names the layout and the head output; this module looks at
the nodes that produce it. For `xywh_cls` heads exported as Concat(boxes, Sigmoid(logits)) on
the channel axis (Ultralytics YOLOv8/11), the inserted part reads the boxes, the Sigmoid's
output (probabilities, for the exact raw-threshold test) and the Sigmoid's input (logits, so
that logit-affine calibration is sigmoid(a * logit + b) exactly, with no logit(clip(p)) round
trip). The head's Concat is then dead and is pruned with the old output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

from calib.artifact import HEAD_LAYOUTS
from calib.errors import DetcalError
from calib.mask_coeffs import PROTOTYPES, mask_count
from calib.model_info import ModelInfo, value_info_dims

from .masks import SegTaps, tap_seg_head


@dataclass
class Head:
    layout: str
    output: str                 # the raw head output tensor
    elem_type: int              # its element type (FLOAT, FLOAT16, ...)
    num_classes: int
    n_static: int | None        # N anchors (K for end2end) when fixed, else None
    batch_dim: object           # the head output's batch dimension: an int only where the image input fixes it too
                                # (head_batch), else str or None
    boxes: str | None = None    # sigmoid-front taps: [B, 4, N] cxcywh
    probs: str | None = None    # [B, C, N] Sigmoid output
    logits: str | None = None   # [B, C, N] Sigmoid input
    outputs: list[str] = field(default_factory=list)   # HEAD_LAYOUTS: every head output, in decode order
    params: dict = field(default_factory=dict)         # HEAD_LAYOUTS: decode parameters (strides, reg_max, ...)
    input_hw: tuple[int, int] | None = None            # HEAD_LAYOUTS: the size the grid constants are built for
    elem_types: list[int] = field(default_factory=list)
    seg: SegTaps | None = None                          # seg heads: the M mask coefficient rows (onnx_ops.masks)
    image_input: str | None = None                     # HEAD_LAYOUTS, input_hw None: the grid follows its run-time H, W
    channels_last: bool = False

    @property
    def sigmoid_front(self) -> bool:
        return self.logits is not None


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot handle: taps are then checked less
        inferred = model
    g = inferred.graph
    return {vi.name: value_info_dims(vi) for vi in list(g.value_info) + list(g.output) + list(g.input)}


def head_batch(info: ModelInfo, dim) -> object:
    """The head output's batch dim `dim` as a build-time int only where the image input declares the
    same fixed batch (an output's declared shape alone can be stale: onnxruntime runs other batches
    with a warning); otherwise None (dynamic)."""
    if not isinstance(dim, int):
        return dim
    return dim if not info.dynamic_batch and info.input_shape[0] == dim else None


def _fits(shape: tuple | None, axis: int, want: int) -> bool:
    if shape is None or len(shape) != 3:
        return shape is None
    v = shape[axis]
    return not isinstance(v, int) or v == want


def find_head(model: onnx.ModelProto, info: ModelInfo, num_classes: int, source: str = "model") -> Head:
    """The head of a recognised model, with sigmoid-front taps where the graph has them."""
    if info.layout in HEAD_LAYOUTS:
        return _undecoded_head(model, info, num_classes, source)
    graph = model.graph
    out_vi = next(o for o in graph.output if o.name == info.output_name)
    elem = out_vi.type.tensor_type.elem_type
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
        raise DetcalError(f"{source}: head output {info.output_name} has a non-float type "
                          f"({TensorProto.DataType.Name(elem)})")
    shape = info.output_shape
    layout = info.layout
    masks = mask_count(info.head_params) if layout == "xywh_cls" else 0
    if layout == "xywh_cls":
        want, n = 4 + num_classes + masks, shape[2]
        if isinstance(shape[1], int) and shape[1] != want:
            raise DetcalError(f"{source}: head output {info.output_name} {list(shape)} has {shape[1]} channels, "
                              f"the calibration expects 4 + {num_classes} classes"
                              + (f" + {masks} mask coefficients" if masks else ""))
    elif layout == "xywh_obj_cls":
        want, n = 5 + num_classes, shape[1]
        if isinstance(shape[2], int) and shape[2] != want:
            raise DetcalError(f"{source}: head output {info.output_name} {list(shape)} has {shape[2]} columns, "
                              f"the calibration expects 5 + {num_classes} classes")
    else:
        n = shape[1]
        if isinstance(shape[2], int) and shape[2] != 6:
            raise DetcalError(f"{source}: end2end head output {info.output_name} must be [B, K, 6], got {list(shape)}")
    head = Head(layout, info.output_name, elem, num_classes, n if isinstance(n, int) else None,
                head_batch(info, shape[0]))
    if layout == "xywh_cls":
        shapes = _known_shapes(model)
        if masks:       # seg head: read the detection rows apart from the mask coefficients
            head.output, head.seg = tap_seg_head(graph, info.output_name, masks, num_classes, shapes)
            head.seg.prototypes = info.head_params.get(PROTOTYPES)
        _tap_sigmoid_front(graph, head, shapes)
    return head


def _tap_sigmoid_front(graph: onnx.GraphProto, head: Head, shapes: dict) -> None:
    producers = {o: n for n in graph.node for o in n.output}
    concat = producers.get(head.output)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != (3 if head.seg is not None
                                                                             and head.seg.in_output else 2):
        return       # Concat(boxes, Sigmoid) or, seg heads, Concat(boxes, Sigmoid, mask coefficients)
    axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
    if axis not in (1, -2):
        return
    sig = producers.get(concat.input[1])
    if sig is None or sig.op_type != "Sigmoid":
        return
    if not (_fits(shapes.get(concat.input[0]), 1, 4) and _fits(shapes.get(sig.output[0]), 1, head.num_classes)):
        return
    head.boxes, head.probs, head.logits = concat.input[0], sig.output[0], sig.input[0]


def _undecoded_head(model: onnx.ModelProto, info: ModelInfo, num_classes: int, source: str) -> Head:
    """yolox_raw / gfl_multilevel / detr: several outputs, decoded by onnx_ops.decode_graph."""
    by_name = {o.name: o for o in model.graph.output}
    elems = []
    for name in info.outputs:
        elem = by_name[name].type.tensor_type.elem_type
        if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            raise DetcalError(f"{source}: head output {name} has a non-float type ({TensorProto.DataType.Name(elem)})")
        elems.append(elem)
    if info.num_classes is not None and info.num_classes != num_classes:
        raise DetcalError(f"{source}: the {info.layout} head predicts {info.num_classes} classes, "
                          f"the calibration expects {num_classes}")
    hw = info.input_size          # None (dynamic height/width): the decode graph builds the grid at run time
    shape = info.output_shape
    if hw is None:
        n, batch = None, shape[0] if info.head_params.get("batch_axis", True) else 1
    elif info.layout == "gfl_multilevel":
        n = sum(info.head_params["counts"])
        batch = shape[0] if info.head_params.get("batch_axis", True) else 1
    else:
        n, batch = shape[1], shape[0]
    return Head(info.layout, info.outputs[0], elems[0], num_classes, n if isinstance(n, int) else None,
                head_batch(info, batch),
                outputs=list(info.outputs), params=dict(info.head_params), input_hw=tuple(hw) if hw else None,
                elem_types=elems, image_input=info.input_name, channels_last=info.input_layout == "NHWC")
