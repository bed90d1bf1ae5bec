"""The pre-NMS slots of the inserted graph: K1 capped at a static N, and the post-top-k work
trimmed to the slots any image of the batch uses (steps.trim_slots). Checked against the numpy
reference for static and dynamic N, N below / between / above max_det and pre_nms_top_k,
single- and multi-label, opset 11 (GatherElements) and 18 (GatherND), and batches whose images
have very different candidate counts."""
from __future__ import annotations

import numpy as np
import pytest

from artifact_factory import assert_same_detections, make_calibration, random_head
from calib.artifact import identity_map
from calib.letterbox import letterbox_row
from calib.artifact import PostprocessConfig
from calib.pipeline import pack_fixed, postprocess
from calib.session import make_session
from onnx_ops.patch import build_postprocess_graph

ROWS = np.stack([letterbox_row(1280, 720, (640, 640)), letterbox_row(480, 640, (640, 640)),
                 letterbox_row(640, 640, (640, 640))]).astype(np.float32)


def check(layout, raw, *, num_classes, kind="identity", thr=0.25, static=True, opset=18, seed=0, **cfg):
    config = PostprocessConfig(**cfg)
    cmap = make_calibration(kind, num_classes, np.random.default_rng(seed)) if kind != "identity" else identity_map(num_classes)
    n = raw.shape[2] if layout == "xywh_cls" else raw.shape[1]
    model = build_postprocess_graph(layout, num_classes, cmap, thr, config, num_candidates=n if static else None,
                                    batch=raw.shape[0] if static else "batch", opset=opset)
    sess = make_session(model)
    rows = ROWS[np.arange(raw.shape[0]) % len(ROWS)]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, config), config.max_det)
    assert got["det_boxes"].shape == (raw.shape[0], config.max_det, 4)
    assert_same_detections(got, ref, ties_unordered=not cmap.is_identity)
    return got


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
@pytest.mark.parametrize("n, max_det, top_k", [(5, 300, 3000), (150, 100, 120), (150, 300, 100), (400, 50, 300), (1000, 20, 30)])
def test_slots_match_reference(layout, static, opset, n, max_det, top_k):
    rng = np.random.default_rng(n + max_det)
    raw = random_head(layout, 3, n, 4, rng)
    got = check(layout, raw, num_classes=4, thr=0.1, static=static, opset=opset, max_det=max_det, pre_nms_top_k=top_k,
                iou_threshold=0.5)
    assert got["num_dets"].max() <= max_det


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
@pytest.mark.parametrize("n", [3839, 3840, 7681, 8400])
def test_boxes_first_rows_of_the_topk_compaction(layout, n, opset):
    """Static N at and past TensorRT's TopK limit: the surviving boxes are compacted row by row
    (box_select.compact_boxes_topk: 1, 2, 3 rows, the last padded for 7681), with a batch whose
    images put their survivors in different rows, one image with every box surviving (more than
    pre_nms_top_k), and one with none."""
    rng = np.random.default_rng(n)
    raw = random_head(layout, 4, n, 3, rng)
    if layout == "xywh_cls":
        raw[0, 4:, : n // 2] = 0.0                  # image 0: survivors in the second half only
        raw[1, 4:, :] = np.maximum(raw[1, 4:, :], 0.2)   # image 1: every box survives
        raw[2, 4:, :] = 0.0                          # image 2: none
    else:
        raw[0, : n // 2, 4] = 0.0
        raw[1, :, 4] = 1.0
        raw[1, :, 5:] = np.maximum(raw[1, :, 5:], 0.2)
        raw[2, :, 4] = 0.0
    got = check(layout, raw, num_classes=3, kind="platt_per_class", thr=0.1, static=True, opset=opset, max_det=100,
                pre_nms_top_k=1000, iou_threshold=0.6)
    assert got["num_dets"][2, 0] == 0 and got["num_dets"][1, 0] > 0


@pytest.mark.parametrize("kind", ["identity", "platt_per_class", "isotonic_per_class"])
@pytest.mark.parametrize("static", [True, False])
def test_multi_label_static_small_n(kind, static):
    rng = np.random.default_rng(7)
    raw = random_head("xywh_cls", 2, 60, 6, rng)
    check("xywh_cls", raw, num_classes=6, kind=kind, thr=0.05, static=static, multi_label=True, max_det=500,
          pre_nms_top_k=1000)


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
def test_uneven_batch(layout):
    """One image with more candidates than max_det, one with a few, one with none: each equals
    the reference (the slot count follows the busiest image, nothing of the others is lost)."""
    rng = np.random.default_rng(3)
    raw = random_head(layout, 3, 2000, 3, rng)
    if layout == "xywh_cls":
        raw[1, 4:, 10:] = 0.0
        raw[2, 4:, :] = 0.0
    else:
        raw[1, 10:, 4] = 0.0
        raw[2, :, 4] = 0.0
    got = check(layout, raw, num_classes=3, thr=0.05, static=True, max_det=100, pre_nms_top_k=1500, iou_threshold=0.9)
    assert got["num_dets"][2, 0] == 0 and got["num_dets"][1, 0] <= 10


@pytest.mark.parametrize("static", [True, False])
def test_all_tied_scores_every_candidate(static):
    """Every candidate above threshold with the same score and box: ties by index throughout."""
    raw = np.zeros((2, 4 + 2, 700), np.float32)
    raw[:, 0:2, :] = 320.0
    raw[:, 2:4, :] = 50.0
    raw[:, 4:, :] = 0.5
    got = check("xywh_cls", raw, num_classes=2, static=static, max_det=300, pre_nms_top_k=600, iou_threshold=1.0)
    assert got["num_dets"][:, 0].tolist() == [300, 300]
