"""Box features for box-aware calibration, in float32 arithmetic the ONNX graph repeats bit for bit.

phi(box) for a box xyxy in model-input pixels and an input of size (H, W):

    phi_0 = log(area / (W * H))                        log box area relative to the input area
    phi_1 = log(w / h)                                 log aspect ratio
    phi_2 = sqrt(((cx - W/2) / (W/2))^2 + ((cy - H/2) / (H/2))^2) / sqrt(2)
                                                       distance of the centre from the input
                                                       centre, 0 at the centre, 1 at a corner

with w, h = clip(x2 - x1, MIN_SIDE, MAX_SIDE), clip(y2 - y1, ...) so that degenerate boxes stay
finite and every log argument lies in log_f32's range (the graph then needs no clamp of its own).
phi_2 is computed as sqrt(dx^2 + dy^2), dx = (x1 + x2) / (W sqrt 2) - 1 / sqrt 2 (dy alike): the
same value, in three operations per axis fewer than the formula above.

Why not np.log: numpy's and onnxruntime's float32 Log kernels differ in the last bit on some
inputs, and a box-aware threshold is decided per candidate on a value computed from logs, so a
one-ulp difference would change which candidates survive. `log_f32` uses only operations that
IEEE 754 rounds exactly (frexp and multiplication by powers of two, +, -, *, /, comparisons), in a
fixed order, so numpy and every conforming ONNX runtime get the same bits: it *is* the definition
of the map. It is the log to within 6.5e-5 (absolute; its two-term series: a calibration feature and
a logit need no more, and each series term costs the graph two nodes), and it is nondecreasing over
all of float32: across each range-reduction boundary the series' truncation makes it step up by
about 1.2e-4, far more than the final additions' rounding can take back (with four terms the step
was below an ulp and the function fell by one ulp at 12 of its 121 boundaries).
`onnx_ops.box_calibration` builds the same values as graph nodes (its exponent by another, exact
route: ONNX has no frexp).
"""
from __future__ import annotations

import numpy as np

F = np.float32
MIN_SIDE = F(1e-2)              # px: floor on box width and height before the logs
MAX_SIDE = F(2.0 ** 20)         # px: their ceiling (the area in px^2, relative to the input, and w / h stay within 2^+-60)
LOG_MIN = F(2.0 ** -60)         # log_f32 clamps its argument into [LOG_MIN, LOG_MAX]
LOG_MAX = F(2.0 ** 60)
LN2 = F(np.log(2.0))
SQRT2 = F(np.sqrt(2.0))
SQRT_HALF = F(np.sqrt(0.5))     # also 1 / sqrt(2), the centre distance's offset
# 2 atanh(f) = f (2 + 2f^2/3 + 2f^4/5 + ...), |f| <= 0.1716 on [sqrt(1/2), sqrt(2)): two terms, whose
# remainder 2f^5/5 + ... is at most 6.0e-5 (LOG_ERROR_BOUND). The 2 sits in the coefficients (2 * float32(1/k),
# exact), which spares a multiplication and gives the same bits as 2 * f * (Horner of the 1/k)
ATANH_COEFFS = tuple(F(2) * F(1.0 / k) for k in (3, 1))
LOG_ERROR_BOUND = 6.5e-5        # |log_f32(x) - log(x)| over the clamp's range, rounding included (tests check it)
NUM_FEATURES = 3
FEATURE_NAMES = ("log_area", "log_aspect", "centre_distance")


def log_f32(x: np.ndarray) -> np.ndarray:
    """Natural log of x (...,) float32 > 0 with exactly-rounded operations only -> (...,) float32.

    x is clamped into [2^-60, 2^60], then written x = m * 2^e with m in [sqrt(1/2), sqrt(2)) (exact:
    frexp's mantissa, doubled where it is below sqrt(1/2); the pair is unique, however it is found:
    the graph estimates e with the runtime's own Log and corrects it exactly), then
    log m ~ 2 atanh((m - 1) / (m + 1)) = f * (2 + 2 f^2 / 3), log x = e ln2 + log m (within
    LOG_ERROR_BOUND of the log; nondecreasing in x, see the module doc).
    """
    x = np.clip(np.asarray(x, dtype=F), LOG_MIN, LOG_MAX)
    frac, ex = np.frexp(x)                # x = frac 2^ex, frac in [1/2, 1)
    low = frac < SQRT_HALF
    m = np.where(low, frac * F(2), frac)
    e = (ex - low).astype(F)
    f = (m - F(1)) / (m + F(1))
    f2 = f * f
    s = np.full(m.shape, ATANH_COEFFS[0], dtype=F)
    for c in ATANH_COEFFS[1:]:
        s = s * f2 + c
    return e * LN2 + f * s


def _sides_and_centre_distance(boxes_xyxy: np.ndarray, input_size: tuple[int, int]):
    """boxes (..., 4) xyxy model-input px, input_size (H, W) -> (w, h, centre distance), each (...)
    float32: the sides clamped to [MIN_SIDE, MAX_SIDE] before any log, the distance as in the module doc."""
    boxes = np.asarray(boxes_xyxy, dtype=F)
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4) xyxy, got {boxes.shape}")
    _check_size(input_size)
    _, scale_x, scale_y = feature_constants(input_size)
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    bw = np.clip(x2 - x1, MIN_SIDE, MAX_SIDE)
    bh = np.clip(y2 - y1, MIN_SIDE, MAX_SIDE)
    dx = (x1 + x2) * scale_x - SQRT_HALF
    dy = (y1 + y2) * scale_y - SQRT_HALF
    with np.errstate(over="ignore"):            # a box centre past ~1e19 px: inf, clipped like every feature
        dist = np.sqrt(dx * dx + dy * dy)
    return bw, bh, dist


def box_features_f32(boxes_xyxy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """boxes (..., 4) xyxy model-input px, input_size (H, W) -> phi (..., 3) float32 (see module doc):
    the features the fit standardises (the area relative to the input's)."""
    bw, bh, dist = _sides_and_centre_distance(boxes_xyxy, input_size)
    inv_area = feature_constants(input_size)[0]
    return np.stack([log_f32(bw * bh * inv_area), log_f32(bw / bh), dist], axis=-1)


def box_log_terms_f32(boxes_xyxy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """boxes (..., 4) xyxy model-input px, input_size (H, W) -> psi (..., 3) float32 =
    (log_f32(w h), log_f32(w / h), centre distance): phi with the area in px^2, not relative to the input
    (psi_0 = phi_0 + log(W H) up to rounding). The calibrated logit works on psi, with the input area,
    the features' mean and std folded into its constants (BoxPlattMap.folded_parameters): one
    multiplication fewer per box than phi, and the graph its standardisation's nodes."""
    bw, bh, dist = _sides_and_centre_distance(boxes_xyxy, input_size)
    return np.stack([log_f32(bw * bh), log_f32(bw / bh), dist], axis=-1)


def feature_constants(input_size: tuple[int, int]) -> tuple[np.float32, np.float32, np.float32]:
    """(1 / (W * H), 1 / (W sqrt 2), 1 / (H sqrt 2)) as float32, the constants both the reference and
    the graph use."""
    h, w = _check_size(input_size)
    return F(1.0 / (float(w) * float(h))), F(1.0 / (w * np.sqrt(2.0))), F(1.0 / (h * np.sqrt(2.0)))


def _check_size(input_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (H, W), got {input_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    return h, w
