"""The logit-affine solvers behind temperature and Platt calibrators.

z (N,) logits of the raw scores, t (N,) float 0/1 labels (matched or not), classes (N,) int.
`fit_global_temperature` finds one T by a bracketing root search on the convex derivative;
`newton_affine` fits s = a_c z + b_c for every class at once by damped Newton, optionally with
the shrinkage penalty `shrink_prior` builds (see `calib.calibrators` for what it means).
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

T_BOUNDS = (0.05, 20.0)          # temperature range; per-class temperatures use it too
A_BOUNDS = (1e-3, 1e3)           # Platt slope a_c: > 0 keeps every map increasing
B_BOUNDS = (-50.0, 50.0)         # Platt offset, only to keep separable classes finite


def fit_global_temperature(z: np.ndarray, t: np.ndarray) -> float:
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


def newton_affine(z, t, classes, num_classes, a_init, b_init, fit_b, a_bounds, prior=None,
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


def shrink_prior(z, t, a0, b0, shrink):
    """(a0, b0, shrink, h_aa, h_ab, h_bb): the global fit and its mean per-detection Hessian."""
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-(a0 * z + b0)))
    w = sig * (1 - sig)
    n = z.size
    wz = w * z
    return (a0, b0, shrink, float(np.sum(wz * z)) / n, float(wz.sum()) / n, float(w.sum()) / n)


def fit_per_class_affine(z, t, classes, num_classes, a0, b0, shrink, fit_b, a_bounds):
    """Per-class (a_c, b_c) shrunk towards the global (a0, b0) with `shrink` pseudo-counts.

    Returns a (C,), b (C,); classes without detections get exactly (a0, b0); without b
    (per-class temperature) b is all b0 = 0.
    """
    prior = shrink_prior(z, t, a0, b0, shrink)
    a, b = newton_affine(z, t, classes, num_classes, a0, b0, fit_b, a_bounds, prior)
    empty = np.bincount(classes, minlength=num_classes) == 0
    a[empty] = a0
    b[empty] = b0
    if not fit_b:
        b[:] = b0
    return a, b


def fit_global_platt(z: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, b), a in A_BOUNDS, minimising the log-loss of sigmoid(a z + b) over all detections."""
    a, b = newton_affine(z, t, None, 1, 1.0, 0.0, True, A_BOUNDS)
    return float(a[0]), float(b[0])
