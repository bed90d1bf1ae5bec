"""Post-processing routes users run next to a YOLO-style raw head, and how far they agree.

Shared by `bench_real.py` (timing) and the tests (tests/test_bench_routes.py). Every route
takes a raw `xywh_cls` head output `out` [B, 4+C, N] (cx, cy, w, h in input px, class scores
after sigmoid) or `xywh_obj_cls` [B, N, 5+C], plus letterbox rows [B, 6], and returns one
`(boxes (K, 4) xyxy original px, scores (K,), classes (K,))` per image, best score first.

    numpy     calib.pipeline.postprocess (detcal's reference: threshold, best class, top-k,
              letterbox mask, class-aware NMS, max_det, original px)
    opencv    transpose, best class, threshold, cv2.dnn.NMSBoxesBatched, max_det AFTER NMS,
              original px, clipped (no letterbox mask)
    ortx      onnxruntime-extensions' YOLOv8 post-processing steps (Squeeze, Transpose, Split,
              SelectBestBoundingBoxesByNMS): multi-label per class NMS, score_threshold, at most
              max_det per class then max_det in all; batch 1 only (a batch is run image by image);
              its boxes (cx, cy, w, h in input px) are mapped to original px outside the graph
    detcal    the inserted subgraph (onnx_ops.patch.build_postprocess_graph) or the patched model

Optional dependencies (benchmark only, never the project's): opencv-python-headless and
onnxruntime-extensions. `load_opencv` / `load_ortx` return (module, None) or (None, why not).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calib.boxes import box_iou, cxcywh_to_xyxy  # noqa: E402
from calib.letterbox import input_to_original_xyxy  # noqa: E402

Dets = tuple  # (boxes (K, 4) xyxy original px, scores (K,), classes (K,))


# ------------------------------------------------------------------------------------------
# optional dependencies
# ------------------------------------------------------------------------------------------
def load_opencv(threads: int = 2):
    """(cv2, None) or (None, why it is unavailable)."""
    try:
        import cv2
    except Exception as exc:
        return None, f"opencv unavailable ({type(exc).__name__}: {exc}); pip install opencv-python-headless"
    if not hasattr(cv2.dnn, "NMSBoxesBatched"):
        return None, f"opencv {cv2.__version__} has no cv2.dnn.NMSBoxesBatched (needs >= 4.7)"
    cv2.setNumThreads(threads)
    return cv2, None


def load_ortx():
    """(onnxruntime_extensions.tools.pre_post_processing, None) or (None, why it is unavailable)."""
    try:
        import onnxruntime_extensions  # noqa: F401
        from onnxruntime_extensions.tools import pre_post_processing as ppp
    except Exception as exc:
        return None, (f"onnxruntime-extensions unavailable ({type(exc).__name__}: {exc}); "
                      "pip install onnxruntime-extensions")
    return ppp, None


# ------------------------------------------------------------------------------------------
# Python routes
# ------------------------------------------------------------------------------------------
def user_decode(out: np.ndarray, layout: str, b: int, conf: float):
    """Image b of a raw head -> (x, y, w, h top-left boxes (M, 4) float64, scores (M,) float32, classes (M,))
    of the boxes whose best class score is above conf (what Ultralytics-style snippets do).
    layout 'decoded': a multi-output head already decoded by calib.head_decoders.decoded_batch,
    [B, N, 4+C] (x1, y1, x2, y2 input px, C scores)."""
    if layout == "xywh_cls":
        pred = out[b].T                                  # (N, 4 + C)
        cls_scores = pred[:, 4:]
    elif layout == "decoded":                            # calib.head_decoders.decoded_batch: x1, y1, x2, y2, C scores
        pred = out[b]
        cls_scores = pred[:, 4:]
    else:                                                # xywh_obj_cls: score = obj * cls
        pred = out[b]                                    # (N, 5 + C)
        cls_scores = pred[:, 5:] * pred[:, 4:5]
    cls = cls_scores.argmax(1)
    score = cls_scores[np.arange(cls.size), cls]
    keep = score > conf
    boxes = pred[keep, :4].astype(np.float64)
    if layout == "decoded":
        boxes[:, 2:] -= boxes[:, :2]                     # x1, y1, x2, y2 -> x, y, w, h
    else:
        boxes[:, :2] -= boxes[:, 2:] / 2                 # cx, cy, w, h -> x, y, w, h
    return boxes, score[keep].astype(np.float32), cls[keep]


def to_original_clipped(xyxy: np.ndarray, row: np.ndarray) -> np.ndarray:
    """xyxy input px (K, 4) -> xyxy original px, clipped to the image; row (6,) letterbox row."""
    w, h, sx, sy, px, py = (float(v) for v in row)
    o = (np.asarray(xyxy, np.float64) - np.array([px, py, px, py])) / np.array([sx, sy, sx, sy])
    return np.clip(o, 0, np.array([w, h, w, h]))


def route_opencv(cv2, out, layout, rows, conf, iou, max_det) -> list[Dets]:
    """cv2.dnn.NMSBoxesBatched per image. top_k=0 (no cap before NMS: OpenCV applies top_k to the
    candidates BEFORE suppression), the result is capped at max_det after NMS (it comes sorted
    by score, descending)."""
    res = []
    for b in range(out.shape[0]):
        boxes, scores, cls = user_decode(out, layout, b, conf)
        if len(scores):
            idx = np.asarray(cv2.dnn.NMSBoxesBatched(boxes, scores, cls.astype(np.int32), conf, iou, 1.0, 0),
                             np.int64).reshape(-1)[:max_det]
        else:
            idx = np.zeros(0, np.int64)
        xyxy = boxes[idx].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        res.append((to_original_clipped(xyxy, rows[b]), scores[idx], cls[idx]))
    return res


def route_numpy(out, layout, rows, cmap, thresholds, cfg) -> list[Dets]:
    """detcal's numpy reference (calib.pipeline.postprocess)."""
    from calib.pipeline import postprocess

    return [(d.boxes_xyxy, d.scores, d.classes) for d in postprocess(out, layout, rows, cmap, thresholds, cfg)]


def from_fixed(outs: dict | list) -> list[Dets]:
    """The patched model's fixed outputs (num_dets, det_boxes, det_scores, det_classes) -> per-image Dets."""
    if not isinstance(outs, dict):
        outs = dict(zip(("num_dets", "det_boxes", "det_scores", "det_classes"), outs))
    res = []
    for b in range(outs["num_dets"].shape[0]):
        n = int(outs["num_dets"][b, 0])
        res.append((outs["det_boxes"][b, :n], outs["det_scores"][b, :n], outs["det_classes"][b, :n].astype(np.int64)))
    return res


# ------------------------------------------------------------------------------------------
# onnxruntime-extensions
# ------------------------------------------------------------------------------------------
def ortx_postprocess_steps(ppp, num_classes: int, conf: float, iou: float, max_det: int) -> list:
    """onnxruntime-extensions' YOLOv8 post-processing (as its yolo_detection tool adds it, without
    the drawing / rescaling steps that need the original image bytes): head [1, 4+C, N] -> nms_out [K, 6]
    (cx, cy, w, h input px, score, class)."""
    return [
        ppp.Squeeze([0]),                                         # [4+C, N]
        ppp.Transpose([1, 0]),                                    # [N, 4+C]
        ppp.Split(num_outputs=2, axis=-1, splits=[4, num_classes]),
        ppp.SelectBestBoundingBoxesByNMS(iou_threshold=iou, score_threshold=conf,
                                         max_boxes_per_class=max_det, max_detections=max_det),
    ]


def ortx_model(ppp, model, num_classes: int, conf: float, iou: float, max_det: int, opset: int | None = None):
    """`model` (an onnx.ModelProto whose first output is the [1, 4+C, N] head) + ortx's post-processing,
    at the model's opset (at least 18)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    model_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    opset = max(18, model_opset) if opset is None else opset
    del model.graph.output[1:]
    del model.graph.value_info[:]      # ortx merges graphs by name and refuses value_info for the head output
    pipe = ppp.PrePostProcessor([], opset)
    pipe.add_post_processing(ortx_postprocess_steps(ppp, num_classes, conf, iou, max_det))
    return pipe.run(model)


def ortx_cut_model(ppp, num_classes: int, n: int, conf: float, iou: float, max_det: int, opset: int = 18):
    """ortx's post-processing alone over an input `head` float32 [1, 4+C, N] (the graph cut at the head)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["head"], ["head_out"])], "head_only",
        [helper.make_tensor_value_info("head", TensorProto.FLOAT, [1, 4 + num_classes, n])],
        [helper.make_tensor_value_info("head_out", TensorProto.FLOAT, [1, 4 + num_classes, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ortx_model(ppp, model, num_classes, conf, iou, max_det, opset)


def ortx_to_dets(nms_out: np.ndarray, row: np.ndarray) -> Dets:
    """ortx's nms_out [K, 6] (cx, cy, w, h input px, score, class) -> Dets, best score first."""
    nms_out = np.asarray(nms_out, np.float32).reshape(-1, 6)
    order = np.argsort(-nms_out[:, 4], kind="stable")
    nms_out = nms_out[order]
    xyxy = cxcywh_to_xyxy(nms_out[:, :4].astype(np.float64))
    return to_original_clipped(xyxy, row), nms_out[:, 4], nms_out[:, 5].astype(np.int64)


# ------------------------------------------------------------------------------------------
# agreement with the reference
# ------------------------------------------------------------------------------------------
def agreement(got: list[Dets], ref: list[Dets], iou_min: float = 0.99) -> dict:
    """How much of `ref` (per image, the numpy reference) `got` reproduces.

    A reference detection is matched by an unused detection of `got` with the same class and
    IoU >= iou_min (greedy, best IoU first, reference in score order). Returns
    matched (share of reference detections matched, 1.0 when ref is empty), n_ref, n_got (totals),
    extra (share of got's detections that match nothing), score_diff_max / score_diff_median
    (|score got - score ref| over the matches; 0 without matches).
    """
    n_ref = n_got = matched = 0
    diffs = []
    for (gb, gs, gc), (rb, rs, rc) in zip(got, ref):
        gb, rb = np.asarray(gb, np.float64).reshape(-1, 4), np.asarray(rb, np.float64).reshape(-1, 4)
        gc, rc = np.asarray(gc).reshape(-1), np.asarray(rc).reshape(-1)
        n_ref, n_got = n_ref + len(rb), n_got + len(gb)
        if not len(rb) or not len(gb):
            continue
        iou = box_iou(rb, gb)
        iou[rc[:, None] != gc[None, :]] = -1.0
        used = np.zeros(len(gb), bool)
        for i in range(len(rb)):
            cand = np.where(used, -1.0, iou[i])
            j = int(np.argmax(cand))
            if cand[j] >= iou_min:
                used[j] = True
                matched += 1
                diffs.append(abs(float(gs[j]) - float(rs[i])))
    return {
        "matched": matched / n_ref if n_ref else 1.0,
        "n_ref": n_ref,
        "n_got": n_got,
        "extra": (n_got - matched) / n_got if n_got else 0.0,
        "score_diff_max": max(diffs) if diffs else 0.0,
        "score_diff_median": float(np.median(diffs)) if diffs else 0.0,
    }
