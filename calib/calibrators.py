"""Fitting calibrators: raw detection scores + match labels -> a fitted calibration map.

The fitting half of calibration; the evaluation half (and the artifact schema) lives in
`calib.calibration_map`. Every calibrator here is scikit-learn shaped: parameters in the
constructor (validated there), ``fit(scores, classes, is_tp, groups=None) -> self``, fitted
attributes end in ``_``, and the fitted ``map_`` (an `AffineLogitMap` or `IsotonicMap`) does
``transform``, ``raw_thresholds`` and ``to_artifact``.

Inputs everywhere: ``scores`` (N,) raw probabilities in [0, 1], ``classes`` (N,) int in
[0, C), ``is_tp`` (N,) bool (the detection matched a ground truth), ``groups`` (N,) the image
each detection came from (only used for k-fold splitting).

Calibrators (the `kind` names are the artifact's):

* ``identity``: no change.
* ``temperature``: one T for all classes, p' = sigmoid(logit(p) / T), T in [0.05, 20].
* ``temperature_per_class``: T_c per class, shrunk towards the global T.
* ``platt_per_class``: p' = sigmoid(a_c * logit(p) + b_c), a_c > 0, shrunk towards the global
  (a, b).
* ``isotonic_per_class``: per-class isotonic regression as a piecewise-linear table of at most
  64 knots, blended with the global isotonic curve for rare classes.

Shrinkage (logit-affine kinds): the fit minimises the summed binary log-loss plus, per class,
``shrink / 2 * d^T H d`` where d = theta_c - theta_global and H is the per-detection Hessian
of the log-loss at the global fit. That is (to second order) the evidence of ``shrink`` extra
detections drawn from the pooled data and labelled by the global fit: a class with n_c
detections ends roughly n_c / (n_c + shrink) of the way from the global fit to its own, and a
class with none is exactly the global fit.

The logit-affine fits are solved in `calib.newton`; `--calibrator auto` (k-fold by image,
the lowest cross-validated log-loss wins) is `calib.cross_validation.select_calibrator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from calib.artifact import (
    EPS,
    MAX_KNOTS,
    AffineLogitMap,
    IsotonicMap,
    identity_map,
    logit,
)
from calib.newton import A_BOUNDS, T_BOUNDS, fit_global_platt, fit_global_temperature, fit_per_class_affine

LOSS_EPS = EPS                   # probabilities are clipped to [EPS, 1 - EPS] inside log-loss


CANDIDATES = ("identity", "temperature", "temperature_per_class", "platt_per_class",
              "isotonic_per_class")


def validate_inputs(scores, classes, is_tp, groups=None, num_classes=None):
    """Check and normalise fitting inputs.

    scores (N,) finite in [0, 1], classes (N,) int in [0, num_classes), is_tp (N,) bool,
    groups (N,) or None -> (scores float64, classes int64, is_tp bool, groups or None).
    Raises ValueError with a message a user can act on.
    """
    if num_classes is None:
        raise ValueError("num_classes is required (in the constructor or in fit)")
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    scores = np.asarray(scores)
    classes = np.asarray(classes)
    is_tp = np.asarray(is_tp)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {scores.shape}")
    n = scores.shape[0]
    for name, arr in (("classes", classes), ("is_tp", is_tp)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like scores, got {arr.shape}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},) like scores, got {groups.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.iscomplexobj(scores):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(scores)))} NaN/inf values")
    if n and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"scores must be probabilities in [0, 1], found range "
                         f"[{scores.min():.6g}, {scores.max():.6g}]")
    if np.issubdtype(classes.dtype, np.integer):
        classes = classes.astype(np.int64, copy=False)
    elif np.issubdtype(classes.dtype, np.floating) and np.all(np.isfinite(classes)) \
            and np.all(classes == np.round(classes)):
        classes = classes.astype(np.int64)
    else:
        raise ValueError(f"classes must be integers, got dtype {classes.dtype}")
    if n and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes}), found range "
                         f"[{classes.min()}, {classes.max()}]")
    if is_tp.dtype != np.bool_:
        if not (np.issubdtype(is_tp.dtype, np.number) and np.all((is_tp == 0) | (is_tp == 1))):
            raise ValueError("is_tp must be boolean (or 0/1)")
        is_tp = is_tp.astype(bool)
    n_pos = int(is_tp.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"calibration needs at least one matched (true positive) and one "
                         f"unmatched (false positive) detection; got {n} detections, "
                         f"{n_pos} matched")
    return scores, classes, is_tp, groups


def check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_shrink(shrink):
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float, np.floating, np.integer)) \
            or not np.isfinite(shrink) or shrink < 0:
        raise ValueError(f"shrink must be a finite number >= 0, got {shrink!r}")
    return float(shrink)


def log_loss(p: np.ndarray, is_tp: np.ndarray) -> float:
    """Mean binary log-loss; p (N,) clipped to [EPS, 1 - EPS], is_tp (N,) bool."""
    return float(per_detection_log_loss(np.asarray(p, dtype=np.float64), is_tp).mean())


def brier(p: np.ndarray, is_tp: np.ndarray) -> float:
    """Mean squared error between p (N,) and is_tp (N,) bool."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - is_tp) ** 2))


class _Calibrator:
    """Shared plumbing: num_classes resolution, fitted check, delegation to `map_`."""

    kind = ""

    def _resolve_num_classes(self, num_classes):
        c = num_classes if num_classes is not None else self.num_classes
        if c is None:
            raise ValueError("num_classes is required (in the constructor or in fit)")
        return check_int(c, "num_classes", minimum=1)

    def fit(self, scores, classes, is_tp, groups=None, num_classes=None):
        """scores (N,), classes (N,), is_tp (N,) -> self, with `map_` and the fitted attributes."""
        c = self._resolve_num_classes(num_classes)
        scores, classes, is_tp, _ = validate_inputs(scores, classes, is_tp, groups, c)
        self.num_classes_ = c
        self.class_counts_ = np.bincount(classes, minlength=c)
        self._fit(scores, classes, is_tp, c)
        return self

    def _fit(self, scores, classes, is_tp, num_classes):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self):
        if not hasattr(self, "map_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def transform(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """scores (...,) raw, classes (...,) int -> (...,) calibrated, scores' float dtype."""
        self._check_fitted()
        return self.map_.transform(scores, classes)

    def raw_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """Calibrated per-class thresholds (C,) -> raw thresholds (C,), see the map's docs."""
        self._check_fitted()
        return self.map_.raw_thresholds(thresholds)

    def to_artifact(self) -> dict:
        """The artifact's `calibrator` block (schema owned by calib.calibration_map)."""
        self._check_fitted()
        return self.map_.to_artifact()


@dataclass
class Identity(_Calibrator):
    """p' = p. The baseline every other calibrator must beat."""

    num_classes: int | None = None
    kind = "identity"

    def __post_init__(self):
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)

    def _fit(self, scores, classes, is_tp, num_classes):
        self.map_ = identity_map(num_classes)


@dataclass
class GlobalTemperature(_Calibrator):
    """One temperature for all classes: p' = sigmoid(logit(p) / T), T in [0.05, 20].

    Fitted: temperature_ (float), map_ (AffineLogitMap kind "temperature", a = 1/T, b = 0).
    """

    num_classes: int | None = None
    kind = "temperature"

    def __post_init__(self):
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)

    def _fit(self, scores, classes, is_tp, num_classes):
        self.temperature_ = fit_global_temperature(logit(scores), is_tp.astype(np.float64))
        self.map_ = AffineLogitMap(self.kind, np.full(num_classes, 1 / self.temperature_),
                                   np.zeros(num_classes))


@dataclass
class _ShrunkPerClass(_Calibrator):
    """Per-class fits pulled towards the global fit by `shrink` pseudo-counts."""

    num_classes: int | None = None
    shrink: float = 20.0

    def __post_init__(self):
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)
        self.shrink = _check_shrink(self.shrink)


@dataclass
class PerClassTemperature(_ShrunkPerClass):
    """p' = sigmoid(logit(p) / T_c), T_c in [0.05, 20], rare classes shrunk to the global T.

    shrink: pseudo-count of the global fit's evidence added to every class (0 = independent).
    Fitted: temperature_ (C,), global_temperature_, map_ (kind "temperature_per_class").
    """

    kind = "temperature_per_class"

    def _fit(self, scores, classes, is_tp, num_classes):
        z = logit(scores)
        t = is_tp.astype(np.float64)
        self.global_temperature_ = fit_global_temperature(z, t)
        a, b = fit_per_class_affine(z, t, classes, num_classes, 1 / self.global_temperature_,
                                     0.0, self.shrink, fit_b=False,
                                     a_bounds=(1 / T_BOUNDS[1], 1 / T_BOUNDS[0]))
        self.temperature_ = 1 / a
        self.map_ = AffineLogitMap(self.kind, a, b)


@dataclass
class PerClassPlatt(_ShrunkPerClass):
    """p' = sigmoid(a_c * logit(p) + b_c), a_c > 0, rare classes shrunk to the global (a, b).

    shrink: pseudo-count of the global fit's evidence added to every class (0 = independent).
    Fitted: a_ (C,), b_ (C,), global_a_, global_b_, map_ (kind "platt_per_class").
    """

    kind = "platt_per_class"

    def _fit(self, scores, classes, is_tp, num_classes):
        z = logit(scores)
        t = is_tp.astype(np.float64)
        self.global_a_, self.global_b_ = fit_global_platt(z, t)
        self.a_, self.b_ = fit_per_class_affine(z, t, classes, num_classes, self.global_a_,
                                                 self.global_b_, self.shrink, fit_b=True,
                                                 a_bounds=A_BOUNDS)
        self.map_ = AffineLogitMap(self.kind, self.a_, self.b_)


def _pav(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) regression of y (K,) -> (block values (B,),
    block start indices (B,)), by scipy's isotonic_regression."""
    res = optimize.isotonic_regression(y, weights=w, increasing=True)
    starts = np.asarray(res.blocks[:-1], dtype=np.intp)
    return np.asarray(res.x)[starts], starts


def _isotonic_curve(x_sorted: np.ndarray, t_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of labels on sorted scores -> (cx, cy): one point per PAV block,
    at the block's mean score, value the block's positive rate. cx strictly increasing,
    cy strictly increasing; the map is the piecewise-linear curve through them."""
    new = np.empty(x_sorted.size, dtype=bool)
    new[0] = True
    np.not_equal(x_sorted[1:], x_sorted[:-1], out=new[1:])
    first = np.flatnonzero(new)
    counts = np.diff(np.append(first, x_sorted.size)).astype(np.float64)
    ux = x_sorted[first]
    rate = np.add.reduceat(t_sorted, first) / counts
    cy, starts = _pav(rate, counts)
    bw = np.add.reduceat(counts, starts)
    cx = np.add.reduceat(ux * counts, starts) / bw
    # guard against rounding making centroids of adjacent blocks equal
    keep = np.ones(cx.size, dtype=bool)
    keep[1:] = np.diff(cx) > 0
    return cx[keep], cy[keep]


def _compress_knots(x, y, cdf, max_knots=MAX_KNOTS):
    """Pick at most max_knots of the points (x, y) of a monotone piecewise-linear curve.

    Knots are spread evenly along u = (data mass cdf + normalised x + normalised y) / 3, so
    they go where detections are, where the score axis is long, and where the curve rises.
    A subset of a monotone curve's points stays monotone; the first and last are kept.
    """
    k = x.size
    if k <= max_knots:
        return x, y
    span_x = x[-1] - x[0]
    span_y = y[-1] - y[0]
    u = (x - x[0]) / span_x + (cdf - cdf[0])
    if span_y > 0:
        u = u + (y - y[0]) / span_y
    targets = np.linspace(u[0], u[-1], max_knots)
    idx = np.searchsorted(u, targets, side="left")
    lower = np.clip(idx - 1, 0, k - 1)
    idx = np.clip(idx, 0, k - 1)
    idx = np.where(np.abs(u[lower] - targets) < np.abs(u[idx] - targets), lower, idx)
    idx = np.unique(np.concatenate([[0], idx, [k - 1]]))
    if idx.size > max_knots:   # cannot happen for strictly increasing u, kept as a guard
        idx = np.unique(np.concatenate([[0], idx[1:-1][:max_knots - 2], [k - 1]]))
    return x[idx], y[idx]


@dataclass
class PerClassIsotonic(_Calibrator):
    """Per-class isotonic regression stored as a piecewise-linear table (<= 64 knots).

    The curve goes through each PAV block's (mean score, positive rate), is compressed to at
    most `max_knots` knots, and for a class with n_c detections is blended with the global
    (all classes pooled) curve: y = w y_class + (1 - w) y_global, w = n_c / (n_c + shrink).
    y is clipped into [y_clip, 1 - y_clip] so no plateau at exactly 0 or 1 blows up log-loss.
    Classes without detections get the global table. Outside a table's x range the map is
    constant (as np.interp).

    Fitted: global_x_, global_y_ (the global table), map_ (IsotonicMap).
    """

    num_classes: int | None = None
    shrink: float = 20.0
    max_knots: int = MAX_KNOTS
    y_clip: float = 1e-4
    kind = "isotonic_per_class"

    def __post_init__(self):
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)
        self.shrink = _check_shrink(self.shrink)
        self.max_knots = check_int(self.max_knots, "max_knots", minimum=2)
        if self.max_knots > MAX_KNOTS:
            raise ValueError(f"max_knots must be <= {MAX_KNOTS}, got {self.max_knots}")
        if not (isinstance(self.y_clip, (int, float)) and 0 <= self.y_clip < 0.5):
            raise ValueError(f"y_clip must be in [0, 0.5), got {self.y_clip!r}")

    def _fit(self, scores, classes, is_tp, num_classes):
        lo, hi = self.y_clip, 1 - self.y_clip
        t = is_tp.astype(np.float64)
        # sort by class (radix sort on small ints), then each class by score; the global
        # order is a stable (run-merging) sort of those sorted runs: cheaper than one big sort
        key = classes.astype(np.int16) if num_classes <= np.iinfo(np.int16).max else classes
        order = np.argsort(key, kind="stable")
        counts = np.bincount(classes, minlength=num_classes)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for c in np.flatnonzero(counts > 1):
            seg = order[bounds[c]:bounds[c + 1]]
            order[bounds[c]:bounds[c + 1]] = seg[np.argsort(scores[seg])]
        xs_c, ts_c = scores[order], t[order]
        glob = np.argsort(xs_c, kind="stable")
        xs, ts = xs_c[glob], ts_c[glob]

        gx, gy = _isotonic_curve(xs, ts)
        gcdf = np.searchsorted(xs, gx, side="right") / xs.size
        gx, gy = _compress_knots(gx, np.clip(gy, lo, hi), gcdf, self.max_knots)
        self.global_x_, self.global_y_ = gx, gy

        knots_x, knots_y = [], []
        for c in range(num_classes):
            n_c = counts[c]
            if n_c == 0:
                knots_x.append(gx.copy())
                knots_y.append(gy.copy())
                continue
            xc_all = xs_c[bounds[c]:bounds[c + 1]]
            cx, cy = _isotonic_curve(xc_all, ts_c[bounds[c]:bounds[c + 1]])
            grid = np.union1d(cx, gx)
            weight = n_c / (n_c + self.shrink)
            y = weight * np.interp(grid, cx, cy) + (1 - weight) * np.interp(grid, gx, gy)
            y = np.maximum.accumulate(np.clip(y, lo, hi))   # exact monotonicity after rounding
            cdf = np.searchsorted(xc_all, grid, side="right") / n_c
            kx, ky = _compress_knots(grid, y, cdf, self.max_knots)
            knots_x.append(kx)
            knots_y.append(ky)
        self.map_ = IsotonicMap(knots_x, knots_y)


_KINDS = {
    "identity": Identity,
    "temperature": GlobalTemperature,
    "temperature_per_class": PerClassTemperature,
    "platt_per_class": PerClassPlatt,
    "isotonic_per_class": PerClassIsotonic,
}


def make_calibrator(kind: str, num_classes: int, **params) -> _Calibrator:
    """A new (unfitted) calibrator of `kind` for `num_classes` classes.

    params go to the constructor (e.g. shrink=20). Unknown kind -> ValueError naming the known ones.
    """
    try:
        cls = _KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown calibrator {kind!r}; known: {', '.join(_KINDS)}") from None
    try:
        return cls(num_classes=num_classes, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for calibrator {kind!r}: {exc}") from None


def per_detection_log_loss(p, is_tp):
    p = np.clip(p, LOSS_EPS, 1 - LOSS_EPS)
    return -np.where(is_tp, np.log(p), np.log1p(-p))
