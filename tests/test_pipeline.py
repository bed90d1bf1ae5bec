"""The numpy reference pipeline (calib.pipeline.postprocess) on hand-built raw outputs, every layout.

Contract: decode -> calibrate -> per-class thresholds (calibrated > t) -> best class per box (unless
multi_label) -> pre_nms_top_k -> letterbox mask -> class-aware NMS -> max_det -> original px, clipped.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from calib.boxes import box_iou
from calib.artifact import AffineLogitMap, IsotonicMap, identity_map
from calib.letterbox import letterbox_row
from calib.artifact import PostprocessConfig
from calib.pipeline import pack_fixed, postprocess

ROW_SQUARE = letterbox_row(640, 640, (640, 640))      # no padding, scale 1
ROW_WIDE = letterbox_row(1280, 720, (640, 640))       # scale 0.5, pad_top 140 (content rows 140..500)
DENSE = ("xywh_cls", "xywh_obj_cls")


def raw_dense(layout, boxes_cxcywh, scores):
    """One image: boxes (N, 4) cxcywh input px, scores (N, C) -> raw (1, ...) in `layout`."""
    boxes = np.asarray(boxes_cxcywh, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(len(boxes), -1)
    if layout == "xywh_cls":
        return np.concatenate([boxes, scores], axis=1).T[None]                    # (1, 4+C, N)
    if layout == "xywh_obj_cls":
        obj = np.ones((len(boxes), 1), np.float32)                               # obj * p == p exactly
        return np.concatenate([boxes, obj, scores], axis=1)[None]                 # (1, N, 5+C)
    raise ValueError(layout)


def raw_end2end(boxes_xyxy, scores, classes):
    """One image: (K, 4) xyxy, (K,), (K,) -> (1, K, 6)."""
    return np.concatenate([np.asarray(boxes_xyxy, np.float32).reshape(-1, 4),
                           np.asarray(scores, np.float32)[:, None],
                           np.asarray(classes, np.float32)[:, None]], axis=1)[None]


def raw_for(layout, boxes_cxcywh, scores, classes=None):
    """Any layout from cxcywh boxes; scores (N, C) dense, or (N,) with classes for end2end."""
    if layout in DENSE:
        if classes is not None:                 # one class per box: build the dense matrix
            c = int(max(classes)) + 1 if len(classes) else 1
            dense = np.zeros((len(scores), max(c, 2)), np.float32)
            dense[np.arange(len(scores)), classes] = scores
            scores = dense
        return raw_dense(layout, boxes_cxcywh, scores)
    b = np.asarray(boxes_cxcywh, np.float32).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    return raw_end2end(xyxy, scores, classes)


def run(layout, raw, row=ROW_SQUARE, thresholds=0.25, calibration=None, num_classes=2, **cfg):
    if calibration is None and layout == "end2end":
        calibration = identity_map(num_classes)
    rows = np.asarray(row)[None] if np.ndim(row) == 1 else row
    return postprocess(raw, layout, rows, calibration, thresholds, PostprocessConfig(**cfg))


ALL = ("xywh_cls", "xywh_obj_cls", "end2end")


@pytest.mark.parametrize("layout", ALL)
def test_thresholds_are_strict(layout):
    boxes = [[100, 100, 20, 20], [300, 300, 20, 20], [500, 500, 20, 20]]
    scores = np.array([0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.4], np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [0, 0, 0]), thresholds=0.5)[0]
    assert len(d) == 1 and d.scores[0] > 0.5
    np.testing.assert_allclose(d.boxes_xyxy[0], [290, 290, 310, 310])


@pytest.mark.parametrize("layout", ALL)
def test_per_class_thresholds(layout):
    boxes = [[100, 100, 20, 20], [300, 300, 20, 20]]
    d = run(layout, raw_for(layout, boxes, np.array([0.6, 0.6]), [0, 1]), thresholds=np.array([0.7, 0.5]))[0]
    assert d.classes.tolist() == [1]


@pytest.mark.parametrize("layout", DENSE)
def test_best_class_per_box_and_ties(layout):
    boxes = [[100, 100, 20, 20], [300, 300, 20, 20], [500, 500, 20, 20]]
    scores = [[0.6, 0.8, 0.1], [0.7, 0.7, 0.7], [0.1, 0.3, 0.9]]
    d = run(layout, raw_dense(layout, boxes, scores), num_classes=3)[0]
    assert len(d) == 3
    by_x = {int(round(b[0])): (int(c), float(s)) for b, c, s in zip(d.boxes_xyxy, d.classes, d.scores)}
    assert by_x[90] == (1, pytest.approx(0.8))
    assert by_x[290] == (0, pytest.approx(0.7))          # a tie goes to the lowest class index
    assert by_x[490] == (2, pytest.approx(0.9))


@pytest.mark.parametrize("layout", DENSE)
def test_best_class_is_chosen_among_classes_that_pass_their_threshold(layout):
    # class 1 scores higher but fails its own threshold: the box survives as class 0
    d = run(layout, raw_dense(layout, [[100, 100, 20, 20]], [[0.3, 0.8]]), thresholds=np.array([0.1, 0.9]))[0]
    assert d.classes.tolist() == [0] and d.scores[0] == pytest.approx(0.3)


@pytest.mark.parametrize("layout", DENSE)
def test_best_class_uses_calibrated_scores(layout):
    # raw 0.6 (class 0) vs 0.5 (class 1), but class 1 is boosted by calibration above class 0
    cal = AffineLogitMap("platt_per_class", [1.0, 1.0], [0.0, 2.0])
    d = run(layout, raw_dense(layout, [[100, 100, 20, 20]], [[0.6, 0.5]]), calibration=cal)[0]
    assert d.classes.tolist() == [1]
    assert d.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)


@pytest.mark.parametrize("layout", DENSE)
def test_multi_label_keeps_every_surviving_class(layout):
    boxes = [[100, 100, 20, 20], [300, 300, 20, 20]]
    scores = [[0.6, 0.8, 0.1], [0.3, 0.2, 0.9]]
    d = run(layout, raw_dense(layout, boxes, scores), num_classes=3, multi_label=True)[0]
    got = sorted((int(round(b[0])), int(c)) for b, c in zip(d.boxes_xyxy, d.classes))
    assert got == [(90, 0), (90, 1), (290, 0), (290, 2)]
    np.testing.assert_allclose(d.scores, [0.9, 0.8, 0.6, 0.3], rtol=1e-6)     # best first


@pytest.mark.parametrize("layout", ALL)
def test_pre_nms_top_k(layout):
    boxes = [[50 + 100 * i, 300, 20, 20] for i in range(5)]
    scores = np.array([0.3, 0.9, 0.5, 0.8, 0.4], np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [0] * 5), pre_nms_top_k=3)[0]
    np.testing.assert_allclose(d.scores, [0.9, 0.8, 0.5])


@pytest.mark.parametrize("layout", ALL)
def test_top_k_comes_before_the_padding_mask(layout):
    # the best candidate sits in the top bar: it takes the only top-k slot, then the mask drops it
    boxes = [[300, 50, 20, 20], [300, 300, 20, 20]]
    scores = np.array([0.9, 0.8], np.float32)
    assert len(run(layout, raw_for(layout, boxes, scores, [0, 0]), row=ROW_WIDE, pre_nms_top_k=1)[0]) == 0
    assert len(run(layout, raw_for(layout, boxes, scores, [0, 0]), row=ROW_WIDE, pre_nms_top_k=2)[0]) == 1


@pytest.mark.parametrize("layout", ALL)
def test_boxes_centred_in_padding_are_dropped(layout):
    boxes = [[300, 50, 40, 40],      # top bar
             [300, 600, 40, 40],     # bottom bar
             [300, 130, 40, 40],     # centre in the bar, box reaching into the content
             [300, 150, 40, 40],     # centre on the content, box reaching into the bar
             [300, 320, 40, 40]]     # content
    scores = np.array([0.9, 0.9, 0.9, 0.8, 0.7], np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [0, 1, 0, 1, 0]), row=ROW_WIDE)[0]
    np.testing.assert_allclose(d.scores, [0.8, 0.7])
    off = run(layout, raw_for(layout, boxes, scores, [0, 1, 0, 1, 0]), row=ROW_WIDE, mask_padding=False)[0]
    assert len(off) == 5


@pytest.mark.parametrize("layout", ALL)
def test_class_aware_nms(layout):
    boxes = [[100, 100, 40, 40], [102, 100, 40, 40], [104, 100, 40, 40]]     # heavily overlapping
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = [0, 1, 0]
    d = run(layout, raw_for(layout, boxes, scores, classes), iou_threshold=0.5)[0]
    assert d.classes.tolist() == [0, 1]
    np.testing.assert_allclose(d.scores, [0.9, 0.8])
    d = run(layout, raw_for(layout, boxes, scores, classes), iou_threshold=0.5, class_aware=False)[0]
    assert d.classes.tolist() == [0]


@pytest.mark.parametrize("layout", ALL)
def test_nms_threshold_is_strict(layout):
    # IoU of these two is exactly 0.5: suppressed only when the threshold is below it
    boxes = [[5, 5, 10, 10], [5, 2.5, 10, 5]]
    scores = np.array([0.9, 0.8], np.float32)
    assert len(run(layout, raw_for(layout, boxes, scores, [0, 0]), iou_threshold=0.5)[0]) == 2
    assert len(run(layout, raw_for(layout, boxes, scores, [0, 0]), iou_threshold=0.45)[0]) == 1


@pytest.mark.parametrize("layout", ALL)
def test_max_det(layout):
    boxes = [[30 + 60 * i, 300, 20, 20] for i in range(10)]
    scores = np.linspace(0.3, 0.9, 10).astype(np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [i % 2 for i in range(10)]), max_det=4)[0]
    np.testing.assert_allclose(d.scores, scores[::-1][:4])


@pytest.mark.parametrize("layout", ALL)
def test_boxes_mapped_to_original_pixels_and_clipped(layout):
    boxes = [[150, 290, 100, 100],     # input xyxy 100,240,200,340 -> original 200,200,400,400
             [620, 480, 60, 60]]       # reaches past the content (x to 650, y to 510): clipped
    scores = np.array([0.9, 0.8], np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [0, 0]), row=ROW_WIDE)[0]
    np.testing.assert_allclose(d.boxes_xyxy[0], [200, 200, 400, 400], atol=1e-3)
    np.testing.assert_allclose(d.boxes_xyxy[1], [1180, 620, 1280, 720], atol=1e-3)
    np.testing.assert_allclose(d.boxes_input_xyxy[1], [590, 450, 650, 510], atol=1e-4)
    assert d.boxes_xyxy.dtype == np.float32 and d.scores.dtype == np.float32 and d.classes.dtype == np.int64


@pytest.mark.parametrize("layout", ALL)
def test_batch_uses_each_images_row(layout):
    one = raw_for(layout, [[150, 290, 100, 100]], np.array([0.9], np.float32), [0])
    raw = np.concatenate([one, one])
    rows = np.stack([ROW_WIDE, ROW_SQUARE])
    d = postprocess(raw, layout, rows, identity_map(2), 0.25, PostprocessConfig())
    np.testing.assert_allclose(d[0].boxes_xyxy[0], [200, 200, 400, 400], atol=1e-3)
    np.testing.assert_allclose(d[1].boxes_xyxy[0], [100, 240, 200, 340], atol=1e-3)
    with pytest.raises(ValueError):
        postprocess(raw, layout, rows[:1], identity_map(2), 0.25, PostprocessConfig())


@pytest.mark.parametrize("layout", ALL)
def test_calibration_then_threshold_on_calibrated_scale(layout):
    cal = AffineLogitMap("temperature", [0.5, 0.5], [0.0, 0.0])          # T = 2: 0.9 -> 0.75
    boxes = [[100, 100, 20, 20], [300, 300, 20, 20]]
    scores = np.array([0.9, 0.8], np.float32)
    d = run(layout, raw_for(layout, boxes, scores, [0, 1]), calibration=cal, thresholds=0.7)[0]
    assert len(d) == 1
    assert d.scores[0] == pytest.approx(0.75, rel=1e-5)
    iso = IsotonicMap([[0.0, 1.0], [0.0, 1.0]], [[0.0, 0.5], [0.0, 1.0]])  # class 0 halved
    d = run(layout, raw_for(layout, boxes, scores, [0, 1]), calibration=iso, thresholds=0.5)[0]
    assert d.classes.tolist() == [1] and d.scores[0] == pytest.approx(0.8)


def test_xywh_obj_cls_score_is_objectness_times_class_probability():
    raw = np.array([[[100, 100, 20, 20, 0.5, 0.9, 0.2]]], np.float32)
    d = run("xywh_obj_cls", raw, thresholds=0.3)[0]
    assert d.classes.tolist() == [0] and d.scores[0] == pytest.approx(0.45)


def test_end2end_ignores_out_of_range_classes():
    raw = raw_end2end([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.8, 0.7], [0, 5, -1])
    d = run("end2end", raw)[0]
    assert d.classes.tolist() == [0]


def test_empty_results():
    raw = raw_dense("xywh_cls", [[100, 100, 20, 20]], [[0.1, 0.1]])
    d = run("xywh_cls", raw)[0]
    assert len(d) == 0 and d.boxes_xyxy.shape == (0, 4)


def test_pack_fixed_layout():
    boxes = [[30 + 60 * i, 300, 20, 20] for i in range(3)]
    raw = raw_dense("xywh_cls", boxes, [[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]])
    empty = raw_dense("xywh_cls", boxes, np.zeros((3, 2)))
    dets = postprocess(np.concatenate([raw, empty]), "xywh_cls", np.stack([ROW_SQUARE] * 2), None, 0.25,
                       PostprocessConfig())
    out = pack_fixed(dets, 5)
    assert out["num_dets"].shape == (2, 1) and out["num_dets"].dtype == np.int32
    assert out["det_boxes"].shape == (2, 5, 4) and out["det_boxes"].dtype == np.float32
    assert out["det_scores"].shape == (2, 5) and out["det_classes"].dtype == np.int32
    assert out["num_dets"][:, 0].tolist() == [3, 0]
    np.testing.assert_allclose(out["det_scores"][0], [0.9, 0.8, 0.7, 0, 0])
    assert out["det_classes"][0].tolist() == [0, 1, 0, -1, -1]
    assert out["det_classes"][1].tolist() == [-1] * 5
    assert np.all(out["det_boxes"][0, 3:] == 0) and np.all(out["det_boxes"][1] == 0)
    np.testing.assert_allclose(out["det_boxes"][0, 0], [20, 290, 40, 310])
    small = pack_fixed(dets, 2)                          # truncation keeps the best
    assert small["num_dets"][:, 0].tolist() == [2, 0]
    assert small["det_classes"][0].tolist() == [0, 1]


# --------------------------------------------------------------- a slow, literal reference


def reference(raw, layout, row, cal, thr, cfg):
    """The contract, written out with Python loops over candidates (no shared helpers but IoU)."""
    raw = np.asarray(raw, np.float32)[0]
    if layout == "xywh_cls":
        b, s = raw[:4].T, raw[4:].T
    else:
        b, s = raw[:, :4], raw[:, 4:5] * raw[:, 5:]
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    cands = []   # (calibrated score, tie key, box index, class)
    n, c = s.shape
    for i in range(n):
        surv = [(float(cal.transform(np.array([s[i, k]], np.float32), np.array([k]))[0]), k)
                for k in range(c)]
        surv = [(v, k) for v, k in surv if v > thr[k]]
        if not surv:
            continue
        if cfg.multi_label:
            cands += [(v, i * c + k, i, k) for v, k in surv]
        else:
            best = max(v for v, _ in surv)
            k = min(k for v, k in surv if v == best)
            cands.append((best, i, i, k))
    cands.sort(key=lambda t: (-t[0], t[1]))
    cands = cands[:cfg.pre_nms_top_k]
    sx, sy, pl, pt = row[2], row[3], row[4], row[5]
    inside = []
    for cand in cands:
        x1, y1, x2, y2 = xyxy[cand[2]]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if pl <= cx <= pl + row[0] * sx and pt <= cy <= pt + row[1] * sy:
            inside.append(cand)
    keep = []
    for cand in inside:
        ok = True
        for k in keep:
            if k[3] == cand[3] and box_iou(xyxy[cand[2]][None], xyxy[k[2]][None])[0, 0] > cfg.iou_threshold:
                ok = False
                break
        if ok:
            keep.append(cand)
    return keep[:cfg.max_det]


@st.composite
def random_head(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n, c = draw(st.integers(1, 60)), draw(st.integers(1, 4))
    centres = rng.integers(0, 64, (n, 2)) * 10.0           # on a grid: exact float32 geometry
    wh = rng.integers(2, 12, (n, 2)) * 10.0
    boxes = np.concatenate([centres, wh], axis=1)
    scores = rng.choice(np.array([0.05, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9, 0.95], np.float32), (n, c))
    return boxes, scores, c


@settings(deadline=None, max_examples=60)
@given(random_head(), st.sampled_from(DENSE), st.booleans(), st.sampled_from([0.45, 0.6, 0.7]),
       st.integers(1, 40), st.integers(1, 30), st.sampled_from(["identity", "platt"]))
def test_matches_literal_reference(head, layout, multi_label, iou, top_k, max_det, cal_kind):
    boxes, scores, c = head
    cal = identity_map(c) if cal_kind == "identity" else AffineLogitMap(
        "platt_per_class", np.linspace(0.7, 1.5, c), np.linspace(-0.5, 0.5, c))
    thr = np.linspace(0.25, 0.5, c)
    cfg = PostprocessConfig(iou_threshold=iou, max_det=max_det, pre_nms_top_k=top_k, multi_label=multi_label)
    raw = raw_dense(layout, boxes, scores)
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    iou_m = box_iou(xyxy, xyxy)
    assume(not np.any(np.abs(iou_m - iou) < 1e-5))
    d = postprocess(raw, layout, ROW_WIDE[None], cal, thr, cfg)[0]
    ref = reference(raw, layout, ROW_WIDE, cal, thr, cfg)
    assert len(d) == len(ref)
    np.testing.assert_allclose(d.scores, [r[0] for r in ref], rtol=1e-6)
    assert d.classes.tolist() == [r[3] for r in ref]
    np.testing.assert_allclose(d.boxes_input_xyxy, xyxy[[r[2] for r in ref]].reshape(-1, 4), atol=1e-4)
