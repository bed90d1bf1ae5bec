"""Negative-scene rejection thresholds with a Clopper-Pearson guarantee.

Goal: per-class score thresholds t_c (a detection survives when ``score > t_c``) such that
the share of negative images (no objects) with ANY surviving detection has a one-sided
Clopper-Pearson upper bound <= the target, while the recall on positive images stays as
high as possible.

The search. With n negative images the bound allows at most k_max firing images (the
largest k with upper(k, n) <= target). For a set S of negative images allowed to fire, the
lowest admissible thresholds are fixed: t_c(S) = the highest class-c score on a negative
image outside S (or the base threshold). So the problem is to choose S, |S| <= k_max, for
the most recall. Greedy, starting from S empty (no negative image fires): a move lowers one
class's threshold past its next j negative images (j <= remaining budget), costs those j
images and gains the class's recall between the two thresholds (each class's recall
weighs the same, so rare classes are not sacrificed to frequent ones); take the move with
the highest gain per image, then thresholds of every class drop past images already in S
for free. Moves that gain no recall are taken last (lower thresholds at no cost to the
guarantee). Each class only ever looks at its top 2*k_max+2 negative images, so the work is
about C * k_max^2, independent of the number of detections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta

__all__ = [
    "clopper_pearson_upper",
    "negative_images_needed",
    "RejectionThresholds",
    "fit_rejection_thresholds",
    "fit_rejection_thresholds_matched",
]


# ----------------------------------------------------------------------------- the bound


def clopper_pearson_upper(k, n, confidence: float = 0.95):
    """One-sided Clopper-Pearson upper confidence bound for a binomial rate.

    k failures out of n trials (scalars or arrays) -> the bound u with
    P(Binomial(n, u) <= k) = 1 - confidence, i.e. ``beta.ppf(confidence, k + 1, n - k)``;
    1.0 when n == 0 or k >= n. With k = 0 it is 1 - (1 - confidence)**(1/n).
    """
    k = np.asarray(k, np.float64)
    n = np.asarray(n, np.float64)
    if np.any(k < 0) or np.any(n < 0):
        raise ValueError("clopper_pearson_upper: k and n must be >= 0")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ok = (n > 0) & (k < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ub = np.where(ok, beta.ppf(confidence, k + 1, np.where(ok, n - k, 1.0)), 1.0)
    return float(ub) if ub.ndim == 0 else ub


def negative_images_needed(max_negative_rate: float, confidence: float = 0.95) -> int:
    """Smallest number of negative images whose bound, with none firing, is <= the target."""
    if not 0.0 < max_negative_rate < 1.0:
        raise ValueError(f"max_negative_rate must be in (0, 1), got {max_negative_rate}")
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - max_negative_rate)))
    while n > 1 and clopper_pearson_upper(0, n - 1, confidence) <= max_negative_rate:
        n -= 1
    while clopper_pearson_upper(0, n, confidence) > max_negative_rate:
        n += 1
    return n


def _max_firing(n: int, target: float, confidence: float) -> int:
    """Largest k with upper(k, n) <= target; -1 when even k = 0 does not certify."""
    if n == 0:
        return -1
    ks = np.arange(0, int(math.floor(target * n)) + 1)  # upper(k, n) > k / n
    ok = np.flatnonzero(np.asarray(clopper_pearson_upper(ks, n, confidence)) <= target)
    return int(ok[-1]) if ok.size else -1


# ----------------------------------------------------------------------------- result


@dataclass
class RejectionThresholds:
    """Per-class rejection thresholds and what they guarantee.

    Parameters: max_negative_rate (the target, also ``target``), confidence.
    Fitted: score_ (C,) thresholds (a detection survives when score > score_[class]);
    bound_ (the certified upper bound on the negative-image rate; with certified_ False,
    the best bound reachable), raw_rate_ (share of the fitting negative images that still
    fire), certified_, n_negative_images, n_firing_images_, needed_negative_images_ (for
    the target, with none firing), method_ ("negative-scenes", "zero-firing" when the target
    cannot be certified, "f1" without negative images), recall_ and base_recall_ (C,)
    per-class recall at score_ and at base_threshold_ (nan where unknown), note (one
    plain-language sentence for the report).
    """

    max_negative_rate: float = 0.01
    confidence: float = 0.95
    score_: np.ndarray | None = None
    bound_: float = math.nan
    raw_rate_: float = math.nan
    certified_: bool = False
    n_negative_images: int = 0
    n_firing_images_: int = 0
    needed_negative_images_: int = 0
    method_: str = ""
    base_threshold_: np.ndarray | None = field(default=None, repr=False)
    recall_: np.ndarray | None = field(default=None, repr=False)
    base_recall_: np.ndarray | None = field(default=None, repr=False)
    note: str = ""

    @property
    def target(self) -> float:
        return self.max_negative_rate

    def fit(
        self,
        neg_image_index: np.ndarray,
        neg_scores: np.ndarray,
        neg_classes: np.ndarray,
        n_negative_images: int,
        num_classes: int,
        pos_scores: np.ndarray | None = None,
        pos_classes: np.ndarray | None = None,
        pos_is_tp: np.ndarray | None = None,
        n_gt_per_class: np.ndarray | None = None,
        base_threshold=0.0,
    ) -> "RejectionThresholds":
        """Fit on the detections of negative images (and of positive ones, for recall).

        neg_image_index (Kn,) int in [0, n_negative_images): which negative image;
        neg_scores (Kn,), neg_classes (Kn,): the negative images' detections (already
        calibrated, if the thresholds are to apply to calibrated scores).
        pos_scores, pos_classes, pos_is_tp (Kp,): detections on positive images and
        whether each matched; n_gt_per_class (C,). Without them the search lowers thresholds
        as far as the budget allows (no recall reported); without negative images they are
        required (per-class F1-optimal thresholds).
        base_threshold: scalar or (C,), the lowest threshold allowed (the pipeline's
        confidence floor); recall cost is reported against it.
        """
        if not 0.0 < self.max_negative_rate < 1.0:
            raise ValueError(f"max_negative_rate must be in (0, 1), got {self.max_negative_rate}")
        c = int(num_classes)
        base = np.broadcast_to(np.asarray(base_threshold, np.float64), (c,)).copy()
        neg_image_index = np.asarray(neg_image_index, np.int64).reshape(-1)
        neg_scores = np.asarray(neg_scores, np.float64).reshape(-1)
        neg_classes = np.asarray(neg_classes, np.int64).reshape(-1)
        if not (neg_image_index.shape == neg_scores.shape == neg_classes.shape):
            raise ValueError("neg_image_index, neg_scores and neg_classes differ in length")
        n = int(n_negative_images)
        if neg_image_index.size and (neg_image_index.min() < 0 or neg_image_index.max() >= n):
            raise ValueError(f"neg_image_index out of range [0, {n})")
        if neg_classes.size and (neg_classes.min() < 0 or neg_classes.max() >= c):
            raise ValueError(f"neg_classes out of range [0, {c})")
        tp_counter, n_gt = _tp_counter(pos_scores, pos_classes, pos_is_tp, n_gt_per_class, c)

        self.n_negative_images = n
        self.base_threshold_ = base
        self.needed_negative_images_ = negative_images_needed(self.max_negative_rate, self.confidence)
        pct = f"{100 * self.max_negative_rate:g}%"
        conf = f"{100 * self.confidence:g}%"

        if n == 0:
            if tp_counter is None:
                raise ValueError("no negative images and no positive detections: nothing to fit thresholds on")
            self.score_ = _f1_thresholds(pos_scores, pos_classes, pos_is_tp, n_gt, base)
            self.method_ = "f1"
            self.bound_, self.raw_rate_, self.certified_, self.n_firing_images_ = 1.0, math.nan, False, 0
            self.note = (
                "no negative images: thresholds chosen per class for the best F1 on the positive images; "
                f"no negative-scene guarantee was possible (at least {self.needed_negative_images_} negative "
                f"images are needed to certify a rate of {pct})"
            )
        else:
            k_max = _max_firing(n, self.max_negative_rate, self.confidence)
            entries = _negative_entries(neg_image_index, neg_scores, neg_classes, base, c)
            if k_max < 0:
                self.score_ = _zero_firing(entries, base, c)
                self.method_ = "zero-firing"
                self.note = (
                    f"too few negative images to certify {pct}: {n} negative images, and even with none firing "
                    f"the {conf} upper bound is {clopper_pearson_upper(0, n, self.confidence):.4f}; "
                    f"at least {self.needed_negative_images_} are needed; thresholds set so that no negative "
                    "image fires"
                )
            else:
                self.score_ = _greedy_thresholds(entries, base, c, n, k_max, tp_counter, n_gt)
                self.method_ = "negative-scenes"
            firing = _firing_images(neg_image_index, neg_scores, neg_classes, self.score_)
            self.n_firing_images_ = firing
            self.raw_rate_ = firing / n
            self.bound_ = clopper_pearson_upper(firing, n, self.confidence)
            self.certified_ = bool(self.bound_ <= self.max_negative_rate)
            if self.method_ == "negative-scenes":
                self.note = (
                    f"certified: {firing} of {n} negative images fire ({100 * self.raw_rate_:.2f}%), "
                    f"{conf} upper bound {100 * self.bound_:.2f}% <= target {pct}"
                )
        if tp_counter is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                self.recall_ = np.where(n_gt > 0, tp_counter(self.score_) / np.maximum(n_gt, 1), math.nan)
                self.base_recall_ = np.where(n_gt > 0, tp_counter(base) / np.maximum(n_gt, 1), math.nan)
        else:
            self.recall_ = np.full(c, math.nan)
            self.base_recall_ = np.full(c, math.nan)
        return self

    # -- artifact ---------------------------------------------------------------------

    def to_artifact(self) -> dict:
        """The ``thresholds`` block of calibration.json (and nothing else knows its keys)."""
        if self.score_ is None:
            raise ValueError("RejectionThresholds is not fitted")
        return {
            "score": [float(x) for x in self.score_],
            "max_negative_rate": float(self.max_negative_rate),
            "confidence": float(self.confidence),
            "certified_bound": _num(self.bound_),
            "negative_rate": _num(self.raw_rate_),
            "certified": bool(self.certified_),
            "n_negative_images": int(self.n_negative_images),
            "note": self.note,
        }

    @classmethod
    def from_artifact(cls, d: dict) -> "RejectionThresholds":
        """Inverse of ``to_artifact`` (the report-only fields are not restored)."""
        try:
            score = np.asarray(d["score"], np.float64)
            obj = cls(max_negative_rate=float(d["max_negative_rate"]), confidence=float(d["confidence"]))
        except (KeyError, TypeError, ValueError) as e:
            from .errors import DetcalError

            raise DetcalError(f"calibration artifact: bad 'thresholds' block ({e!r})") from None
        obj.score_ = score
        obj.bound_ = math.nan if d.get("certified_bound") is None else float(d["certified_bound"])
        obj.raw_rate_ = math.nan if d.get("negative_rate") is None else float(d["negative_rate"])
        obj.certified_ = bool(d.get("certified", False))
        obj.n_negative_images = int(d.get("n_negative_images", 0))
        obj.note = str(d.get("note", ""))
        return obj

    def report(self, class_names=None) -> dict:
        """JSON-friendly report: the artifact block plus per-class thresholds and recall cost."""
        out = self.to_artifact()
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.score_))]
        nan = np.full(len(self.score_), math.nan)
        rec = self.recall_ if self.recall_ is not None else nan
        base_rec = self.base_recall_ if self.base_recall_ is not None else nan
        base = self.base_threshold_ if self.base_threshold_ is not None else nan
        out.update(
            method=self.method_,
            n_firing_images=int(self.n_firing_images_),
            needed_negative_images=int(self.needed_negative_images_),
            recall=_num(np.nanmean(rec) if np.any(np.isfinite(rec)) else math.nan),
            base_recall=_num(np.nanmean(base_rec) if np.any(np.isfinite(base_rec)) else math.nan),
            per_class={
                names[i]: {
                    "threshold": float(self.score_[i]),
                    "base_threshold": _num(base[i]),
                    "recall": _num(rec[i]),
                    "base_recall": _num(base_rec[i]),
                }
                for i in range(len(self.score_))
            },
        )
        return out


def fit_rejection_thresholds(
    neg_image_index,
    neg_scores,
    neg_classes,
    n_negative_images: int,
    num_classes: int,
    max_negative_rate: float = 0.01,
    confidence: float = 0.95,
    pos_scores=None,
    pos_classes=None,
    pos_is_tp=None,
    n_gt_per_class=None,
    base_threshold=0.0,
) -> RejectionThresholds:
    """``RejectionThresholds(max_negative_rate, confidence).fit(...)``; see ``RejectionThresholds.fit``."""
    return RejectionThresholds(max_negative_rate=max_negative_rate, confidence=confidence).fit(
        neg_image_index, neg_scores, neg_classes, n_negative_images, num_classes,
        pos_scores=pos_scores, pos_classes=pos_classes, pos_is_tp=pos_is_tp,
        n_gt_per_class=n_gt_per_class, base_threshold=base_threshold,
    )


def fit_rejection_thresholds_matched(
    matched,
    scores=None,
    max_negative_rate: float = 0.01,
    confidence: float = 0.95,
    base_threshold=0.0,
) -> RejectionThresholds:
    """Fit from ``calib.matching.MatchedDetections``; ``scores`` (K,) overrides its scores
    (pass the calibrated ones)."""
    scores = matched.scores if scores is None else np.asarray(scores, np.float64)
    neg_img = matched.negative_image_mask
    on_neg = neg_img[matched.image_index]
    local = np.cumsum(neg_img) - 1  # image index -> index among negative images
    return fit_rejection_thresholds(
        local[matched.image_index[on_neg]], scores[on_neg], matched.classes[on_neg],
        int(neg_img.sum()), matched.num_classes, max_negative_rate, confidence,
        pos_scores=scores[~on_neg], pos_classes=matched.classes[~on_neg], pos_is_tp=matched.is_tp[~on_neg],
        n_gt_per_class=matched.n_gt_per_class, base_threshold=base_threshold,
    )


# ----------------------------------------------------------------------------- internals


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _tp_counter(pos_scores, pos_classes, pos_is_tp, n_gt_per_class, c):
    """A function thresholds (C,) -> (C,) number of TPs with score > threshold, and n_gt (C,).

    (None, None) when the positives are not given.
    """
    if pos_scores is None or pos_is_tp is None or pos_classes is None:
        return None, None
    s = np.asarray(pos_scores, np.float64).reshape(-1)
    cl = np.asarray(pos_classes, np.int64).reshape(-1)
    tp = np.asarray(pos_is_tp, bool).reshape(-1)
    if not (s.shape == cl.shape == tp.shape):
        raise ValueError("pos_scores, pos_classes and pos_is_tp differ in length")
    if cl.size and (cl.min() < 0 or cl.max() >= c):
        raise ValueError(f"pos_classes out of range [0, {c})")
    if n_gt_per_class is None:
        n_gt = np.bincount(cl[tp], minlength=c)  # a lower bound on the truth: recall is optimistic
    else:
        n_gt = np.asarray(n_gt_per_class, np.int64).reshape(-1)
        if n_gt.shape[0] != c:
            raise ValueError(f"n_gt_per_class has {n_gt.shape[0]} classes, expected {c}")
    ts, tc = s[tp], cl[tp]
    order = np.lexsort((ts, tc))
    ts, tc = ts[order], tc[order]
    bounds = np.searchsorted(tc, np.arange(c + 1))

    def count_above(thr_c, classes=None):
        """thr (Q,) thresholds for classes (Q,) (default: one per class) -> TPs above each."""
        thr_c = np.asarray(thr_c, np.float64)
        classes = np.arange(c) if classes is None else np.asarray(classes, np.int64)
        out = np.empty(classes.shape[0], np.int64)
        for k in np.unique(classes):
            sel = classes == k
            seg = ts[bounds[k]:bounds[k + 1]]
            out[sel] = seg.size - np.searchsorted(seg, thr_c[sel], side="right")
        return out

    return count_above, n_gt


def _negative_entries(img, scores, classes, base, c):
    """Per (class, negative image) the highest score above the base threshold, sorted by
    class then score descending. Returns (cls, img, score) arrays."""
    keep = scores > base[classes]
    img, scores, classes = img[keep], scores[keep], classes[keep]
    by_score = np.argsort(-scores, kind="stable")
    key = classes[by_score] * (int(img.max(initial=0)) + 1) + img[by_score]
    by_key = np.argsort(key, kind="stable")  # by (class, image), best score first
    order, key = by_score[by_key], key[by_key]
    first = np.ones(order.size, bool)
    first[1:] = key[1:] != key[:-1]
    img, scores, classes = img[order[first]], scores[order[first]], classes[order[first]]
    order = np.lexsort((img, -scores, classes))
    return classes[order], img[order], scores[order]


def _zero_firing(entries, base, c):
    """Thresholds at each class's highest negative score: no negative image fires."""
    cls, _, score = entries
    t = base.copy()
    np.maximum.at(t, cls, score)
    return t


def f1_thresholds(pos_scores, pos_classes, pos_is_tp, n_gt_per_class, base_threshold=0.0) -> np.ndarray:
    """Per-class F1-optimal thresholds (C,) on the detections of positive images; never below
    base_threshold (scalar or (C,)). A detection survives when score > threshold."""
    n_gt = np.asarray(n_gt_per_class, np.int64).reshape(-1)
    base = np.broadcast_to(np.asarray(base_threshold, np.float64), n_gt.shape).copy()
    return _f1_thresholds(pos_scores, pos_classes, pos_is_tp, n_gt, base)


def _f1_thresholds(pos_scores, pos_classes, pos_is_tp, n_gt, base):
    """Per class the threshold with the best F1 = 2 TP / (kept + n_gt) on the positive images.

    Ties go to the lower threshold; classes without ground truth or without any true
    positive above the base keep the base threshold.
    """
    s = np.asarray(pos_scores, np.float64).reshape(-1)
    cl = np.asarray(pos_classes, np.int64).reshape(-1)
    tp = np.asarray(pos_is_tp, bool).reshape(-1)
    keep = s > base[cl]
    s, cl, tp = s[keep], cl[keep], tp[keep]
    t = base.copy()
    if s.size == 0:
        return t
    order = np.lexsort((-s, cl))
    s, cl, tp = s[order], cl[order], tp[order]
    c = base.shape[0]
    start = np.searchsorted(cl, np.arange(c + 1))
    cum_tp = np.cumsum(tp)
    tp_in = cum_tp - np.concatenate([[0], cum_tp])[start[cl]]  # TPs kept when keeping 0..i
    kept = np.arange(s.size) - start[cl] + 1
    f1 = 2.0 * tp_in / (kept + n_gt[cl])
    last = np.ones(s.size, bool)
    last[:-1] = cl[1:] != cl[:-1]
    cut_ok = last.copy()
    cut_ok[:-1] |= s[1:] < s[:-1]  # a cut between equal scores is not a threshold
    f1 = np.where(cut_ok & (n_gt[cl] > 0), f1, -1.0)
    best = np.lexsort((-np.arange(s.size), -f1, cl))  # per class: best F1, then the later cut
    first = np.ones(best.size, bool)
    first[1:] = cl[best][1:] != cl[best][:-1]
    for i in best[first]:
        if f1[i] > 0:
            t[cl[i]] = base[cl[i]] if last[i] else s[i + 1]
    return t


def _firing_images(img, scores, classes, thresholds) -> int:
    return int(np.unique(img[scores > thresholds[classes]]).size)


def _greedy_thresholds(entries, base, c, n, k_max, tp_counter, n_gt):
    """The greedy search described in the module docstring. Returns thresholds (C,)."""
    cls, img, score = entries
    if cls.size == 0:
        return base.copy()
    if np.unique(img).size <= k_max:  # everything may fire: the base thresholds certify
        return base.copy()
    # each class only ever reaches its top 2*k_max+2 entries (|S| <= k_max and the budget <= k_max)
    bounds = np.searchsorted(cls, np.arange(c + 1))
    static_rank = np.arange(cls.size) - bounds[cls]
    reach = static_rank <= 2 * k_max + 1
    cls, img, score = cls[reach], img[reach], score[reach]
    # value of a threshold: the class's recall above it (each class weighs the same)
    if tp_counter is not None:
        w = np.where(n_gt > 0, 1.0 / np.maximum(n_gt, 1), 0.0)
        val_entry = tp_counter(score, cls) * w[cls]
        val_base = tp_counter(base) * w
    else:
        val_entry = np.zeros(cls.size)
        val_base = np.zeros(c)

    fired = np.zeros(n, bool)
    budget = k_max
    no_base = np.zeros(c, bool)  # classes with entries the budget can never pass
    no_base[np.flatnonzero(np.diff(bounds) > 2 * k_max + 2)] = True
    while budget > 0:
        alive_idx = np.flatnonzero(~fired[img])
        if alive_idx.size == 0:
            break
        a_cls = cls[alive_idx]
        a_start = np.searchsorted(a_cls, np.arange(c + 1))
        rank = np.arange(alive_idx.size) - a_start[a_cls]
        # an entry ranked beyond the budget stays beyond it (every image that fires ahead of
        # it costs budget too): drop it for good
        far = rank > budget
        if far.any():
            no_base[np.unique(a_cls[far])] = True
            keep = np.ones(cls.size, bool)
            keep[alive_idx[far]] = False
            cls, img, score, val_entry = cls[keep], img[keep], score[keep], val_entry[keep]
            continue
        a_score = score[alive_idx]
        a_val = val_entry[alive_idx]
        n_alive = np.diff(a_start)
        head = a_start[a_cls]  # position of each entry's class head (current threshold)
        cur_val = a_val[head]
        cur_thr = a_score[head]
        # moves "stop at alive entry r" (cost r): new threshold = its score; only at a strict drop
        prev_score = np.concatenate([[np.inf], a_score[:-1]])
        m = (rank >= 1) & (a_score < prev_score)
        mv_cls = a_cls[m]
        mv_cost = rank[m]
        mv_gain = a_val[m] - cur_val[m]
        mv_drop = cur_thr[m] - a_score[m]
        # moves "down to the base threshold" (cost: all alive entries of the class)
        bc = np.flatnonzero((n_alive > 0) & (n_alive <= budget) & ~no_base)
        heads_b = a_start[bc]
        mv_cls = np.concatenate([mv_cls, bc])
        mv_cost = np.concatenate([mv_cost, n_alive[bc]])
        mv_gain = np.concatenate([mv_gain, val_base[bc] - a_val[heads_b]])
        mv_drop = np.concatenate([mv_drop, a_score[heads_b] - base[bc]])
        if mv_cls.size == 0:
            break
        # best gain per image, then threshold drop per image, then cheaper, then lower class
        ratio = mv_gain / mv_cost
        tied = np.flatnonzero(ratio == ratio.max())
        best = tied[np.lexsort((mv_cls[tied], mv_cost[tied], -mv_drop[tied] / mv_cost[tied]))[0]]
        k = mv_cls[best]
        cost = mv_cost[best]
        fired[img[alive_idx[a_start[k]:a_start[k] + cost]]] = True
        budget -= cost
    t = base.copy()
    alive = ~fired[img]
    np.maximum.at(t, cls[alive], score[alive])
    return t
