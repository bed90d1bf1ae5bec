"""Anchors: read from the graph (YOLOv5/v7 anchor grids), k-means on box sizes, YOLOv5's best possible recall."""
from __future__ import annotations


import numpy as np
import onnx
from onnx import numpy_helper


ANCHOR_MAX = 15


def read_anchors(model: onnx.ModelProto, input_size: tuple[int, int] | None = None) -> tuple[np.ndarray | None, str]:
    """Anchor sizes (A, 2) w, h in input px read from the graph, or (None, why not).

    Recognises the anchor_grid constants of YOLOv5/v7 exports: float tensors of shape
    (1, na, ny, nx, 2) or (1, na, 1, 1, 2), na <= 5, constant over the grid, positive, in
    input pixels (initializers or Constant nodes). One per detection level; their rows together
    are the model's anchors.
    """
    tensors = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    tensors.append((node.output[0], numpy_helper.to_array(attr.t)))
    limit = 4 * max(input_size) if input_size else 1e4
    found = []
    for name, arr in tensors:
        if arr.dtype.kind != "f" or arr.ndim != 5 or arr.shape[0] != 1 or arr.shape[-1] != 2 or not 1 <= arr.shape[1] <= 5:
            continue
        per_anchor = arr.reshape(arr.shape[1], -1, 2)
        if not np.allclose(per_anchor, per_anchor[:, :1, :]):
            continue
        a = per_anchor[:, 0, :].astype(np.float64)
        if np.all(a > 0) and np.all(a <= limit) and a.max() >= 1.0:
            found.append(a)
    if not found:
        return None, ("no anchor tensor recognised in the graph (looked for YOLOv5/v7 anchor_grid constants of shape "
                      "(1, na, ny, nx, 2)); anchor-free heads (YOLOv8, YOLOX) have none")
    anchors = np.unique(np.concatenate(found), axis=0)
    if len(anchors) > ANCHOR_MAX:
        return None, f"{len(anchors)} anchor-like tensors found, too many to trust as anchors"
    return anchors[np.argsort(anchors.prod(axis=1))], f"read {len(anchors)} anchors from {len(found)} anchor_grid constant(s)"


def wh_iou(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    """IoU of boxes with a common centre: wh1 (N, 2), wh2 (M, 2) -> (N, M)."""
    inter = np.minimum(wh1[:, None, 0], wh2[None, :, 0]) * np.minimum(wh1[:, None, 1], wh2[None, :, 1])
    union = wh1[:, None].prod(-1) + wh2[None, :].prod(-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def kmeans_anchors(wh: np.ndarray, k: int, *, iters: int = 100, seed: int = 0) -> np.ndarray:
    """k-means on box sizes with the 1 - IoU distance. wh (N, 2) w, h -> (k, 2), by area ascending.

    Deterministic: starts from the area quantiles, cluster centres are medians (as in YOLOv2's
    dimension clusters and darknet's k-means with IoU distance).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) == 0:
        raise ValueError("kmeans_anchors needs at least one box with positive size")
    k = int(min(k, len(np.unique(wh, axis=0))))
    order = np.argsort(wh.prod(axis=1))
    centres = wh[order[((np.arange(k) + 0.5) / k * len(wh)).astype(int)]].copy()
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, centres).argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if np.any(assign == j):
                centres[j] = np.median(wh[assign == j], axis=0)
    return centres[np.argsort(centres.prod(axis=1))]


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> tuple[float, float]:
    """YOLOv5's anchor fit: (share of boxes with some anchor within anchor_t x in both w and h,
    mean best IoU of a box with an anchor). wh (N, 2), anchors (A, 2)."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    r = wh[:, None, :] / anchors[None, :, :]
    metric = np.minimum(r, 1 / r).min(axis=2)          # (N, A)
    best = metric.max(axis=1)
    return float(np.mean(best > 1 / anchor_t)), float(wh_iou(wh, anchors).max(axis=1).mean())
