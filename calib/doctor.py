"""`detcal doctor`: the production debug checklist for a deployed detector, run and measured.

``diagnose(model, data)`` runs the raw model over the user's validation split through the
reference pipeline (letterbox masking off, so that detections in the bars stay visible) and
returns a ``DoctorReport``: seven checks, each with a status (``ok`` | ``warn`` | ``fail`` |
``skipped``), a severity, a one-line finding, the numbers behind it and a concrete fix.

Checks and their defaults (``DoctorOptions``):

1. resolution   serving size vs native size. Dynamic-size models are run at both sizes for
                real. A fixed-size model cannot take another input size; for a serving size
                smaller than its input, serving is *emulated*: the image is letterboxed into
                the serving size and that canvas is centred in the native input, padded with
                the letterbox grey (``embed_at_serve_size``). Objects then have the pixel size
                they would have in a re-export at the serving size, and a convolutional
                backbone sees the same pixels, apart from its receptive field reaching into
                the extra padding. What it does not emulate: frames downscaled to the serving
                size and then upscaled back into the fixed input (blur without shrinking).
                A serving size larger than a fixed input cannot be run at all: said so, and
                only the dataset's image sizes are compared with the input. Flags a gap in
                recall (>= 0.05 warn, >= 0.15 fail), D-ECE (>= 0.03 / >= 0.08) or false
                positives per negative image (>= max(0.1, 50%) / >= max(0.5, 100%)), all at
                the confidence threshold (0.25). Without a second size: median letterbox
                scale > 2 (images upscaled) or < 0.25 (objects shrunk 4x+) is a low warn.
2. box_shape    predicted (score > 0.25) vs ground-truth box sizes (sqrt area) and aspect
                ratios in model-input pixels at the serving size; median ratio outside
                [1/1.5, 1.5] warns, outside [1/2, 2] fails (skipped when the model finds
                nothing and has no anchors). Anchors: read from the graph where an anchor_grid-like constant (1, na, ny, nx, 2) or (1, na, 1, 1, 2) exists
                (YOLOv5/v7 exports); k-means with the 1 - IoU distance on the ground-truth
                sizes and YOLOv5's best possible recall (a size ratio within 4x): model BPR
                < 0.98 warns, < 0.90 fails. Anchor-free heads and unrecognised graphs: said so.
3. letterbox    share of detections > 0.25 whose centre lies in the padding: >= 1% warns,
                >= 5% fails.
4. calibration  D-ECE (10 bins, detections > 0.25, matched at IoU 0.5) with a 90% bootstrap
                interval by image, and a reliability diagram; > 0.08 warns, > 0.15 fails.
                Saturation: more than half of those detections at >= 0.98 while their
                precision is below 0.95 warns (thresholds cannot separate their errors).
5. uniform_fp   detections > 0.8 on negative scenes (images without labels): share of
                negative images firing > 1% warns, > 5% fails; the lowest-texture crops are
                saved as a contact sheet.
6. nms_load     candidates above 0.25 per image before NMS (mean, p99) over the whole split,
                the share of time the numpy reference post-processing (decode, threshold,
                NMS) takes next to the model on a timed subsample, and a suggested pre-NMS
                cap (2 x p99, rounded up, within [100, 3000]). p99 > 1000 or mean > 300
                candidates, or post-processing > 50% of the time and >= 2 ms per image, warns.
                Preprocessing is not timed; the numpy NMS is slower than a deployed one, so
                the share is an upper bound.
7. labels       boxes touching the image edge (within 1 px) > 2% warns (truncated objects);
                coordinates outside the image (clipped on load) or zero-size boxes warn;
                class imbalance (most / least frequent class > 10) or a class without any box
                warns (low).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from .atomic import atomic_write_bytes, atomic_write_json
from .boxes import box_iou
from .collect import Collected, collect_detections
from .data import Dataset, load_dataset
from .errors import DetcalError
from .fit import match_collected
from .images import read_image_rgb
from .jsonable import finite_or_none, to_jsonable
from .layouts import decode
from .letterbox import PAD_LEFT, PAD_TOP, SCALE_X, SCALE_Y, centre_in_content, letterbox
from .matching import MatchedDetections
from .metrics import dece, summarize
from .model_info import ModelInfo, check_class_count, load_onnx, read_model_info
from .pipeline import PostprocessConfig, postprocess
from .preprocess import Preprocess, preprocess_image
from .progress import Progress
from .runner import DetectorRunner

__all__ = ["Check", "DoctorOptions", "DoctorReport", "diagnose", "embed_at_serve_size", "read_anchors",
           "kmeans_anchors", "best_possible_recall", "add_doctor_parser", "run_doctor_cli"]

STATUSES = ("fail", "warn", "ok", "skipped")
SEVERITIES = ("high", "medium", "low", "none")


# ----------------------------------------------------------------------------------- results

@dataclass
class Check:
    """One check's verdict. status: ok | warn | fail | skipped; severity: high | medium | low | none."""

    name: str
    status: str
    severity: str
    finding: str                                   # one line
    evidence: dict = field(default_factory=dict)   # numbers, JSON-friendly
    fix: str = ""
    files: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.status in ("warn", "fail")

    def sort_key(self) -> tuple[int, int]:
        return STATUSES.index(self.status), SEVERITIES.index(self.severity)


@dataclass
class DoctorReport:
    model: str
    data: str
    split: str
    serve_size: tuple[int, int]
    native_size: tuple[int, int] | None
    dataset_summary: str
    checks: list[Check]
    out_dir: str | None = None
    seconds: float = 0.0

    @property
    def flagged(self) -> bool:
        return any(c.flagged for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when nothing is flagged, 1 when something is (2 is for bad input, raised as DetcalError)."""
        return 1 if self.flagged else 0

    def ordered(self) -> list[Check]:
        return sorted(self.checks, key=Check.sort_key)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return _jsonable({
            "model": self.model, "data": self.data, "split": self.split,
            "serve_size": list(self.serve_size), "native_size": list(self.native_size) if self.native_size else None,
            "dataset": self.dataset_summary, "flagged": self.flagged, "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.ordered()],
        })

    def format_text(self) -> str:
        native = f"{self.native_size[0]}x{self.native_size[1]}" if self.native_size else "unknown"
        lines = [f"detcal doctor: {self.model} on {self.data} (split {self.split})",
                 f"  {self.dataset_summary}; serving size {self.serve_size[0]}x{self.serve_size[1]}, native {native}", ""]
        for c in self.ordered():
            tag = {"fail": "FAIL", "warn": "WARN", "ok": "ok", "skipped": "skip"}[c.status]
            sev = f"[{c.severity}]" if c.severity != "none" else ""
            lines.append(f"{tag:<5}{sev:<9}{c.name}: {c.finding}")
            if c.flagged and c.fix:
                lines.append(f"{'':14}fix: {c.fix}")
            if c.files:
                lines.append(f"{'':14}see: {', '.join(c.files)}")
        n_fail = sum(c.status == "fail" for c in self.checks)
        n_warn = sum(c.status == "warn" for c in self.checks)
        lines.append("")
        lines.append(f"{n_fail + n_warn} of {len(self.checks)} checks flagged ({n_fail} fail, {n_warn} warn)"
                     if self.flagged else f"nothing flagged in {len(self.checks)} checks")
        return "\n".join(lines)


@dataclass
class DoctorOptions:
    conf: float = 0.25                 # the default confidence threshold users deploy with
    base_conf: float = 0.001           # score floor for collecting detections
    match_iou: float = 0.5
    high_score: float = 0.8            # "confident" false positive on a negative scene
    dece_warn: float = 0.08
    dece_fail: float = 0.15
    saturation_score: float = 0.98
    saturation_share: float = 0.5
    saturation_precision: float = 0.95  # saturated scores flagged only when their precision is below this
    letterbox_warn: float = 0.01
    letterbox_fail: float = 0.05
    negative_rate_warn: float = 0.01
    negative_rate_fail: float = 0.05
    edge_share_warn: float = 0.02
    imbalance_warn: float = 10.0
    size_ratio_warn: float = 1.5
    size_ratio_fail: float = 2.0
    bpr_warn: float = 0.98
    bpr_fail: float = 0.90
    anchor_t: float = 4.0              # YOLOv5's anchor-multiple threshold
    candidates_p99_warn: int = 1000
    candidates_mean_warn: int = 300
    post_share_warn: float = 0.5
    post_ms_floor: float = 2.0          # ...and only when post-processing takes at least this many ms per image
    timing_images: int = 32
    recall_gap_warn: float = 0.05
    recall_gap_fail: float = 0.15
    dece_gap_warn: float = 0.03
    dece_gap_fail: float = 0.08
    max_crops: int = 24
    bootstrap: int = 200
    seed: int = 0
    postprocess: PostprocessConfig = field(default_factory=lambda: PostprocessConfig(mask_padding=False))

    def validate(self) -> None:
        if not 0 < self.conf < 1:
            raise DetcalError(f"--conf must be in (0, 1), got {self.conf}")
        if not 0 <= self.base_conf < self.conf:
            raise DetcalError(f"the score floor must be in [0, conf), got {self.base_conf}")
        if self.timing_images < 1:
            raise DetcalError("timing_images must be >= 1")


# --------------------------------------------------------------------------------- helpers

def _num(x):
    return finite_or_none(x, 6)


def _jsonable(obj):
    return to_jsonable(obj, 6)


def _sz(size) -> str:
    return f"{size[0]}x{size[1]}"


def _verdict(fail: bool, warn: bool, warn_severity: str = "medium") -> tuple[str, str]:
    if fail:
        return "fail", "high"
    if warn:
        return "warn", warn_severity
    return "ok", "none"


def _skipped(name: str, why: str, **evidence) -> Check:
    return Check(name, "skipped", "none", why, evidence)


def embed_at_serve_size(image: np.ndarray, serve_size: tuple[int, int], input_size: tuple[int, int],
                        pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Emulate serving at a smaller size on a fixed-size model.

    image (h, w, 3) uint8 -> ((H, W, 3) uint8 canvas of the model's input size, letterbox row (6,)).
    The image is letterboxed into serve_size (S_h, S_w) and that canvas is centred in the input
    (H, W), padded with ``pre.pad_value``; the row maps input px to original px, so the content
    region it describes is the image only (the serving bars and the extra border are padding).
    """
    sh, sw = int(serve_size[0]), int(serve_size[1])
    ih, iw = int(input_size[0]), int(input_size[1])
    if sh > ih or sw > iw:
        raise ValueError(f"serving size {sh}x{sw} does not fit in the input {ih}x{iw}")
    small, row = letterbox(image, (sh, sw), mode=pre.resize, pad_value=pre.pad_value)
    canvas = np.full((ih, iw, 3), pre.pad_value, dtype=np.uint8)
    top, left = (ih - sh) // 2, (iw - sw) // 2
    canvas[top:top + sh, left:left + sw] = small
    row = row.copy()
    row[PAD_LEFT] += left
    row[PAD_TOP] += top
    return canvas, row


class _DoctorRunner(DetectorRunner):
    """DetectorRunner that can emulate a smaller serving size inside a fixed input and counts,
    per image, the candidates above `count_conf` before NMS (best class per box)."""

    def __init__(self, info: ModelInfo, preprocess: Preprocess, input_size, *, emulate_size=None,
                 count_conf: float = 0.25, **kw):
        super().__init__(info, preprocess, input_size, **kw)
        self.emulate_size = tuple(emulate_size) if emulate_size is not None else None
        self.count_conf = float(count_conf)
        self.candidates: dict[int, int] = {}

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image (h, w, 3) uint8 -> (model input (3, H, W) float32, row (6,)), as this runner feeds the model."""
        if self.emulate_size is None:
            return preprocess_image(image, self.input_size, self.preprocess)
        canvas, row = embed_at_serve_size(image, self.emulate_size, self.input_size, self.preprocess)
        x, _ = preprocess_image(canvas, self.input_size, self.preprocess)
        return x, row

    def run(self, images: Iterable[tuple[int, np.ndarray]], label: str = ""):
        rows: dict[int, np.ndarray] = {}

        def feed():
            for idx, img in images:
                if self.emulate_size is not None:
                    img, rows[idx] = embed_at_serve_size(img, self.emulate_size, self.input_size, self.preprocess)
                yield idx, img

        for batch in super().run(feed(), label):
            if self.emulate_size is not None:   # the canvas is the input size: replace its identity rows
                batch.rows = np.stack([rows.pop(i) for i in batch.indices])
            for i, n in zip(batch.indices, candidate_counts(batch.raw, self.info.layout, self.count_conf)):
                self.candidates[i] = int(n)
            yield batch


def candidate_counts(raw: np.ndarray, layout: str, conf: float) -> np.ndarray:
    """Raw head output (B, ...) -> (B,) number of boxes whose best class score is > conf (pre-NMS)."""
    dec = decode(raw, layout)
    best = dec.scores.max(axis=2) if dec.is_dense else dec.scores
    return (best > conf).sum(axis=1)


@dataclass
class _Run:
    size: tuple[int, int]
    emulated: bool
    collected: Collected
    matched: MatchedDetections
    metrics: dict
    runner: _DoctorRunner


def _run(dataset, info, pre, size, num_classes, opts, *, emulate_size=None, batch_size=8, threads=None,
         progress=True, desc="running model", session=None) -> _Run:
    runner = _DoctorRunner(info, pre, size, emulate_size=emulate_size, count_conf=opts.conf,
                           batch_size=batch_size, threads=threads, session=session)
    collected = collect_detections(dataset, info, pre, size, num_classes=num_classes, base_conf=opts.base_conf,
                                   config=opts.postprocess, progress=progress, desc=desc, runner=runner)
    if len(collected) == 0:
        raise DetcalError(f"{dataset.source}: no readable image")
    matched = match_collected(collected, num_classes, opts.match_iou)
    metrics = summarize(matched, opts.conf, high_score=opts.high_score)
    shown = tuple(emulate_size) if emulate_size is not None else tuple(size)
    return _Run(shown, emulate_size is not None, collected, matched, metrics, runner)


def _parse_imgsz(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        vals = [int(v) for v in text.strip("[]() ").split(",")]
        return (vals[0], vals[-1])
    except ValueError:
        return None


# ------------------------------------------------------------------------------ 1 resolution

def _scale_evidence(run: _Run) -> dict:
    rows = run.collected.rows
    scale = np.minimum(rows[:, SCALE_X], rows[:, SCALE_Y])
    sizes = np.asarray(run.collected.image_sizes, dtype=np.float64)
    return {
        "image_long_side_median": float(np.median(sizes.max(axis=1))),
        "image_short_side_median": float(np.median(sizes.min(axis=1))),
        "n_distinct_image_sizes": len(set(run.collected.image_sizes)),
        "letterbox_scale_median": float(np.median(scale)),
        "letterbox_scale_min": float(scale.min()),
        "letterbox_scale_max": float(scale.max()),
        "share_upscaled_over_2x": float(np.mean(scale > 2.0)),
    }


def _key_metrics(m: dict) -> dict:
    return {k: m.get(k) for k in ("recall", "precision", "dece", "fp_per_negative_image", "ap50")}


def check_resolution(main: _Run, other: _Run | None, note: str, native: tuple[int, int] | None,
                     serve: tuple[int, int], opts: DoctorOptions) -> Check:
    name = "resolution"
    ev = {"serve_size": list(serve), "native_size": list(native) if native else None, **_scale_evidence(main)}
    if other is None:
        scale = ev["letterbox_scale_median"]
        up, down = scale > 2.0, scale < 0.25
        status, sev = _verdict(False, up or down, "low")
        what = (f"images are upscaled {scale:.2f}x on median into the input: the model sees blurrier objects than at capture"
                if up else f"images are shrunk to {scale:.2f}x on median: objects lose {1 / scale:.0f}x in size, small ones vanish"
                if down else f"images enter the {_sz(main.size)} input at a median scale of {scale:.2f}")
        fix = ("capture or export at a resolution closer to the model input, or fit detcal on images as served"
               if up else "serve at a larger input (re-export) or tile large images" if down else "")
        return Check(name, status, sev, f"{what}; {note}" if note else what, ev, fix)
    ref, srv = (other, main) if not main.emulated and tuple(main.size) == tuple(serve) else (main, other)
    a, b = _key_metrics(ref.metrics), _key_metrics(srv.metrics)
    ev.update({"at_native": a, "at_serving": b, "serving_emulated": srv.emulated, "conf": opts.conf})
    d_recall = (a["recall"] or 0.0) - (b["recall"] or 0.0)
    d_dece = (b["dece"] or 0.0) - (a["dece"] or 0.0)
    fa, fb = a["fp_per_negative_image"], b["fp_per_negative_image"]
    d_fp = (fb - fa) if fa is not None and fb is not None else 0.0
    fp_base = fa or 0.0
    ev.update({"recall_drop": d_recall, "dece_increase": d_dece, "fp_per_negative_increase": d_fp})
    fail = d_recall >= opts.recall_gap_fail or d_dece >= opts.dece_gap_fail or d_fp >= max(0.5, fp_base)
    warn = d_recall >= opts.recall_gap_warn or d_dece >= opts.dece_gap_warn or d_fp >= max(0.1, 0.5 * fp_base)
    status, sev = _verdict(fail, warn)
    how = "emulated in the fixed input" if srv.emulated else "run for real"
    finding = (f"serving at {_sz(serve)} ({how}) vs native {_sz(native)}: recall {_f(b['recall'])} vs {_f(a['recall'])}, "
               f"D-ECE {_f(b['dece'])} vs {_f(a['dece'])}, FP/negative image {_f(fb)} vs {_f(fa)} (scores > {opts.conf:g})")
    if note:
        finding += f"; {note}"
    if status == "ok":
        fix = ""
    elif srv.emulated:
        fix = (f"feed frames into the {_sz(native)} input without shrinking them to {_sz(serve)} first; if you must serve "
               f"at {_sz(serve)}, re-export the model at that size and fit detcal on it (detcal fit --model M_{serve[0]}.onnx)")
    else:
        fix = (f"serve at the native size {_sz(native)}, or fit and evaluate detcal at the serving size "
               f"(detcal fit --imgsz {serve[0]}x{serve[1]})")
    return Check(name, status, sev, finding, ev, fix)


def _f(x, fmt="{:.3f}"):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


# ------------------------------------------------------------------------------ 2 box shape

ANCHOR_MAX = 15


def read_anchors(model: onnx.ModelProto, input_size: tuple[int, int] | None = None) -> tuple[np.ndarray | None, str]:
    """Anchor sizes (A, 2) w, h in input px read from the graph, or (None, why not).

    Recognises the anchor_grid constants of YOLOv5/v7 exports: float tensors of shape
    (1, na, ny, nx, 2) or (1, na, 1, 1, 2), na <= 5, constant over the grid, positive, in
    input pixels (initializers or Constant nodes). One per detection level; their rows together
    are the model's anchors.
    """
    tensors = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    tensors.append((node.output[0], numpy_helper.to_array(attr.t)))
    limit = 4 * max(input_size) if input_size else 1e4
    found = []
    for name, arr in tensors:
        if arr.dtype.kind != "f" or arr.ndim != 5 or arr.shape[0] != 1 or arr.shape[-1] != 2 or not 1 <= arr.shape[1] <= 5:
            continue
        per_anchor = arr.reshape(arr.shape[1], -1, 2)
        if not np.allclose(per_anchor, per_anchor[:, :1, :]):
            continue
        a = per_anchor[:, 0, :].astype(np.float64)
        if np.all(a > 0) and np.all(a <= limit) and a.max() >= 1.0:
            found.append(a)
    if not found:
        return None, ("no anchor tensor recognised in the graph (looked for YOLOv5/v7 anchor_grid constants of shape "
                      "(1, na, ny, nx, 2)); anchor-free heads (YOLOv8, YOLOX) have none")
    anchors = np.unique(np.concatenate(found), axis=0)
    if len(anchors) > ANCHOR_MAX:
        return None, f"{len(anchors)} anchor-like tensors found, too many to trust as anchors"
    return anchors[np.argsort(anchors.prod(axis=1))], f"read {len(anchors)} anchors from {len(found)} anchor_grid constant(s)"


def wh_iou(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    """IoU of boxes with a common centre: wh1 (N, 2), wh2 (M, 2) -> (N, M)."""
    inter = np.minimum(wh1[:, None, 0], wh2[None, :, 0]) * np.minimum(wh1[:, None, 1], wh2[None, :, 1])
    union = wh1[:, None].prod(-1) + wh2[None, :].prod(-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def kmeans_anchors(wh: np.ndarray, k: int, *, iters: int = 100, seed: int = 0) -> np.ndarray:
    """k-means on box sizes with the 1 - IoU distance. wh (N, 2) w, h -> (k, 2), by area ascending.

    Deterministic: starts from the area quantiles, cluster centres are medians (as in YOLOv2's
    dimension clusters and darknet's k-means with IoU distance).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) == 0:
        raise ValueError("kmeans_anchors needs at least one box with positive size")
    k = int(min(k, len(np.unique(wh, axis=0))))
    order = np.argsort(wh.prod(axis=1))
    centres = wh[order[((np.arange(k) + 0.5) / k * len(wh)).astype(int)]].copy()
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, centres).argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if np.any(assign == j):
                centres[j] = np.median(wh[assign == j], axis=0)
    return centres[np.argsort(centres.prod(axis=1))]


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> tuple[float, float]:
    """YOLOv5's anchor fit: (share of boxes with some anchor within anchor_t x in both w and h,
    mean best IoU of a box with an anchor). wh (N, 2), anchors (A, 2)."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    r = wh[:, None, :] / anchors[None, :, :]
    metric = np.minimum(r, 1 / r).min(axis=2)          # (N, A)
    best = metric.max(axis=1)
    return float(np.mean(best > 1 / anchor_t)), float(wh_iou(wh, anchors).max(axis=1).mean())


def _gt_input_wh(run: _Run) -> np.ndarray:
    c = run.collected
    out = []
    for gt, row in zip(c.gt_boxes_xyxy, c.rows):
        if len(gt):
            out.append(np.stack([(gt[:, 2] - gt[:, 0]) * row[SCALE_X], (gt[:, 3] - gt[:, 1]) * row[SCALE_Y]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _pred_input_wh(run: _Run, conf: float) -> np.ndarray:
    out = []
    for d in run.collected.detections:
        b = d.boxes_input_xyxy[d.scores > conf]
        if len(b):
            out.append(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 2))


def _loc_recall(run: _Run, iou: float) -> float:
    """Share of ground-truth boxes that some detection (any class, any score above the floor) covers at IoU >= iou."""
    hit = n = 0
    for d, gt in zip(run.collected.detections, run.collected.gt_boxes_xyxy):
        if len(gt):
            n += len(gt)
            if len(d):
                hit += int((box_iou(gt, d.boxes_xyxy).max(axis=1) >= iou).sum())
    return hit / n if n else math.nan


def check_box_shape(main: _Run, model_proto: onnx.ModelProto, info: ModelInfo, opts: DoctorOptions) -> Check:
    name = "box_shape"
    gt = _gt_input_wh(main)
    gt = gt[(gt > 0).all(axis=1)]
    if len(gt) == 0:
        return _skipped(name, "no labelled boxes in the split")
    pred = _pred_input_wh(main, opts.conf)
    pred = pred[(pred > 0).all(axis=1)]
    ev = {"n_gt": len(gt), "n_pred": len(pred), "conf": opts.conf, "units": f"input px at {_sz(main.size)}"}
    q = (10, 50, 90)
    ev["gt_size_quantiles"] = np.percentile(np.sqrt(gt.prod(axis=1)), q)
    ev["gt_aspect_wh_quantiles"] = np.percentile(gt[:, 0] / gt[:, 1], q)
    ev["localisation_recall_iou50"] = _loc_recall(main, opts.match_iou)
    problems, fail, warn = [], False, False
    if len(pred):
        ev["pred_size_quantiles"] = np.percentile(np.sqrt(pred.prod(axis=1)), q)
        ev["pred_aspect_wh_quantiles"] = np.percentile(pred[:, 0] / pred[:, 1], q)
        size_ratio = ev["pred_size_quantiles"][1] / ev["gt_size_quantiles"][1]
        aspect_ratio = ev["pred_aspect_wh_quantiles"][1] / ev["gt_aspect_wh_quantiles"][1]
        ev["size_ratio_pred_over_gt"], ev["aspect_ratio_pred_over_gt"] = size_ratio, aspect_ratio
        for label, r in (("size", size_ratio), ("aspect ratio", aspect_ratio)):
            far = max(r, 1 / r)
            fail |= far > opts.size_ratio_fail
            warn |= far > opts.size_ratio_warn
            if far > opts.size_ratio_warn:
                problems.append(f"median predicted {label} is {r:.2f}x the labelled one")
        shape = (f"median size {ev['pred_size_quantiles'][1]:.1f} px predicted vs {ev['gt_size_quantiles'][1]:.1f} px labelled, "
                 f"aspect w/h {ev['pred_aspect_wh_quantiles'][1]:.2f} vs {ev['gt_aspect_wh_quantiles'][1]:.2f}")
    else:
        shape = f"no detection above {opts.conf:g} to compare with {len(gt)} labelled boxes"
    if info.layout == "xywh_obj_cls":
        anchors, why = read_anchors(model_proto, main.size)
    else:   # anchor-free heads: any prior-box constants inside are not anchors to re-fit
        anchors, why = None, f"anchor-free head ({info.layout}): no anchors to check"
    ev["anchors_note"] = why
    if anchors is None:
        anchor_text = "anchors: not read, " + why.split(" (")[0]
    else:
        k = len(anchors)
        km = kmeans_anchors(gt, k, seed=opts.seed)
        bpr_m, iou_m = best_possible_recall(gt, anchors, opts.anchor_t)
        bpr_k, iou_k = best_possible_recall(gt, km, opts.anchor_t)
        ev.update({"anchors_model": anchors, "anchors_kmeans": km, "bpr_model": bpr_m, "bpr_kmeans": bpr_k,
                   "mean_best_iou_model": iou_m, "mean_best_iou_kmeans": iou_k, "anchor_t": opts.anchor_t})
        fail |= bpr_m < opts.bpr_fail
        warn |= bpr_m < opts.bpr_warn or iou_k - iou_m > 0.15
        if bpr_m < opts.bpr_warn or iou_k - iou_m > 0.15:
            problems.append(f"model anchors cover {bpr_m:.1%} of labelled boxes (k-means anchors {bpr_k:.1%})")
        anchor_text = (f"anchors: best possible recall {bpr_m:.3f} (k-means {bpr_k:.3f}), "
                       f"mean best IoU {iou_m:.2f} (k-means {iou_k:.2f})")
    if not len(pred) and anchors is None:
        return _skipped(name, f"{shape}: the model finds nothing at {_sz(main.size)}; {anchor_text}", **ev)
    status, sev = _verdict(fail, warn)
    finding = ("; ".join(problems) + f" ({shape}; {anchor_text})") if problems else f"{shape}; {anchor_text}"
    fix = ""
    if status != "ok":
        fix = ("serve at the resolution the model was trained at so objects have their trained size"
               if ev.get("size_ratio_pred_over_gt") and max(ev["size_ratio_pred_over_gt"], 1 / ev["size_ratio_pred_over_gt"]) > opts.size_ratio_warn
               else "retrain or fine-tune on data with these box shapes")
        if anchors is not None and ev.get("bpr_model", 1) < opts.bpr_warn:
            fix += "; retrain with the k-means anchors in evidence.anchors_kmeans (YOLOv5: autoanchor)"
    return Check(name, status, sev, finding, ev, fix)


# ------------------------------------------------------------------------------ 3 letterbox

def check_letterbox(main: _Run, pre: Preprocess, opts: DoctorOptions) -> Check:
    name = "letterbox"
    if pre.resize == "stretch":
        return _skipped(name, "stretch resize: there is no padding")
    c = main.collected
    padded = (c.rows[:, PAD_LEFT] >= 1) | (c.rows[:, PAD_TOP] >= 1)
    in_pad_scores, n_kept, imgs = [], 0, 0
    for d, row in zip(c.detections, c.rows):
        keep = d.scores > opts.conf
        n_kept += int(keep.sum())
        if not keep.any():
            continue
        outside = ~centre_in_content(d.boxes_input_xyxy[keep], row)
        if outside.any():
            imgs += 1
            in_pad_scores.append(d.scores[keep][outside])
    s = np.concatenate(in_pad_scores) if in_pad_scores else np.zeros(0)
    share = len(s) / n_kept if n_kept else 0.0
    ev = {"n_images_with_padding": int(padded.sum()), "n_images": len(c), "n_detections": n_kept, "conf": opts.conf,
          "n_in_padding": len(s), "share_in_padding": share, "n_images_with_padding_detections": imgs,
          "padding_score_max": float(s.max()) if len(s) else None, "padding_score_mean": float(s.mean()) if len(s) else None,
          "padding_above_0.8": int((s > opts.high_score).sum())}
    if not padded.any() and not main.emulated:
        return Check(name, "ok", "none", f"no image of the split needs letterbox padding at {_sz(main.size)}", ev)
    status, sev = _verdict(share >= opts.letterbox_fail, share >= opts.letterbox_warn)
    finding = (f"{len(s)} of {n_kept} detections > {opts.conf:g} ({share:.1%}) are centred in the letterbox padding, "
               f"in {imgs} images" + (f", scores up to {s.max():.2f}" if len(s) else ""))
    fix = ("detcal fit + detcal patch: the patched model drops boxes centred in the padding (letterbox input); "
           "or mask them in your post-processing") if status != "ok" else ""
    return Check(name, status, sev, finding, ev, fix)


# ---------------------------------------------------------------------------- 4 calibration

def check_calibration(main: _Run, opts: DoctorOptions, out_dir: Path | None) -> Check:
    name = "calibration"
    m = main.matched
    if int(m.n_gt_per_class.sum()) == 0:
        return _skipped(name, "no labelled boxes in the split: calibration needs positives")
    keep = m.scores > opts.conf
    s, tp, img = m.scores[keep], m.is_tp[keep], m.image_index[keep]
    if len(s) == 0:
        return _skipped(name, f"no detection above {opts.conf:g}")
    d = dece(s, tp)
    rng = np.random.default_rng(opts.seed)
    boot = []
    by_image = [np.flatnonzero(img == i) for i in np.unique(img)]
    for _ in range(opts.bootstrap):
        pick = rng.integers(0, len(by_image), len(by_image))
        idx = np.concatenate([by_image[i] for i in pick])
        boot.append(dece(s[idx], tp[idx]))
    lo, hi = np.percentile(boot, [5, 95]) if boot else (math.nan, math.nan)
    sat = float(np.mean(s >= opts.saturation_score))
    sat_prec = float(tp[s >= opts.saturation_score].mean()) if sat > 0 else None
    ev = {"dece": d, "dece_90ci": [lo, hi], "n_detections": len(s), "n_images": len(by_image), "precision": float(tp.mean()),
          "mean_score": float(s.mean()), "conf": opts.conf, "match_iou": opts.match_iou,
          "share_saturated": sat, "saturation_score": opts.saturation_score, "precision_of_saturated": sat_prec,
          "score_histogram_10bins": np.histogram(s, bins=10, range=(0, 1))[0]}
    files = []
    if out_dir is not None:
        from .plots import save_reliability_diagrams
        p = save_reliability_diagrams(out_dir / "reliability.png", [(f"raw scores > {opts.conf:g} (D-ECE {d:.3f})", s, tp)])
        files.append(str(p))
    # saturation hides errors when the saturated scores are not that precise: thresholds cannot separate them
    saturated = sat > opts.saturation_share and sat_prec is not None and sat_prec < opts.saturation_precision
    status, sev = _verdict(d > opts.dece_fail, d > opts.dece_warn or saturated)
    over = "over" if s.mean() > tp.mean() else "under"
    finding = (f"D-ECE {d:.3f} (90% CI {lo:.3f}-{hi:.3f}) over {len(s)} detections > {opts.conf:g}; "
               f"mean score {s.mean():.2f} vs precision {tp.mean():.2f} ({over}-confident)")
    if saturated:
        finding += f"; {sat:.0%} of scores are >= {opts.saturation_score:g} (saturated), precision there {sat_prec:.2f}"
    fix = ("detcal fit --model M.onnx --data DATA.yaml (calibrator auto) and detcal patch: calibrated scores in the graph"
           if status != "ok" else "")
    return Check(name, status, sev, finding, ev, fix, files)


# ---------------------------------------------------------------------------- 5 uniform FP

def _texture(crop: np.ndarray) -> float:
    """Mean absolute gradient of the grey levels of an (h, w, 3) uint8 crop; 0 for a flat one."""
    g = crop.astype(np.float32).mean(axis=2)
    if g.shape[0] < 2 or g.shape[1] < 2:
        return 0.0
    return float((np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()) / 2)


def _contact_sheet(crops: list[tuple[np.ndarray, str]], path: Path, tile: int = 112, per_row: int = 6) -> Path:
    import io

    from PIL import Image, ImageDraw

    rows = (len(crops) + per_row - 1) // per_row
    cap = 14
    sheet = Image.new("RGB", (per_row * tile, rows * (tile + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (crop, caption) in enumerate(crops):
        r, c = divmod(k, per_row)
        im = Image.fromarray(crop)
        f = (tile - 4) / max(im.width, im.height)      # fit the tile, small crops enlarged (nearest: no smoothing)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                       Image.NEAREST if f > 1 else Image.BILINEAR)
        x, y = c * tile + (tile - im.width) // 2, r * (tile + cap) + (tile - im.height) // 2
        sheet.paste(im, (x, y))
        draw.text((c * tile + 2, r * (tile + cap) + tile), caption[:18], fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def check_uniform_fp(main: _Run, dataset: Dataset, opts: DoctorOptions, out_dir: Path | None, names: list[str]) -> Check:
    name = "uniform_fp"
    m = main.matched
    n_neg = m.n_negative_images
    if n_neg == 0:
        return _skipped(name, "no negative scenes (images without labels) in the split; add some (empty roads, walls, sky)")
    c = main.collected
    hits = []   # (image position, detection index, score, class)
    fired = set()
    fp_any = 0
    for pos, (d, gt) in enumerate(zip(c.detections, c.gt_boxes_xyxy)):
        if len(gt):
            continue
        fp_any += int((d.scores > opts.conf).sum())
        for j in np.flatnonzero(d.scores > opts.high_score):
            hits.append((pos, int(j), float(d.scores[j]), int(d.classes[j])))
            fired.add(pos)
    rate = len(fired) / n_neg
    ev = {"n_negative_images": n_neg, "n_detections_above_high": len(hits), "high_score": opts.high_score,
          "negative_images_firing_above_high": len(fired), "negative_image_rate_above_high": rate,
          "fp_per_negative_image_above_conf": fp_any / n_neg, "conf": opts.conf}
    files = []
    if hits and out_dir is not None:
        crops = []
        by_image: dict[int, list] = {}
        for h in hits:
            by_image.setdefault(h[0], []).append(h)
        for pos, hs in by_image.items():
            sample = dataset.samples[c.sample_indices[pos]]
            try:
                img = read_image_rgb(sample.image_path)
            except DetcalError:
                continue
            for _, j, score, cls in hs:
                x1, y1, x2, y2 = np.round(c.detections[pos].boxes_xyxy[j]).astype(int)
                crop = img[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
                if crop.size == 0:
                    continue
                label = names[cls] if cls < len(names) else str(cls)
                crops.append((_texture(crop), crop, f"{score:.2f} {label} {sample.image_path.stem}"))
        crops.sort(key=lambda t: t[0])
        crops = crops[: opts.max_crops]
        if crops:
            ev["crop_texture"] = [t for t, _, _ in crops]
            files.append(str(_contact_sheet([(cr, cap) for _, cr, cap in crops], out_dir / "uniform_fp_crops.png")))
    status, sev = _verdict(rate > opts.negative_rate_fail, rate > opts.negative_rate_warn)
    finding = (f"{len(fired)} of {n_neg} negative scenes ({rate:.1%}) have a detection > {opts.high_score:g} "
               f"({len(hits)} detections); {fp_any / n_neg:.2f} false positives > {opts.conf:g} per negative image")
    fix = ("detcal fit fits per-class rejection thresholds on these negative scenes (--max-negative-rate 0.01) and "
           "detcal patch applies them; add more such scenes to training if recall allows") if status != "ok" else ""
    return Check(name, status, sev, finding, ev, fix, files)


# ------------------------------------------------------------------------------- 6 NMS load

def _nice_cap(x: float) -> int:
    for v in (100, 200, 300, 500, 1000, 1500, 2000, 3000):
        if v >= x:
            return v
    return 3000


def check_nms_load(main: _Run, dataset: Dataset, info: ModelInfo, opts: DoctorOptions, progress: bool) -> Check:
    name = "nms_load"
    runner = main.runner
    counts = np.array([runner.candidates.get(i, 0) for i in main.collected.sample_indices], dtype=np.float64)
    mean, p99, mx = float(counts.mean()), float(np.percentile(counts, 99)), float(counts.max())
    ev = {"conf": opts.conf, "candidates_mean": mean, "candidates_p99": p99, "candidates_max": mx,
          "n_images": len(counts), "n_outputs": int(np.prod([d for d in info.output_shape[1:] if isinstance(d, int)]))}
    # time model vs post-processing on a subsample, one image per call where the batch is dynamic
    n = min(opts.timing_images, len(main.collected))
    picks = np.linspace(0, len(main.collected) - 1, n).astype(int)
    t_model, t_post = [], []
    thr = np.full(max(main.matched.num_classes, 1), opts.conf)
    post_cfg = opts.postprocess
    with Progress(n, "timing post-processing", enabled=progress) as bar:
        for k in picks:
            sample = dataset.samples[main.collected.sample_indices[k]]
            try:
                img = read_image_rgb(sample.image_path)
            except DetcalError:
                continue
            x, row = runner.prepare(img)
            xb = np.repeat(x[None], runner.batch_size if not info.dynamic_batch else 1, axis=0)
            t0 = time.perf_counter()
            raw = runner.run_tensor(xb)[:1]
            t1 = time.perf_counter()
            postprocess(raw, info.layout, row[None], None, thr, post_cfg)
            t2 = time.perf_counter()
            t_model.append((t1 - t0) / xb.shape[0])
            t_post.append(t2 - t1)
            bar.update(1)
    if t_model:
        tm, tp = float(np.median(t_model)), float(np.median(t_post))
        share = tp / (tm + tp) if tm + tp > 0 else 0.0
        ev.update({"model_ms_median": tm * 1e3, "postprocess_ms_median": tp * 1e3, "postprocess_share": share,
                   "n_timed": len(t_model), "postprocess": "numpy reference: decode, threshold, class-aware NMS"})
    else:
        share = 0.0
    end2end = info.layout == "end2end"
    cap = _nice_cap(max(2 * p99, 1))
    ev["suggested_pre_nms_top_k"] = None if end2end else cap
    if end2end:
        finding = (f"the model selects its detections itself (end2end): {mean:.1f} per image above {opts.conf:g} "
                   f"(p99 {p99:.0f}); post-processing takes {share:.0%} of the time")
        return Check(name, "ok", "none", finding, ev)
    slow_post = share > opts.post_share_warn and ev.get("postprocess_ms_median", 0.0) >= opts.post_ms_floor
    warn = p99 > opts.candidates_p99_warn or mean > opts.candidates_mean_warn or slow_post
    status, sev = _verdict(False, warn)
    finding = (f"{mean:.1f} candidates per image above {opts.conf:g} before NMS (p99 {p99:.0f}, max {mx:.0f}); "
               f"post-processing takes {share:.0%} of model + post-processing time; a pre-NMS cap of {cap} keeps "
               f"every candidate of 99% of images")
    fix = (f"cap the candidates entering NMS at {cap} (detcal fit --pre-nms-top-k {cap}), raise the confidence "
           "threshold after calibration, or let the patched model run NMS in the graph") if warn else ""
    return Check(name, status, sev, finding, ev, fix)


# --------------------------------------------------------------------------------- 7 labels

def check_labels(dataset: Dataset, main: _Run, opts: DoctorOptions) -> Check:
    name = "labels"
    rep = dataset.report
    c = main.collected
    n_boxes = edge = 0
    for pos, si in enumerate(c.sample_indices):
        s = dataset.samples[si]
        if s.n_boxes == 0:
            continue
        w, h = c.image_sizes[pos]
        tol = np.array([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h])
        b = s.gt_boxes_xyxy_norm
        touch = (b[:, 0] <= tol[0]) | (b[:, 1] <= tol[1]) | (b[:, 2] >= 1 - tol[2]) | (b[:, 3] >= 1 - tol[3])
        n_boxes += len(b)
        edge += int(touch.sum())
    counts = np.bincount(np.concatenate([s.gt_classes for s in dataset.samples] or [np.zeros(0, np.int64)]),
                         minlength=dataset.num_classes)
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else None
    empty = [dataset.names[i] for i in np.flatnonzero(counts == 0)]
    edge_share = edge / n_boxes if n_boxes else 0.0
    ev = {"n_images": rep.n_images, "n_boxes": rep.n_boxes, "n_touching_edge": edge, "share_touching_edge": edge_share,
          "n_out_of_range_clipped": rep.n_clipped_boxes, "n_zero_size_dropped": rep.n_dropped_zero_size,
          "n_duplicates_dropped": rep.n_duplicate_boxes, "n_missing_label_files": rep.n_missing_label_files,
          "boxes_per_class": {dataset.names[i]: int(counts[i]) for i in range(len(counts))},
          "imbalance_max_over_min": imbalance, "classes_without_boxes": empty, "details": list(rep.details)}
    problems, sev = [], "none"
    if edge_share > opts.edge_share_warn:
        problems.append(f"{edge_share:.1%} of boxes touch the image edge (truncated objects)")
        sev = "medium"
    bad = rep.n_clipped_boxes + rep.n_dropped_zero_size
    if bad:
        problems.append(f"{rep.n_clipped_boxes} boxes reach outside the image (clipped), {rep.n_dropped_zero_size} have no area")
        sev = "medium"
    if (imbalance or 0) > opts.imbalance_warn or (empty and rep.n_boxes):
        problems.append(f"class imbalance {imbalance:.0f}:1" + (f", no boxes for {', '.join(empty[:5])}" if empty else ""))
        sev = sev if sev != "none" else "low"
    status = "warn" if problems else "ok"
    finding = "; ".join(problems) if problems else (
        f"{rep.n_boxes} boxes, {edge_share:.1%} touching the edge, none out of range, imbalance "
        f"{_f(imbalance, '{:.1f}')}:1")
    fixes = []
    if edge_share > opts.edge_share_warn:
        fixes.append("check that truncated objects are labelled consistently (or crop/pad the frames); they match "
                     "poorly and distort calibration")
    if bad:
        fixes.append("fix the label export (coordinates must be normalised to [0, 1] of the oriented image)")
    if (imbalance or 0) > opts.imbalance_warn or empty:
        fixes.append("add images of the rare classes; per-class calibration of rare classes falls back to the global fit")
    return Check(name, status, sev, finding, ev, "; ".join(fixes))


# ------------------------------------------------------------------------------- the driver

CHECK_NAMES = ("resolution", "box_shape", "letterbox", "calibration", "uniform_fp", "nms_load", "labels")


def diagnose(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    serve_size: int | tuple[int, int] | None = None,
    native_size: int | tuple[int, int] | None = None,
    native_model: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    options: DoctorOptions | None = None,
    layout: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    threads: int | None = None,
    names: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Run the seven checks on a model and a labelled split. Writes doctor.json and PNGs to out_dir when given.

    serve_size: the size the model is served at, N or (H, W) (default: its native size).
    native_size: the size it was trained/exported at, for dynamic-size models without `imgsz` metadata.
    native_model: the same detector exported at its training size (fixed-size exports): the
    resolution check runs it beside `model` for a real comparison.
    Raises DetcalError for bad input (missing files, class mismatch, dynamic model without any size).
    """
    opts = options or DoctorOptions()
    opts.validate()
    log = log or (lambda msg: print(msg, file=sys.stderr) if progress else None)
    t_start = time.perf_counter()
    as_hw = lambda s: None if s is None else ((int(s), int(s)) if isinstance(s, (int, np.integer)) else tuple(int(v) for v in s))
    serve, native_arg = as_hw(serve_size), as_hw(native_size)
    for label, s in (("--serve-size", serve), ("--native-size", native_arg)):
        if s is not None and (len(s) != 2 or min(s) < 1):
            raise DetcalError(f"{label} must be N or HxW with positive sizes, got {s}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise DetcalError(f"output path is a file, expected a folder: {out}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DetcalError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    dataset = load_dataset(data, split, names=names)
    proto = load_onnx(model)
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, model=proto)
    num_classes = check_class_count(info, dataset.names, str(data))
    if info.is_patched:
        raise DetcalError(f"{model} is already patched by detcal; run doctor on the raw exported model")

    # sizes: what runs as the main (serving) run, and what is compared with it
    note = ""
    native_info = None
    if native_model is not None:
        native_info = read_model_info(native_model, layout=layout, num_classes=dataset.num_classes)
        check_class_count(native_info, dataset.names, str(data))
        if native_info.layout != info.layout:
            raise DetcalError(f"{native_model} has layout {native_info.layout}, {model} has {info.layout}: not the same detector")
        if native_info.input_size is None and native_arg is None:
            raise DetcalError(f"{native_model} has dynamic height/width; pass --native-size too")
    if native_info is not None:
        serve = tuple(info.input_size) if info.input_size is not None else serve
        if serve is None:
            raise DetcalError(f"{model} has dynamic height/width; pass --serve-size")
        native = tuple(native_info.input_size) if native_info.input_size is not None else native_arg
        main_size = serve
        compare = "native_model" if tuple(native) != tuple(serve) else None
        note = f"the native size ran on {Path(native_model).name}, the served size on {Path(model).name}"
    elif info.input_size is not None:
        native = tuple(info.input_size)
        serve = serve or native
        main_size = native
        if serve == native:
            compare = None
        elif serve[0] <= native[0] and serve[1] <= native[1]:
            compare = "emulate"
            note = (f"the model's input is fixed at {_sz(native)}, so serving at {_sz(serve)} is emulated by "
                    "letterboxing into it and padding to the input; the other checks ran at the real input")
        else:
            compare = None
            note = (f"the model's input is fixed at {_sz(native)}: it cannot run at {_sz(serve)} (larger), "
                    "only the dataset's image sizes are compared with the input")
    else:
        native = native_arg or _parse_imgsz(info.metadata.get("imgsz"))
        serve = serve or native
        if serve is None:
            raise DetcalError(f"{model} has dynamic height/width and no imgsz metadata; pass --serve-size (and --native-size)")
        main_size = serve
        if native is None:
            compare = None
            note = "native (training) size unknown for this dynamic model: pass --native-size to compare"
        else:
            compare = "real" if serve != native else None
    log(f"doctor: {dataset.source}: {len(dataset)} images; running {Path(model).name} at {_sz(main_size)}")
    main = _run(dataset, info, preprocess, main_size, num_classes, opts, batch_size=batch_size, threads=threads,
                progress=progress, desc=f"running model at {_sz(main_size)}")
    other = None
    if compare == "emulate":
        log(f"doctor: emulating serving at {_sz(serve)} inside the {_sz(native)} input")
        other = _run(dataset, info, preprocess, native, num_classes, opts, emulate_size=serve, batch_size=batch_size,
                     threads=threads, progress=progress, desc=f"emulating {_sz(serve)}", session=main.runner.session)
    elif compare == "native_model":
        log(f"doctor: running {Path(native_model).name} at its native size {_sz(native)} for comparison")
        other = _run(dataset, native_info, preprocess, native, num_classes, opts, batch_size=batch_size,
                     threads=threads, progress=progress, desc=f"running native model at {_sz(native)}")
    elif compare == "real":
        log(f"doctor: running at the native size {_sz(native)} for comparison")
        other = _run(dataset, info, preprocess, native, num_classes, opts, batch_size=batch_size, threads=threads,
                     progress=progress, desc=f"running model at {_sz(native)}", session=main.runner.session)

    checks = []
    checks.append(check_resolution(main, other, note, native, serve, opts))
    checks.append(check_box_shape(main, proto, info, opts))
    checks.append(check_letterbox(main, preprocess, opts))
    checks.append(check_calibration(main, opts, out))
    checks.append(check_uniform_fp(main, dataset, opts, out, dataset.names))
    checks.append(check_nms_load(main, dataset, info, opts, progress))
    checks.append(check_labels(dataset, main, opts))
    for ch in checks:
        ch.evidence = _jsonable(ch.evidence)
    report = DoctorReport(str(model), str(data), split, tuple(serve), tuple(native) if native else None,
                          dataset.report.summary(), checks, str(out) if out is not None else None,
                          time.perf_counter() - t_start)
    if out is not None:
        atomic_write_json(out / "doctor.json", report.to_dict())
    return report


# ---------------------------------------------------------------------------------- the CLI

def add_doctor_parser(sub) -> None:
    from .cli import _size, add_preprocess_args

    p = sub.add_parser(
        "doctor", help="run the production debug checklist on a model and a labelled split",
        description="Check a raw exported detector on your own data: resolution mismatch, box shape fit and anchors, "
                    "detections in the letterbox bars, calibration (D-ECE), confident false positives on uniform "
                    "surfaces, NMS load and label sanity. Prints a report ordered by severity, writes doctor.json and "
                    "PNGs; exit code 0 when nothing is flagged, 1 when something is, 2 on bad input.")
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--data", required=True, help="labelled images: an Ultralytics data YAML, an images/ + labels/ folder, or a COCO JSON")
    p.add_argument("--split", default="val", help="dataset split to use from a YAML (default: val)")
    p.add_argument("--serve-size", type=_size, help="the size the model is served at, N or HxW (default: the model's input)")
    p.add_argument("--native-size", type=_size, help="the size it was trained/exported at, for dynamic models without imgsz metadata")
    p.add_argument("--native-model", help="the same detector exported at its training size, when --model is a fixed-size "
                                          "export at another size: the resolution check runs both")
    p.add_argument("--out", default="doctor", help="folder for doctor.json and the PNGs (default: doctor/)")
    p.add_argument("--conf", type=float, default=0.25, help="the confidence threshold deployed today (default: 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold deployed today (default: 0.7)")
    p.add_argument("--layout", choices=["xywh_cls", "xywh_obj_cls", "end2end"], help="override the recognised head layout")
    p.add_argument("--batch", type=int, default=8, help="images per model call when the batch axis is dynamic (default: 8)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print doctor.json to stdout instead of the text report")
    p.add_argument("--quiet", action="store_true", help="no progress")
    add_preprocess_args(p)
    p.set_defaults(func=run_doctor_cli)


def run_doctor_cli(args) -> int:
    import json

    try:
        pre = Preprocess(args.resize, args.pad_value, args.channel_order, tuple(args.mean), tuple(args.std))
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
    try:
        options = DoctorOptions(conf=args.conf, postprocess=PostprocessConfig(iou_threshold=args.iou, mask_padding=False))
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
    for src in (args.model, args.data):
        if Path(args.out).exists() and Path(args.out).resolve() == Path(src).resolve():
            raise DetcalError(f"output folder is an input: {args.out}")
    report = diagnose(args.model, args.data, split=args.split, serve_size=args.serve_size, native_size=args.native_size,
                      native_model=args.native_model,
                      preprocess=pre, options=options, layout=args.layout, out_dir=args.out,
                      batch_size=args.batch, threads=args.threads, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
        print(f"\nwrote {Path(args.out) / 'doctor.json'}")
    return report.exit_code
