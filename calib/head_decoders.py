"""Numpy decoders for heads whose export leaves the box decode out: YOLOX raw, GFL/DFL multi-level, DETR.

Each returns the same `calib.layouts.Decoded` as `calib.layouts.decode`: boxes (B, N, 4) xyxy in
input pixels, float32, and dense per-class scores (B, N, C) in [0, 1].

| layout           | raw outputs                                               | who exports it          |
|------------------|-----------------------------------------------------------|-------------------------|
| `yolox_raw`      | [B, N, 5+C]: x/y offsets from the grid cell, log w/h in   | YOLOX official export   |
|                  | stride units, objectness, C class scores (after sigmoid)  |                         |
| `gfl_multilevel` | per level l: class scores [B, N_l, C] (after sigmoid) and | PicoDet, NanoDet        |
|                  | DFL bins [B, N_l, 4 (R+1)] (sides l, t, r, b); no batch   |                         |
|                  | axis in some exports ([N_l, C], [N_l, 4 (R+1)]); or ONE   |                         |
|                  | output [B, N, C + 4 (R+1)], levels concatenated           | NanoDet-Plus, NanoDet   |
| `detr`           | [B, Q, 4+C] normalised cx, cy, w, h + C class logits, or  | RT-DETR, D-FINE, DEIM   |
|                  | two outputs boxes [B, Q, 4] and logits [B, Q, C]          |                         |

Anchor points are computed from the input size (H, W), row-major per level, levels in stride order:

- `yolox_raw`: cells (i, j), i < H // s, j < W // s (YOLOX's `demo_postprocess`), or ceil(H / s),
  ceil(W / s) where N says so (`yolox_grid_ceil`: the stride-2 convolutions of YOLOX's backbone
  give ceil sizes; at multiples of 32, the sizes YOLOX's demo supports, the two agree);
  cx, cy = (x + j) * s, (y + i) * s; w, h = exp(w) * s, exp(h) * s; score_c = obj * cls_c.
- `gfl_multilevel`: cells i < ceil(H / s), j < ceil(W / s), centre ((j + o) s, (i + o) s) with the
  cell offset o = 0.5 (PaddleDetection's PicoHead / `disPred2Bbox`, legacy NanoDet) or o = 0
  (NanoDet-Plus, `get_single_level_center_priors`); per side softmax over the R+1 bins,
  distance = sum_k p_k * k * s; x1, y1 = centre - (l, t), x2, y2 = centre + (r, b). The single
  output of NanoDet(-Plus) exports, [B, N, C + 4 (R+1)] (C class scores after sigmoid, then the
  bins; levels concatenated in stride order), is split into the same class and box maps
  (`split_gfl_single`, params `single_output`, `num_classes`).
- `detr`: cx, cy, w, h times (W, H, W, H); scores sigmoid(logit) (or as given, `logits=False`,
  for exports that apply the sigmoid themselves, as Ultralytics' RT-DETR does).

(H, W) is the size the model is run at: a model with dynamic height/width is decoded at the size
it was fed (`calib.runner` passes the serving size), non-square sizes included.

The arithmetic is float32, in the order `onnx_ops.decode_graph` uses, so that the two agree to
float32 rounding of exp/softmax.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .artifact.box_map import sigmoid_f32
from .artifact.interface import HEAD_LAYOUTS  # ("yolox_raw", "gfl_multilevel", "detr")
from .boxes import cxcywh_to_xyxy
from .layouts import Decoded

YOLOX_STRIDES = (8, 16, 32)
GFL_STRIDES = (8, 16, 32, 64, 128)
GFL_CELL_OFFSET = 0.5            # PicoDet, legacy NanoDet: centre of the cell
NANODET_PLUS_CELL_OFFSET = 0.0   # NanoDet-Plus: the cell's top-left corner (x * s, y * s)
GFL_REG_MAX_CHOICES = (7, 16)    # reg_max of released GFL-family heads (NanoDet-Plus/PicoDet 7, GFL 16)


# ------------------------------------------------------------------------------------------
# anchor points
# ------------------------------------------------------------------------------------------
def level_sizes(input_hw: tuple[int, int], strides: Sequence[int], ceil: bool) -> list[tuple[int, int]]:
    """(rows, cols) of each level's grid for an input (H, W): floor (YOLOX) or ceil (PicoDet) of H/s, W/s."""
    h, w = int(input_hw[0]), int(input_hw[1])
    rnd = (lambda v, s: math.ceil(v / s)) if ceil else (lambda v, s: v // s)
    return [(rnd(h, s), rnd(w, s)) for s in strides]


def anchor_points(input_hw: tuple[int, int], strides: Sequence[int], *, offset: float, ceil: bool) -> tuple[np.ndarray, np.ndarray]:
    """Grid cells of all levels -> (points (N, 2) float32 x, y in cell units + offset, strides (N, 1) float32).

    Row-major per level (x fastest), levels in the order of `strides`. points are in cell units
    (multiply by the stride for pixels): YOLOX adds its offsets before the multiply.
    """
    pts, strs = [], []
    for (rows, cols), s in zip(level_sizes(input_hw, strides, ceil), strides):
        yy, xx = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        pts.append(np.stack([xx.reshape(-1), yy.reshape(-1)], axis=1) + np.float32(offset))
        strs.append(np.full((rows * cols, 1), s, np.float32))
    if not pts:
        return np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(pts).astype(np.float32), np.concatenate(strs).astype(np.float32)


def level_counts(input_hw: tuple[int, int], strides: Sequence[int], ceil: bool) -> list[int]:
    """N_l = rows * cols for each level."""
    return [r * c for r, c in level_sizes(input_hw, strides, ceil)]


def infer_gfl_strides(counts: Sequence[int], input_hw: tuple[int, int]) -> tuple[int, ...] | None:
    """The strides whose ceil grids have exactly `counts` anchors (any order), else None."""
    by_count = {}
    for s in GFL_STRIDES:
        by_count.setdefault(level_counts(input_hw, [s], True)[0], s)
    try:
        return tuple(by_count[int(n)] for n in counts)
    except KeyError:
        return None


# ------------------------------------------------------------------------------------------
# decoders
# ------------------------------------------------------------------------------------------
def yolox_grid_ceil(n: int | None, input_hw: tuple[int, int], strides: Sequence[int] = YOLOX_STRIDES) -> bool:
    """Whether N anchors are the ceil grids of the input (and not the floor grids of `demo_postprocess`)."""
    return (n is not None and n != sum(level_counts(input_hw, strides, False))
            and n == sum(level_counts(input_hw, strides, True)))


def decode_yolox_raw(raw: np.ndarray, input_hw: tuple[int, int], strides: Sequence[int] = YOLOX_STRIDES) -> Decoded:
    """YOLOX raw head [B, N, 5+C] -> Decoded (boxes xyxy input px (B, N, 4), scores obj * cls (B, N, C)).

    N must be sum over strides of (H // s) * (W // s) (3549 for 416 x 416), or of the ceil sizes.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3 or raw.shape[2] < 6:
        raise ValueError(f"yolox_raw output must be [B, N, 5+C], got shape {raw.shape}")
    grid, stride = anchor_points(input_hw, strides, offset=0.0, ceil=yolox_grid_ceil(raw.shape[1], input_hw, strides))
    if raw.shape[1] != grid.shape[0]:
        raise ValueError(f"yolox_raw output has {raw.shape[1]} anchors; input {input_hw[0]}x{input_hw[1]} with "
                         f"strides {tuple(strides)} gives {grid.shape[0]}")
    xy = (raw[:, :, 0:2] + grid[None]) * stride[None]
    wh = np.exp(raw[:, :, 2:4]) * stride[None]
    boxes = cxcywh_to_xyxy(np.concatenate([xy, wh], axis=2))
    return Decoded(boxes.astype(np.float32, copy=False), raw[:, :, 4:5] * raw[:, :, 5:])


def dfl_distances(bins: np.ndarray, reg_max: int) -> np.ndarray:
    """DFL bins (B, N, 4 (R+1)) -> expected distance per side (B, N, 4) in bin units, float32.

    Softmax over each side's R+1 bins (max subtracted), then sum_k p_k * k.
    """
    b, n, d = bins.shape
    x = bins.reshape(b, n, 4, reg_max + 1).astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=3, keepdims=True))
    p = e / e.sum(axis=3, keepdims=True)
    proj = np.arange(reg_max + 1, dtype=np.float32)
    return (p @ proj).astype(np.float32)


def decode_gfl_multilevel(
    cls_levels: Sequence[np.ndarray],
    box_levels: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    strides: Sequence[int] | None = None,
    cell_offset: float = GFL_CELL_OFFSET,
) -> Decoded:
    """PicoDet/NanoDet heads -> Decoded (boxes xyxy input px (B, N, 4), scores (B, N, C)), N = sum N_l.

    cls_levels: per level [B, N_l, C] or [N_l, C] class scores after sigmoid; box_levels: per level
    [B, N_l, 4 (R+1)] or [N_l, 4 (R+1)] DFL bins (sides left, top, right, bottom). strides: one per
    level (default: inferred from N_l and the input size). Levels are concatenated in the given order.
    """
    if len(cls_levels) != len(box_levels) or not cls_levels:
        raise ValueError(f"gfl_multilevel needs one box output per class output, got {len(cls_levels)} and {len(box_levels)}")
    cls_levels = [_with_batch(np.asarray(c, np.float32)) for c in cls_levels]
    box_levels = [_with_batch(np.asarray(x, np.float32)) for x in box_levels]
    counts = [c.shape[1] for c in cls_levels]
    if strides is None:
        strides = infer_gfl_strides(counts, input_hw)
        if strides is None:
            raise ValueError(f"gfl_multilevel level sizes {counts} fit no strides in {GFL_STRIDES} at input "
                             f"{input_hw[0]}x{input_hw[1]}")
    d = box_levels[0].shape[2]
    if d % 4 or d < 8 or any(x.shape[2] != d for x in box_levels):
        raise ValueError(f"gfl_multilevel box outputs must all be [B, N_l, 4 (R+1)], got last dims "
                         f"{[x.shape[2] for x in box_levels]}")
    reg_max = d // 4 - 1
    pts, strs = [], []
    for n, s, c, x in zip(counts, strides, cls_levels, box_levels):
        p, st = anchor_points(input_hw, [s], offset=cell_offset, ceil=True)
        if p.shape[0] != n or x.shape[1] != n:
            raise ValueError(f"gfl_multilevel level of stride {s}: {n} class rows, {x.shape[1]} box rows, "
                             f"grid has {p.shape[0]}")
        pts.append(p * st)
        strs.append(st)
    centre = np.concatenate(pts)[None]          # (1, N, 2) px
    stride = np.concatenate(strs)[None]         # (1, N, 1)
    dist = dfl_distances(np.concatenate(box_levels, axis=1), reg_max) * stride
    boxes = np.concatenate([centre - dist[:, :, 0:2], centre + dist[:, :, 2:4]], axis=2)
    return Decoded(boxes.astype(np.float32, copy=False), np.concatenate(cls_levels, axis=1))


def decode_detr(
    boxes_or_raw: np.ndarray, logits: np.ndarray | None, input_hw: tuple[int, int], *, scores_are_logits: bool = True
) -> Decoded:
    """DETR queries -> Decoded (boxes xyxy input px (B, Q, 4), scores (B, Q, C)). No NMS needed.

    boxes_or_raw: [B, Q, 4+C] (normalised cx, cy, w, h + class columns) when `logits` is None, else
    boxes [B, Q, 4] with logits [B, Q, C]. scores_are_logits: apply the sigmoid (RT-DETR, D-FINE,
    DEIM raw heads); False where the export already holds probabilities.
    """
    a = np.asarray(boxes_or_raw, np.float32)
    if a.ndim != 3 or a.shape[2] < 4 + (0 if logits is not None else 1):
        raise ValueError(f"detr boxes must be [B, Q, 4] or [B, Q, 4+C], got shape {a.shape}")
    cls = a[:, :, 4:] if logits is None else np.asarray(logits, np.float32)
    if cls.ndim != 3 or cls.shape[:2] != a.shape[:2]:
        raise ValueError(f"detr logits must be [B, Q, C] beside boxes {a.shape}, got {cls.shape}")
    h, w = float(input_hw[0]), float(input_hw[1])
    scale = np.array([w, h, w, h], np.float32)
    boxes = cxcywh_to_xyxy(a[:, :, 0:4] * scale)
    scores = sigmoid_f32(cls) if scores_are_logits else cls
    return Decoded(boxes.astype(np.float32, copy=False), scores)


def split_gfl_single(raw: np.ndarray, input_hw: tuple[int, int], strides: Sequence[int], num_classes: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """NanoDet(-Plus) single output [B, N, C + 4 (R+1)] (or [N, C + 4 (R+1)]) -> (class levels
    [B, N_l, C], box levels [B, N_l, 4 (R+1)]), N_l the ceil grids of `strides` at `input_hw`."""
    raw = _with_batch(np.asarray(raw, np.float32))
    counts = level_counts(input_hw, strides, True)
    if raw.shape[1] != sum(counts) or raw.shape[2] <= num_classes:
        raise ValueError(f"gfl_multilevel single output {raw.shape} does not fit strides {tuple(strides)} at input "
                         f"{input_hw[0]}x{input_hw[1]} (N = {sum(counts)}) with {num_classes} class columns")
    cuts = np.cumsum(counts)[:-1]
    levels = np.split(raw, cuts, axis=1)
    return [lv[:, :, :num_classes] for lv in levels], [lv[:, :, num_classes:] for lv in levels]


def decode_head(layout: str, raws: Sequence[np.ndarray], input_hw: tuple[int, int], **params) -> Decoded:
    """One entry point: `layout` in HEAD_LAYOUTS, raws in the recognised order (see HeadRecognition.outputs).

    yolox_raw: [raw]; gfl_multilevel: cls levels then box levels (L + L arrays), params `strides`,
    `cell_offset`, or with `single_output` one array [B, N, C + 4 (R+1)] and `num_classes`;
    detr: [raw] or [boxes, logits], param `scores_are_logits`.
    """
    if layout == "yolox_raw":
        return decode_yolox_raw(raws[0], input_hw, params.get("strides") or YOLOX_STRIDES)
    if layout == "gfl_multilevel" and params.get("single_output"):
        strides = tuple(params.get("strides") or (8, 16, 32, 64))
        cls, box = split_gfl_single(raws[0], input_hw, strides, int(params["num_classes"]))
        return decode_gfl_multilevel(cls, box, input_hw, strides, params.get("cell_offset", NANODET_PLUS_CELL_OFFSET))
    if layout == "gfl_multilevel":
        half = len(raws) // 2
        if len(raws) % 2:
            raise ValueError(f"gfl_multilevel needs class and box outputs in pairs, got {len(raws)} outputs")
        return decode_gfl_multilevel(raws[:half], raws[half:], input_hw, params.get("strides"),
                                     params.get("cell_offset", GFL_CELL_OFFSET))
    if layout == "detr":
        logits = raws[1] if len(raws) > 1 else None
        return decode_detr(raws[0], logits, input_hw, scores_are_logits=params.get("scores_are_logits", True))
    raise ValueError(f"unknown head layout {layout!r}; these decoders handle {', '.join(HEAD_LAYOUTS)}")


def _with_batch(a: np.ndarray) -> np.ndarray:
    """[N, D] (export without a batch axis) -> [1, N, D]; [B, N, D] unchanged."""
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3:
        raise ValueError(f"expected a [B, N, D] or [N, D] head output, got shape {a.shape}")
    return a


def decoded_batch(layout: str, raws: Sequence[np.ndarray], input_hw: tuple[int, int], **params) -> np.ndarray:
    """The head's raw outputs -> one float32 array [B, N, 4+C]: x1, y1, x2, y2 input px, then C scores.

    What `calib.runner` hands on for HEAD_LAYOUTS, so that every later step (and
    `calib.layouts.decode`, which unpacks it) sees one batch array as for the decoded layouts.
    """
    dec = decode_head(layout, raws, input_hw, **params)
    return np.concatenate([dec.boxes_xyxy, dec.scores.astype(np.float32, copy=False)], axis=2)
