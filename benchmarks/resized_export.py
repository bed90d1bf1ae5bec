"""A static Ultralytics YOLOv8 export rebuilt, in memory, for another square input size.

A static export bakes its input size into the head: the anchor points [1, 2, N] (grid-cell centres
in stride units) and the strides [1, N] are initializers, and the DFL's reshape shapes hold N. This
rebuilds those for `size` (the export's strides, one grid per stride) and sets the declared input
and output shapes; every weight stays as it is. The real COCO YOLOv8n int8 export in
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


def anchor_grid(size: int, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """size (px, square) -> (points [1, 2, N] float32: x, y of each cell centre in its stride's units,
    strides [1, N] float32), levels in `strides` order, cells row by row (Ultralytics' make_anchors)."""
    points, per_cell = [], []
    for s in strides:
        n = size // s
        y, x = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        points.append(np.stack([x.ravel(), y.ravel()]))
        per_cell.append(np.full(n * n, s))
    return (np.concatenate(points, 1)[None].astype(np.float32),
            np.concatenate(per_cell)[None].astype(np.float32))


def at_input_size(model: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """A static Ultralytics export [1, 3, S, S] -> the same weights at [1, 3, size, size] (a copy).

    Raises ValueError where the model does not hold its anchor grid for S as initializers (not a
    static Ultralytics detection export), or where size is not a multiple of the largest stride."""
    if size % max(STRIDES):
        raise ValueError(f"size must be a multiple of {max(STRIDES)}, got {size}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    src = dims[2].dim_value
    if not src or dims[3].dim_value != src:
        raise ValueError("at_input_size: the model's input must be a fixed square [1, 3, S, S]")
    old_points, old_strides = anchor_grid(src)
    new_points, new_strides = anchor_grid(size)
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
    dims[2].dim_value = dims[3].dim_value = size
    for out in m.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.dim_value == n_old:
                d.dim_value = n_new
    del m.graph.value_info[:]                       # the intermediate shapes were for the old size
    return m


__all__ = ["anchor_grid", "at_input_size"]
