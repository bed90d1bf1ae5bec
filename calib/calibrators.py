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

`select_calibrator` implements ``--calibrator auto``: k-fold by image, the lowest
cross-validated log-loss wins, and nothing that is not strictly better than identity is ever
picked. `cross_val_oof` gives out-of-fold calibrated scores for any kind, so that every
"after calibration" number is measured on images the fit did not see.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from calib.calibration_map import (
    EPS,
    MAX_KNOTS,
    AffineLogitMap,
    IsotonicMap,
    identity_map,
    logit,
)

T_BOUNDS = (0.05, 20.0)          # temperature range; per-class temperatures use it too
A_BOUNDS = (1e-3, 1e3)           # Platt slope a_c: > 0 keeps every map increasing
B_BOUNDS = (-50.0, 50.0)         # Platt offset, only to keep separable classes finite
LOSS_EPS = EPS                   # probabilities are clipped to [EPS, 1 - EPS] inside log-loss

CANDIDATES = ("identity", "temperature", "temperature_per_class", "platt_per_class",
              "isotonic_per_class")


# --------------------------------------------------------------------------- validation

def validate_inputs(scores, classes, is_tp, groups=None, num_classes=None):
    """Check and normalise fitting inputs.

    scores (N,) finite in [0, 1], classes (N,) int in [0, num_classes), is_tp (N,) bool,
    groups (N,) or None -> (scores float64, classes int64, is_tp bool, groups or None).
    Raises ValueError with a message a user can act on.
    """
    if num_classes is None:
        raise ValueError("num_classes is required (in the constructor or in fit)")
    num_classes = _check_int(num_classes, "num_classes", minimum=1)
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


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_shrink(shrink):
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float, np.floating, np.integer)) \
            or not np.isfinite(shrink) or shrink < 0:
        raise ValueError(f"shrink must be a finite number >= 0, got {shrink!r}")
    return float(shrink)


# --------------------------------------------------------------------------- losses

def log_loss(p: np.ndarray, is_tp: np.ndarray) -> float:
    """Mean binary log-loss; p (N,) clipped to [EPS, 1 - EPS], is_tp (N,) bool."""
    return float(_per_detection_log_loss(np.asarray(p, dtype=np.float64), is_tp).mean())


def brier(p: np.ndarray, is_tp: np.ndarray) -> float:
    """Mean squared error between p (N,) and is_tp (N,) bool."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - is_tp) ** 2))


# --------------------------------------------------------------------------- base class

class _Calibrator:
    """Shared plumbing: num_classes resolution, fitted check, delegation to `map_`."""

    kind = ""

    def _resolve_num_classes(self, num_classes):
        c = num_classes if num_classes is not None else self.num_classes
        if c is None:
            raise ValueError("num_classes is required (in the constructor or in fit)")
        return _check_int(c, "num_classes", minimum=1)

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


# --------------------------------------------------------------------------- identity

@dataclass
class Identity(_Calibrator):
    """p' = p. The baseline every other calibrator must beat."""

    num_classes: int | None = None
    kind = "identity"

    def __post_init__(self):
        if self.num_classes is not None:
            _check_int(self.num_classes, "num_classes", minimum=1)

    def _fit(self, scores, classes, is_tp, num_classes):
        self.map_ = identity_map(num_classes)


# --------------------------------------------------------------------------- logit-affine

def _fit_global_temperature(z: np.ndarray, t: np.ndarray) -> float:
    """Temperature T in T_BOUNDS minimising the mean log-loss of sigmoid(z / T).

    The loss is convex in a = 1/T, so the optimum on the interval is the root of
    d loss / d a = mean((sigmoid(a z) - t) z) found by scipy's bracketing brentq, or the
    bound the derivative points to when it does not change sign.
    """
    tz = float(np.sum(t * z))
    buf = np.empty_like(z)

    def dloss(a):                      # sum(sigmoid(a z) z) - sum(t z), in place
        np.multiply(z, -a, out=buf)
        with np.errstate(over="ignore"):
            np.exp(buf, out=buf)
        np.add(buf, 1, out=buf)
        np.divide(z, buf, out=buf)
        return float(buf.sum()) - tz

    lo, hi = 1 / T_BOUNDS[1], 1 / T_BOUNDS[0]
    d_lo, d_hi = dloss(lo), dloss(hi)
    if d_lo >= 0:
        return T_BOUNDS[1]
    if d_hi <= 0:
        return T_BOUNDS[0]
    a = optimize.brentq(dloss, lo, hi, xtol=1e-12, rtol=1e-10)
    return float(1 / a)


def _newton_affine(z, t, classes, num_classes, a_init, b_init, fit_b, a_bounds, prior=None,
                   max_iter=100):
    """Per-class logistic fit of s = a_c z + b_c, all classes at once, by damped Newton.

    z (N,) logits, t (N,) float 0/1, classes (N,) int in [0, K). Minimises, per class, the
    summed log-loss plus, with prior = (a0, b0, lam, h_aa, h_ab, h_bb), the penalty
    lam/2 * d^T H d, d = (a_c - a0, b_c - b0). The 2x2 (1x1 without b) Hessian of each class
    is inverted in closed form; a step that does not decrease a class's objective is halved
    (the problem is convex, so this converges); a stays inside a_bounds, b inside B_BOUNDS.
    One pass over the data (a few bincounts) per iteration. Returns a (K,), b (K,).
    """
    k = num_classes
    if classes is None:           # one class: plain sums (bincount into one bin is slow)
        def csum(v):
            return np.array([v.sum()])
    else:
        def csum(v):
            return np.bincount(classes, weights=v, minlength=k)
    counts = np.array([float(z.size)]) if classes is None \
        else np.bincount(classes, minlength=k).astype(np.float64)
    tz_c = csum(t * z)
    t_c = csum(t)
    zz = z * z
    if prior is None:
        a0 = b0 = lam = h_aa = h_ab = h_bb = 0.0
    else:
        a0, b0, lam, h_aa, h_ab, h_bb = prior
    lo, hi = a_bounds
    a = np.clip(np.broadcast_to(np.asarray(a_init, dtype=np.float64), (k,)), lo, hi).copy()
    b = np.broadcast_to(np.asarray(b_init, dtype=np.float64), (k,)).copy() if fit_b \
        else np.zeros(k)
    a_prev, b_prev = a.copy(), b.copy()
    f_prev = np.full(k, np.inf)
    step_a, step_b = np.zeros(k), np.zeros(k)
    done = counts == 0            # empty classes keep their start point
    tol = 1e-13 * (counts + lam + 1)
    s, e, sp, sig, tmp = (np.empty_like(z) for _ in range(5))
    for _ in range(max_iter):
        # one pass, in preallocated buffers (fresh 4 MB arrays cost more than the arithmetic)
        if classes is None:
            np.multiply(z, a[0], out=s)
            if fit_b:
                s += b[0]
        else:
            np.take(a, classes, out=s)
            s *= z
            if fit_b:
                np.take(b, classes, out=tmp)
                s += tmp
        np.abs(s, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.log1p(e, out=sp)
        np.maximum(s, 0, out=tmp)
        sp += tmp                                  # softplus(s)
        np.subtract(s, sp, out=sig)
        np.exp(sig, out=sig)                       # sigmoid(s) = exp(s - softplus(s))
        da, db = a - a0, b - b0
        f = csum(sp) - a * tz_c - b * t_c
        f += 0.5 * lam * (h_aa * da * da + 2 * h_ab * da * db + h_bb * db * db)
        # classes whose step failed to decrease: halve it and try again from the last point
        worse = (f > f_prev + 1e-12 * (1 + np.abs(f_prev))) & ~done
        if np.any(worse):
            step_a[worse] *= 0.5
            step_b[worse] *= 0.5
            tiny = worse & (np.abs(step_a) + np.abs(step_b) < 1e-13)
            done |= tiny
            a = np.where(worse, a_prev + step_a, a)
            b = np.where(worse, b_prev + step_b, b)
            a[tiny], b[tiny] = a_prev[tiny], b_prev[tiny]
        ok = ~worse & ~done
        r, w = e, sp                               # reuse: e and sp are no longer needed
        np.subtract(sig, t, out=r)
        np.subtract(1, sig, out=w)
        w *= sig
        g_a = csum(np.multiply(r, z, out=tmp)) + lam * (h_aa * da + h_ab * db)
        hh_aa = csum(np.multiply(w, zz, out=tmp)) + lam * h_aa
        if fit_b:
            g_b = csum(r) + lam * (h_ab * da + h_bb * db)
            hh_ab = csum(np.multiply(w, z, out=tmp)) + lam * h_ab
            hh_bb = csum(w) + lam * h_bb
            hh_aa, hh_bb = hh_aa + 1e-300, hh_bb + 1e-300   # 0 only for an empty class
            det = hh_aa * hh_bb - hh_ab * hh_ab
            # near-singular (one distinct score in a class, no prior): diagonal step instead
            singular = det <= 1e-10 * hh_aa * hh_bb
            det = np.where(singular, 1.0, det)
            na = np.where(singular, -g_a / hh_aa, -(hh_bb * g_a - hh_ab * g_b) / det)
            nb = np.where(singular, -g_b / hh_bb, -(hh_aa * g_b - hh_ab * g_a) / det)
            pinned = ((a <= lo) & (na < 0)) | ((a >= hi) & (na > 0))
            na = np.where(pinned, 0.0, na)
            nb = np.where(pinned, -g_b / hh_bb, nb)
        else:
            g_b = np.zeros(k)
            na = -g_a / (hh_aa + 1e-300)
            nb = np.zeros(k)
        new_a = np.clip(a + na, lo, hi)
        new_b = np.clip(b + nb, *B_BOUNDS) if fit_b else b
        na, nb = new_a - a, new_b - b
        dec = -(g_a * na + g_b * nb)
        done |= ok & (dec <= tol)
        upd = ok & ~done
        a_prev[ok], b_prev[ok], f_prev[ok] = a[ok], b[ok], f[ok]
        step_a[upd], step_b[upd] = na[upd], nb[upd]
        a[upd], b[upd] = new_a[upd], new_b[upd]
        if np.all(done):
            break
    a, b = a_prev, b_prev   # the best point seen per class (accepted points only decrease)
    return a.copy(), b.copy()


def _shrink_prior(z, t, a0, b0, shrink):
    """(a0, b0, shrink, h_aa, h_ab, h_bb): the global fit and its mean per-detection Hessian."""
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-(a0 * z + b0)))
    w = sig * (1 - sig)
    n = z.size
    wz = w * z
    return (a0, b0, shrink, float(np.sum(wz * z)) / n, float(wz.sum()) / n, float(w.sum()) / n)


def _fit_per_class_affine(z, t, classes, num_classes, a0, b0, shrink, fit_b, a_bounds):
    """Per-class (a_c, b_c) shrunk towards the global (a0, b0) with `shrink` pseudo-counts.

    Returns a (C,), b (C,); classes without detections get exactly (a0, b0); without b
    (per-class temperature) b is all b0 = 0.
    """
    prior = _shrink_prior(z, t, a0, b0, shrink)
    a, b = _newton_affine(z, t, classes, num_classes, a0, b0, fit_b, a_bounds, prior)
    empty = np.bincount(classes, minlength=num_classes) == 0
    a[empty] = a0
    b[empty] = b0
    if not fit_b:
        b[:] = b0
    return a, b


def _fit_global_platt(z: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, b), a in A_BOUNDS, minimising the log-loss of sigmoid(a z + b) over all detections."""
    a, b = _newton_affine(z, t, None, 1, 1.0, 0.0, True, A_BOUNDS)
    return float(a[0]), float(b[0])


@dataclass
class GlobalTemperature(_Calibrator):
    """One temperature for all classes: p' = sigmoid(logit(p) / T), T in [0.05, 20].

    Fitted: temperature_ (float), map_ (AffineLogitMap kind "temperature", a = 1/T, b = 0).
    """

    num_classes: int | None = None
    kind = "temperature"

    def __post_init__(self):
        if self.num_classes is not None:
            _check_int(self.num_classes, "num_classes", minimum=1)

    def _fit(self, scores, classes, is_tp, num_classes):
        self.temperature_ = _fit_global_temperature(logit(scores), is_tp.astype(np.float64))
        self.map_ = AffineLogitMap(self.kind, np.full(num_classes, 1 / self.temperature_),
                                   np.zeros(num_classes))


@dataclass
class _ShrunkPerClass(_Calibrator):
    """Per-class fits pulled towards the global fit by `shrink` pseudo-counts."""

    num_classes: int | None = None
    shrink: float = 20.0

    def __post_init__(self):
        if self.num_classes is not None:
            _check_int(self.num_classes, "num_classes", minimum=1)
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
        self.global_temperature_ = _fit_global_temperature(z, t)
        a, b = _fit_per_class_affine(z, t, classes, num_classes, 1 / self.global_temperature_,
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
        self.global_a_, self.global_b_ = _fit_global_platt(z, t)
        self.a_, self.b_ = _fit_per_class_affine(z, t, classes, num_classes, self.global_a_,
                                                 self.global_b_, self.shrink, fit_b=True,
                                                 a_bounds=A_BOUNDS)
        self.map_ = AffineLogitMap(self.kind, self.a_, self.b_)


# --------------------------------------------------------------------------- isotonic

def _pav(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted isotonic (non-decreasing) regression of y (K,) -> (block values (B,),
    block start indices (B,)). scipy >= 1.12 when available, else a pool-adjacent-violators
    loop over the (already tie-aggregated) points."""
    if _scipy_isotonic is not None:
        res = _scipy_isotonic(y, weights=w, increasing=True)
        starts = np.asarray(res.blocks[:-1], dtype=np.intp)
        return np.asarray(res.x)[starts], starts
    vals, wts, starts = [], [], []
    for i in range(y.size):
        v, wt, st = float(y[i]), float(w[i]), i
        while vals and vals[-1] >= v:
            pv, pw = vals.pop(), wts.pop()
            st = starts.pop()
            v = (pv * pw + v * wt) / (pw + wt)
            wt += pw
        vals.append(v)
        wts.append(wt)
        starts.append(st)
    return np.asarray(vals), np.asarray(starts, dtype=np.intp)


try:  # scipy >= 1.12
    from scipy.optimize import isotonic_regression as _scipy_isotonic
except ImportError:  # pragma: no cover - depends on the installed scipy
    _scipy_isotonic = None


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
            _check_int(self.num_classes, "num_classes", minimum=1)
        self.shrink = _check_shrink(self.shrink)
        self.max_knots = _check_int(self.max_knots, "max_knots", minimum=2)
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


# --------------------------------------------------------------------------- factory

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


# --------------------------------------------------------------------------- cross-validation

def fold_ids(groups: np.ndarray | None, n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (n,) in [0, k), whole groups (images) per fold, k = min(n_folds, #groups).

    groups None: every detection is its own group. Fewer than 2 groups -> ValueError.
    """
    return _fold_ids(groups, n, n_folds, seed)[0]


def _fold_ids(groups, n, n_folds, seed):
    n_folds = _check_int(n_folds, "n_folds", minimum=2)
    if groups is None:
        inv = np.arange(n)
        n_groups = n
    else:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        inv = inv.reshape(-1)
        n_groups = int(inv.max()) + 1 if n else 0
    if n_groups < 2:
        raise ValueError(f"k-fold cross-validation needs detections from at least 2 images, "
                         f"got {n_groups}")
    k = min(n_folds, n_groups)
    perm = np.random.default_rng(seed).permutation(n_groups)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_of_group[perm] = np.arange(n_groups) % k
    return fold_of_group[inv], n_groups


class _Splits:
    """Per fold: held-out indices and the training part's arrays, built once and shared by
    every candidate."""

    def __init__(self, scores, classes, is_tp, folds):
        self.folds = folds
        self.k = int(folds.max()) + 1
        self.parts = []
        for f in range(self.k):
            test = folds == f
            train = np.flatnonzero(~test)
            t_tp = is_tp[train]
            n_pos = int(t_tp.sum())
            ok = 0 < n_pos < train.size
            self.parts.append((np.flatnonzero(test), scores[train] if ok else None,
                               classes[train] if ok else None, t_tp if ok else None))


def _oof(kind, scores, classes, splits, num_classes, params):
    """Out-of-fold calibrated scores (N,) float64 for `kind`, and the number of folds whose
    training part lacked a positive or a negative (those folds fall back to identity)."""
    out = np.empty(scores.size, dtype=np.float64)
    degenerate = 0
    for test, tr_scores, tr_classes, tr_tp in splits.parts:
        if kind == "identity" or tr_scores is None:
            degenerate += kind != "identity"
            out[test] = scores[test]
            continue
        model = make_calibrator(kind, num_classes, **params)
        model.num_classes_ = num_classes
        model.class_counts_ = np.bincount(tr_classes, minlength=num_classes)
        model._fit(tr_scores, tr_classes, tr_tp, num_classes)   # inputs validated by caller
        out[test] = model.transform(scores[test], classes[test])
    return out, degenerate


def _per_detection_log_loss(p, is_tp):
    p = np.clip(p, LOSS_EPS, 1 - LOSS_EPS)
    return -np.where(is_tp, np.log(p), np.log1p(-p))


def cross_val_oof(kind: str, scores, classes, is_tp, groups, num_classes: int,
                  n_folds: int = 5, seed: int = 0, **params) -> np.ndarray:
    """Out-of-fold calibrated scores (N,) float64: each detection calibrated by `kind` fitted on
    the other folds (k-fold by image, groups (N,) image index). A fold whose training part
    has no positive or no negative detection is left uncalibrated (identity)."""
    make_calibrator(kind, num_classes, **params)   # validates kind and params up front
    scores, classes, is_tp, groups = validate_inputs(scores, classes, is_tp, groups, num_classes)
    folds = fold_ids(groups, scores.size, n_folds, seed)
    splits = _Splits(scores, classes, is_tp, folds)
    return _oof(kind, scores, classes, splits, num_classes, params)[0]


def select_calibrator(scores, classes, is_tp, groups, num_classes: int,
                      candidates=CANDIDATES, n_folds: int = 5, seed: int = 0,
                      params: dict | None = None):
    """``--calibrator auto``: pick the candidate with the lowest k-fold (by image) log-loss.

    scores (N,), classes (N,), is_tp (N,), groups (N,) image index (None: per detection).
    params: optional {kind: {constructor params}}. Identity is always evaluated and wins
    unless a candidate's cross-validated log-loss is strictly lower.

    Returns (calibrator fitted on all data, with `oof_scores_` (N,) its out-of-fold scores and
    `cv_report_`; report dict): report = {"winner", "n_folds", "seed", "n_detections",
    "n_groups", "candidates": {kind: {"log_loss", "brier", "fold_log_loss", "degenerate_folds"}}}.
    """
    params = dict(params or {})
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("select_calibrator needs at least one candidate")
    for kind in candidates:
        make_calibrator(kind, num_classes, **params.get(kind, {}))
    scores, classes, is_tp, groups = validate_inputs(scores, classes, is_tp, groups, num_classes)
    folds, n_groups = _fold_ids(groups, scores.size, n_folds, seed)
    splits = _Splits(scores, classes, is_tp, folds)
    k = splits.k
    fold_n = np.bincount(folds, minlength=k)
    kinds = ("identity",) + tuple(c for c in dict.fromkeys(candidates) if c != "identity")

    results, oofs = {}, {}
    for kind in kinds:
        oof, degenerate = _oof(kind, scores, classes, splits, num_classes, params.get(kind, {}))
        oofs[kind] = oof
        losses = _per_detection_log_loss(oof, is_tp)
        results[kind] = {
            "log_loss": float(losses.mean()),
            "brier": brier(oof, is_tp),
            "fold_log_loss": (np.bincount(folds, weights=losses, minlength=k) / fold_n).tolist(),
            "degenerate_folds": degenerate,
        }
    winner = "identity"
    best = results["identity"]["log_loss"]
    for kind in kinds[1:]:
        if kind in candidates and results[kind]["log_loss"] < best:
            winner, best = kind, results[kind]["log_loss"]
    report = {
        "winner": winner,
        "n_folds": k,
        "seed": seed,
        "n_detections": int(scores.size),
        "n_groups": n_groups,
        "candidates": {kind: results[kind] for kind in kinds},
    }
    best_cal = make_calibrator(winner, num_classes, **params.get(winner, {}))
    best_cal.fit(scores, classes, is_tp)
    best_cal.oof_scores_ = oofs[winner]
    best_cal.cv_report_ = report
    return best_cal, report
