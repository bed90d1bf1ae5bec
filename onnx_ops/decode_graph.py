"""Graph twins of `calib.head_decoders`: the decode of YOLOX raw, GFL multi-level and DETR heads.

    numpy (calib.head_decoders)          graph (this module)
    decode_yolox_raw(raw, hw)            decode_yolox_raw(b, raw, hw)        Slice, Add, Mul, Exp, Concat
    dfl_distances(bins, R)               dfl_distances(b, bins, R)           Reshape, Softmax, MatMul, Reshape
    decode_gfl_multilevel(cls, box, hw)  decode_gfl_multilevel(b, cls, box, hw)  (+ Unsqueeze, Concat, Sub, Add)
    decode_detr(boxes, logits, hw)       decode_detr(b, boxes, logits, hw)   Slice, Mul, Sigmoid
    decode_head(layout, raws, hw)        decode_head(b, layout, raws, hw)

Each returns a `HeadDecode`: boxes [B, N, 4] (cxcywh or xyxy, input px, named by `box_format`),
probs [B, N, C] in [0, 1], and, where the head gives them (DETR), the logits the probabilities
come from, so that logit-affine calibration can work on them exactly. Grid and stride constants
are computed here, from the input size, at patch time (`calib.head_decoders.anchor_points`: the
same float32 values the numpy decoder uses). Ops: all on the TensorRT ONNX parser's list, with
onnxruntime CUDA kernels (`onnx_ops.ep_support`); every name starts with `detcal/`.
`boxes_xyxy` converts cxcywh with the reference's arithmetic (half = w / 2; cx -+ half).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from calib.head_decoders import (
    GFL_CELL_OFFSET,
    HEAD_LAYOUTS,
    YOLOX_STRIDES,
    anchor_points,
    infer_gfl_strides,
)

from .graph_builder import GraphBuilder

INT64_MAX = np.iinfo(np.int64).max


@dataclass
class HeadDecode:
    """Decoded head in the graph: boxes [B, N, 4] input px, probs [B, N, C], logits [B, N, C] or None."""

    boxes: str
    box_format: str              # "cxcywh" | "xyxy"
    probs: str
    logits: str | None = None
    class_axis: int = 2          # scores are [B, N, C]


def decode_yolox_raw(b: GraphBuilder, raw: str, input_hw: tuple[int, int],
                     strides: Sequence[int] = YOLOX_STRIDES) -> HeadDecode:
    """raw [B, N, 5+C] -> HeadDecode (cxcywh): xy = (xy + grid) * s, wh = exp(wh) * s, probs = obj * cls."""
    grid, stride = anchor_points(input_hw, strides, offset=0.0, ceil=False)
    g = b.f32("decode/yolox_grid", grid[None])
    s = b.f32("decode/yolox_stride", stride[None])
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


def decode_gfl_multilevel(b: GraphBuilder, cls_levels: Sequence[str], box_levels: Sequence[str],
                          input_hw: tuple[int, int], counts: Sequence[int], reg_max: int,
                          strides: Sequence[int] | None = None, cell_offset: float = GFL_CELL_OFFSET,
                          batch_axis: bool = True) -> HeadDecode:
    """Per level cls [B, N_l, C] + DFL bins [B, N_l, 4 (R+1)] -> HeadDecode (xyxy, N = sum N_l).

    counts: N_l per level (the recognised output shapes); batch_axis False: outputs are [N_l, .]
    and get a batch axis of 1 (Unsqueeze).
    """
    strides = tuple(strides) if strides is not None else infer_gfl_strides(counts, input_hw)
    if strides is None:
        raise ValueError(f"gfl_multilevel level sizes {list(counts)} fit no strides at input {input_hw}")
    if not batch_axis:
        cls_levels = [b.unsqueeze(c, [0], name="decode/cls_batch") for c in cls_levels]
        box_levels = [b.unsqueeze(x, [0], name="decode/box_batch") for x in box_levels]
    pts, strs = [], []
    for s in strides:
        p, st = anchor_points(input_hw, [s], offset=cell_offset, ceil=True)
        pts.append(p * st)
        strs.append(st)
    centre = b.f32("decode/gfl_centre", np.concatenate(pts)[None])
    stride = b.f32("decode/gfl_stride", np.concatenate(strs)[None])
    cat = lambda xs, tag: xs[0] if len(xs) == 1 else b.op("Concat", *xs, name=tag, axis=1)  # noqa: E731
    probs = cat(list(cls_levels), "decode/scores")
    dist = b.op("Mul", dfl_distances(b, cat(list(box_levels), "decode/dfl_levels"), reg_max), stride,
                name="decode/dist_px")
    lt = b.slice(dist, [0], [2], [2], name="decode/dist_lt")
    rb = b.slice(dist, [2], [4], [2], name="decode/dist_rb")
    boxes = b.op("Concat", b.op("Sub", centre, lt, name="decode/xy1"), b.op("Add", centre, rb, name="decode/xy2"),
                 name="decode/boxes_xyxy", axis=2)
    return HeadDecode(boxes, "xyxy", probs)


def decode_detr(b: GraphBuilder, boxes_or_raw: str, logits: str | None, input_hw: tuple[int, int], *,
                scores_are_logits: bool = True) -> HeadDecode:
    """boxes [B, Q, 4] (+ logits [B, Q, C]) or raw [B, Q, 4+C], normalised cxcywh -> HeadDecode (cxcywh px)."""
    h, w = float(input_hw[0]), float(input_hw[1])
    if logits is None:
        norm = b.slice(boxes_or_raw, [0], [4], [2], name="decode/boxes_norm")
        logits = b.slice(boxes_or_raw, [4], [INT64_MAX], [2], name="decode/class_cols")
    else:
        norm = boxes_or_raw
    boxes = b.op("Mul", norm, b.f32("decode/detr_scale", np.array([w, h, w, h], np.float32)),
                 name="decode/boxes_cxcywh")
    if scores_are_logits:
        return HeadDecode(boxes, "cxcywh", b.op("Sigmoid", logits, name="decode/scores"), logits=logits)
    return HeadDecode(boxes, "cxcywh", logits)


def decode_head(b: GraphBuilder, layout: str, raws: Sequence[str], input_hw: tuple[int, int], **params) -> HeadDecode:
    """Twin of calib.head_decoders.decode_head; raws are tensor names in the recognised order.

    gfl_multilevel needs params `counts` (N_l per level) and `reg_max`; optional `strides`,
    `cell_offset`, `batch_axis`. detr: `scores_are_logits`.
    """
    if layout == "yolox_raw":
        return decode_yolox_raw(b, raws[0], input_hw, params.get("strides") or YOLOX_STRIDES)
    if layout == "gfl_multilevel":
        half = len(raws) // 2
        return decode_gfl_multilevel(b, raws[:half], raws[half:], input_hw, params["counts"], params["reg_max"],
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
    centre = b.slice(dec.boxes, [0], [2], [2], name="decode/centre")
    half = b.op("Div", b.slice(dec.boxes, [2], [4], [2], name="decode/size"), b.f32("decode/two", 2.0),
                name="decode/half")
    return b.op("Concat", b.op("Sub", centre, half, name="decode/x1y1"), b.op("Add", centre, half, name="decode/x2y2"),
                name="decode/boxes_to_xyxy", axis=2)


def decode_for_patch(b: GraphBuilder, head) -> "Dense":
    """The decode step of the patched graph for a HEAD_LAYOUTS head (`onnx_ops.head.Head`):
    every head output cast to float32, decoded -> `graph_types.Dense` (class_axis 2, probs [B, N, C],
    boxes [B, N, 4] in `box_format`). Probabilities only (no logits tap): the graph then computes
    exactly what calib.pipeline computes from the same decoded batch."""
    from .graph_types import Dense
    from .steps import to_float32

    raws = [to_float32(b, name, elem, f"decode/head{i}_f32") for i, (name, elem) in enumerate(zip(head.outputs, head.elem_types))]
    dec = decode_head(b, head.layout, raws, head.input_hw, **head.params)
    return Dense(dec.boxes, dec.probs, class_axis=2, box_format=dec.box_format)
