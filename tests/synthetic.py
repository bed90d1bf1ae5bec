"""A tiny real detector built as an ONNX graph in code, and scenes it can detect.

The "blob detector" looks at overlapping 32x32 windows (stride 16) of the input and scores
each class by how strongly its colour channel dominates the window: class c fires on
squares of colour c. It is over-confident by construction (a steep sigmoid), fires on
strongly coloured uniform surfaces (the negative scenes), and runs in microseconds, so the
whole fit -> patch -> eval path can be tested on real images and a real graph.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

WINDOW, STRIDE = 32, 16
COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230)]


def make_blob_detector(path: str | Path, *, size: int = 128, num_classes: int = 2, gain: float = 12.0,
                       layout: str = "xywh_cls", opset: int = 17, dynamic_batch: bool = True,
                       names: list[str] | None = None) -> Path:
    """Write the detector. Output [B, 4+C, N] (xywh_cls, Sigmoid before the Concat as
    Ultralytics does) or [B, N, 5+C] (xywh_obj_cls)."""
    cells = (size - WINDOW) // STRIDE + 1
    n = cells * cells
    centres = np.arange(cells) * STRIDE + WINDOW / 2
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(n, WINDOW), np.full(n, WINDOW)]).astype(np.float32)  # (4, N)
    b = "batch" if dynamic_batch else 1
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, size, size])
    inits = [
        numpy_helper.from_array(boxes[None], "boxes"),
        numpy_helper.from_array(np.array([0, 3, n], np.int64), "flat_shape"),
        numpy_helper.from_array(np.full((1, 3, 1), 1.0 / 3, np.float32), "third"),
        numpy_helper.from_array(np.float32(gain), "gain"),
        numpy_helper.from_array(np.float32(0.25), "bias"),
        numpy_helper.from_array(np.array([0, 1, 2], np.int64)[:num_classes], "class_channels"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "tile_b"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[WINDOW, WINDOW], strides=[STRIDE, STRIDE]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),                 # [B, 3, N]
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1) if opset < 18 else
        helper.make_node("ReduceMean", ["flat", "axes1"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["dominance"]),                        # channel - grey
        helper.make_node("Gather", ["dominance", "class_channels"], ["cls_dom"], axis=1),  # [B, C, N]
        helper.make_node("Sub", ["cls_dom", "bias"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["cls_scores"]),
        helper.make_node("Shape", ["images"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero", "one"], ["bdim"]),
        helper.make_node("Concat", ["bdim", "one", "one"], ["tile_reps"], axis=0),
        helper.make_node("Tile", ["boxes", "tile_reps"], ["boxes_b"]),
    ]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.array([1], np.int64), "axes1")]
    if layout == "xywh_cls":
        nodes.append(helper.make_node("Concat", ["boxes_b", "cls_scores"], ["output0"], axis=1))
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, 4 + num_classes, n])
    elif layout == "xywh_obj_cls":
        nodes += [
            helper.make_node("ReduceMax", ["cls_scores"], ["obj"], axes=[1], keepdims=1) if opset < 18 else
            helper.make_node("ReduceMax", ["cls_scores", "axes1"], ["obj"], keepdims=1),
            helper.make_node("Concat", ["boxes_b", "obj", "cls_scores"], ["raw_t"], axis=1),
            helper.make_node("Transpose", ["raw_t"], ["output0"], perm=[0, 2, 1]),
        ]
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, n, 5 + num_classes])
    else:
        raise ValueError(layout)
    graph = helper.make_graph(nodes, "blob_detector", [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detcal-tests")
    model.ir_version = 8
    names = names or [f"blob{c}" for c in range(num_classes)]
    helper.set_model_props(model, {"names": str(dict(enumerate(names))), "imgsz": f"[{size}, {size}]", "stride": "16"})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return Path(path)


def write_blob_dataset(root: str | Path, *, n_pos: int = 24, n_neg: int = 16, num_classes: int = 2, seed: int = 0,
                       split: str = "val", sizes=((128, 128), (160, 120), (96, 128))) -> Path:
    """Ultralytics layout under root: data.yaml, images/<split>/, labels/<split>/ (negatives: empty files).

    Positive scenes: 1-3 coloured squares on a grey noisy background. Negative scenes: uniform
    surfaces, some of them tinted (which the over-confident detector fires on).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_pos + n_neg):
        w, h = sizes[i % len(sizes)]
        base = rng.integers(90, 160)
        img = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255)
        lines = []
        if i < n_pos:
            for _ in range(rng.integers(1, 4)):
                c = int(rng.integers(0, num_classes))
                s = int(rng.integers(24, 40))
                x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                img[y0:y0 + s, x0:x0 + s] = np.asarray(COLOURS[c]) + rng.normal(0, 4, (s, s, 3))
                lines.append(f"{c} {(x0 + s / 2) / w:.6f} {(y0 + s / 2) / h:.6f} {s / w:.6f} {s / h:.6f}")
        else:
            tint = COLOURS[int(rng.integers(0, num_classes))]
            strength = rng.uniform(0.0, 0.6)
            img = img * (1 - strength) + np.asarray(tint) * strength
        name = f"{'pos' if i < n_pos else 'neg'}_{i:04d}"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(img_dir / f"{name}.png")
        (lab_dir / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {c}: blob{c}" for c in range(num_classes))
    (root / "data.yaml").write_text(f"path: .\n{split}: images/{split}\nnames:\n{names}\n")
    return root / "data.yaml"
