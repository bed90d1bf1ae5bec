"""AP50 of the real YOLOX-nano and PicoDet-S with detcal's decoders vs. their projects' own decodes.

    python benchmarks/real_heads_ap.py [--shared ../shared] [--split val] [--limit N]

For each model, every image of the split (positives and negative scenes) is preprocessed once,
as the model's project does it, and the same raw outputs are post-processed twice:

- detcal: `calib.head_recognition.recognise_head` -> `calib.head_decoders.decode_head` ->
  `calib.pipeline.postprocess` (best class per box, class-aware NMS = `calib.nms`) -> original px;
- reference: a decode written here from the projects' published post-processing, not from
  detcal's code: YOLOX's `demo_postprocess` + `multiclass_nms` (yolox/utils/demo_utils.py:
  grids from `img_size // stride`, offsets + grid, exp(log wh), score obj * cls, per-class NMS
  with the +1 pixel area convention) and hpc203/picodet-onnxruntime's `get_bboxes_single`
  (softmax over the 8 bins, dot with 0..7, times stride, centre `x * s + 0.5 * (s - 1)`,
  top 1000 per level, argmax class, class-agnostic NMS), both mapped back with their own
  (x - pad) / r.

Both go through `calib.matching.match_dataset` + `calib.metrics.mean_ap(m, [0.5])` (AP50 over
the 80 COCO classes present). The two pipelines share only the model run and the scoring.
Score threshold 0.001, NMS IoU 0.6, at most 100 detections per image, in both; detcal's
pipeline set to the published NMS semantics (YOLOX: every (box, class) pair, class-aware;
PicoDet: best class, class-agnostic). A last column shows detcal's defaults for information.

Preprocessing (the README of ../shared/real): YOLOX-nano 416, letterbox to the top-left corner,
pad 114, BGR, raw 0..255 (YOLOX's `preproc`: cv2 INTER_LINEAR to int(w r) x int(h r));
PicoDet-S 320, centred letterbox, pad 0, RGB, (x - mean) / std in 0..255 units
(cv2 INTER_AREA, as hpc203's `resize_image`).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calib.data import iter_images, load_dataset  # noqa: E402
from calib.head_decoders import decode_head  # noqa: E402
from calib.head_recognition import recognise_head  # noqa: E402
from calib.matching import match_dataset  # noqa: E402
from calib.metrics import mean_ap  # noqa: E402
from calib.artifact import PostprocessConfig  # noqa: E402
from calib.pipeline import postprocess  # noqa: E402
from calib.session import make_session  # noqa: E402

CONF, IOU, MAX_DET = 0.001, 0.6, 100
PICO_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PICO_STD = np.array([58.395, 57.12, 57.375], np.float32)


# ------------------------------------------------------------------------------------------
# preprocessing, as each project publishes it (shared by both post-processings)
# ------------------------------------------------------------------------------------------
def yolox_preproc(rgb: np.ndarray, size: int):
    """Top-left letterbox pad 114, BGR, float32 0..255 -> (x (3, S, S), row (6,), r)."""
    import cv2

    h, w = rgb.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(w * r), int(h * r)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = np.full((size, size, 3), 114, np.uint8)
    out[:nh, :nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    row = np.array([w, h, r, r, 0.0, 0.0])
    return out.transpose(2, 0, 1).astype(np.float32), row, (r, 0, 0)


def picodet_preproc(rgb: np.ndarray, size: int):
    """Centred letterbox pad 0 (hpc203's resize_image), RGB, (x - mean) / std -> (x, row, (r, left, top))."""
    import cv2

    h, w = rgb.shape[:2]
    top, left, nh, nw = 0, 0, size, size
    if h != w:
        if h / w > 1:
            nh, nw = size, int(size / (h / w))
            left = int((size - nw) * 0.5)
        else:
            nh, nw = int(size * (h / w)), size
            top = int((size - nh) * 0.5)
    out = np.zeros((size, size, 3), np.uint8)
    out[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    x = (out.astype(np.float32) - PICO_MEAN) / PICO_STD
    row = np.array([w, h, nw / w, nh / h, left, top])
    return x.transpose(2, 0, 1).astype(np.float32), row, (row[2], row[3], left, top)


# ------------------------------------------------------------------------------------------
# reference post-processing, from the projects' published code
# ------------------------------------------------------------------------------------------
def _nms_plus1(boxes, scores, thr):
    """YOLOX demo_utils.nms: greedy, areas with the +1 pixel convention."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def yolox_reference(out: np.ndarray, size: int, r: float, orig_wh):
    out = out.astype(np.float64).copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        hs, ws = size // s, size // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        g = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(g)
        strides.append(np.full((*g.shape[:2], 1), s))
    grids, strides = np.concatenate(grids, 1), np.concatenate(strides, 1)
    out[..., :2] = (out[..., :2] + grids) * strides
    out[..., 2:4] = np.exp(out[..., 2:4]) * strides
    pred = out[0]
    boxes = np.stack([pred[:, 0] - pred[:, 2] / 2, pred[:, 1] - pred[:, 3] / 2,
                      pred[:, 0] + pred[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2], 1) / r
    scores = pred[:, 4:5] * pred[:, 5:]
    dets = []
    for c in range(scores.shape[1]):
        m = scores[:, c] > CONF
        if not m.any():
            continue
        keep = _nms_plus1(boxes[m], scores[m, c], IOU)
        dets += [(*boxes[m][k], scores[m, c][k], c) for k in keep]
    return _top(dets, orig_wh)


def picodet_reference(outs: list[np.ndarray], size: int, geom, orig_wh):
    sx, sy, left, top = geom
    reg_max = outs[4].shape[-1] // 4 - 1
    project = np.arange(reg_max + 1)
    all_boxes, all_scores = [], []
    for k, s in enumerate((8, 16, 32, 64)):
        cls, box = outs[k][0].astype(np.float64), outs[4 + k][0].astype(np.float64)
        fh, fw = math.ceil(size / s), math.ceil(size / s)
        xv, yv = np.meshgrid(np.arange(fw) * s, np.arange(fh) * s)
        anchors = np.stack((xv.ravel() + 0.5 * (s - 1), yv.ravel() + 0.5 * (s - 1)), -1)
        e = np.exp(box.reshape(-1, reg_max + 1))
        dist = ((e / e.sum(1, keepdims=True)) @ project).reshape(-1, 4) * s
        if cls.shape[0] > 1000:
            top_i = cls.max(1).argsort()[::-1][:1000]
            anchors, dist, cls = anchors[top_i], dist[top_i], cls[top_i]
        b = np.stack([anchors[:, 0] - dist[:, 0], anchors[:, 1] - dist[:, 1],
                      anchors[:, 0] + dist[:, 2], anchors[:, 1] + dist[:, 3]], -1).clip(0, size)
        all_boxes.append(b)
        all_scores.append(cls)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    cls_id, conf = scores.argmax(1), scores.max(1)
    m = conf > CONF
    boxes, cls_id, conf = boxes[m], cls_id[m], conf[m]
    keep = _nms_plus1(boxes, conf, IOU)
    boxes = (boxes - [left, top, left, top]) / [sx, sy, sx, sy]
    return _top([(*boxes[k], conf[k], cls_id[k]) for k in keep], orig_wh)


def _top(dets, orig_wh):
    w, h = orig_wh
    if not dets:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    d = np.array(dets, np.float64)
    d = d[np.argsort(-d[:, 4], kind="stable")][:MAX_DET]
    boxes = d[:, :4].copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes, d[:, 4], d[:, 5].astype(np.int64)


# ------------------------------------------------------------------------------------------
def run(model_path: Path, data_yaml: Path, split: str, limit: int | None):
    model = onnx.load(str(model_path))
    rec = recognise_head(model, str(model_path))
    size = rec.input_hw[0]
    is_yolox = rec.layout == "yolox_raw"
    pre = yolox_preproc if is_yolox else picodet_preproc
    sess = make_session(model_path)
    inp = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    ds = load_dataset(data_yaml, split)
    samples = ds.samples[:limit] if limit else ds.samples
    # the knobs the published post-processing fixes: YOLOX's multiclass_nms keeps every (box, class)
    # above the threshold, class-aware; hpc203's PicoDet keeps the best class, class-agnostic NMS
    cfg = PostprocessConfig(iou_threshold=IOU, max_det=MAX_DET, pre_nms_top_k=3000, mask_padding=False,
                            multi_label=is_yolox, class_aware=is_yolox)
    default = PostprocessConfig(iou_threshold=IOU, max_det=MAX_DET, mask_padding=False)
    ours, refs, gts, ours_default = [], [], [], []
    t0 = time.perf_counter()
    for sample, rgb in iter_images(ds, samples=samples):
        h, w = rgb.shape[:2]
        x, row, geom = pre(rgb, size)
        outs = dict(zip(out_names, sess.run(None, {inp: x[None]})))
        raws = [outs[n] for n in rec.outputs]
        dec = decode_head(rec.layout, raws, rec.input_hw, **rec.params)
        det = postprocess(dec, rec.layout, row[None], thresholds=CONF, config=cfg)[0]
        ours.append((det.boxes_xyxy.astype(np.float64), det.scores.astype(np.float64), det.classes))
        d2 = postprocess(dec, rec.layout, row[None], thresholds=CONF, config=default)[0]
        ours_default.append((d2.boxes_xyxy.astype(np.float64), d2.scores.astype(np.float64), d2.classes))
        if is_yolox:
            refs.append(yolox_reference(outs[rec.outputs[0]], size, geom[0], (w, h)))
        else:
            refs.append(picodet_reference([outs[n] for n in out_names], size, geom, (w, h)))
        gts.append((sample.gt_boxes_xyxy_px(w, h), sample.gt_classes))
    secs = time.perf_counter() - t0
    ap = [mean_ap(match_dataset(d, gts, 0.5, num_classes=len(ds.names)), [0.5]) for d in (ours, refs, ours_default)]
    n_det = [sum(len(d[1]) for d in x) for x in (ours, refs)]
    return rec, len(gts), ap, n_det, secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared folder (../shared)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by path)")
    args = ap.parse_args(argv)
    real = args.shared / "real"
    if not real.exists():
        print(f"{real} not found: pass --shared", file=sys.stderr)
        return 2
    print(f"split {args.split}; score > {CONF}, NMS IoU {IOU}, max {MAX_DET} per image\n")
    print(f"{'model':<28} {'layout':<15} {'images':>6} {'AP50 detcal':>11} {'AP50 ref':>9} {'diff':>8} "
          f"{'dets ours/ref':>15} {'s':>5} {'detcal defaults':>15}")
    worst = 0.0
    for name in ("yolox_nano_coco_416.onnx", "picodet_s_coco_320.onnx"):
        rec, n, (a, b, c), (da, db), secs = run(real / "models" / name, real / "coco_train" / "data.yaml",
                                             args.split, args.limit)
        worst = max(worst, abs(a - b))
        print(f"{name:<28} {rec.layout:<15} {n:>6} {a:>11.4f} {b:>9.4f} {a - b:>+8.4f} {da:>7}/{db:<7} {secs:>5.0f} {c:>15.4f}")
    print("\n'detcal defaults': the same decode with calib.pipeline's defaults (best class per box, "
          "class-aware NMS), for information; the comparison uses the published NMS semantics")
    print(f"\nlargest |AP50 difference|: {worst:.4f} ({'within' if worst <= 0.01 else 'NOT within'} 0.01)")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
