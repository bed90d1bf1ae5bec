"""Graph twins of `calib.head_decoders`: the decode of YOLOX raw, GFL multi-level and DETR heads.

    numpy (calib.head_decoders)          graph (this module)
    decode_yolox_raw(raw, hw)            decode_yolox_raw(b, raw, hw)        Slice, Add, Mul, Exp, Concat
    dfl_distances(bins, R)               dfl_distances(b, bins, R)           Reshape, Softmax, MatMul, Reshape
    decode_gfl_multilevel(cls, box, hw)  decode_gfl_multilevel(b, cls, box, hw)  (+ Unsqueeze, Concat, Sub, Add)
    decode_detr(boxes, logits, hw)       decode_detr(b, boxes, logits, hw)   Slice, Mul, Sigmoid
    anchor_points(hw, strides)           anchor_grid(b, hw, strides)         constants, or Range/Expand (dynamic)
    split_gfl_single(raw, hw, s, C)      (Slice of the single output)        Slice
    decode_head(layout, raws, hw)        decode_head(b, layout, raws, hw)

Each returns a `HeadDecode`: boxes [B, N, 4] (cxcywh or xyxy, input px, named by `box_format`),
probs [B, N, C] in [0, 1], and, where the head gives them (DETR), the logits the probabilities
come from, so that logit-affine calibration can work on them exactly.

`input_hw` is either the fixed input size (H, W) - grid and stride constants are then computed
here, at patch time (`calib.head_decoders.anchor_points`: the same float32 values the numpy
decoder uses) - or, for a model with dynamic height/width, the name of an int64 [2] tensor
holding (H, W) at run time (`image_hw`: Shape, Slice of the image input). `anchor_grid` then
builds the same grid in the graph, per level:

    rows, cols   Div (floor, YOLOX) or Add + Div (ceil, GFL) of (H, W) by the stride, int64
    cells        Gather rows / cols, Range(0, n), Cast to float32 (+ the cell offset)
    meshgrid     Unsqueeze + Expand to [rows, cols], Unsqueeze, Concat -> [rows, cols, 2], Reshape [1, -1, 2]
    stride       Expand of the stride to [1, N_l, 1]; levels concatenated (Concat) in stride order

Integer cell indices, offsets 0 or 0.5 and power-of-two strides are exact in float32, so the
run-time grid equals the numpy one bit for bit, at every size. Ops: all on the TensorRT ONNX
parser's list, with onnxruntime CUDA kernels (`onnx_ops.ep_support`); every name starts with
`detcal/`. `boxes_xyxy` converts cxcywh with the reference's arithmetic (half = w / 2; cx -+ half).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from calib.head_decoders import (
    GFL_CELL_OFFSET,
    HEAD_LAYOUTS,
    NANODET_PLUS_CELL_OFFSET,
    YOLOX_STRIDES,
    anchor_points,
    infer_gfl_strides,
    yolox_grid_ceil,
)

from .graph_boxes import cxcywh_to_xyxy
from .graph_builder import FLOAT, GraphBuilder

InputHW = "tuple[int, int] | str"   # a fixed (H, W), or the name of an int64 [2] tensor (H, W) at run time

INT64_MAX = np.iinfo(np.int64).max


@dataclass
class HeadDecode:
    """Decoded head in the graph: boxes [B, N, 4] input px, probs [B, N, C], logits [B, N, C] or None."""

    boxes: str
    box_format: str              # "cxcywh" | "xyxy"
    probs: str
    logits: str | None = None
    class_axis: int = 2          # scores are [B, N, C]


def image_hw(b: GraphBuilder, image: str, channels_last: bool = False) -> str:
    """image [B, 3, H, W] (or [B, H, W, 3]) -> int64 [2] (H, W) at run time: Shape, Slice."""
    start = 1 if channels_last else 2
    shape = b.op("Shape", image, name="decode/image_shape")
    return b.slice(shape, [start], [start + 2], [0], name="decode/image_hw")


def anchor_grid(b: GraphBuilder, input_hw: InputHW, strides: Sequence[int], *, offset: float, ceil: bool,
                tag: str) -> tuple[str, str]:
    """Twin of calib.head_decoders.anchor_points -> (points [1, N, 2] float32 x, y in cell units + offset,
    strides [1, N, 1] float32). input_hw (H, W): constants; a tensor name: built from the run-time size."""
    if not isinstance(input_hw, str):
        grid, stride = anchor_points(input_hw, strides, offset=offset, ceil=ceil)
        return b.f32(f"decode/{tag}_grid", grid[None]), b.f32(f"decode/{tag}_stride", stride[None])
    zero, one = b.i64(f"decode/{tag}_zero", 0), b.i64(f"decode/{tag}_one", 1)
    pts, strs = [], []
    for s in strides:
        t = f"decode/{tag}_s{s}"
        top = b.op("Add", input_hw, b.i64(f"{t}_round", s - 1), name=f"{t}_ceil") if ceil else input_hw
        rc = b.op("Div", top, b.i64(f"{t}_stride_i", s), name=f"{t}_rows_cols")          # int64 [2]
        axis = []
        for k, which in ((0, "rows"), (1, "cols")):
            n = b.op("Gather", rc, b.i64(f"{t}_{which}_at", k), name=f"{t}_{which}", axis=0)   # scalar
            v = b.cast(b.op("Range", zero, n, one, name=f"{t}_{which}_range"), FLOAT, name=f"{t}_{which}_f32")
            axis.append(b.op("Add", v, b.f32(f"{t}_offset", offset), name=f"{t}_{which}_cells") if offset else v)
        ys, xs = axis
        xx = b.op("Expand", b.unsqueeze(xs, [0], name=f"{t}_x_row"), rc, name=f"{t}_xx")        # [rows, cols]
        yy = b.op("Expand", b.unsqueeze(ys, [1], name=f"{t}_y_col"), rc, name=f"{t}_yy")
        xy = b.op("Concat", b.unsqueeze(xx, [2], name=f"{t}_xx3"), b.unsqueeze(yy, [2], name=f"{t}_yy3"),
                  name=f"{t}_xy", axis=2)
        p = b.op("Reshape", xy, b.i64(f"{t}_points_shape", [1, -1, 2]), name=f"{t}_points")   # [1, N_l, 2]
        col = b.op("Shape", b.slice(p, [0], [1], [2], name=f"{t}_x_only"), name=f"{t}_n_shape")  # [1, N_l, 1]
        strs.append(b.op("Expand", b.f32(f"{t}_stride", np.full((1, 1, 1), s, np.float32)), col, name=f"{t}_strides"))
        pts.append(p)
    if len(strides) == 1:
        return pts[0], strs[0]
    return (b.op("Concat", *pts, name=f"decode/{tag}_grid", axis=1),
            b.op("Concat", *strs, name=f"decode/{tag}_stride", axis=1))


def decode_yolox_raw(b: GraphBuilder, raw: str, input_hw: InputHW,
                     strides: Sequence[int] = YOLOX_STRIDES, num_anchors: int | None = None) -> HeadDecode:
    """raw [B, N, 5+C] -> HeadDecode (cxcywh): xy = (xy + grid) * s, wh = exp(wh) * s, probs = obj * cls.

    Floor grids, or ceil where the fixed N says so (calib.head_decoders.yolox_grid_ceil); a dynamic
    size gets ceil grids (what YOLOX's stride-2 convolutions give; floor = ceil at multiples of 32)."""
    ceil = True if isinstance(input_hw, str) else yolox_grid_ceil(num_anchors, input_hw, strides)
    g, s = anchor_grid(b, input_hw, strides, offset=0.0, ceil=ceil, tag="yolox")
    xy = b.op("Mul", b.op("Add", b.slice(raw, [0], [2], [2], name="decode/xy_offset"), g, name="decode/xy_cells"),
              s, name="decode/xy")
    wh = b.op("Mul", b.op("Exp", b.slice(raw, [2], [4], [2], name="decode/log_wh"), name="decode/wh_cells"),
              s, name="decode/wh")
    boxes = b.op("Concat", xy, wh, name="decode/boxes_cxcywh", axis=2)
    obj = b.slice(raw, [4], [5], [2], name="decode/objectness")
    cls = b.slice(raw, [5], [INT64_MAX], [2], name="decode/class_probs")
    return HeadDecode(boxes, "cxcywh", b.op("Mul", obj, cls, name="decode/scores"))


def dfl_distances(b: GraphBuilder, bins: str, reg_max: int) -> str:
    """bins [B, N, 4 (R+1)] -> expected distance per side [B, N, 4] in bin units (softmax over bins, . k)."""
    x = b.op("Reshape", bins, b.i64("decode/dfl_shape", [0, -1, 4, reg_max + 1]), name="decode/dfl_bins")
    p = b.op("Softmax", x, name="decode/dfl_softmax", axis=-1 if b.opset >= 13 else 3)
    proj = b.f32("decode/dfl_project", np.arange(reg_max + 1, dtype=np.float32).reshape(-1, 1))
    d = b.op("MatMul", p, proj, name="decode/dfl_expect")
    return b.op("Reshape", d, b.i64("decode/dist_shape", [0, -1, 4]), name="decode/dfl_dist")


def gfl_centres(b: GraphBuilder, input_hw: InputHW, strides: Sequence[int], cell_offset: float) -> tuple[str, str]:
    """Anchor centres [1, N, 2] px ((cells + offset) * s, ceil grids) and strides [1, N, 1]."""
    if not isinstance(input_hw, str):
        pts, strs = [], []
        for s in strides:
            p, st = anchor_points(input_hw, [s], offset=cell_offset, ceil=True)
            pts.append(p * st)
            strs.append(st)
        return (b.f32("decode/gfl_centre", np.concatenate(pts)[None]),
                b.f32("decode/gfl_stride", np.concatenate(strs)[None]))
    cells, stride = anchor_grid(b, input_hw, strides, offset=cell_offset, ceil=True, tag="gfl")
    return b.op("Mul", cells, stride, name="decode/gfl_centre"), stride


def decode_gfl_multilevel(b: GraphBuilder, cls_levels: Sequence[str], box_levels: Sequence[str],
                          input_hw: InputHW, counts: Sequence[int] | None, reg_max: int,
                          strides: Sequence[int] | None = None, cell_offset: float = GFL_CELL_OFFSET,
                          batch_axis: bool = True) -> HeadDecode:
    """Per level cls [B, N_l, C] + DFL bins [B, N_l, 4 (R+1)] -> HeadDecode (xyxy, N = sum N_l).

    counts: N_l per level (the recognised output shapes; only read when `strides` is None);
    batch_axis False: outputs are [N_l, .] and get a batch axis of 1 (Unsqueeze). One class map
    and one box map covering all levels (a split single output) decode the same way.
    """
    if strides is None and not isinstance(input_hw, str):
        strides = infer_gfl_strides(counts, input_hw)
    if strides is None:
        raise ValueError(f"gfl_multilevel level sizes {list(counts or [])} fit no strides at input {input_hw}")
    strides = tuple(strides)
    if not batch_axis:
        cls_levels = [b.unsqueeze(c, [0], name="decode/cls_batch") for c in cls_levels]
        box_levels = [b.unsqueeze(x, [0], name="decode/box_batch") for x in box_levels]
    centre, stride = gfl_centres(b, input_hw, strides, cell_offset)
    cat = lambda xs, tag: xs[0] if len(xs) == 1 else b.op("Concat", *xs, name=tag, axis=1)  # noqa: E731
    probs = cat(list(cls_levels), "decode/scores")
    dist = b.op("Mul", dfl_distances(b, cat(list(box_levels), "decode/dfl_levels"), reg_max), stride,
                name="decode/dist_px")
    lt = b.slice(dist, [0], [2], [2], name="decode/dist_lt")
    rb = b.slice(dist, [2], [4], [2], name="decode/dist_rb")
    boxes = b.op("Concat", b.op("Sub", centre, lt, name="decode/xy1"), b.op("Add", centre, rb, name="decode/xy2"),
                 name="decode/boxes_xyxy", axis=2)
    return HeadDecode(boxes, "xyxy", probs)


def decode_gfl_single(b: GraphBuilder, raw: str, input_hw: InputHW, num_classes: int, reg_max: int,
                      strides: Sequence[int], cell_offset: float = NANODET_PLUS_CELL_OFFSET,
                      batch_axis: bool = True) -> HeadDecode:
    """NanoDet(-Plus) single output [B, N, C + 4 (R+1)] -> HeadDecode (xyxy): Slice into the class
    columns and the DFL bins (levels are already concatenated in stride order), then as multi-level."""
    cls = b.slice(raw, [0], [num_classes], [-1], name="decode/single_cls")
    box = b.slice(raw, [num_classes], [INT64_MAX], [-1], name="decode/single_bins")
    return decode_gfl_multilevel(b, [cls], [box], input_hw, None, reg_max, strides, cell_offset, batch_axis)


def decode_detr(b: GraphBuilder, boxes_or_raw: str, logits: str | None, input_hw: InputHW, *,
                scores_are_logits: bool = True) -> HeadDecode:
    """boxes [B, Q, 4] (+ logits [B, Q, C]) or raw [B, Q, 4+C], normalised cxcywh -> HeadDecode (cxcywh px)."""
    if logits is None:
        norm = b.slice(boxes_or_raw, [0], [4], [2], name="decode/boxes_norm")
        logits = b.slice(boxes_or_raw, [4], [INT64_MAX], [2], name="decode/class_cols")
    else:
        norm = boxes_or_raw
    if isinstance(input_hw, str):       # (W, H, W, H) float32 from the run-time (H, W)
        scale = b.op("Gather", b.cast(input_hw, FLOAT, name="decode/detr_hw_f32"),
                     b.i64("decode/detr_whwh", [1, 0, 1, 0]), name="decode/detr_scale", axis=0)
    else:
        h, w = float(input_hw[0]), float(input_hw[1])
        scale = b.f32("decode/detr_scale", np.array([w, h, w, h], np.float32))
    boxes = b.op("Mul", norm, scale, name="decode/boxes_cxcywh")
    if scores_are_logits:
        return HeadDecode(boxes, "cxcywh", b.op("Sigmoid", logits, name="decode/scores"), logits=logits)
    return HeadDecode(boxes, "cxcywh", logits)


def decode_head(b: GraphBuilder, layout: str, raws: Sequence[str], input_hw: InputHW, **params) -> HeadDecode:
    """Twin of calib.head_decoders.decode_head; raws are tensor names in the recognised order.

    gfl_multilevel needs params `counts` (N_l per level) and `reg_max`; optional `strides`,
    `cell_offset`, `batch_axis`; a single output: `single_output`, `num_classes`, `strides`.
    yolox_raw: `strides`, `num_anchors` (a fixed N: floor or ceil grids). detr: `scores_are_logits`.
    input_hw: (H, W), or an int64 [2] tensor name (dynamic sizes).
    """
    if layout == "yolox_raw":
        return decode_yolox_raw(b, raws[0], input_hw, params.get("strides") or YOLOX_STRIDES, params.get("num_anchors"))
    if layout == "gfl_multilevel" and params.get("single_output"):
        return decode_gfl_single(b, raws[0], input_hw, int(params["num_classes"]), int(params["reg_max"]),
                                 tuple(params.get("strides") or (8, 16, 32, 64)),
                                 params.get("cell_offset", NANODET_PLUS_CELL_OFFSET), params.get("batch_axis", True))
    if layout == "gfl_multilevel":
        half = len(raws) // 2
        return decode_gfl_multilevel(b, raws[:half], raws[half:], input_hw, params.get("counts"), params["reg_max"],
                                     params.get("strides"), params.get("cell_offset", GFL_CELL_OFFSET),
                                     params.get("batch_axis", True))
    if layout == "detr":
        return decode_detr(b, raws[0], raws[1] if len(raws) > 1 else None, input_hw,
                           scores_are_logits=params.get("scores_are_logits", True))
    raise ValueError(f"unknown head layout {layout!r}; these builders handle {', '.join(HEAD_LAYOUTS)}")


def boxes_xyxy(b: GraphBuilder, dec: HeadDecode) -> str:
    """HeadDecode boxes -> [B, N, 4] xyxy (cxcywh converted as calib.boxes.cxcywh_to_xyxy does)."""
    if dec.box_format == "xyxy":
        return dec.boxes
    return cxcywh_to_xyxy(b, dec.boxes, 2, "decode/boxes")


def decode_for_patch(b: GraphBuilder, head) -> "Dense":
    """The decode step of the patched graph for a HEAD_LAYOUTS head (`onnx_ops.head.Head`):
    every head output cast to float32, decoded -> `graph_types.Dense` (class_axis 2, probs [B, N, C],
    boxes [B, N, 4] in `box_format`). A model with dynamic height/width (head.input_hw None) gets
    its grid from the run-time shape of its image input (`image_hw`, `anchor_grid`).
    Probabilities only (no logits tap): the graph then computes
    exactly what calib.pipeline computes from the same decoded batch."""
    from .graph_types import Dense
    from .steps import to_float32

    raws = [to_float32(b, name, elem, f"decode/head{i}_f32") for i, (name, elem) in enumerate(zip(head.outputs, head.elem_types))]
    hw = head.input_hw if head.input_hw is not None else image_hw(b, head.image_input, head.channels_last)
    params = dict(head.params)
    if head.layout == "yolox_raw" and head.n_static:
        params["num_anchors"] = head.n_static          # floor or ceil grids, decided by N
    dec = decode_head(b, head.layout, raws, hw, **params)
    return Dense(dec.boxes, dec.probs, class_axis=2, box_format=dec.box_format)
