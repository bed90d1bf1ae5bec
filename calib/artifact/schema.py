"""The calibration artifact (`calibration.json`): its schema, validation, loading and saving.

    format        "detcal.calibration"
    version       schema version (int, FORMAT_VERSION)
    detcal_version, created
    model         {sha256, file, input_name, input_size [H, W], input_dtype (float32 | float16 | uint8),
                   input_layout (NCHW | NHWC; absent in older files: NCHW), output_name,
                   layout, num_classes, class_names, head (yolox_raw / gfl_multilevel / detr only:
                   outputs in decode order, recognition, strides, reg_max, counts, ...)}
    preprocess    Preprocess.to_artifact(): {resize, pad_value, channel_order, scaling, placement}
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
from .configs import INPUT_DTYPES, INPUT_LAYOUTS, PostprocessConfig, Preprocess
from .constraints import PER_CLASS, AnyObject, Array, Bool, ConstraintError, Int, Optional, Real, Str, check_block
from .interface import LAYOUTS
from .version import DETCAL_VERSION

FORMAT = "detcal.calibration"
FORMAT_VERSION = 1
MAX_INPUT_SIDE = 16_384
MAX_CLASSES = 100_000

# the blocks without a class of their own on this side of the contract: declared here, once
MODEL_CONSTRAINTS = {
    "sha256": Str(),
    "file": Optional(Str()),
    "input_name": Optional(Str()),
    "input_size": Array(Int(1, MAX_INPUT_SIDE), length=2),
    "input_dtype": Optional(Str(INPUT_DTYPES)),
    "input_layout": Optional(Str(INPUT_LAYOUTS)),
    "output_name": Optional(Str()),
    "layout": Str(LAYOUTS),
    "num_classes": Int(1, MAX_CLASSES),
    "class_names": Optional(Array(Str(), length=PER_CLASS)),
}
THRESHOLDS_CONSTRAINTS = {       # the block RejectionThresholds.to_artifact writes
    "score": Array(Real(0, 1), length=PER_CLASS),
    "max_negative_rate": Optional(Real(0, 1)),
    "confidence": Optional(Real(0, 1)),
    "certified_bound": Optional(Real(0, 1)),
    "negative_rate": Optional(Real(0, 1)),
    "certified": Optional(Bool()),
    "n_negative_images": Optional(Real(0)),
    "note": Optional(Str()),
}
TOP_CONSTRAINTS = {
    "detcal_version": Optional(Str()),
    "created": Optional(Str()),
    "model": AnyObject(),
    "preprocess": AnyObject(),
    "calibrator": AnyObject(),
    "thresholds": AnyObject(),
    "nms": AnyObject(),
    "metrics": Optional(AnyObject()),
    "data": Optional(AnyObject()),
}


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
        """Validate and parse; raises DetcalError (one line) naming `source`, the key (a JSON path
        such as `calibrator.a[3]`) and the value. Every block is checked against its declared
        constraints (`calib.artifact.constraints`): types, one value per class, finite values,
        ranges, knot order, a known format and a supported version."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format", "(missing)") if isinstance(d, dict) else f"a JSON {type(d).__name__}"
            raise DetcalError(f"{source}: not a detcal calibration file (format = {found!r}, "
                              f"expected \"format\": \"{FORMAT}\")"[:300])
        version = d.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise DetcalError(f"{source}: version = {version!r}: unsupported version; this detcal reads "
                              f"version 1..{FORMAT_VERSION}"[:300])
        try:
            check_block(d, TOP_CONSTRAINTS, "")
            check_block(d["model"], MODEL_CONSTRAINTS, "model", num_classes=d["model"].get("num_classes"))
            c = d["model"]["num_classes"]
            check_block(d["thresholds"], THRESHOLDS_CONSTRAINTS, "thresholds", **{PER_CLASS: c})
            calibration = map_from_artifact(d["calibrator"], c, "calibrator")
            preprocess = Preprocess.from_artifact(d["preprocess"], "preprocess")
            nms = PostprocessConfig.from_artifact(d["nms"], "nms")
        except ConstraintError as exc:
            raise DetcalError(f"{source}: {exc}") from None
        except ValueError as exc:          # a cross-field rule of a config's own __post_init__
            raise DetcalError(f"{source}: {exc}") from None
        return cls(
            model=d["model"],
            preprocess=preprocess,
            calibration=calibration,
            thresholds=d["thresholds"],
            nms=nms,
            metrics=d.get("metrics") or {},
            selection=d["calibrator"].get("selection") or {},
            extra=d.get("data") or {},
            created=d.get("created") or "",
        )

    def save(self, path: str | Path) -> Path:
        """Atomic write (temp file + rename)."""
        return atomic_write_json(path, to_jsonable(self.to_dict()))


def load_artifact(path: str | Path) -> Artifact:
    """Read and validate a calibration.json; DetcalError (one line, naming the file) when it is bad."""
    p = Path(path)
    if not p.exists():
        raise DetcalError(f"calibration file not found: {p}")
    if p.is_dir():
        raise DetcalError(f"{p}: is a directory, expected a calibration.json file")
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise DetcalError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not text.strip():
        raise DetcalError(f"{p}: empty file, expected a calibration.json from `detcal fit`")
    try:
        d = json.loads(text.decode("utf-8-sig"))        # a BOM, as some editors save it, is no error
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:    # JSONDecodeError is a ValueError
        raise DetcalError(f"{p}: not valid JSON ({str(exc)[:200]})") from None
    return Artifact.from_dict(d, source=str(p))
