"""COCO `iscrowd=1`: crowd regions are ignore regions, never negatives (issue 10).

A detection left unmatched by the ordinary boxes whose intersection over its own area with a
crowd region of its class is >= the match IoU is neither a true nor a false positive: in
matching, in AP / precision / D-ECE, and in the threshold fit; an image whose only
annotations are crowd regions is not a negative scene.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.data import load_dataset
from calib.matching import match_dataset
from calib.metrics import mean_ap, precision_recall, summarize
from coco_reference import cocoeval_stats


def test_detection_on_a_crowd_region_is_ignored_not_false():
    gt = (np.array([[0, 0, 10, 10]], float), np.array([0]))
    crowd = (np.array([[50, 50, 150, 150]], float), np.array([0]))
    dets = (np.array([[0, 0, 10, 10],        # TP on the ordinary box
                      [60, 60, 70, 70],      # small box inside the crowd: IoU 0.01, IoA 1 -> ignored
                      [140, 140, 200, 200],  # IoA 100/3600 < 0.5 -> a false positive
                      [60, 60, 70, 70]], float),   # same place, class 1: the crowd is class 0 -> FP
            np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 0, 1]))
    m = match_dataset([dets], [gt], 0.5, num_classes=2, per_image_crowd=[crowd])
    assert m.is_tp.tolist() == [True, False, False, False]
    assert m.ignored.tolist() == [False, True, False, False]
    pr = precision_recall(m)
    assert pr.precision == pytest.approx(1 / 3)          # 1 TP of the 3 that count
    assert summarize(m)["n_ignored_on_crowd"] == 1
    # at IoU 0.95 the crowd rule is as strict: IoA 1.0 still ignored, and the TP stays a TP
    m95 = m.rematch(0.95)
    assert m95.ignored.tolist() == [False, True, False, False]


def test_ordinary_box_is_matched_before_the_crowd_region():
    gt = (np.array([[0, 0, 100, 100]], float), np.array([0]))
    crowd = (np.array([[0, 0, 100, 100]], float), np.array([0]))
    dets = (np.array([[0, 0, 100, 100], [1, 1, 100, 100]], float), np.array([0.9, 0.8]), np.array([0, 0]))
    m = match_dataset([dets], [gt], 0.5, num_classes=1, per_image_crowd=[crowd])
    # the first takes the box; the second would have been a duplicate FP, but lies on the crowd
    assert m.is_tp.tolist() == [True, False] and m.ignored.tolist() == [False, True]


def test_crowd_only_image_is_not_a_negative_scene():
    empty = (np.zeros((0, 4)), np.zeros(0, int))
    crowd = (np.array([[0, 0, 50, 50]], float), np.array([0]))
    dets = [(np.array([[5, 5, 20, 20]], float), np.array([0.9]), np.array([0]))] * 2
    m = match_dataset(dets, [empty, empty], 0.5, num_classes=1, per_image_crowd=[crowd, empty])
    assert m.negative_image_mask.tolist() == [False, True]
    s = summarize(m, 0.5)
    assert s["n_negative_images"] == 1 and s["fp_per_negative_image"] == 1.0


def _random_crowd_dataset(rng, n_img=50, c=3):
    dets, gts, crowds = [], [], []
    for _ in range(n_img):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (m, 2))
        gb = np.concatenate([xy, xy + rng.uniform(8, 80, (m, 2))], 1)
        gc = rng.integers(0, c, m)
        r = int(rng.integers(0, 3))
        xy = rng.uniform(0, 250, (r, 2))
        cb = np.concatenate([xy, xy + rng.uniform(40, 150, (r, 2))], 1)
        cc = rng.integers(0, c, r)
        k = int(rng.integers(0, 30))
        xy = rng.uniform(0, 300, (k, 2))
        db = np.concatenate([xy, xy + rng.uniform(8, 60, (k, 2))], 1)
        dc = rng.integers(0, c, k)
        boxes = np.concatenate([gb, cb])
        classes = np.concatenate([gc, cc])
        if len(boxes):
            s = rng.random(k) < 0.7
            p = rng.integers(0, len(boxes), k)
            inside = boxes[p[s], :2] + rng.uniform(0, 0.3, (s.sum(), 2)) * (boxes[p[s], 2:] - boxes[p[s], :2])
            db[s] = np.where(rng.random((s.sum(), 1)) < 0.5, boxes[p[s]] + rng.normal(0, 5, (s.sum(), 4)),
                             np.concatenate([inside, inside + rng.uniform(5, 30, (s.sum(), 2))], 1))
            dc[s] = classes[p[s]]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dets.append((db, np.round(rng.random(k), 3), dc))
        gts.append((gb, gc))
        crowds.append((cb, cc))
    return dets, gts, crowds


pycocotools = pytest.importorskip("pycocotools", reason="pycocotools not installed (dev-only)")


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_ap_with_crowd_agrees_with_pycocotools(seed):
    rng = np.random.default_rng(seed)
    c = 3
    dets, gts, crowds = _random_crowd_dataset(rng, c=c)
    if not sum(len(g[1]) for g in gts) or not sum(len(d[1]) for d in dets):
        return
    m = match_dataset(dets, gts, 0.5, num_classes=c, per_image_crowd=crowds)
    stats = cocoeval_stats(dets, gts, c, crowds)
    has = m.n_gt_per_class > 0
    if not has.all():   # pycocotools averages only classes with ground truth too; keep it simple
        return
    assert mean_ap(m, [0.5]) == pytest.approx(stats[1], abs=1e-3)
    assert mean_ap(m) == pytest.approx(stats[0], abs=1e-3)


# ----------------------------------------------------------------------------- the COCO reader


def _write_png(path: Path, w=64, h=48):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)


def test_coco_reader_carries_crowd_regions(tmp_path):
    for n in ("a.png", "b.png", "c.png"):
        _write_png(tmp_path / "images" / n)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
                   {"id": 3, "file_name": "c.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 24], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [32, 24, 32, 24], "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    ds = load_dataset(path)
    a, b, c = ds.samples
    assert a.gt_classes.tolist() == [0] and a.crowd_classes.tolist() == [1]
    np.testing.assert_allclose(a.crowd_boxes_xyxy_norm, [[0.5, 0.5, 1.0, 1.0]])
    np.testing.assert_allclose(b.crowd_boxes_xyxy_px(64, 48), [[0, 0, 64, 48]])
    assert not b.is_negative and b.n_boxes == 0          # crowd only: not a negative scene
    assert c.is_negative
    assert ds.report.n_negative == 1 and ds.report.n_crowd_ignored == 2


# ----------------------------------------------------------------------------- the threshold fit


def _coco_from_yolo(data_yaml: Path, crowd_images: set[str], drop: set[str]) -> Path:
    """A COCO JSON of the blob dataset; the annotations of `crowd_images` become crowd regions."""
    from PIL import Image

    root = data_yaml.parent
    images, anns = [], []
    for img in sorted((root / "images" / "val").glob("*.png")):
        if img.stem in drop:
            continue
        w, h = Image.open(img).size
        iid = len(images) + 1
        images.append({"id": iid, "file_name": img.name, "width": w, "height": h})
        for line in (root / "labels" / "val" / f"{img.stem}.txt").read_text().split("\n"):
            if not line.strip():
                continue
            k, cx, cy, bw, bh = line.split()
            cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(k),
                         "bbox": [cx - bw / 2, cy - bh / 2, bw, bh], "iscrowd": int(img.stem in crowd_images)})
    out = root / "images" / "val" / f"instances_{len(crowd_images)}_{len(drop)}.json"
    out.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 0, "name": "blob0"}, {"id": 1, "name": "blob1"}]}))
    return out


def test_crowd_only_images_do_not_raise_the_thresholds(blob_model, blob_data):
    from calib.fitting import FitOptions, fit

    crowd = {f"pos_{i:04d}" for i in range(6)}
    with_crowd = _coco_from_yolo(blob_data, crowd, set())
    without = _coco_from_yolo(blob_data, set(), crowd)
    opts = FitOptions(calibrator="identity", folds=3)
    a = fit(blob_model, with_crowd, options=opts, progress=False, log=lambda *_: None)
    b = fit(blob_model, without, options=opts, progress=False, log=lambda *_: None)
    assert a.matched.n_negative_images == b.matched.n_negative_images == 16
    assert a.matched.ignored.sum() >= 6                   # the blobs of the crowd images: neither TP nor FP
    np.testing.assert_array_equal(a.thresholds.score_, b.thresholds.score_)
    # and the artifact's `after` numbers show the shipped thresholds, not 0.0
    shipped = [a.after["per_class"][n]["threshold"] for n in ("blob0", "blob1")]
    np.testing.assert_allclose(shipped, a.thresholds.score_)
