"""Fitting the box-aware calibrator: (logit(p), phi(box), class) -> is_tp by regularised logistic regression.

    s = a_c * logit(p) + b_c + w . u(box)       (global w), or w_c . u(box) (per_class_w)

u are the box features of calib.artifact.box_features, standardised with the mean and std of the fitting
detections (stored in the map) and clipped to +-clip. The fit (all in float64, on the float32
features the map computes):

1. global: (a, b, w) minimising the summed log-loss + l2 / 2 * |w|^2, a >= A_MIN;
2. per class: (a_c, b_c) (and w_c with per_class_w) minimising the class's summed log-loss
   + shrink / 2 * d^T H d + l2 / 2 * |w_c|^2, d = theta_c - theta_global, H the mean
   per-detection Hessian at the global fit: `shrink` pseudo-detections of evidence for the global
   fit, as calib.calibrators' shrunk per-class Platt. A class without detections is exactly the
   global fit. With a global w the per-class fit treats w . u as a fixed offset.

Both are damped Newton iterations over all classes at once (one (P, P) system per class,
P = 2 or 5, each step halved until the class's objective decreases; a is projected onto
[A_MIN, A_MAX], so the map stays increasing in the score).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact.box_features import NUM_FEATURES, box_features_f32
from .artifact.box_map import DEFAULT_CLIP, BoxPlattMap, logit_f32
from .calibrators import _check_shrink, check_int, validate_inputs

A_MIN, A_MAX = 1e-3, 1e3
B_MAX = 50.0
RIDGE = 1e-8          # keeps every Newton system positive definite


def _newton_logistic(x, t, groups, k, offset, theta0, prior_h, a_col=0, max_iter=100):
    """Per-group penalised logistic regression by damped Newton.

    x (N, P) float64 design, t (N,) 0/1, groups (N,) int in [0, k), offset (N,); theta0 (P,) the
    prior centre (and start point), prior_h (P, P) the prior's Hessian (penalty
    1/2 (theta - theta0)^T prior_h (theta - theta0)). Column a_col is kept in [A_MIN, A_MAX], the
    column after it (the intercept) in [-B_MAX, B_MAX]. Returns theta (k, P).
    """
    n, p = x.shape
    theta = np.tile(theta0, (k, 1))
    h_prior = prior_h + RIDGE * np.eye(p)
    counts = np.bincount(groups, minlength=k)
    active = counts > 0
    lo = np.full(p, -np.inf)
    hi = np.full(p, np.inf)
    lo[a_col], hi[a_col] = A_MIN, A_MAX
    lo[a_col + 1], hi[a_col + 1] = -B_MAX, B_MAX

    def objective(th):
        s = np.einsum("np,np->n", x, th[groups]) + offset
        loss = np.logaddexp(0, s) - t * s
        d = th - theta0
        return np.bincount(groups, weights=loss, minlength=k) + 0.5 * np.einsum("kp,pq,kq->k", d, h_prior, d), s

    f, s = objective(theta)
    for _ in range(max_iter):
        sig = 0.5 * (1 + np.tanh(0.5 * s))
        r = sig - t
        w = sig * (1 - sig)
        d = theta - theta0
        grad = np.stack([np.bincount(groups, weights=r * x[:, j], minlength=k) for j in range(p)], axis=1)
        grad += d @ h_prior
        hess = np.empty((k, p, p))
        for i in range(p):
            for j in range(i, p):
                hess[:, i, j] = hess[:, j, i] = np.bincount(groups, weights=w * x[:, i] * x[:, j], minlength=k)
        hess += h_prior
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]
        # projected step, halved per group until the objective decreases
        scale = np.ones(k)
        accepted = ~active
        new = theta.copy()
        for _half in range(40):
            trial = np.clip(theta + scale[:, None] * step, lo, hi)
            f_trial, s_trial = objective(np.where(accepted[:, None], theta, trial))
            ok = (f_trial <= f + 1e-12 * (1 + np.abs(f))) & ~accepted
            new[ok] = trial[ok]
            accepted |= ok
            if accepted.all():
                break
            scale = np.where(accepted, scale, scale * 0.5)
        moved = np.abs(new - theta).max(axis=1)
        theta = new
        f, s = objective(theta)
        if np.all(moved[active] < 1e-10):
            break
    return theta


@dataclass
class PlattBox:
    """Box-aware per-class Platt scaling: sigmoid(a_c * logit(p) + b_c + w . u(box)), a_c > 0.

    input_size: (H, W) of the model input the boxes are in (also given to fit).
    shrink: pseudo-count pulling each class's (a_c, b_c) (and w_c) towards the global fit.
    per_class_w: one feature weight vector per class (shrunk to the global one) instead of one for all.
    l2: ridge penalty on the feature weights (summed log-loss units).
    clip: standardised features are clipped to +-clip.
    Fitted: global_a_, global_b_, global_w_ (3,), a_ (C,), b_ (C,), w_ (C, 3), mean_ (3,), std_ (3,),
    map_ (BoxPlattMap), num_classes_, class_counts_.
    """

    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    shrink: float = 20.0
    per_class_w: bool = False
    l2: float = 1.0
    clip: float = DEFAULT_CLIP
    kind = "platt_box"

    def __post_init__(self):
        if self.num_classes is not None:
            check_int(self.num_classes, "num_classes", minimum=1)
        self.shrink = _check_shrink(self.shrink)
        self.l2 = _check_shrink(self.l2)
        if not isinstance(self.per_class_w, bool):
            raise ValueError(f"per_class_w must be True or False, got {self.per_class_w!r}")
        if not (isinstance(self.clip, (int, float)) and np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a finite number > 0, got {self.clip!r}")

    def fit(self, scores, classes, is_tp, boxes_xyxy, groups=None, num_classes=None,
            input_size=None, raw_floor=None) -> "PlattBox":
        """scores (N,) raw, classes (N,), is_tp (N,) bool, boxes_xyxy (N, 4) model-input px -> self.

        raw_floor (C,) or scalar: the raw scores the detections were selected above (stored in the
        map: nothing at or below it survives in the pipeline and the graph)."""
        c = num_classes if num_classes is not None else self.num_classes
        if c is None:
            raise ValueError("num_classes is required (in the constructor or in fit)")
        c = check_int(c, "num_classes", minimum=1)
        size = input_size if input_size is not None else self.input_size
        if size is None:
            raise ValueError("input_size (H, W) is required (in the constructor or in fit)")
        scores, classes, is_tp, _ = validate_inputs(scores, classes, is_tp, groups, c)
        boxes = np.asarray(boxes_xyxy)
        if boxes.shape != (scores.size, 4):
            raise ValueError(f"boxes_xyxy must have shape ({scores.size}, 4), got {boxes.shape}")
        if not np.all(np.isfinite(boxes)):
            raise ValueError("boxes_xyxy contain NaN/inf values")
        self.input_size_ = tuple(int(v) for v in size)
        self.num_classes_ = c
        self.class_counts_ = np.bincount(classes, minlength=c)

        phi = box_features_f32(boxes, self.input_size_).astype(np.float64)
        self.mean_ = phi.mean(axis=0)
        std = phi.std(axis=0)
        self.std_ = np.where(std > 1e-6, std, 1.0)            # a constant feature gets weight ~0 anyway
        probe = BoxPlattMap(np.ones(c), np.zeros(c), np.zeros((c, NUM_FEATURES)), self.mean_, self.std_, self.clip)
        u = probe.standardised_features(boxes, self.input_size_).astype(np.float64)
        z = logit_f32(scores).astype(np.float64)
        t = is_tp.astype(np.float64)
        x = np.column_stack([z, np.ones_like(z), u])          # (N, 5): a, b, w0, w1, w2
        zeros = np.zeros(scores.size, dtype=np.int64)
        l2_h = np.diag([0.0, 0.0] + [self.l2] * NUM_FEATURES)
        g = _newton_logistic(x, t, zeros, 1, np.zeros_like(z), np.array([1.0, 0.0, 0.0, 0.0, 0.0]), l2_h)[0]
        self.global_a_, self.global_b_, self.global_w_ = float(g[0]), float(g[1]), g[2:].copy()

        s = x @ g
        sig = 0.5 * (1 + np.tanh(0.5 * s))
        wt = sig * (1 - sig)
        if self.per_class_w:
            h_bar = (x * wt[:, None]).T @ x / x.shape[0]
            theta = _newton_logistic(x, t, classes, c, np.zeros_like(z), g, self.shrink * h_bar + l2_h)
        else:
            x2 = x[:, :2]
            h_bar = (x2 * wt[:, None]).T @ x2 / x.shape[0]
            offset = u @ self.global_w_
            ab = _newton_logistic(x2, t, classes, c, offset, g[:2], self.shrink * h_bar)
            theta = np.column_stack([ab, np.tile(self.global_w_, (c, 1))])
        empty = self.class_counts_ == 0
        theta[empty] = g
        self.a_, self.b_, self.w_ = theta[:, 0].copy(), theta[:, 1].copy(), theta[:, 2:].copy()
        self.map_ = BoxPlattMap(self.a_, self.b_, self.w_, self.mean_, self.std_, self.clip, self.input_size_,
                                raw_floor)
        return self

    def _check_fitted(self):
        if not hasattr(self, "map_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def transform(self, scores, classes, boxes_xyxy) -> np.ndarray:
        """scores (N,), classes (N,), boxes_xyxy (N, 4) input px -> calibrated (N,) float32."""
        self._check_fitted()
        return self.map_.transform(scores, classes, boxes_xyxy, self.input_size_)

    def to_artifact(self) -> dict:
        """The artifact's `calibrator` block (schema owned by calib.artifact.box_map)."""
        self._check_fitted()
        return self.map_.to_artifact()
