"""Fitted calibration maps: how a raw score becomes a calibrated one, per class.

This module is the evaluation half shared by the numpy reference pipeline and the ONNX graph
builder; the fitting half lives in `calib.calibrators`. Every map is monotone non-decreasing
per class, so a threshold on the calibrated score is a threshold on the raw score
(`raw_thresholds`), and class-wise ranking and NMS are unchanged by calibration.

Two families, as stored in the artifact's `calibrator` block:

* logit-affine (`identity`, `temperature`, `temperature_per_class`, `platt_per_class`):
  p' = sigmoid(a_c * logit(clip(p, EPS, 1 - EPS)) + b_c), a_c > 0. Identity is a=1, b=0 and
  returns p unchanged; temperature T is a = 1/T, b = 0.
* `isotonic_per_class`: p' = interp(p, x_c, y_c), a piecewise-linear table of at most
  MAX_KNOTS knots in probability space, x strictly increasing, y non-decreasing, constant
  outside [x_0, x_last].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constraints import PER_CLASS, AnyObject, Array, ConstraintError, Optional, Real, Str, check_block

EPS = 1e-6  # clip before logit: keeps float32 logit finite and matches the graph's Clip
MAX_KNOTS = 64
AFFINE_KINDS = ("identity", "temperature", "temperature_per_class", "platt_per_class")
ISOTONIC_KIND = "isotonic_per_class"
KINDS = AFFINE_KINDS + (ISOTONIC_KIND,)
MAX_SLOPE = 1e4      # a (logit-space slope) in (0, MAX_SLOPE]: beyond it float32 logits overflow
MAX_BIAS = 1e4       # |b| <= MAX_BIAS


def logit(p: np.ndarray) -> np.ndarray:
    """logit(clip(p, EPS, 1 - EPS)), same float dtype as p."""
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), overflow-safe, same float dtype as z."""
    z = np.asarray(z)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


def _snap_raw_thresholds(transform, t: np.ndarray, r: np.ndarray, max_steps: int = 256) -> np.ndarray:
    """Move each finite raw threshold r[c] so that, exactly in float64,
    transform(p, c) > t[c]  <=>  p > r[c]. The closed form is right up to rounding, which can
    leave transform(r) one ulp above t (so a score equal to r would pass the calibrated test
    but fail the raw one) or transform(next float above r) still equal to t. A few ulps fix
    that; where the map is so flat that rounding keeps it at t over many ulps (an isotonic
    segment rising by one ulp of y), a bisection over the floats finds the exact edge."""
    r = r.copy()
    classes = np.arange(r.size)
    fin = np.isfinite(r)
    for _ in range(max_steps):      # lower r while a score equal to r would already survive
        move = fin & (transform(np.where(fin, r, 0.5), classes) > t)
        if not move.any():
            break
        r[move] = np.nextafter(r[move], -np.inf)
    for _ in range(max_steps):      # raise r while the next score above it still would not survive
        up = np.nextafter(r, np.inf)
        move = fin & (transform(np.where(fin, up, 0.5), classes) <= t)
        if not move.any():
            break
        r[move] = up[move]
    for c in np.nonzero(fin)[0]:
        passes = lambda v, c=c: bool(transform(np.array([v]), np.array([c]))[0] > t[c])  # noqa: E731
        if passes(r[c]) or not passes(np.nextafter(r[c], np.inf)):
            r[c] = _bisect_edge(passes, r[c])
    return r


# raw_thresholds results by (map parameters, thresholds): the exact snapping costs ~7 ms for 80 classes
# (a per-class float check), and the reference pipeline asks once per postprocess call, i.e. per
# image in eval; keyed by the parameters' bytes, so a map changed in place is a new key
_RAW_THRESHOLDS_CACHE: dict = {}
_RAW_THRESHOLDS_CACHE_SIZE = 64


def _cached_raw_thresholds(params: tuple, t: np.ndarray, compute) -> np.ndarray:
    """compute() -> r (C,), memoised by (params: the map's kind and arrays, t); returns a copy."""
    key = (tuple(np.ascontiguousarray(a, dtype=np.float64).tobytes() if not isinstance(a, str) else a
                 for a in params), t.tobytes())
    r = _RAW_THRESHOLDS_CACHE.get(key)
    if r is None:
        r = compute()
        if len(_RAW_THRESHOLDS_CACHE) >= _RAW_THRESHOLDS_CACHE_SIZE:
            _RAW_THRESHOLDS_CACHE.pop(next(iter(_RAW_THRESHOLDS_CACHE)))
        _RAW_THRESHOLDS_CACHE[key] = r
    return r.copy()


def _float_key(x: float) -> int:
    """An integer that orders float64 values as they compare (-0.0 and 0.0 alike); its own inverse
    through _key_float."""
    v = int(np.array(x, dtype=np.float64).view(np.int64))
    return v if v >= 0 else -(2 ** 63) - v


def _key_float(k: int) -> float:
    v = k if k >= 0 else -(2 ** 63) - k
    return float(np.array(v, dtype=np.int64).view(np.float64))


def _bisect_edge(passes, r: float) -> float:
    """The largest float p with passes(p) False, for a monotone passes (False below, True above),
    searching outwards from r; -inf when every float passes, inf when none does."""
    lo_bound, hi_bound = _float_key(-np.inf), _float_key(np.inf)
    k, step = _float_key(r), 1
    if passes(r):                   # r too high: find lo below with passes False
        hi = k
        while True:
            lo = max(hi - step, lo_bound)
            if not passes(_key_float(lo)):
                break
            if lo == lo_bound:
                return -np.inf
            hi, step = lo, step * 2
    else:                           # r too low: find hi above with passes True
        lo = k
        while True:
            hi = min(lo + step, hi_bound)
            if passes(_key_float(hi)):
                break
            if hi == hi_bound:
                return np.inf
            lo, step = hi, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(_key_float(mid)):
            hi = mid
        else:
            lo = mid
    return _key_float(lo)


@dataclass
class AffineLogitMap:
    """p' = sigmoid(a[c] * logit(p) + b[c]); a (C,) > 0, b (C,)."""

    kind: str
    a: np.ndarray
    b: np.ndarray

    # what the `calibrator` block of a logit-affine map may hold (checked in map_from_artifact)
    _artifact_constraints = {
        "kind": Str(AFFINE_KINDS),
        "a": Array(Real(0, MAX_SLOPE, low_open=True), length=PER_CLASS, min_len=1),
        "b": Array(Real(-MAX_BIAS, MAX_BIAS), length=PER_CLASS, min_len=1, same_length_as="a"),
        "selection": Optional(AnyObject()),
    }

    def __post_init__(self):
        self.a = np.asarray(self.a, dtype=np.float64).reshape(-1)
        self.b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        if self.kind not in AFFINE_KINDS:
            raise ValueError(f"unknown logit-affine kind {self.kind!r}")
        if self.a.shape != self.b.shape or self.a.size == 0:
            raise ValueError("a and b must be non-empty and of equal length (one per class)")
        if not (np.all(np.isfinite(self.a)) and np.all(np.isfinite(self.b)) and np.all(self.a > 0)):
            raise ValueError("a must be finite and > 0 (monotone increasing), b finite")

    @property
    def num_classes(self) -> int:
        return self.a.size

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.a == 1.0) and np.all(self.b == 0.0))

    def transform(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """scores (...,) raw probabilities, classes (...,) int -> (...,) calibrated, scores' dtype."""
        scores = np.asarray(scores)
        if self.is_identity:
            return scores.copy()
        dtype = scores.dtype if scores.dtype in (np.float32, np.float64) else np.float64
        a = self.a.astype(dtype)[classes]
        b = self.b.astype(dtype)[classes]
        return sigmoid(a * logit(scores.astype(dtype)) + b)

    def raw_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """Per-class calibrated thresholds t (C,) -> raw thresholds r (C,): p' > t  <=>  p > r.

        -inf: every score survives (t is below the calibrated value at p = EPS);
        +inf: none does.
        """
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if self.is_identity:
            return t.copy()
        return _cached_raw_thresholds((self.kind, self.a, self.b), t, lambda: self._raw_thresholds(t))

    def _raw_thresholds(self, t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            z = (np.log(t) - np.log1p(-t) - self.b) / self.a
        r = sigmoid(z)
        r = np.where(t <= 0, -np.inf, r)
        r = np.where(t >= 1, np.inf, r)
        r = np.where(r < EPS, -np.inf, r)          # below the clip every score maps to f(EPS) > t
        r = np.where(r >= 1 - EPS, np.inf, r)      # above it no score can exceed t
        return _snap_raw_thresholds(self.transform, t, r)

    def to_artifact(self) -> dict:
        return {"kind": self.kind, "a": [float(v) for v in self.a], "b": [float(v) for v in self.b]}


@dataclass
class IsotonicMap:
    """p' = interp(p, x[c], y[c]); x[c] strictly increasing, y[c] non-decreasing, <= MAX_KNOTS knots."""

    x: list
    y: list
    kind: str = ISOTONIC_KIND

    # what the `calibrator` block of an isotonic map may hold (checked in map_from_artifact)
    _artifact_constraints = {
        "kind": Str((ISOTONIC_KIND,)),
        "x": Array(Array(Real(0, 1), min_len=1, max_len=MAX_KNOTS, order="increasing"), length=PER_CLASS, min_len=1),
        "y": Array(Array(Real(0, 1), min_len=1, max_len=MAX_KNOTS, order="non_decreasing", same_length_as="x"),
                   length=PER_CLASS, min_len=1, same_length_as="x"),
        "selection": Optional(AnyObject()),
    }

    def __post_init__(self):
        self.x = [np.asarray(v, dtype=np.float64).reshape(-1) for v in self.x]
        self.y = [np.asarray(v, dtype=np.float64).reshape(-1) for v in self.y]
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError("x and y need one knot list per class")
        for c, (xc, yc) in enumerate(zip(self.x, self.y)):
            if xc.shape != yc.shape or not 1 <= xc.size <= MAX_KNOTS:
                raise ValueError(f"class {c}: x and y need 1..{MAX_KNOTS} knots of equal count")
            if np.any(np.diff(xc) <= 0) or np.any(np.diff(yc) < 0):
                raise ValueError(f"class {c}: x must increase strictly and y must not decrease")
            if not (np.all(np.isfinite(xc)) and np.all((yc >= 0) & (yc <= 1))):
                raise ValueError(f"class {c}: knots must be finite, y in [0, 1]")

    @property
    def num_classes(self) -> int:
        return len(self.x)

    @property
    def is_identity(self) -> bool:
        return False

    def padded_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """(C, K) x and y with every class padded to the longest table by repeating its last knot
        shifted right (x + 1, 2, ...), which leaves interp unchanged inside [0, 1]."""
        k = max(xc.size for xc in self.x)
        xs = np.empty((len(self.x), k))
        ys = np.empty((len(self.x), k))
        for c, (xc, yc) in enumerate(zip(self.x, self.y)):
            n = xc.size
            xs[c, :n], ys[c, :n] = xc, yc
            xs[c, n:] = max(xc[-1], 1.0) + np.arange(1, k - n + 1)
            ys[c, n:] = yc[-1]
        return xs, ys

    def transform(self, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """scores (...,) raw, classes (...,) int -> (...,) calibrated (piecewise linear), scores' dtype."""
        scores = np.asarray(scores)
        classes = np.asarray(classes)
        out = np.empty(scores.shape, dtype=scores.dtype if scores.dtype in (np.float32, np.float64) else np.float64)
        for c in np.unique(classes):
            sel = classes == c
            out[sel] = np.interp(scores[sel], self.x[c], self.y[c])
        return out

    def raw_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """Per-class calibrated thresholds t (C,) -> raw thresholds r (C,): interp(p) > t <=> p > r."""
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        params = (self.kind, *self.x, *self.y)          # one array a class each: their bytes delimit the knots
        return _cached_raw_thresholds(params, t, lambda: self._raw_thresholds(t))

    def _raw_thresholds(self, t: np.ndarray) -> np.ndarray:
        r = np.empty_like(t)
        for c, (xc, yc) in enumerate(zip(self.x, self.y)):
            if t[c] < yc[0]:
                r[c] = -np.inf
                continue
            k = int(np.searchsorted(yc, t[c], side="right")) - 1   # last knot with y <= t
            if k >= yc.size - 1:
                r[c] = np.inf
            else:
                r[c] = xc[k] + (t[c] - yc[k]) / (yc[k + 1] - yc[k]) * (xc[k + 1] - xc[k])
        return _snap_raw_thresholds(self.transform, t, r)

    def to_artifact(self) -> dict:
        return {
            "kind": self.kind,
            "x": [[float(v) for v in xc] for xc in self.x],
            "y": [[float(v) for v in yc] for yc in self.y],
        }


CalibrationMap = AffineLogitMap | IsotonicMap


def identity_map(num_classes: int) -> AffineLogitMap:
    return AffineLogitMap("identity", np.ones(num_classes), np.zeros(num_classes))


def map_from_artifact(block: dict, num_classes: int | None = None, path: str = "calibrator") -> CalibrationMap:
    """The artifact's `calibrator` block -> its map.

    Checks the block against the map class's declared constraints (one list per class when
    num_classes is given); raises ConstraintError (a ValueError) naming the key, e.g.
    `calibrator.a[3]`, and ValueError for a map whose class count differs from num_classes.
    """
    if not isinstance(block, dict):
        raise ConstraintError(path, block, "expected a JSON object")
    if block.get("kind") == "platt_box":     # box-aware: calib.artifact.box_map owns its block
        from .box_map import BoxPlattMap
        return BoxPlattMap.from_artifact(block, num_classes)
    check_block(block, {"kind": Str(KINDS)}, path)
    cls = IsotonicMap if block["kind"] == ISOTONIC_KIND else AffineLogitMap
    ctx = {} if num_classes is None else {PER_CLASS: num_classes}
    check_block(block, cls._artifact_constraints, path, **ctx)
    if cls is AffineLogitMap:
        m = AffineLogitMap(block["kind"], block["a"], block["b"])
    else:
        m = IsotonicMap(block["x"], block["y"])
    if num_classes is not None and m.num_classes != num_classes:
        raise ValueError(f"calibrator has {m.num_classes} classes, the model has {num_classes}")
    return m
