"""The box-aware calibration map: evaluation, per-candidate thresholds and its artifact block.

    s  = a_c * logit(clip(p, EPS, 1 - EPS)) + b_c + w_c . u(box)          calibrated logit
    p' = sigmoid(s)                                                       calibrated score
    u_j = clip((phi_j(box) - mean_j) / std_j, -clip, clip)                standardised features

phi (calib.artifact.box_features): log box area relative to the input, log aspect ratio, distance of the
centre from the input centre. a_c > 0, so p' is increasing in p for every box: ranking within a
box and class is unchanged, but two boxes with the same raw score can get different calibrated
scores, so the survival test can no longer be moved onto raw scores once per class.

The one float32 formula (what `calib` and the ONNX graph both compute, in this order; every
operation exactly rounded, so both get the same bits, see calib.artifact.box_features):

    pc = clip(p, EPS, 1 - EPS);  z = log_f32(pc / (1 - pc))
    psi = (log_f32(w h), log_f32(w / h), centre distance)          box_features.box_log_terms_f32
    v_j = clip(psi_j, lo_j, hi_j)
    s = (a_c * z + b'_c) + ((w'_c0 * v_0 + w'_c1 * v_1) + w'_c2 * v_2)
    survives  <=>  p > pre_c  and  s > L_c

with the standardisation folded into float32 constants (`folded_parameters`, from the float64
parameters): centre_j = mean_j (+ log(W H) for the area, whose psi is in px^2),
lo_j, hi_j = centre_j -+ clip * std_j, w'_cj = w_cj / std_j, b'_c = b_c - sum_j w'_cj centre_j. That
is the map above exactly, up to float32 rounding: a few ulps of |b'_c| + |a_c z| + sum_j |w'_cj v_j|,
~1e-6 in s for maps like the fitted ones (more only where a feature's std is tiny next to its
centre, which makes w' and b' large), and it spares the graph a Sub, Div and Clip of the features
and the stacking around them.

L_c = float32(logit(t_c)) for the calibrated threshold t_c (-inf for t_c <= 0, +inf for
t_c >= 1). pre_c is a raw-score prefilter (`prefilter_thresholds`): below it no box can pass,
since |w_c . u| <= clip * sum_j |w_cj|; it only spares the work of computing s for every
(box, class) pair and is part of the formula, so it cannot cause a disagreement either. Candidates
are ranked (best class per box, pre-NMS top-k, NMS) by s itself, which both sides have bit for
bit; only p' = sigmoid(s) goes through a transcendental kernel and may differ in the last ulp.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .box_features import FEATURE_NAMES, NUM_FEATURES, box_features_f32, box_log_terms_f32, log_f32
from .calibration_map import EPS, sigmoid

F = np.float32
BOX_KIND = "platt_box"
DEFAULT_CLIP = 4.0
PREFILTER_MARGIN = 1e-3      # logit units the prefilter stays below the exact bound


def logit_f32(p: np.ndarray) -> np.ndarray:
    """logit(clip(p, EPS, 1 - EPS)) in float32 with log_f32: (...,) -> (...,) float32."""
    pc = np.clip(np.asarray(p, dtype=F), F(EPS), F(1 - EPS))
    return log_f32(pc / (F(1) - pc))


def sigmoid_f32(s: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-s)) in float32, overflow-safe: (...,) -> (...,) float32 (calibration_map.sigmoid)."""
    return sigmoid(np.asarray(s, dtype=F))


@dataclass
class BoxPlattMap:
    """p' = sigmoid(a[c] * logit(p) + b[c] + w[c] . u(box)); a (C,) > 0, b (C,), w (C, 3),
    mean (3,), std (3,) > 0 the feature standardisation, clip > 0 its bound (in std units),
    input_size (H, W) the model input the features are relative to (the default of every
    `input_size` argument below; None: it must be given), raw_floor (C,) the raw score of each
    class above which the map was fitted (None: 0): nothing at or below it survives, because
    below it the map is an extrapolation (a flat fit above the floor would lift every low score)."""

    a: np.ndarray
    b: np.ndarray
    w: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    clip: float = DEFAULT_CLIP
    input_size: tuple | None = None
    raw_floor: np.ndarray | None = None
    kind: str = BOX_KIND

    def __post_init__(self):
        self.a = np.asarray(self.a, dtype=np.float64).reshape(-1)
        self.b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        self.w = np.asarray(self.w, dtype=np.float64)
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        c = self.a.size
        if self.kind != BOX_KIND:
            raise ValueError(f"box-aware map kind must be {BOX_KIND!r}, got {self.kind!r}")
        if c == 0 or self.b.shape != (c,):
            raise ValueError("a and b must be non-empty and of equal length (one per class)")
        if self.w.shape != (c, NUM_FEATURES):
            raise ValueError(f"w must have shape ({c}, {NUM_FEATURES}) (one row of feature weights per class), "
                             f"got {self.w.shape}")
        if self.mean.shape != (NUM_FEATURES,) or self.std.shape != (NUM_FEATURES,):
            raise ValueError(f"mean and std need {NUM_FEATURES} values ({', '.join(FEATURE_NAMES)})")
        finite = all(np.all(np.isfinite(v)) for v in (self.a, self.b, self.w, self.mean, self.std))
        if not finite or not np.all(self.a > 0) or not np.all(self.std > 0):
            raise ValueError("a must be > 0 (monotone increasing), std > 0, every value finite")
        if not (isinstance(self.clip, (int, float, np.floating)) and np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a finite number > 0, got {self.clip!r}")
        self.clip = float(self.clip)
        if self.raw_floor is not None:
            self.raw_floor = np.broadcast_to(np.asarray(self.raw_floor, dtype=np.float64), (c,)).copy()
            if not np.all((self.raw_floor >= 0) & (self.raw_floor <= 1) | np.isposinf(self.raw_floor)):
                raise ValueError("raw_floor must hold raw scores in [0, 1] (or inf), one per class")
        if self.input_size is not None:
            try:
                h, w = (int(v) for v in self.input_size)
            except (TypeError, ValueError):
                raise ValueError(f"input_size must be (H, W), got {self.input_size!r}") from None
            if h <= 0 or w <= 0:
                raise ValueError(f"input_size must be positive, got {self.input_size!r}")
            self.input_size = (h, w)

    def _size(self, input_size):
        size = input_size if input_size is not None else self.input_size
        if size is None:
            raise ValueError("input_size (H, W) is required: the map does not store one")
        return size

    @property
    def num_classes(self) -> int:
        return self.a.size

    @property
    def is_identity(self) -> bool:
        return False

    @property
    def global_w(self) -> bool:
        """One feature weight vector for every class (the graph then needs no per-class gather)."""
        return bool(np.all(self.w == self.w[0]))

    # -- the formula ---------------------------------------------------------------------------
    def standardised_features(self, boxes_xyxy: np.ndarray, input_size=None) -> np.ndarray:
        """boxes (..., 4) xyxy input px, input_size (H, W) -> u (..., 3) float32, clipped to +-clip."""
        phi = box_features_f32(boxes_xyxy, self._size(input_size))
        u = (phi - self.mean.astype(F)) / self.std.astype(F)
        return np.clip(u, F(-self.clip), F(self.clip))

    def folded_parameters(self, input_size=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """input_size (H, W) -> (lo (3,), hi (3,), w' (C, 3), b' (C,)), float32: the standardisation
        folded into the bounds, weights and bias of the calibrated logit on psi (module doc)."""
        h, w = self._size(input_size)
        centre = self.mean + np.array([np.log(float(w) * float(h)), 0.0, 0.0])
        w_f = self.w / self.std
        return ((centre - self.clip * self.std).astype(F), (centre + self.clip * self.std).astype(F),
                w_f.astype(F), (self.b - w_f @ centre).astype(F))

    def calibrated_logit(self, scores: np.ndarray, classes: np.ndarray, boxes_xyxy: np.ndarray,
                         input_size=None) -> np.ndarray:
        """scores (M,) raw, classes (M,) int in [0, C), boxes (M, 4) xyxy input px, input_size
        (H, W) -> s (M,) float32, computed exactly as the module docstring writes it."""
        scores = np.asarray(scores)
        classes = np.asarray(classes, dtype=np.int64)
        boxes = np.asarray(boxes_xyxy)
        if boxes.shape != scores.shape + (4,) or classes.shape != scores.shape:
            raise ValueError(f"scores {scores.shape}, classes {classes.shape} and boxes {boxes.shape} "
                             "must be (M,), (M,) and (M, 4)")
        size = self._size(input_size)
        lo, hi, w_f, b_f = self.folded_parameters(size)
        z = logit_f32(scores)
        v = np.minimum(np.maximum(box_log_terms_f32(boxes, size), lo), hi)
        w = w_f[classes]                                                  # (M, 3)
        box_term = (w[..., 0] * v[..., 0] + w[..., 1] * v[..., 1]) + w[..., 2] * v[..., 2]
        return (self.a.astype(F)[classes] * z + b_f[classes]) + box_term

    def transform(self, scores: np.ndarray, classes: np.ndarray, boxes_xyxy: np.ndarray, input_size=None) -> np.ndarray:
        """scores (M,) raw, classes (M,), boxes (M, 4) xyxy input px, input_size (H, W) ->
        calibrated scores (M,) float32."""
        return sigmoid_f32(self.calibrated_logit(scores, classes, boxes_xyxy, input_size))

    def transform_mean_box(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """scores (...,) raw, classes (...,) -> (...,) float64 sigmoid(a_c logit(p) + b_c): the map
        for a box whose standardised features are all 0 (the fitting data's mean box). Where a
        per-class value without a box is needed (e.g. the calibrated image of a raw threshold)."""
        classes = np.asarray(classes, dtype=np.int64)
        z = logit_f32(scores).astype(np.float64)
        return 1 / (1 + np.exp(-(self.a[classes] * z + self.b[classes])))

    # -- thresholds ----------------------------------------------------------------------------
    def logit_thresholds(self, thresholds) -> np.ndarray:
        """Calibrated thresholds t (C,) (or a scalar) -> L (C,) float32 = logit(t); p' > t <=> s > L."""
        t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (self.num_classes,))
        with np.errstate(divide="ignore"):
            lt = np.log(t) - np.log1p(-t)
        lt = np.where(t <= 0, -np.inf, np.where(t >= 1, np.inf, lt))
        return lt.astype(F)

    def prefilter_thresholds(self, thresholds) -> np.ndarray:
        """(C,) float32 raw scores pre_c: a candidate survives only if p > pre_c.

        The larger of raw_floor (where the map is valid) and a bound below which no box can pass:
        from |w_c . u| <= clip * sum_j |w_cj| =: g_c, s > L_c needs a_c z > L_c - b_c - g_c, moved
        PREFILTER_MARGIN further down (float32 rounding of s). -inf where every clipped score
        could pass, +inf where none can.
        """
        lt = self.logit_thresholds(thresholds).astype(np.float64)
        g = self.clip * np.abs(self.w).sum(axis=1)
        with np.errstate(invalid="ignore"):
            zmin = (lt - self.b - g - PREFILTER_MARGIN) / self.a - PREFILTER_MARGIN
        r = 1 / (1 + np.exp(-np.clip(zmin, -700, 700)))
        lo = float(np.log(EPS) - np.log1p(-EPS))
        r = np.where(zmin <= lo, -np.inf, r)
        r = np.where(lt == np.inf, np.inf, r)
        r = np.where(lt == -np.inf, -np.inf, r)
        r32 = r.astype(F)
        up = np.isfinite(r32) & (r32.astype(np.float64) > r)              # cast rounded up: step down
        r32[up] = np.nextafter(r32[up], F(-np.inf))
        if self.raw_floor is not None:
            r32 = np.maximum(r32, self.raw_floor.astype(F))
        return r32

    def survives(self, scores, classes, boxes_xyxy, input_size, thresholds) -> np.ndarray:
        """(M,) bool: p > pre_c and s > L_c (the survival test of the pipeline and the graph);
        input_size None: the stored one."""
        classes = np.asarray(classes, dtype=np.int64)
        pre = self.prefilter_thresholds(thresholds)
        lt = self.logit_thresholds(thresholds)
        s = self.calibrated_logit(scores, classes, boxes_xyxy, input_size)
        return (np.asarray(scores, dtype=F) > pre[classes]) & (s > lt[classes])

    # -- artifact ------------------------------------------------------------------------------
    def to_artifact(self) -> dict:
        return {
            "kind": self.kind,
            "a": [float(v) for v in self.a],
            "b": [float(v) for v in self.b],
            "w": [[float(v) for v in row] for row in self.w],
            "features": list(FEATURE_NAMES),
            "feature_mean": [float(v) for v in self.mean],
            "feature_std": [float(v) for v in self.std],
            "feature_clip": self.clip,
            **({"input_size": list(self.input_size)} if self.input_size is not None else {}),
            **({"raw_floor": [float(v) for v in self.raw_floor]} if self.raw_floor is not None else {}),
        }

    @classmethod
    def from_artifact(cls, block: dict, num_classes: int | None = None) -> "BoxPlattMap":
        """The artifact's `calibrator` block of kind platt_box -> the map; ValueError when malformed."""
        if not isinstance(block, dict) or block.get("kind") != BOX_KIND:
            raise ValueError(f"not a {BOX_KIND!r} calibrator block")
        needed = ("a", "b", "w", "feature_mean", "feature_std")
        missing = [k for k in needed if k not in block]
        if missing:
            raise ValueError(f"calibrator {BOX_KIND!r} lacks {', '.join(repr(k) for k in missing)}")
        feats = block.get("features", list(FEATURE_NAMES))
        if list(feats) != list(FEATURE_NAMES):
            raise ValueError(f"calibrator {BOX_KIND!r}: features {feats!r}, this detcal knows {list(FEATURE_NAMES)!r}")
        try:
            m = cls(block["a"], block["b"], block["w"], block["feature_mean"], block["feature_std"],
                    block.get("feature_clip", DEFAULT_CLIP), block.get("input_size"), block.get("raw_floor"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"calibrator {BOX_KIND!r}: {exc}") from None
        if num_classes is not None and m.num_classes != num_classes:
            raise ValueError(f"calibrator has {m.num_classes} classes, the model has {num_classes}")
        return m
