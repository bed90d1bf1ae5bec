"""Build `calib.artifact.Artifact` objects in code, for the patch tests and the benchmark."""
from __future__ import annotations

import numpy as np

from calib.artifact import Artifact
from calib.calibration_map import AffineLogitMap, IsotonicMap, identity_map
from calib.pipeline import PostprocessConfig
from calib.preprocess import Preprocess

CALIBRATORS = ("identity", "temperature", "platt_per_class", "isotonic_per_class")


def make_calibration(kind: str, num_classes: int, rng: np.random.Generator | None = None, knots: int = 8):
    """A plausible fitted map of `kind` for `num_classes` classes (random but monotone)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "identity":
        return identity_map(num_classes)
    if kind == "temperature":
        t = float(rng.uniform(0.6, 2.0))
        return AffineLogitMap("temperature", np.full(num_classes, 1 / t), np.zeros(num_classes))
    if kind == "temperature_per_class":
        return AffineLogitMap(kind, 1 / rng.uniform(0.6, 2.0, num_classes), np.zeros(num_classes))
    if kind == "platt_per_class":
        return AffineLogitMap(kind, rng.uniform(0.5, 2.0, num_classes), rng.uniform(-1.5, 1.0, num_classes))
    if kind == "isotonic_per_class":
        xs, ys = [], []
        for _ in range(num_classes):
            k = int(rng.integers(1, knots + 1))
            x = np.sort(rng.choice(np.linspace(0.0, 1.0, 257), size=k, replace=False))
            y = np.sort(rng.uniform(0, 1, k))
            if k > 2:  # a flat stretch, as isotonic fits have
                y[1] = y[0]
            xs.append(x)
            ys.append(y)
        return IsotonicMap(xs, ys)
    raise ValueError(kind)


def make_artifact(
    num_classes: int = 80, *, calibrator="platt_per_class", thresholds=0.25, layout: str = "xywh_cls",
    sha256: str = "", input_size=(640, 640), seed: int = 0, **nms,
) -> Artifact:
    """An Artifact as `detcal fit` would write it. `calibrator`: a kind name or a CalibrationMap."""
    rng = np.random.default_rng(seed)
    cmap = make_calibration(calibrator, num_classes, rng) if isinstance(calibrator, str) else calibrator
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (num_classes,))
    return Artifact(
        model={"sha256": sha256, "input_name": "images", "input_size": list(input_size), "layout": layout,
               "num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)]},
        preprocess=Preprocess(),
        calibration=cmap,
        thresholds={"score": [float(t) for t in thr], "max_negative_rate": 0.01},
        nms=PostprocessConfig(**nms),
    )


def near_identity_platt(num_classes: int, seed: int = 0) -> AffineLogitMap:
    """Per-class Platt close to identity (a ~ 1, b ~ 0), as fits on a decent detector look."""
    rng = np.random.default_rng(seed)
    return AffineLogitMap("platt_per_class", rng.uniform(0.9, 1.1, num_classes), rng.uniform(-0.2, 0.2, num_classes))
