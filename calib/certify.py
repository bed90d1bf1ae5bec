"""A negative-scene guarantee that holds out of sample: fixed-sequence testing on a threshold family.

The promise: with probability >= ``confidence`` over the fitting images, the share of NEW
negative images (no objects, same distribution) on which any detection survives the chosen
per-class thresholds is <= ``max_negative_rate``.

Why a split. Thresholds chosen on the same negative images that the Clopper-Pearson bound is
then computed on (``calib.thresholds``) are tuned to exactly those images: the bound is not a
bound, and the realised rate on new images is several times the fitted one. So:

1. Shape. The negative images are split at random (by image, seeded) into a shape part and
   a certification part. On the shape part and on all positive images a one-parameter family
   of threshold vectors t(0) >= t(1) >= ... >= t(J-1) (elementwise, strict to loose) is
   built; it never sees the certification part.
   - "per-class": t(0) = 1 (nothing survives); then one level u for all classes, raised
     above the shape part's zero-firing thresholds (``max(t0, u)``, u falling over the
     positives' true-positive scores and a fixed grid); then the greedy path on the shape part:
     each step lowers one class's threshold past its next negative image(s), the move with the
     most recall (true positives on the positive images, pooled over classes, i.e. the recall
     that ``detcal eval`` reports) per newly firing shape image; last, the base thresholds.
   - "global": one level u for all classes (``max(base, u)``): needs no shape images, so
     every negative image certifies.
2. Certification (Learn-then-Test, Angelopoulos et al. 2021, fixed-sequence testing). For
   j = 0, 1, ... test H0_j: rate(t(j)) > target with the exact binomial p-value
   P(Binomial(n_cert, target) <= k_j), k_j the certification images that fire at t(j); stop at
   the first p-value above 1 - confidence; choose the loosest rejected j. The family is fixed
   before the certification images are looked at and k_j grows with j, so
   P(rate(t(chosen)) > target) <= 1 - confidence. (Rejecting H0_j is exactly
   ``clopper_pearson_upper(k_j, n_cert) <= target``, so the certified bound is that value.)

Split sizes. All positive images serve the shape (recall does not enter the bound). The
certification part gets ``1 - shape_fraction`` of the negatives (default half), but never
fewer than the number needed to certify the target with none firing
(``negative_images_needed``): below that nothing can be certified at all, so at a 1% target
and 313 negatives 299 certify and 14 shape. The global shape certifies on all of them.

Edge cases. No negative images: the base thresholds, not certified. Fewer negative images
than needed for the target even with none firing: the per-class thresholds at which no
fitting negative image fires ("zero-firing", as ``calib.thresholds`` does), not certified, with
the bound that is reachable. Classes that never fire on negatives stay at the base.

Scores are those the thresholds apply to (calibrated or raw); a detection survives when
``score > threshold[class]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

from .thresholds import _negative_entries, clopper_pearson_upper, negative_images_needed

__all__ = [
    "ScoredImages",
    "CertifiedThresholds",
    "certify_thresholds",
    "certify_matched",
    "threshold_family",
    "first_firing_row",
    "fixed_sequence",
    "global_baseline",
    "compare_shapes",
    "SHAPES",
]

SHAPES = ("per-class", "global", "auto")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ScoredImages:
    """Detections on the fitting images with the scores the thresholds apply to.

    image_index (K,) int64 in [0, n_images); scores (K,) float64; classes (K,) int64;
    is_tp (K,) bool; negative_image_mask (n_images,) bool (no ground truth);
    gt_image_index (G,), gt_classes (G,) int64: the ground-truth boxes; num_classes C.
    """

    image_index: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    is_tp: np.ndarray
    negative_image_mask: np.ndarray
    gt_image_index: np.ndarray
    gt_classes: np.ndarray
    num_classes: int

    @classmethod
    def from_matched(cls, matched, scores=None) -> "ScoredImages":
        """From ``calib.matching.MatchedDetections``; ``scores`` (K,) replaces its scores."""
        s = matched.scores if scores is None else scores
        return cls(np.asarray(matched.image_index, np.int64), np.asarray(s, np.float64),
                   np.asarray(matched.classes, np.int64), np.asarray(matched.is_tp, bool),
                   np.asarray(matched.negative_image_mask, bool), np.asarray(matched.gt_image_index, np.int64),
                   np.asarray(matched.gt_classes, np.int64), int(matched.num_classes))

    @property
    def n_images(self) -> int:
        return int(self.negative_image_mask.shape[0])

    @property
    def n_negative_images(self) -> int:
        return int(self.negative_image_mask.sum())

    @property
    def n_gt_per_class(self) -> np.ndarray:
        return np.bincount(self.gt_classes, minlength=self.num_classes)

    def subset(self, image_mask: np.ndarray) -> "ScoredImages":
        """The images selected by image_mask (n_images,) bool, re-indexed in order."""
        image_mask = np.asarray(image_mask, bool)
        new = np.cumsum(image_mask) - 1
        d = image_mask[self.image_index]
        g = image_mask[self.gt_image_index]
        return ScoredImages(new[self.image_index[d]], self.scores[d], self.classes[d], self.is_tp[d],
                            self.negative_image_mask[image_mask], new[self.gt_image_index[g]],
                            self.gt_classes[g], self.num_classes)

    def negatives(self):
        """(local image index among negative images (Kn,), scores, classes, n_negative_images)."""
        neg = self.negative_image_mask
        on = neg[self.image_index]
        local = np.cumsum(neg) - 1
        return local[self.image_index[on]], self.scores[on], self.classes[on], int(neg.sum())

    def true_positive_scores(self):
        """(scores, classes) of the true positives, and the number of ground-truth boxes."""
        return self.scores[self.is_tp], self.classes[self.is_tp], int(self.gt_classes.shape[0])


# ----------------------------------------------------------------------------- the family


class _Recall:
    """True positives above per-class thresholds, pooled over classes (micro recall)."""

    def __init__(self, tp_scores, tp_classes, n_gt: int, c: int):
        order = np.lexsort((tp_scores, tp_classes))
        self.s = np.asarray(tp_scores, np.float64)[order]
        self.cl = np.asarray(tp_classes, np.int64)[order]
        self.bounds = np.searchsorted(self.cl, np.arange(c + 1))
        self.n_gt = int(n_gt)
        self.c = c

    def count(self, thr, classes) -> np.ndarray:
        """thr (Q,) thresholds for classes (Q,) -> (Q,) TPs of that class with score > threshold."""
        thr = np.asarray(thr, np.float64)
        classes = np.asarray(classes, np.int64)
        out = np.zeros(classes.shape[0], np.int64)
        for k in np.unique(classes):
            sel = classes == k
            seg = self.s[self.bounds[k]:self.bounds[k + 1]]
            out[sel] = seg.size - np.searchsorted(seg, thr[sel], side="right")
        return out

    def recall(self, thresholds) -> float:
        """Micro recall at thresholds (C,)."""
        if self.n_gt == 0:
            return math.nan
        return float(self.count(thresholds, np.arange(self.c)).sum() / self.n_gt)


def _level_grid(tp_scores, extra=()) -> np.ndarray:
    """Descending candidate levels: a fixed grid on [0, 1] (steps of 0.0005) and the given
    scores (never the certification images')."""
    g = np.concatenate([np.linspace(0.0, 1.0, 2001), np.asarray(tp_scores, np.float64).ravel(),
                        np.asarray(extra, np.float64).ravel()])
    return np.unique(np.clip(g, 0.0, 1.0))[::-1]


def _greedy_path(entries, base, c, n_shape, recall: _Recall, max_fire: int) -> np.ndarray:
    """Threshold vectors (P, C), nonincreasing: the zero-firing thresholds of the shape images,
    then one row after each greedy move (see the module docstring), until max_fire shape
    images fire."""
    cls, img, score = entries
    t0 = base.copy()
    np.maximum.at(t0, cls, score)
    rows = [t0]
    if cls.size == 0 or max_fire <= 0:
        return np.asarray(rows)
    bounds = np.searchsorted(cls, np.arange(c + 1))
    static_rank = np.arange(cls.size) - bounds[cls]
    reach = static_rank <= max_fire
    # a class with entries beyond the reach keeps the first of them as its floor
    floor = base.copy()
    beyond = static_rank == max_fire + 1
    np.maximum.at(floor, cls[beyond], score[beyond])
    no_base = floor > base
    cls, img, score = cls[reach], img[reach], score[reach]
    w = 1.0 / max(recall.n_gt, 1)
    val_entry = recall.count(score, cls) * w
    val_base = recall.count(base, np.arange(c)) * w
    fired = np.zeros(n_shape, bool)
    n_fired = 0
    while n_fired < max_fire:
        alive_idx = np.flatnonzero(~fired[img])
        if alive_idx.size == 0:
            break
        budget = max_fire - n_fired
        a_cls = cls[alive_idx]
        a_start = np.searchsorted(a_cls, np.arange(c + 1))
        rank = np.arange(alive_idx.size) - a_start[a_cls]
        a_score = score[alive_idx]
        a_val = val_entry[alive_idx]
        n_alive = np.diff(a_start)
        head = a_start[a_cls]
        prev = np.concatenate([[np.inf], a_score[:-1]])
        m = (rank >= 1) & (rank <= budget) & (a_score < prev)
        mv_cls, mv_cost = a_cls[m], rank[m]
        mv_gain = a_val[m] - a_val[head[m]]
        mv_drop = a_score[head[m]] - a_score[m]
        bc = np.flatnonzero((n_alive > 0) & (n_alive <= budget) & ~no_base)
        hb = a_start[bc]
        mv_cls = np.concatenate([mv_cls, bc])
        mv_cost = np.concatenate([mv_cost, n_alive[bc]])
        mv_gain = np.concatenate([mv_gain, val_base[bc] - a_val[hb]])
        mv_drop = np.concatenate([mv_drop, a_score[hb] - np.maximum(base[bc], floor[bc])])
        if mv_cls.size == 0:
            break
        ratio = mv_gain / mv_cost
        tied = np.flatnonzero(ratio >= ratio.max() - 1e-15)
        best = tied[np.lexsort((mv_cls[tied], mv_cost[tied], -mv_drop[tied] / mv_cost[tied]))[0]]
        k, cost = mv_cls[best], mv_cost[best]
        newly = img[alive_idx[a_start[k]:a_start[k] + cost]]
        n_fired += int((~fired[newly]).sum())
        fired[newly] = True
        alive = ~fired[img]
        t = floor.copy()
        np.maximum.at(t, cls[alive], score[alive])
        rows.append(t)
    return np.asarray(rows)


def threshold_family(
    shape: str,
    base: np.ndarray,
    tp_scores: np.ndarray,
    tp_classes: np.ndarray,
    n_gt: int,
    shape_negatives=None,
    max_fire: int = 0,
) -> np.ndarray:
    """The family (J, C), rows nonincreasing elementwise from all-ones (nothing survives) to
    the base thresholds (C,). See the module docstring for the two shapes.

    shape_negatives: (image index (Kn,), scores, classes, n_shape_images) of the shape part
    ("per-class" only); max_fire: how many shape images the greedy path may let fire.
    """
    c = base.shape[0]
    ones = np.ones((1, c))
    if shape == "global":
        levels = _level_grid(tp_scores)
        fam = np.maximum(base[None, :], levels[:, None])
    elif shape == "per-class":
        recall = _Recall(tp_scores, tp_classes, n_gt, c)
        if shape_negatives is not None and shape_negatives[3] > 0:
            img, s, cl, n_shape = shape_negatives
            entries = _negative_entries(np.asarray(img, np.int64), np.asarray(s, np.float64),
                                        np.asarray(cl, np.int64), base, c)
            path = _greedy_path(entries, base, c, n_shape, recall, min(max_fire, n_shape))
            extra = entries[2]
        else:
            path, extra = base[None, :].copy(), ()
        t0 = path[0]
        levels = _level_grid(tp_scores, extra)
        levels = levels[levels > t0.min()]
        raise_rows = np.maximum(t0[None, :], levels[:, None])
        fam = np.concatenate([raise_rows, path])
    else:
        raise ValueError(f"shape must be 'per-class' or 'global', got {shape!r}")
    fam = np.concatenate([ones, fam, base[None, :]])
    fam = np.minimum.accumulate(fam, axis=0)
    keep = np.ones(fam.shape[0], bool)
    keep[1:] = np.any(fam[1:] != fam[:-1], axis=1)
    return fam[keep]


def first_firing_row(family: np.ndarray, img, scores, classes, n_images: int) -> np.ndarray:
    """(n_images,) int: per image the first row j of family (J, C) at which one of its
    detections survives (score > family[j, class]); J when none ever does."""
    img = np.asarray(img, np.int64)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes, np.int64)
    j_count = family.shape[0]
    first = np.full(n_images, j_count, np.int64)
    if scores.size == 0:
        return first
    row = np.empty(scores.shape[0], np.int64)
    neg_family = -family  # nondecreasing down each column
    for k in np.unique(classes):
        sel = classes == k
        row[sel] = np.searchsorted(neg_family[:, k], -scores[sel], side="right")
    np.minimum.at(first, img, row)
    return first


def fixed_sequence(first_row: np.ndarray, n_rows: int, target: float, confidence: float):
    """Learn-then-Test fixed-sequence testing on a family of n_rows members.

    first_row (n,) from ``first_firing_row`` on the certification images. Returns
    (chosen row, firing images at it, p-values tested (T,)): the loosest j such that
    H0_i: rate(i) > target is rejected (p-value P(Binomial(n, target) <= k_i) <= 1 - confidence)
    for every i <= j; -1 when row 0 is not rejected.
    """
    n = first_row.shape[0]
    f = np.sort(first_row)
    k = np.searchsorted(f, np.arange(n_rows), side="right")  # images firing at each row
    p = binom.cdf(k, n, target) if n > 0 else np.ones(n_rows)
    fail = np.flatnonzero(p > 1.0 - confidence)
    stop = int(fail[0]) if fail.size else n_rows
    chosen = stop - 1
    return chosen, (int(k[chosen]) if chosen >= 0 else 0), p[:stop + 1]


# ----------------------------------------------------------------------------- result


@dataclass
class CertifiedThresholds:
    """Per-class rejection thresholds certified out of sample (see the module docstring).

    Parameters: max_negative_rate (the target), confidence, shape ("per-class", "global", or
    "auto": per-class unless it loses to global by more than ``max_recall_loss`` recall on
    held-out folds), shape_fraction (share of negatives for the shape part), seed, folds.
    Fitted: score_ (C,); procedure_ (one line: which procedure certified what); shape_used_;
    certified_; bound_ (the Clopper-Pearson upper bound on the certification images at the
    chosen member; with certified_ False, the best reachable); empirical_rate_ and
    n_firing_ (on the certification images); n_negative_images, n_shape_images_,
    n_certification_images_; lam_ (chosen member's position in [0, 1], 0 strictest),
    lam_index_, n_family_; recall_ (pooled over classes, on the fitting positives);
    baseline_ (the global baseline at the same rate on the same images, ``global_baseline``);
    comparison_ (``compare_shapes`` when shape="auto"); certification_confidence_ (confidence,
    or 1 - (1 - confidence) / 2 with "auto", which chooses between two procedures on the same
    images: Bonferroni keeps the chosen one valid); note (one sentence for the report).
    """

    max_negative_rate: float = 0.01
    confidence: float = 0.95
    shape: str = "auto"
    shape_fraction: float = 0.5
    seed: int = 0
    folds: int = 5
    max_recall_loss: float = 0.01
    score_: np.ndarray | None = None
    procedure_: str = ""
    shape_used_: str = ""
    certified_: bool = False
    bound_: float = math.nan
    empirical_rate_: float = math.nan
    n_firing_: int = 0
    n_negative_images: int = 0
    n_shape_images_: int = 0
    n_certification_images_: int = 0
    lam_: float = math.nan
    lam_index_: int = -1
    n_family_: int = 0
    recall_: float = math.nan
    certification_confidence_: float = math.nan
    base_threshold_: np.ndarray | None = field(default=None, repr=False)
    baseline_: dict | None = None
    comparison_: dict | None = None
    note: str = ""

    @property
    def target(self) -> float:
        return self.max_negative_rate

    def _check(self):
        if not 0.0 < self.max_negative_rate < 1.0:
            raise ValueError(f"max_negative_rate must be in (0, 1), got {self.max_negative_rate}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if not 0.0 <= self.shape_fraction < 1.0:
            raise ValueError(f"shape_fraction must be in [0, 1), got {self.shape_fraction}")

    def fit(self, data: ScoredImages, base_threshold=0.0) -> "CertifiedThresholds":
        """Fit on ``ScoredImages``; base_threshold scalar or (C,): the loosest thresholds
        allowed (the operating point), where the family ends."""
        self._check()
        c = data.num_classes
        base = np.broadcast_to(np.asarray(base_threshold, np.float64), (c,)).copy()
        self.base_threshold_ = base
        shape, conf = self.shape, self.confidence
        if shape == "auto":
            # "auto" picks one of two procedures with the same images: the one chosen is certified
            # at half the error level (Bonferroni), which keeps P(rate > target) <= 1 - confidence.
            # Where that many negative images are lacking, the choice is made on their number
            # alone (global, which needs no shape images) and certified at the full level.
            half = 1.0 - (1.0 - self.confidence) / 2.0
            needed = negative_images_needed(self.max_negative_rate, half)
            if data.n_negative_images < negative_images_needed(self.max_negative_rate, self.confidence):
                shape = "per-class"   # nothing can be certified: the per-class zero-firing fallback
                self.comparison_ = {"winner": "per-class", "reason": (
                    f"{data.n_negative_images} negative images cannot certify the target at all; the per-class "
                    "fallback keeps the most recall")}
            elif data.n_negative_images < needed:
                shape = "global"
                self.comparison_ = {"winner": "global", "reason": (
                    f"{data.n_negative_images} negative images: fewer than the {needed} needed to compare the "
                    f"shapes and still certify at confidence {self.confidence:g}; global needs no shape images")}
            else:
                conf = half
                self.comparison_ = compare_shapes(data, base, {**self._params(), "confidence": half},
                                                  folds=self.folds, seed=self.seed,
                                                  max_recall_loss=self.max_recall_loss)
                shape = self.comparison_["winner"]
        self.shape_used_ = shape
        self._fit_shape(data, base, shape, conf)
        tp_s, tp_c, n_gt = data.true_positive_scores()
        self.recall_ = _Recall(tp_s, tp_c, n_gt, c).recall(self.score_)
        img, s, cl, n = data.negatives()
        if n:
            rate = np.unique(img[s > self.score_[cl]]).size / n
            self.baseline_ = global_baseline(data, rate)
        return self

    def _params(self) -> dict:
        return dict(max_negative_rate=self.max_negative_rate, confidence=self.confidence,
                    shape_fraction=self.shape_fraction, seed=self.seed)

    def _fit_shape(self, data: ScoredImages, base: np.ndarray, shape: str, confidence: float) -> None:
        c = data.num_classes
        img, s, cl, n = data.negatives()
        tp_s, tp_c, n_gt = data.true_positive_scores()
        target, conf = self.max_negative_rate, confidence
        self.certification_confidence_ = conf
        needed = negative_images_needed(target, conf)
        pct, cpct = f"{100 * target:g}%", f"{100 * conf:g}%"
        self.n_negative_images = n
        if n == 0:
            self.score_ = base.copy()
            self.certified_, self.bound_, self.empirical_rate_ = False, 1.0, math.nan
            self.procedure_ = "none (no negative images)"
            self.note = (f"no negative images: the operating-point thresholds are kept and nothing is certified "
                         f"(at least {needed} negative images are needed to certify {pct})")
            return
        if n < needed:
            t = base.copy()
            if shape == "global":
                t[:] = np.maximum(base, s[s > base[cl]].max(initial=0.0))
            else:
                np.maximum.at(t, cl, s)
            firing = np.unique(img[s > t[cl]]).size
            self.score_ = t
            self.certified_ = False
            self.n_certification_images_ = n
            self.n_firing_ = firing
            self.empirical_rate_ = firing / n
            self.bound_ = clopper_pearson_upper(firing, n, conf)
            self.procedure_ = f"zero-firing fallback ({shape}), not certified"
            self.note = (f"too few negative images to certify {pct}: {n}, and even with none firing the {cpct} "
                         f"upper bound is {100 * clopper_pearson_upper(0, n, conf):.2f}%; at least {needed} are "
                         "needed; thresholds set so that no fitting negative image fires (an in-sample choice, "
                         "no guarantee)")
            return
        if shape == "global":
            n_cert = n
        else:
            n_cert = min(n, max(n - int(math.floor(self.shape_fraction * n)), needed))
        perm = np.random.default_rng(self.seed).permutation(n)
        is_cert = np.zeros(n, bool)
        is_cert[perm[:n_cert]] = True
        n_shape = n - n_cert
        local = np.where(is_cert, np.cumsum(is_cert) - 1, np.cumsum(~is_cert) - 1)
        on_cert = is_cert[img]
        shape_neg = (local[img[~on_cert]], s[~on_cert], cl[~on_cert], n_shape)
        max_fire = min(n_shape, int(math.ceil(4 * target * n_shape)) + 3)
        fam = threshold_family(shape, base, tp_s, tp_c, n_gt, shape_neg, max_fire)
        first = first_firing_row(fam, local[img[on_cert]], s[on_cert], cl[on_cert], n_cert)
        j, k, _ = fixed_sequence(first, fam.shape[0], target, conf)
        self.n_shape_images_, self.n_certification_images_, self.n_family_ = n_shape, n_cert, fam.shape[0]
        if j < 0:  # cannot happen: row 0 lets nothing fire and n_cert >= needed
            j, k = 0, int((first <= 0).sum())
        self.score_ = fam[j].copy()
        self.lam_index_ = int(j)
        self.lam_ = j / max(fam.shape[0] - 1, 1)
        self.n_firing_ = int(k)
        self.empirical_rate_ = k / n_cert
        self.bound_ = clopper_pearson_upper(k, n_cert, conf)
        self.certified_ = bool(self.bound_ <= target)
        where = (f"per-class family of {fam.shape[0]} threshold vectors shaped on {n_shape} negative images "
                 "and all positive images" if shape == "per-class" else f"global family of {fam.shape[0]} levels")
        held = "held-out " if shape == "per-class" else ""
        self.procedure_ = (f"fixed-sequence test (Learn-then-Test) of a {where}, certified on {n_cert} {held}"
                           f"negative images at confidence {conf:g}"
                           + (" (Bonferroni over the two shapes that 'auto' chose between)"
                              if conf > self.confidence else ""))
        if shape == "per-class":
            self.note = (f"certified out of sample: {k} of {n_cert} held-out negative images fire "
                         f"({100 * self.empirical_rate_:.2f}%), {cpct} upper bound {100 * self.bound_:.2f}% <= "
                         f"target {pct} (per-class thresholds, family member {j} of {fam.shape[0]}, shaped on "
                         f"{n_shape} other negative images and the positive images)")
        else:
            self.note = (f"certified out of sample: {k} of {n_cert} negative images fire "
                         f"({100 * self.empirical_rate_:.2f}%), {cpct} upper bound {100 * self.bound_:.2f}% <= "
                         f"target {pct} (one global threshold, level {j} of {fam.shape[0]} fixed before the "
                         "negative images were looked at)")

    # -- report -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-friendly summary for report.json."""
        if self.score_ is None:
            raise ValueError("CertifiedThresholds is not fitted")
        return {
            "procedure": self.procedure_,
            "shape": self.shape_used_,
            "max_negative_rate": float(self.max_negative_rate),
            "confidence": float(self.confidence),
            "certification_confidence": _num(self.certification_confidence_),
            "certified": bool(self.certified_),
            "certified_bound": _num(self.bound_),
            "empirical_rate": _num(self.empirical_rate_),
            "n_firing_images": int(self.n_firing_),
            "n_negative_images": int(self.n_negative_images),
            "n_shape_images": int(self.n_shape_images_),
            "n_certification_images": int(self.n_certification_images_),
            "lambda": _num(self.lam_),
            "lambda_index": int(self.lam_index_),
            "n_family": int(self.n_family_),
            "recall": _num(self.recall_),
            "baseline": self.baseline_,
            "comparison": self.comparison_,
            "score": [float(x) for x in self.score_],
            "note": self.note,
        }

    def report(self, class_names=None) -> dict:
        """``to_dict`` plus the per-class thresholds by name (report.json's ``thresholds``)."""
        out = self.to_dict()
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.score_))]
        base = self.base_threshold_ if self.base_threshold_ is not None else np.full(len(self.score_), math.nan)
        out["per_class"] = {names[i]: {"threshold": float(self.score_[i]), "base_threshold": _num(base[i])}
                            for i in range(len(self.score_))}
        return out

    def summary_lines(self) -> list[str]:
        """Plain-text lines for a fit summary: what was certified, how, and the recall it costs
        against the single global threshold picked by hand at the same rate."""
        lines = [f"thresholds: {self.note}", f"  procedure: {self.procedure_}"]
        if self.comparison_ is not None:
            cmp_ = self.comparison_
            if "per-class" in cmp_:
                lines.append(f"  shape: {self.shape_used_} (held-out recall per-class {_fmt3(cmp_['per-class']['recall'])}"
                             f" vs global {_fmt3(cmp_['global']['recall'])}; {cmp_['reason']})")
            else:
                lines.append(f"  shape: {self.shape_used_} ({cmp_['reason']})")
        b = self.baseline_
        if b is not None and b.get("recall") is not None and math.isfinite(self.recall_):
            lines.append(f"  recall {self.recall_:.3f} vs {b['recall']:.3f} for the best single global threshold "
                         f"({b['threshold']:.3f}) at the same negative-image rate ({100 * b['negative_rate']:.2f}%), "
                         "on the fitting images")
        return lines

    def to_artifact(self) -> dict:
        """The ``thresholds`` block of calibration.json, with the keys of
        ``RejectionThresholds.to_artifact`` (so ``from_artifact`` reads it) plus the procedure."""
        d = self.to_dict()
        return {
            "score": d["score"],
            "max_negative_rate": d["max_negative_rate"],
            "confidence": d["confidence"],
            "certified_bound": d["certified_bound"],
            "negative_rate": d["empirical_rate"],
            "certified": d["certified"],
            "n_negative_images": d["n_negative_images"],
            "note": d["note"],
            "procedure": d["procedure"],
            "n_certification_images": d["n_certification_images"],
        }


def certify_thresholds(data: ScoredImages, base_threshold=0.0, **params) -> CertifiedThresholds:
    """``CertifiedThresholds(**params).fit(data, base_threshold)``."""
    return CertifiedThresholds(**params).fit(data, base_threshold)


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt3(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def certify_matched(matched, scores=None, base_threshold=0.0, **params) -> CertifiedThresholds:
    """Certified thresholds from ``calib.matching.MatchedDetections``; ``scores`` (K,) replaces
    its scores (pass the calibrated ones); params as ``CertifiedThresholds``."""
    return CertifiedThresholds(**params).fit(ScoredImages.from_matched(matched, scores), base_threshold)


# ----------------------------------------------------------------------------- baseline


def global_baseline(data: ScoredImages, rate: float) -> dict:
    """The best single global threshold (the one a user would pick by hand) that reaches
    ``rate`` or less on the negative images of ``data``, and its recall on them (pooled).

    Returns {"threshold", "negative_rate", "recall"}: the lowest g with
    share of negative images having a score > g <= rate.
    """
    img, s, cl, n = data.negatives()
    tp_s, _, n_gt = data.true_positive_scores()
    if n == 0:
        return {"threshold": None, "negative_rate": None, "recall": None}
    per_image = np.zeros(n)
    np.maximum.at(per_image, img, s)
    allowed = int(math.floor(rate * n + 1e-9))
    top = np.sort(per_image)[::-1]
    g = float(top[allowed]) if allowed < n else 0.0
    fired = int((per_image > g).sum())
    rec = float((tp_s > g).sum() / n_gt) if n_gt else math.nan
    return {"threshold": g, "negative_rate": fired / n, "recall": _num(rec)}


# ----------------------------------------------------------------------------- shape choice


def compare_shapes(data: ScoredImages, base, params: dict, folds: int = 5, seed: int = 0,
                   max_recall_loss: float = 0.01) -> dict:
    """Per-class vs global certification, each fitted on k-1 folds (by image) and measured on
    the held-out fold; pooled held-out recall and negative-image rate. The winner is
    "per-class" unless its recall is more than ``max_recall_loss`` below the global one's, or
    the training folds have too few negative images to certify the target (then "global").
    """
    n_img = data.n_images
    k = max(2, min(folds, n_img))
    fold = np.random.default_rng(seed).permutation(n_img) % k
    out = {}
    certifiable = True
    for shape in ("per-class", "global"):
        tp = gt = fire = neg = 0
        for f in range(k):
            train = data.subset(fold != f)
            test = data.subset(fold == f)
            thr = CertifiedThresholds(shape=shape, **params)
            thr._check()
            thr._fit_shape(train, np.broadcast_to(np.asarray(base, np.float64), (data.num_classes,)).copy(), shape,
                           thr.confidence)
            certifiable &= thr.certified_
            tp_s, tp_c, n_gt = test.true_positive_scores()
            tp += int((tp_s > thr.score_[tp_c]).sum())
            gt += n_gt
            img, s, cl, n = test.negatives()
            fire += np.unique(img[s > thr.score_[cl]]).size
            neg += n
        out[shape] = {"recall": _num(tp / gt if gt else math.nan), "negative_rate": _num(fire / neg if neg else math.nan)}
    rp, rg = out["per-class"]["recall"], out["global"]["recall"]
    if not certifiable:
        # the folds are too small to certify: what they compare is the uncertified fallback, no
        # evidence for a per-class shape; the global family needs no shape images
        winner, reason = "global", "the folds are too small to certify the target; global needs no shape images"
    elif rp is not None and rg is not None and rp < rg - max_recall_loss:
        winner, reason = "global", f"per-class recall is more than {max_recall_loss:g} below global on held-out folds"
    else:
        winner, reason = "per-class", f"per-class recall is within {max_recall_loss:g} of global or above on held-out folds"
    return {"folds": int(k), "max_recall_loss": float(max_recall_loss), **out, "certified_in_folds": certifiable,
            "winner": winner, "reason": reason}
