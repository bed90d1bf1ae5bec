"""Segmentation heads in the inserted graph: the kept detections' mask coefficients, `det_masks_coeffs`.

A seg head (Ultralytics YOLOv8-seg / YOLO11-seg; `calib.mask_coeffs`) is an `xywh_cls` head
[B, 4+C+M, N] whose last M rows are mask coefficients, beside a prototypes output
[B, M, H/4, W/4]. The inserted graph scores rows 4..4+C only and carries each box's M
coefficients to the output, gathered with the same box indices as det_boxes:

    split_seg_head      the head -> detection rows [B, 4+C, N] and coefficients [B, M, N]: the
                        Concat's own inputs where the export has them (Concat(Concat(boxes,
                        Sigmoid(cls)), coeffs) or Concat(boxes, Sigmoid(cls), coeffs)), else a Slice
    (boxes first: onnx_ops.box_select gathers the surviving boxes' coefficients with the boxes)
    kept_mask_coeffs    coefficients [B, M, N'] (N' boxes or slots), the candidates' box index
                        [B, K1] and the NMS picks [B, K'] -> [B, K', M] (Pad, GatherND, GatherElements,
                        Transpose)
    pack_mask_coeffs    -> det_masks_coeffs float32 [B, K, M], zero at and after num_dets

The prototypes output stays in the patched model, unchanged, under its own name (onnx_ops.patch).
Every inserted name starts with `detcal/`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from calib.artifact import DET_MASKS_COEFFS

from .graph_builder import FLOAT, GraphBuilder, gather_rows
from .graph_types import Kept


@dataclass
class SegTaps:
    """A seg head's coefficient rows: m = M; coeffs: the graph's [B, M, N] coefficient tensor where
    the head's Concat has it as an input (else None: sliced off the head output); in_output: the
    head tensor (Head.output) still holds the M rows; prototypes: the prototypes output's name."""

    m: int
    coeffs: str | None = None
    in_output: bool = True
    prototypes: str | None = None


def tap_seg_head(graph: onnx.GraphProto, output: str, m: int, num_classes: int, shapes: dict) -> tuple[str, SegTaps]:
    """The seg head output `output` [B, 4+C+M, N] -> (the tensor to read as the xywh_cls head, taps).

    Concat(det [B, 4+C, N], coeffs [B, M, N]) on axis 1: the head is `det` (its own Sigmoid front
    may then be tapped as for a detect head); Concat(boxes, Sigmoid(cls), coeffs): the head stays
    `output` (onnx_ops.head taps boxes and Sigmoid), coeffs tapped; anything else: Slice."""
    producers = {o: n for n in graph.node for o in n.output}
    concat = producers.get(output)
    axis = None if concat is None or concat.op_type != "Concat" else next(
        (a.i for a in concat.attribute if a.name == "axis"), None)
    if axis in (1, -2) and len(concat.input) in (2, 3) and _rows(shapes.get(concat.input[-1]), m):
        if len(concat.input) == 2 and _rows(shapes.get(concat.input[0]), 4 + num_classes):
            return concat.input[0], SegTaps(m, concat.input[1], in_output=False)
        if len(concat.input) == 3:
            return output, SegTaps(m, concat.input[2], in_output=True)
    return output, SegTaps(m)


def _rows(shape: tuple | None, want: int) -> bool:
    """A [B, want, N] tensor (dynamic dims fit; no shape known: no)."""
    return shape is not None and len(shape) == 3 and (not isinstance(shape[1], int) or shape[1] == want)


def split_seg_head(b: GraphBuilder, raw: str, seg: SegTaps, coeffs_f32: str | None) -> tuple[str, str]:
    """raw head (float32) -> (detection rows [B, 4+C, N], coefficients [B, M, N] float32).

    coeffs_f32: the tapped coefficient tensor already in float32 (None: slice them off raw)."""
    det = b.slice(raw, [0], [-seg.m], [1], name="masks/head_rows") if seg.in_output else raw
    if coeffs_f32 is not None:
        return det, coeffs_f32
    return det, b.slice(raw, [-seg.m], [np.iinfo(np.int64).max], [1], name="masks/coeffs")


def kept_mask_coeffs(b: GraphBuilder, coeffs: str, box_index: str | None, pad: int, kept: Kept, m: int) -> str:
    """coeffs [B, M, N'] (N' boxes, or boxes-first slots), box_index [B, K1] int64 into N' + pad
    (the candidates after pre-NMS top-k; None: the slots themselves, in box order), kept.pick [B, K']
    positions of the NMS survivors -> [B, K', M] the kept detections' coefficients, in det_boxes' order."""
    if pad:
        coeffs = b.op("Pad", coeffs, b.i64("masks/pads", [0, 0, 0, 0, 0, pad]), b.f32("masks/pad_value", 0.0),
                      name="masks/pad", mode="constant")
    box = kept.pick if box_index is None else gather_rows(b, box_index, kept.pick, "masks/kept_box")   # [B, K']
    idx = b.op("Expand", b.unsqueeze(box, [1], name="masks/idx_1"), b.i64("masks/idx_shape", [1, m, 1]),
               name="masks/idx")                                                       # [B, M, K']
    g = b.op("GatherElements", coeffs, idx, name="masks/gather", axis=2)
    return b.op("Transpose", g, name="masks/kept", perm=[0, 2, 1])                     # [B, K', M]


def pack_mask_coeffs(b: GraphBuilder, kept: Kept, coeffs: str, max_det: int) -> str:
    """[B, K', M] kept coefficients -> det_masks_coeffs [B, K, M] float32, zero at and after num_dets
    (Pad from K' to K = max_det where K' < max_det)."""
    row_ok3 = b.unsqueeze(kept.row_ok, [2], name="masks/row_ok3")
    extra = max_det - kept.k
    if not extra:
        return b.op("Where", row_ok3, coeffs, b.f32("masks/zero", 0.0), name="masks/det", out=DET_MASKS_COEFFS)
    y = b.op("Where", row_ok3, coeffs, b.f32("masks/zero", 0.0), name="masks/det")
    return b.op("Pad", y, b.i64("masks/det_pads", [0, 0, 0, 0, extra, 0]), b.f32("masks/det_fill", 0.0),
                name="masks/det_pad", out=DET_MASKS_COEFFS, mode="constant")


def mask_output_info(batch, max_det: int, m: int) -> onnx.ValueInfoProto:
    """The det_masks_coeffs output's ValueInfo, float32 [B, K, M]."""
    return onnx.helper.make_tensor_value_info(DET_MASKS_COEFFS, FLOAT, [batch, max_det, m])


__all__ = ["SegTaps", "tap_seg_head", "split_seg_head", "kept_mask_coeffs", "pack_mask_coeffs", "mask_output_info"]
