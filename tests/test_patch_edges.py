"""Edge cases of the inserted graph (cut at the head), each checked against the reference and
against what the outputs must look like."""
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

ROW = letterbox_row(1280, 720, (640, 640))          # pad_top 140, content y in [140, 500]


def run(layout, raw, rows, *, num_classes, cmap=None, thr=0.25, static=False, opset=18, **cfg):
    config = PostprocessConfig(**cfg)
    cmap = cmap if cmap is not None else identity_map(num_classes)
    n = raw.shape[2] if layout == "xywh_cls" else raw.shape[1]
    model = build_postprocess_graph(layout, num_classes, cmap, thr, config, num_candidates=n if static else None,
                                    batch=raw.shape[0] if static else "batch", opset=opset)
    sess = make_session(model)
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, config), config.max_det)
    assert_same_detections(got, ref, ties_unordered=not cmap.is_identity)
    return got


def head_xywh_cls(boxes_cxcywh, scores):
    """boxes (B, N, 4), scores (B, N, C) -> [B, 4+C, N] float32."""
    return np.concatenate([boxes_cxcywh, scores], axis=2).transpose(0, 2, 1).astype(np.float32)


def assert_padding_rows(got):
    for b in range(got["num_dets"].shape[0]):
        n = int(got["num_dets"][b, 0])
        assert np.all(got["det_classes"][b, n:] == -1)
        assert not got["det_scores"][b, n:].any() and not got["det_boxes"][b, n:].any()


@pytest.mark.parametrize("static", [False, True])
def test_no_candidates(static):
    rng = np.random.default_rng(0)
    raw = random_head("xywh_cls", 2, 500, 5, rng)
    raw[:, 4:, :] = np.minimum(raw[:, 4:, :], 0.2)
    got = run("xywh_cls", raw, np.tile(ROW, (2, 1)), num_classes=5, thr=0.25, static=static)
    assert got["num_dets"].tolist() == [[0], [0]]
    assert_padding_rows(got)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
def test_zero_anchors(static, layout):
    raw = np.zeros((2, 0, 6 if layout == "end2end" else 8), np.float32) if layout != "xywh_cls" else np.zeros((2, 7, 0), np.float32)
    got = run(layout, raw, np.tile(ROW, (2, 1)), num_classes=3, static=static)
    assert got["num_dets"].tolist() == [[0], [0]] and got["det_boxes"].shape == (2, 300, 4)


def test_every_candidate_above_threshold():
    """Threshold 0: all 5000 x 3 scores pass; pre_nms_top_k cuts at 3000, NMS and max_det do the rest."""
    rng = np.random.default_rng(1)
    raw = random_head("xywh_cls", 1, 5000, 3, rng)
    raw[:, 4:, :] = rng.uniform(0.01, 1.0, raw[:, 4:, :].shape)
    got = run("xywh_cls", raw, ROW, num_classes=3, thr=0.0, cmap=make_calibration("platt_per_class", 3, rng))
    assert got["num_dets"][0, 0] == 300


def test_all_boxes_in_the_padding():
    rng = np.random.default_rng(2)
    n = 400
    boxes = np.stack([rng.uniform(0, 640, n), rng.uniform(0, 130, n), rng.uniform(5, 100, n), rng.uniform(5, 100, n)], 1)
    raw = head_xywh_cls(boxes[None], rng.uniform(0.5, 1.0, (1, n, 2)))
    got = run("xywh_cls", raw, ROW, num_classes=2)
    assert got["num_dets"][0, 0] == 0
    got = run("xywh_cls", raw, ROW, num_classes=2, mask_padding=False)
    assert got["num_dets"][0, 0] > 0


def test_identical_boxes_with_tied_scores():
    """Ten copies of one box, same score: one survives per class, the lowest index; classes
    do not suppress each other (class-aware), but do when class_aware is off."""
    boxes = np.tile([[320.0, 320.0, 100.0, 80.0]], (10, 1))
    scores = np.zeros((10, 3))
    scores[:5, 0] = 0.7
    scores[5:, 2] = 0.7
    raw = head_xywh_cls(boxes[None], scores[None])
    got = run("xywh_cls", raw, ROW, num_classes=3)
    assert got["num_dets"][0, 0] == 2 and got["det_classes"][0, :2].tolist() == [0, 2]
    got = run("xywh_cls", raw, ROW, num_classes=3, class_aware=False)
    assert got["num_dets"][0, 0] == 1 and got["det_classes"][0, 0] == 0


def test_tied_scores_across_the_top_k_cut():
    """5000 equal scores, pre_nms_top_k 100: the 100 lowest indices go on (as the reference)."""
    rng = np.random.default_rng(3)
    n = 5000
    boxes = np.stack([rng.uniform(0, 640, n), rng.uniform(150, 490, n), np.full(n, 4.0), np.full(n, 4.0)], 1)
    raw = head_xywh_cls(boxes[None], np.full((1, n, 1), 0.5))
    got = run("xywh_cls", raw, ROW, num_classes=1, pre_nms_top_k=100, max_det=300, iou_threshold=0.9)
    assert got["num_dets"][0, 0] <= 100


def test_tied_best_class_is_the_lowest():
    boxes = np.array([[[320.0, 320.0, 50.0, 50.0]]])
    raw = head_xywh_cls(boxes, np.array([[[0.1, 0.6, 0.6, 0.3]]]))
    got = run("xywh_cls", raw, ROW, num_classes=4)
    assert got["det_classes"][0, 0] == 1


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
def test_single_class(layout):
    rng = np.random.default_rng(4)
    raw = random_head(layout, 3, 700, 1, rng, dup_frac=0.1)
    run(layout, raw, np.tile(ROW, (3, 1)), num_classes=1, cmap=make_calibration("isotonic_per_class", 1, rng))


@pytest.mark.parametrize("static", [False, True])
def test_k_larger_than_candidates(static):
    rng = np.random.default_rng(5)
    raw = random_head("xywh_obj_cls", 2, 6, 4, rng)
    got = run("xywh_obj_cls", raw, np.tile(ROW, (2, 1)), num_classes=4, thr=0.0, static=static, max_det=300)
    assert got["num_dets"].max() <= 6
    assert_padding_rows(got)


def test_pre_nms_top_k_below_max_det():
    rng = np.random.default_rng(6)
    raw = random_head("xywh_cls", 2, 900, 5, rng)
    got = run("xywh_cls", raw, np.tile(ROW, (2, 1)), num_classes=5, thr=0.05, pre_nms_top_k=20, max_det=50)
    assert got["num_dets"].max() <= 20


@pytest.mark.parametrize("opset", [11, 12, 13, 17, 18, 21])
@pytest.mark.parametrize("multi_label", [False, True])
def test_opsets(opset, multi_label):
    rng = np.random.default_rng(opset)
    raw = random_head("xywh_cls", 2, 600, 6, rng, grid=True)
    for static in (False, True):
        run("xywh_cls", raw, np.tile(ROW, (2, 1)), num_classes=6, cmap=make_calibration("isotonic_per_class", 6, rng),
            thr=rng.uniform(0.1, 0.4, 6), static=static, opset=opset, multi_label=multi_label)


def test_end2end_classes_out_of_range_never_survive():
    raw = np.array([[[10, 150, 50, 200, 0.9, 5], [10, 150, 50, 200, 0.8, -1], [100, 150, 150, 200, 0.7, 1]]], np.float32)
    got = run("end2end", raw, ROW, num_classes=3)
    assert got["num_dets"][0, 0] == 1 and got["det_classes"][0, 0] == 1
