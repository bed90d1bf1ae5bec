"""The inserted graph, cut at the head, equals the numpy reference pipeline (calib.pipeline).

Hypothesis draws the graph configuration (layout, class count, calibrator, multi-label,
thresholds, NMS knobs) and the data (batch 1..4, candidates 0..10,000, boxes anywhere in and
around the input, letterbox rows of any aspect ratio, ties on a coarse grid). Sessions are
cached per configuration. Same num_dets, equal classes, boxes within 1e-3 px, scores within 1e-5.

With the identity map the graph is bit-exact, order included. With a real calibrator the graph's
float32 exp/log (onnxruntime's kernels) and numpy's differ by an ulp or so, so two detections
whose calibrated scores are within that of each other may come out in either order: the
comparison then matches rows by class, box and score instead of by position (counts, classes,
boxes and scores must still all agree).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact_factory import CALIBRATORS, assert_same_detections, make_calibration, random_head
from calib.letterbox import letterbox_row
from calib.artifact import PostprocessConfig
from calib.pipeline import pack_fixed, postprocess
from calib.session import make_session
from onnx_ops.patch import build_postprocess_graph

LAYOUTS = ("xywh_cls", "xywh_obj_cls", "end2end")
CLASS_COUNTS = (1, 2, 3, 7, 80, 100)


@functools.lru_cache(maxsize=64)
def _config(layout, num_classes, kind, multi_label, seed, iou, max_det, pre_nms_top_k, mask_padding, class_aware):
    rng = np.random.default_rng(seed)
    cmap = make_calibration(kind, num_classes, rng)
    thr = rng.uniform(0.02, 0.6, num_classes)
    if seed % 5 == 0:
        thr[:] = thr[0]                                   # one threshold for every class
    cfg = PostprocessConfig(iou_threshold=iou, max_det=max_det, pre_nms_top_k=pre_nms_top_k, multi_label=multi_label,
                            class_aware=class_aware, mask_padding=mask_padding)
    model = build_postprocess_graph(layout, num_classes, cmap, thr, cfg)
    sess = make_session(model, threads=1)
    return sess, cmap, thr, cfg


def run_cut(sess, raw, rows):
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"head": raw, "letterbox": rows.astype(np.float32)})))


@st.composite
def letterbox_rows(draw, batch, size=(640, 640)):
    rows = []
    for _ in range(batch):
        w = draw(st.integers(1, 4000))
        h = draw(st.integers(1, 4000))
        mode = draw(st.sampled_from(["letterbox", "letterbox", "stretch"]))
        rows.append(letterbox_row(w, h, size, mode))
    return np.stack(rows).astype(np.float32)


@st.composite
def cases(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    c = draw(st.sampled_from(CLASS_COUNTS))
    kind = draw(st.sampled_from(CALIBRATORS))
    multi = draw(st.booleans()) if layout != "end2end" else False
    seed = draw(st.integers(0, 3))
    iou = draw(st.sampled_from([0.3, 0.5, 0.7]))
    max_det = draw(st.sampled_from([1, 10, 100, 300]))
    top_k = draw(st.sampled_from([5, 300, 3000]))
    knobs = (draw(st.sampled_from([True, True, False])), draw(st.sampled_from([True, True, False])))
    batch = draw(st.integers(1, 4))
    big = draw(st.integers(0, 9)) == 0
    n = draw(st.integers(0, 10_000 if big else 400))
    if c * n > 200_000:                      # keep the big cases affordable: few classes when N is large
        n = 200_000 // c
    data_seed = draw(st.integers(0, 2**32 - 1))
    grid = draw(st.booleans())
    dup = draw(st.sampled_from([0.0, 0.0, 0.2]))
    rows = draw(letterbox_rows(batch))
    return (layout, c, kind, multi, seed, iou, max_det, top_k, knobs[0], knobs[1]), (batch, n, data_seed, grid, dup), rows


@settings(max_examples=int(__import__("os").environ.get("DETCAL_HYP_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_cut_graph_equals_reference(case):
    (layout, c, kind, multi, seed, iou, max_det, top_k, mask, aware), (batch, n, data_seed, grid, dup), rows = case
    sess, cmap, thr, cfg = _config(layout, c, kind, multi, seed, iou, max_det, top_k, mask, aware)
    rng = np.random.default_rng(data_seed)
    raw = random_head(layout, batch, n, c, rng, grid=grid, dup_frac=dup)
    got = run_cut(sess, raw, rows)
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, cfg), cfg.max_det)
    assert_same_detections(got, ref, context=f"{layout} C={c} {kind} multi={multi} B={batch} N={n}",
                           ties_unordered=kind != "identity")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", CALIBRATORS)
def test_every_calibrator_and_layout_once(layout, kind):
    """A fixed, dense example per (layout, calibrator): many survivors, overlaps and padding."""
    sess, cmap, thr, cfg = _config(layout, 80, kind, False, 1, 0.5, 300, 3000, True, True)
    rng = np.random.default_rng(7)
    raw = random_head(layout, 2, 8400 if layout != "end2end" else 300, 80, rng)
    rows = np.stack([letterbox_row(1280, 720, (640, 640)), letterbox_row(480, 1200, (640, 640))]).astype(np.float32)
    got = run_cut(sess, raw, rows)
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, cfg), cfg.max_det)
    assert ref["num_dets"].min() > 0
    assert_same_detections(got, ref, ties_unordered=kind != "identity")


@pytest.mark.parametrize("layout", ("xywh_cls", "xywh_obj_cls"))
def test_multi_label_dense(layout):
    sess, cmap, thr, cfg = _config(layout, 20, "platt_per_class", True, 2, 0.6, 300, 3000, True, True)
    rng = np.random.default_rng(3)
    raw = random_head(layout, 3, 2000, 20, rng, grid=True, dup_frac=0.1)
    rows = np.tile(letterbox_row(1000, 1000, (640, 640)), (3, 1)).astype(np.float32)
    got = run_cut(sess, raw, rows)
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, cfg), cfg.max_det)
    assert_same_detections(got, ref, ties_unordered=True)
