"""Calibration maps as ONNX arithmetic (the graph's twin of `calib.artifact.calibration_map`).

Every function takes and returns tensor names; constants are named `detcal/calib/...`.
Scores are probabilities in [0, 1] (or logits where a Sigmoid front was cut), broadcast over
a class axis (`shape` from `class_shape`) or paired with a per-candidate class tensor (`cls`).
"""
from __future__ import annotations

import numpy as np

from calib.artifact import EPS, IsotonicMap

from .graph_builder import BIG, INT64, GraphBuilder


def class_shape(num_classes: int, class_axis: int) -> tuple:
    """Shape that broadcasts a per-class (C,) constant over [B, C, N] (axis 1) or [B, N, C] (axis 2)."""
    return (1, num_classes, 1) if class_axis == 1 else (1, 1, num_classes)


def logit_clipped(b: GraphBuilder, p: str) -> str:
    """logit(clip(p, EPS, 1 - EPS)) as Log(p / (1 - p)) (one Log instead of two)."""
    pc = b.op("Clip", p, b.f32("calib/eps_lo", EPS), b.f32("calib/eps_hi", 1 - EPS), name="calib/clip")
    one_minus = b.op("Sub", b.f32("calib/one", 1.0), pc, name="calib/one_minus_p")
    return b.op("Log", b.op("Div", pc, one_minus, name="calib/odds"), name="calib/logit")


def calibrate_affine(b: GraphBuilder, z: str, a: np.ndarray, c: np.ndarray, shape: tuple | None, cls: str | None = None,
                     sigmoid: bool = True) -> str:
    """z (logits) -> sigmoid(a * z + c); a, c per class, broadcast to `shape` or gathered by `cls`.
    sigmoid=False stops at the calibrated logit a * z + c."""
    def per_class(tag, v):
        if np.all(v == v[0]):
            return b.f32(f"calib/{tag}", v[0])
        if cls is not None:
            return b.op("Gather", b.f32(f"calib/{tag}_table", v), cls, name=f"calib/{tag}_of_class", axis=0)
        return b.f32(f"calib/{tag}", v.reshape(shape))

    if not np.all(a == 1.0):
        z = b.op("Mul", z, per_class("a", a), name="calib/scale")
    if not np.all(c == 0.0):
        z = b.op("Add", z, per_class("b", c), name="calib/shift")
    return b.op("Sigmoid", z, name="calib/sigmoid") if sigmoid else z


def isotonic_tables(cmap: IsotonicMap) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-class knot tables for the in-graph interp, flattened (C * KP,), KP a power of two.

    X[c, k] knots (padded with BIG), Y[c, k] values, S[c, k] slopes of segment k (0 on the last
    knot and the padding); x_first, x_last (C,) to clamp p into the table's range (np.interp is
    constant outside it).
    """
    n = max(x.size for x in cmap.x)
    kp = 1
    while kp < n:
        kp *= 2
    C = cmap.num_classes
    X = np.full((C, kp), BIG, np.float64)
    Y = np.zeros((C, kp), np.float64)
    S = np.zeros((C, kp), np.float64)
    for c, (xc, yc) in enumerate(zip(cmap.x, cmap.y)):
        k = xc.size
        X[c, :k], Y[c, :k] = xc, yc
        Y[c, k:] = yc[-1]
        if k > 1:
            S[c, : k - 1] = np.diff(yc) / np.diff(xc)
    first = np.array([xc[0] for xc in cmap.x])
    last = np.array([xc[-1] for xc in cmap.x])
    return X.reshape(-1), Y.reshape(-1), S.reshape(-1), first, last, kp


def calibrate_isotonic(b: GraphBuilder, p: str, cmap: IsotonicMap, shape: tuple | None, cls: str | None = None) -> str:
    """p -> interp(p, x_c, y_c), per class: clamp, binary search for the segment, linear blend.

    Binary search over KP = 2^m knots: m rounds of (Gather knot, compare, step), all elementwise.
    """
    X, Y, S, first, last, kp = isotonic_tables(cmap)
    if cls is not None:
        lo = b.op("Gather", b.f32("calib/iso_x_first", first), cls, name="calib/iso_lo", axis=0)
        hi = b.op("Gather", b.f32("calib/iso_x_last", last), cls, name="calib/iso_hi", axis=0)
        base = b.op("Mul", cls, b.i64("calib/iso_kp", kp), name="calib/iso_base")
    else:
        lo = b.f32("calib/iso_x_first", first.reshape(shape))
        hi = b.f32("calib/iso_x_last", last.reshape(shape))
        base = b.i64("calib/iso_base", (np.arange(len(first)) * kp).reshape(shape))
    pc = b.op("Min", b.op("Max", p, lo, name="calib/iso_clamp_lo"), hi, name="calib/iso_clamp")
    xt = b.f32("calib/iso_x", X)
    j = base
    step = kp // 2
    while step >= 1:
        cand = b.op("Add", j, b.i64(f"calib/iso_step{step}", step), name="calib/iso_cand")
        take = b.le(b.op("Gather", xt, cand, name="calib/iso_knot", axis=0), pc, name="calib/iso_le")
        j = b.op("Add", j, b.op("Mul", b.cast(take, INT64, name="calib/iso_take"),
                                b.i64(f"calib/iso_stepv{step}", step), name="calib/iso_inc"), name="calib/iso_j")
        step //= 2
    x0 = b.op("Gather", xt, j, name="calib/iso_x0", axis=0)
    y0 = b.op("Gather", b.f32("calib/iso_y", Y), j, name="calib/iso_y0", axis=0)
    s0 = b.op("Gather", b.f32("calib/iso_slope", S), j, name="calib/iso_s0", axis=0)
    dx = b.op("Sub", pc, x0, name="calib/iso_dx")
    return b.op("Add", y0, b.op("Mul", s0, dx, name="calib/iso_rise"), name="calib/isotonic")
