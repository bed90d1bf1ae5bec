"""The calibration artifact (`calibration.json`): its schema, validation, loading and saving.

    format        "detcal.calibration"
    version       schema version (int, FORMAT_VERSION)
    detcal_version, created
    model         {sha256, file, input_name, input_size [H, W], input_dtype, output_name,
                   layout, num_classes, class_names}
    preprocess    Preprocess.to_artifact(): {resize, pad_value, channel_order, scaling}
    calibrator    CalibrationMap.to_artifact(): {kind, a, b} or {kind, x, y}, plus `selection`
    thresholds    {score: [C], max_negative_rate, confidence, certified_bound, negative_rate,
                   certified, n_negative_images, note}
    nms           PostprocessConfig.to_artifact()
    metrics       {before, after} cross-validated numbers, and anything else the fit reports
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json
from ..errors import DetcalError
from ..jsonable import to_jsonable
from .calibration_map import CalibrationMap, map_from_artifact
from .configs import PostprocessConfig, Preprocess
from .interface import LAYOUTS
from .version import DETCAL_VERSION

FORMAT = "detcal.calibration"
FORMAT_VERSION = 1


@dataclass
class Artifact:
    model: dict
    preprocess: Preprocess
    calibration: CalibrationMap
    thresholds: dict                       # the `thresholds` block; `score` is the per-class list
    nms: PostprocessConfig
    metrics: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)   # calibrator choice report (CV log-loss...)
    extra: dict = field(default_factory=dict)       # data summary, label report, ...
    created: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.model["num_classes"])

    @property
    def score_thresholds(self) -> np.ndarray:
        return np.asarray(self.thresholds["score"], dtype=np.float64)

    def to_dict(self) -> dict:
        calibrator = self.calibration.to_artifact()
        if self.selection:
            calibrator["selection"] = self.selection
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "detcal_version": DETCAL_VERSION,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": self.model,
            "preprocess": self.preprocess.to_artifact(),
            "calibrator": calibrator,
            "thresholds": self.thresholds,
            "nms": self.nms.to_artifact(),
            "metrics": self.metrics,
            **({"data": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> "Artifact":
        """Validate and parse; raises DetcalError naming `source` and the offending key."""
        def bad(msg):
            return DetcalError(f"{source}: {msg}")

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"not a detcal calibration file (expected \"format\": \"{FORMAT}\")")
        if not isinstance(d.get("version"), int) or d["version"] > FORMAT_VERSION:
            raise bad(f"unsupported version {d.get('version')!r}; this detcal reads up to {FORMAT_VERSION}")
        for key in ("model", "preprocess", "calibrator", "thresholds", "nms"):
            if not isinstance(d.get(key), dict):
                raise bad(f"missing or malformed block {key!r}")
        model = d["model"]
        for key in ("sha256", "input_size", "layout", "num_classes"):
            if key not in model:
                raise bad(f"model block lacks {key!r}")
        c = model["num_classes"]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise bad(f"model.num_classes must be a positive integer, got {c!r}")
        size = model["input_size"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise bad(f"model.input_size must be [H, W] in pixels, got {size!r}")
        if model["layout"] not in LAYOUTS:
            raise bad(f"model.layout {model['layout']!r} is not one of {', '.join(LAYOUTS)}")
        names = model.get("class_names")
        if names is not None and (not isinstance(names, list) or len(names) != c):
            raise bad(f"model.class_names must list {c} names")
        for key, parse in (("calibrator", lambda b: map_from_artifact(b, c)),
                           ("preprocess", Preprocess.from_artifact),
                           ("nms", PostprocessConfig.from_artifact)):
            try:
                parsed = parse(d[key])
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise bad(f"invalid {key} block: {exc}") from None
            if key == "calibrator":
                calibration = parsed
            elif key == "preprocess":
                preprocess = parsed
            else:
                nms = parsed
        scores = d["thresholds"].get("score")
        if not isinstance(scores, list) or len(scores) != c or not all(isinstance(v, (int, float)) for v in scores):
            raise bad(f"thresholds.score must be a list of {c} numbers")
        extra = d.get("data", {})
        return cls(
            model=model,
            preprocess=preprocess,
            calibration=calibration,
            thresholds=d["thresholds"],
            nms=nms,
            metrics=d.get("metrics", {}),
            selection=d["calibrator"].get("selection", {}),
            extra=extra,
            created=d.get("created", ""),
        )

    def save(self, path: str | Path) -> Path:
        """Atomic write (temp file + rename)."""
        return atomic_write_json(path, to_jsonable(self.to_dict()))


def load_artifact(path: str | Path) -> Artifact:
    """Read and validate a calibration.json; DetcalError (one line, naming the file) when it is bad."""
    """Read and validate a calibration.json; DetcalError (one line, naming the file) when it is bad."""
    p = Path(path)
    if not p.exists():
        raise DetcalError(f"calibration file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DetcalError(f"{p}: not valid JSON ({exc})") from None
    return Artifact.from_dict(d, source=str(p))
