"""Like-with-like statistics for `detcal doctor`, with intervals from an image bootstrap.

Two comparisons that a selection effect cannot fake:

- box size on MATCHED pairs: for every detection matched to a labelled box (same class,
  IoU >= the matching threshold), log(sqrt(area_pred) / sqrt(area_label)); the statistic is the
  median over pairs, and its interval resamples whole images (pairs of one image move together).
  A model that misses small objects but sizes the ones it finds correctly gives a median near 0;
  comparing all predictions with all labels would not.
- recall by object-size bucket (COCO: small < 32^2, medium < 96^2, large, box area in
  original-image pixels), and the paired difference of two runs on the same images (two serving
  sizes, or a float and a quantized model): both recalls are computed on the same bootstrap
  resample of images, so the interval of the difference is as narrow as the pairing allows.

The bootstrap draws images with replacement (``n_boot`` resamples, multinomial weights per
image), and the interval is the percentile interval at ``level``. "The data support a shift"
means the interval excludes the no-shift value (0 for a log-ratio or a difference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..bootstrap import bootstrap_weights as _stratified_weights
from ..matching import MatchedDetections

__all__ = ["SIZE_BUCKETS", "SIZE_EDGES", "Estimate", "size_bucket", "bootstrap_weights", "weighted_median_rows",
           "matched_size_log_ratios", "size_shift", "gt_hits", "gt_buckets", "recall_by_group",
           "paired_recall_difference", "median_shift", "located_pairs", "paired_mean_difference",
           "weighted_dece_rows", "paired_dece_difference"]

SIZE_BUCKETS = ("small", "medium", "large")
SIZE_EDGES = (32.0 ** 2, 96.0 ** 2)   # COCO's area ranges, px^2 of the original image


@dataclass(frozen=True)
class Estimate:
    """A statistic with its image-bootstrap interval. nan where there is nothing to estimate."""

    value: float
    low: float
    high: float
    level: float          # e.g. 0.95
    n: int                # pairs / labelled boxes behind it
    n_images: int         # images that contribute

    def excludes(self, x: float = 0.0) -> bool:
        """True when the interval lies entirely on one side of x (the data support a difference from x)."""
        return bool(math.isfinite(self.low) and math.isfinite(self.high) and (self.low > x or self.high < x))

    def to_dict(self) -> dict:
        f = lambda v: None if not math.isfinite(v) else round(float(v), 6)   # noqa: E731
        return {"value": f(self.value), "interval": [f(self.low), f(self.high)], "level": self.level,
                "n": int(self.n), "n_images": int(self.n_images)}

    def text(self, fmt: str = "{:+.3f}") -> str:
        if not math.isfinite(self.value):
            return "n/a"
        lo = fmt.format(self.low) if math.isfinite(self.low) else "n/a"
        hi = fmt.format(self.high) if math.isfinite(self.high) else "n/a"
        return f"{fmt.format(self.value)} [{lo}, {hi}]"


def _nan_estimate(level: float, n: int = 0, n_images: int = 0) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, level, n, n_images)


def size_bucket(area: np.ndarray) -> np.ndarray:
    """Box area (N,) px^2 of the original image -> (N,) int64 bucket index into SIZE_BUCKETS."""
    return np.searchsorted(np.asarray(SIZE_EDGES), np.asarray(area, np.float64), side="right").astype(np.int64)


def bootstrap_weights(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) float64 counts: how often each image is drawn in each resample (rows sum
    to n_images); calib.bootstrap's resampler with one stratum."""
    return _stratified_weights(np.zeros(n_images, dtype=np.int64), n_boot, np.random.default_rng(seed))


def weighted_median_rows(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """values (P,), weights (B, P) >= 0 -> (B,) weighted median per row (the lower one on a tie); nan for empty rows."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    v, w = values[order], np.asarray(weights, np.float64)[:, order]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1:] if cum.shape[1] else np.zeros((w.shape[0], 1))
    idx = np.argmax(cum >= 0.5 * total, axis=1)
    out = v[idx] if len(v) else np.full(w.shape[0], math.nan)
    return np.where(total[:, 0] > 0, out, math.nan)


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


def median_shift(values: np.ndarray, image_index: np.ndarray, n_images: int, *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> Estimate:
    """Median of per-pair values (P,) with image index (P,) in [0, n_images); interval by image bootstrap."""
    values = np.asarray(values, np.float64).reshape(-1)
    image_index = np.asarray(image_index, np.int64).reshape(-1)
    if values.size == 0:
        return _nan_estimate(level)
    w = bootstrap_weights(n_images, n_boot, seed)[:, image_index]
    lo, hi = _interval(weighted_median_rows(values, w), level)
    return Estimate(float(np.median(values)), lo, hi, level, int(values.size), int(np.unique(image_index).size))


# ----------------------------------------------------------------------- sizes on matched pairs

def _flat_gt_boxes(gt_boxes_xyxy: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(g, np.float64).reshape(-1, 4) for g in gt_boxes_xyxy]) if gt_boxes_xyxy \
        else np.zeros((0, 4))


def _flat_det_boxes(detections) -> np.ndarray:
    parts = [np.asarray(d.boxes_xyxy, np.float64).reshape(-1, 4) for d in detections]
    return np.concatenate(parts) if parts else np.zeros((0, 4))


def _wh(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def matched_size_log_ratios(detections, gt_boxes_xyxy, matched: MatchedDetections, conf: float = 0.0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched pairs of a dataset -> (image_index (P,), log size ratio (P,), log aspect ratio (P,)).

    detections: per-image objects with boxes_xyxy (K_i, 4) original px (the ones `matched` was
    built from, same order); gt_boxes_xyxy: per-image (M_i, 4) original px. Size is sqrt(w * h),
    aspect w / h; ratios are predicted over labelled. Only matched detections with score > conf
    and positive-size boxes on both sides count.
    """
    det = _flat_det_boxes(detections)
    gt = _flat_gt_boxes(gt_boxes_xyxy)
    keep = matched.is_tp & (matched.scores > conf)
    d, g = _wh(det[keep]), _wh(gt[matched.gt_index[keep]])
    ok = (d > 0).all(axis=1) & (g > 0).all(axis=1)
    d, g, img = d[ok], g[ok], matched.image_index[keep][ok]
    log_size = 0.5 * (np.log(d[:, 0] * d[:, 1]) - np.log(g[:, 0] * g[:, 1]))
    log_aspect = np.log(d[:, 0] / d[:, 1]) - np.log(g[:, 0] / g[:, 1])
    return img.astype(np.int64), log_size, log_aspect


def size_shift(detections, gt_boxes_xyxy, matched: MatchedDetections, *, conf: float = 0.0, n_boot: int = 1000,
               level: float = 0.95, seed: int = 0) -> dict[str, Estimate]:
    """{"log_size": Estimate, "log_aspect": Estimate}: median log-ratio predicted/labelled on matched pairs.

    exp(value) is the typical predicted/labelled ratio; an interval excluding 0 means the data
    support a systematic size (or aspect) bias of the boxes the model does find.
    """
    img, ls, la = matched_size_log_ratios(detections, gt_boxes_xyxy, matched, conf)
    return {"log_size": median_shift(ls, img, matched.n_images, n_boot=n_boot, level=level, seed=seed),
            "log_aspect": median_shift(la, img, matched.n_images, n_boot=n_boot, level=level, seed=seed + 1)}


# ----------------------------------------------------------------------------- recall by group

def gt_hits(matched: MatchedDetections, conf: float) -> np.ndarray:
    """(G,) bool: the labelled box is matched by a detection with score > conf."""
    hit = np.zeros(matched.gt_classes.shape[0], bool)
    sel = matched.is_tp & (matched.scores > conf)
    hit[matched.gt_index[sel]] = True
    return hit


def gt_buckets(gt_boxes_xyxy: list[np.ndarray]) -> np.ndarray:
    """Per-image labelled boxes (M_i, 4) xyxy original px -> (G,) size bucket of the flat ground truth."""
    g = _flat_gt_boxes(gt_boxes_xyxy)
    return size_bucket((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]))


def _per_image(x: np.ndarray, image_index: np.ndarray, n_images: int) -> np.ndarray:
    return np.bincount(image_index, weights=x.astype(np.float64), minlength=n_images)


def recall_by_group(hits: np.ndarray, gt_image_index: np.ndarray, groups: np.ndarray, n_groups: int, n_images: int,
                    *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[Estimate]:
    """Recall per group (e.g. size bucket or class) with an image-bootstrap interval.

    hits (G,) bool (or float per-box values, e.g. paired differences), gt_image_index (G,), groups (G,)
    int in [0, n_groups) -> n_groups Estimates.
    """
    w = bootstrap_weights(n_images, n_boot, seed)
    out = []
    for k in range(n_groups):
        sel = groups == k
        n = int(sel.sum())
        if n == 0:
            out.append(_nan_estimate(level))
            continue
        num = _per_image(hits[sel], gt_image_index[sel], n_images)
        den = _per_image(np.ones(n), gt_image_index[sel], n_images)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (w @ num) / (w @ den)
        lo, hi = _interval(boot, level)
        out.append(Estimate(float(num.sum() / den.sum()), lo, hi, level, n, int((den > 0).sum())))
    return out


def paired_recall_difference(hits_a: np.ndarray, hits_b: np.ndarray, gt_image_index: np.ndarray, groups: np.ndarray,
                             n_groups: int, n_images: int, *, n_boot: int = 1000, level: float = 0.95,
                             seed: int = 0) -> list[Estimate]:
    """recall(a) - recall(b) per group, both on the same labelled boxes, interval by a paired image bootstrap.

    hits_a, hits_b (G,) bool over the same flat ground truth (same images, same order).
    """
    if hits_a.shape != hits_b.shape:
        raise ValueError(f"paired_recall_difference: {hits_a.shape[0]} vs {hits_b.shape[0]} labelled boxes")
    # the same ratio estimator as recall_by_group, on per-box differences (+1, 0, -1)
    return recall_by_group(hits_a.astype(np.float64) - hits_b, gt_image_index, groups, n_groups, n_images,
                           n_boot=n_boot, level=level, seed=seed)


# ------------------------------------------------------------------- located pairs (any IoU)

def located_pairs(detections, gt_boxes_xyxy, gt_classes, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each labelled box with the same-class detection (score > conf) centred inside it that overlaps it most.

    Catches a size bias too large for IoU >= 0.5 matching (a 2x box has IoU <= 0.25 with its
    object), while still comparing a prediction with its own object: a labelled box that no
    detection sits on has no pair, so missed objects do not bias the statistic.
    Returns (image_index (P,), log size ratio (P,), log aspect ratio (P,)), predicted over labelled.
    """
    from ..boxes import box_iou

    imgs, ls, la = [], [], []
    for i, (d, gt, gc) in enumerate(zip(detections, gt_boxes_xyxy, gt_classes)):
        gt = np.asarray(gt, np.float64).reshape(-1, 4)
        keep = np.asarray(d.scores) > conf
        if len(gt) == 0 or not keep.any():
            continue
        b = np.asarray(d.boxes_xyxy, np.float64)[keep]
        c = np.asarray(d.classes)[keep]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        inside = ((cx[None] >= gt[:, 0:1]) & (cx[None] <= gt[:, 2:3]) & (cy[None] >= gt[:, 1:2]) & (cy[None] <= gt[:, 3:4])
                  & (c[None] == np.asarray(gc)[:, None]))
        iou = np.where(inside, box_iou(gt, b), -1.0)
        best = iou.argmax(axis=1)
        has = iou[np.arange(len(gt)), best] > 0
        g, p = _wh(gt[has]), _wh(b[best[has]])
        ok = (g > 0).all(axis=1) & (p > 0).all(axis=1)
        g, p = g[ok], p[ok]
        imgs.append(np.full(len(g), i, np.int64))
        ls.append(0.5 * (np.log(p[:, 0] * p[:, 1]) - np.log(g[:, 0] * g[:, 1])))
        la.append(np.log(p[:, 0] / p[:, 1]) - np.log(g[:, 0] / g[:, 1]))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)   # noqa: E731
    return cat(imgs, np.int64), cat(ls, np.float64), cat(la, np.float64)


# ----------------------------------------------------------------- paired per-image statistics

def paired_mean_difference(a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                           seed: int = 0) -> Estimate:
    """mean(a) - mean(b) of per-image values a, b (n,) of the same images (e.g. false positives per
    negative image at two sizes), interval by a paired image bootstrap."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_mean_difference: {a.size} vs {b.size} images")
    if a.size == 0:
        return _nan_estimate(level)
    w = bootstrap_weights(a.size, n_boot, seed)
    boot = (w @ (a - b)) / a.size
    lo, hi = _interval(boot, level)
    return Estimate(float(np.mean(a - b)), lo, hi, level, int(a.size), int(a.size))


def weighted_dece_rows(scores: np.ndarray, is_tp: np.ndarray, weights: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """D-ECE (calib.metrics.dece) of detections (K,) under per-detection weights (B, K) -> (B,); nan for empty rows."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    b = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    onehot = np.zeros((scores.size, n_bins))
    onehot[np.arange(scores.size), b] = 1.0
    w = np.asarray(weights, np.float64)
    sum_s = w @ (onehot * scores[:, None])
    sum_a = w @ (onehot * np.asarray(is_tp, np.float64).reshape(-1)[:, None])
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(sum_s - sum_a).sum(axis=1) / n, math.nan)


def paired_dece_difference(run_a: tuple[np.ndarray, np.ndarray, np.ndarray], run_b: tuple[np.ndarray, np.ndarray, np.ndarray],
                           n_images: int, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Estimate:
    """D-ECE(a) - D-ECE(b), each run given as (scores (K,), is_tp (K,), image_index (K,)) over the same
    n_images images, interval by a paired image bootstrap (the same resample for both runs)."""
    w = bootstrap_weights(n_images, n_boot, seed)
    (sa, ta, ia), (sb, tb, ib) = run_a, run_b
    if len(sa) == 0 or len(sb) == 0:
        return _nan_estimate(level, len(sa) + len(sb), n_images)
    full = np.ones((1, n_images))
    point = weighted_dece_rows(sa, ta, full[:, ia])[0] - weighted_dece_rows(sb, tb, full[:, ib])[0]
    boot = weighted_dece_rows(sa, ta, w[:, ia]) - weighted_dece_rows(sb, tb, w[:, ib])
    lo, hi = _interval(boot, level)
    return Estimate(float(point), lo, hi, level, int(len(sa) + len(sb)), int(n_images))
