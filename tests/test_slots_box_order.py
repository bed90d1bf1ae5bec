"""Boxes first over a static N <= pre_nms_top_k (patch.slots_in_box_order): no pre-NMS TopK, the
slots go to NMS in box order and steps.kept_by_score sorts the survivors. Property: the cut graph
equals the numpy reference on both sides of the cap (N <= pre_nms_top_k: the box-order path;
N > pre_nms_top_k: the sorted one), with exact ties (grid scores, duplicated boxes), every
calibrator, batches whose images keep very different counts, and N below max_det."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact_factory import CALIBRATORS, assert_same_detections, make_calibration, random_head
from calib.artifact import PAD_LEFT, PAD_TOP, SCALE_X, SCALE_Y, PostprocessConfig
from calib.letterbox import letterbox_row
from calib.pipeline import pack_fixed, postprocess
from calib.session import make_session
from onnx_ops.patch import build_postprocess_graph, slots_in_box_order
from onnx_ops.variants import BOXES_FIRST_VARIANTS

ROWS = np.stack([letterbox_row(1280, 720, (640, 640)), letterbox_row(480, 640, (640, 640)),
                 letterbox_row(640, 640, (640, 640))]).astype(np.float32)


def _ops(model) -> list[str]:
    return [n.name for n in model.graph.node]


@st.composite
def cases(draw):
    layout = draw(st.sampled_from(("xywh_cls", "xywh_obj_cls")))
    c = draw(st.sampled_from((1, 3, 80)))
    kind = draw(st.sampled_from(CALIBRATORS))
    n = draw(st.one_of(st.integers(1, 600), st.integers(2000, 3100)))
    top_k = draw(st.sampled_from([n, n + 1, 3000, max(1, n - 1), max(1, n // 3)]))
    max_det = draw(st.sampled_from([1, 10, 100, 300]))
    batch = draw(st.integers(1, 3))
    static_batch = draw(st.booleans())
    iou = draw(st.sampled_from([0.3, 0.5, 0.7]))
    aware = draw(st.sampled_from([True, True, False]))
    grid = draw(st.booleans())
    dup = draw(st.sampled_from([0.0, 0.2]))
    seed = draw(st.integers(0, 2**32 - 1))
    return layout, c, kind, n, top_k, max_det, batch, static_batch, iou, aware, grid, dup, seed


@settings(max_examples=int(os.environ.get("DETCAL_HYP_EXAMPLES", 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_static_n_equals_reference_on_both_sides_of_the_cap(case):
    layout, c, kind, n, top_k, max_det, batch, static_batch, iou, aware, grid, dup, seed = case
    rng = np.random.default_rng(seed)
    cmap = make_calibration(kind, c, rng)
    thr = rng.uniform(0.02, 0.5, c).astype(np.float32)
    cfg = PostprocessConfig(iou_threshold=iou, max_det=max_det, pre_nms_top_k=top_k, class_aware=aware)
    model = build_postprocess_graph(layout, c, cmap, thr, cfg, num_candidates=n,
                                    batch=batch if static_batch else "batch")
    raw = random_head(layout, batch, n, c, rng, grid=grid, dup_frac=dup)
    if batch > 1:          # image 0 with few survivors, so the images' counts differ
        if layout == "xywh_cls":
            raw[0, 4:] *= np.float32(0.1)
        else:
            raw[0, :, 4] *= np.float32(0.1)
    rows = ROWS[np.arange(batch) % len(ROWS)]
    sess = make_session(model, threads=1)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, cfg), cfg.max_det)
    assert_same_detections(got, ref, context=f"{layout} C={c} {kind} N={n} top_k={top_k} B={batch}",
                           ties_unordered=kind != "identity")


@pytest.mark.parametrize("n, top_k, box_order", [(2100, 3000, True), (3000, 3000, True), (3001, 3000, False),
                                                 (8400, 3000, False), (500, 499, False)])
def test_the_pre_nms_topk_is_left_out_only_where_the_cap_cannot_bind(n, top_k, box_order):
    cfg = PostprocessConfig(pre_nms_top_k=top_k)
    thr = np.full(80, 0.25, np.float32)
    model = build_postprocess_graph("xywh_cls", 80, make_calibration("temperature", 80, np.random.default_rng(0)), thr,
                                    cfg, num_candidates=n)
    names = _ops(model)
    assert ("detcal/topk/topk" not in names) == box_order
    assert ("detcal/out/selected_score" in names) == box_order
    assert slots_in_box_order(next(iter(BOXES_FIRST_VARIANTS)), n, cfg) == box_order


def test_dynamic_n_keeps_the_sorted_path():
    cfg = PostprocessConfig()
    assert not slots_in_box_order(next(iter(BOXES_FIRST_VARIANTS)), None, cfg)
    model = build_postprocess_graph("xywh_cls", 3, make_calibration("identity", 3, np.random.default_rng(0)),
                                    np.full(3, 0.25, np.float32), cfg)
    assert "detcal/topk/topk" in _ops(model)


def test_every_box_surviving_with_ties_at_the_output_cut():
    """N = 400 boxes, all surviving with a handful of tied scores, max_det 300 < survivors: the
    output TopK's cut falls inside a run of equal scores; the kept ones are the lowest box indices."""
    rng = np.random.default_rng(5)
    n, c = 400, 2
    raw = random_head("xywh_cls", 2, n, c, rng, grid=True)
    raw[:, 4:] = np.float32(0.0)
    raw[:, 4, :] = rng.choice(np.array([0.5, 0.75, 0.875], np.float32), (2, n))
    raw[:, 2:4, :] = np.float32(1.0)                       # 1 px boxes spread out: NMS suppresses little
    raw[:, 0, :] = np.arange(n, dtype=np.float32) * 1.5 + 10
    raw[:, 1, :] = 320
    cfg = PostprocessConfig(max_det=300, iou_threshold=0.5)
    cmap = make_calibration("identity", c, rng)
    model = build_postprocess_graph("xywh_cls", c, cmap, np.full(c, 0.25, np.float32), cfg, num_candidates=n)
    assert "detcal/topk/topk" not in _ops(model)
    rows = np.tile(letterbox_row(640, 640, (640, 640)), (2, 1)).astype(np.float32)
    got = dict(zip(["num_dets", "det_boxes", "det_scores", "det_classes"],
                   make_session(model).run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, cmap, np.full(c, 0.25, np.float32), cfg), cfg.max_det)
    assert int(got["num_dets"].min()) == 300
    assert_same_detections(got, ref)


@pytest.mark.parametrize("static_batch", [True, False])
def test_no_survivor_anywhere(static_batch):
    """M = 0 (no box clears a threshold in any image): empty outputs, no gather out of range."""
    n, c = 2100, 4
    raw = random_head("xywh_cls", 2, n, c, np.random.default_rng(1))
    raw[:, 4:] = np.float32(0.01)
    cfg = PostprocessConfig()
    model = build_postprocess_graph("xywh_cls", c, make_calibration("temperature", c, np.random.default_rng(1)),
                                    np.full(c, 0.25, np.float32), cfg, num_candidates=n,
                                    batch=2 if static_batch else "batch")
    assert "detcal/topk/topk" not in _ops(model)
    got = make_session(model).run(None, {"head": raw, "letterbox": ROWS[:2]})
    assert (got[0] == 0).all() and (got[3] == -1).all() and not got[1].any() and not got[2].any()


@pytest.mark.parametrize("n", [3839, 3840, 8400])
def test_box_order_over_several_compaction_rows(n):
    """pre_nms_top_k above N past TensorRT's TopK row (N >= 3840: the compaction's slots come in rows
    with unfilled slots between them): still box order, still the reference's detections."""
    rng = np.random.default_rng(n)
    c = 3
    raw = random_head("xywh_cls", 2, n, c, rng, dup_frac=0.1)
    cfg = PostprocessConfig(pre_nms_top_k=10_000, max_det=300, iou_threshold=0.6)
    cmap = make_calibration("platt_per_class", c, rng)
    thr = np.array([0.3, 0.5, 0.4], np.float32)
    model = build_postprocess_graph("xywh_cls", c, cmap, thr, cfg, num_candidates=n)
    assert "detcal/topk/topk" not in _ops(model)
    got = dict(zip(["num_dets", "det_boxes", "det_scores", "det_classes"],
                   make_session(model).run(None, {"head": raw, "letterbox": ROWS[:2]})))
    ref = pack_fixed(postprocess(raw, "xywh_cls", ROWS[:2], cmap, thr, cfg), cfg.max_det)
    assert ref["num_dets"].min() > 0
    assert_same_detections(got, ref, ties_unordered=True)


@pytest.mark.parametrize("calibrator", ["identity", "temperature", "platt_box"])
def test_padding_rows_are_exact_for_any_letterbox(calibrator):
    """The box-order path leaves the rows past num_dets to the output TopK's tail (class -1, boxes
    of -BIG that the mapping to original pixels clips to 0): they stay exactly zero with class -1
    for negative pads (a crop), tiny and huge scales, and the kept rows equal the reference's (no
    letterbox masking: with such rows it would drop every box)."""
    rng = np.random.default_rng(3)
    n, c = 2100, 5
    raw = random_head("xywh_cls", 3, n, c, rng)
    rows = ROWS.copy()
    rows[:, [PAD_LEFT, PAD_TOP]] = [[-50.0, -20.0], [0.0, -300.0], [1e4, 7.0]]
    rows[:, [SCALE_X, SCALE_Y]] = [[0.01, 0.01], [4.0, 2.5], [1e-6, 1e-6]]
    cmap = make_calibration(calibrator, c, rng)
    cfg = PostprocessConfig(max_det=100, mask_padding=False)
    for t in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2):        # some detections, fewer than max_det
        thr = np.full(c, t, np.float32)
        ref = pack_fixed(postprocess(raw, "xywh_cls", rows, cmap, thr, cfg), cfg.max_det)
        if (ref["num_dets"] > 0).all() and (ref["num_dets"] < cfg.max_det).all():
            break
    model = build_postprocess_graph("xywh_cls", c, cmap, thr, cfg, num_candidates=n)
    assert "detcal/topk/topk" not in _ops(model) and "detcal/out/det_boxes" not in _ops(model)
    got = dict(zip(["num_dets", "det_boxes", "det_scores", "det_classes"],
                   make_session(model).run(None, {"head": raw, "letterbox": rows})))
    assert (0 < got["num_dets"]).all() and (got["num_dets"] < cfg.max_det).all()
    for b in range(3):
        k = int(got["num_dets"][b, 0])
        assert (got["det_boxes"][b, k:] == 0).all() and (got["det_scores"][b, k:] == 0).all()
        assert (got["det_classes"][b, k:] == -1).all()
    assert_same_detections(got, ref, ties_unordered=calibrator != "identity")
