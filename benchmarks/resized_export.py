"""A static Ultralytics YOLOv8 export rebuilt, in memory, for another input size (square or H x W).

A static export bakes its input size into the head: the anchor points [1, 2, N] (grid-cell centres
in stride units) and the strides [1, N] are initializers, and the DFL's reshape shapes hold N. This
rebuilds those for `size` (the export's strides, one grid per stride) and sets the declared input
and output shapes; every weight stays as it is. A rectangular size (h, w), e.g. (384, 640), is
Ultralytics' `imgsz=(384, 640)` export for 16:9 cameras: rows of h / s cells of w / s. The real COCO YOLOv8n int8 export in
../shared/real run this way at 320 gives a really trained [1, 84, 2100] head, the shape of the
YOLO11n 320 export the benchmarks are asked about (which ../shared/real does not have), and a model
trained at 640 served at 320 is the resolution mismatch detcal is for. Nothing built here is saved
in the project.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

STRIDES = (8, 16, 32)


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if np.isscalar(size) else size
    return int(h), int(w)


def anchor_grid(size, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """size (px: S, or (H, W)) -> (points [1, 2, N] float32: x, y of each cell centre in its stride's
    units, strides [1, N] float32), levels in `strides` order, cells row by row (Ultralytics'
    make_anchors: H / s rows of W / s cells), N = sum over strides of (H / s) (W / s)."""
    h, w = _hw(size)
    points, per_cell = [], []
    for s in strides:
        y, x = np.meshgrid(np.arange(h // s) + 0.5, np.arange(w // s) + 0.5, indexing="ij")
        points.append(np.stack([x.ravel(), y.ravel()]))
        per_cell.append(np.full(x.size, s))
    return (np.concatenate(points, 1)[None].astype(np.float32),
            np.concatenate(per_cell)[None].astype(np.float32))


def at_input_size(model: onnx.ModelProto, size) -> onnx.ModelProto:
    """A static Ultralytics export [1, 3, S, S] -> the same weights at [1, 3, H, W] (a copy); size: S or
    (H, W).

    Raises ValueError where the model does not hold its anchor grid for S as initializers (not a
    static Ultralytics detection export), or where H or W is not a multiple of the largest stride."""
    h, w = _hw(size)
    if h % max(STRIDES) or w % max(STRIDES) or h <= 0 or w <= 0:
        raise ValueError(f"size must be a positive multiple of {max(STRIDES)}, got {size}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    src = dims[2].dim_value
    if not src or dims[3].dim_value != src:
        raise ValueError("at_input_size: the model's input must be a fixed square [1, 3, S, S]")
    old_points, old_strides = anchor_grid(src)
    new_points, new_strides = anchor_grid((h, w))
    n_old, n_new = old_points.shape[2], new_points.shape[2]
    replaced = 0
    for i, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.shape == old_points.shape and np.array_equal(a, old_points):
            new = new_points
        elif a.shape == old_strides.shape and np.array_equal(a, old_strides):
            new = new_strides
        elif a.dtype == np.int64 and a.ndim == 1 and a.size <= 8 and n_old in a:   # reshape shapes holding N
            new = np.where(a == n_old, n_new, a)
        else:
            continue
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(new.astype(a.dtype), t.name))
        replaced += 1
    if replaced < 2:
        raise ValueError(f"at_input_size: no anchor grid for {src} px among the initializers (a static Ultralytics export?)")
    dims[2].dim_value, dims[3].dim_value = h, w
    for out in m.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.dim_value == n_old:
                d.dim_value = n_new
    del m.graph.value_info[:]                       # the intermediate shapes were for the old size
    return m


__all__ = ["anchor_grid", "at_input_size"]
