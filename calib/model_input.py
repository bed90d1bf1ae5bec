"""A model's declared image input convention, and the one adapter that feeds it.

detcal's preprocessing (calib.preprocess) makes x float32 (B, 3, H, W): NCHW, in the artifact's
scaling (pixel / 255, mean/std, or raw 0..255). Exported detectors declare other inputs too:

    dtype   float32 | float16 | uint8 (raw 0..255 pixels, e.g. TF/TFLite-style and embedded exports)
    layout  NCHW [B, 3, H, W] | NHWC [B, H, W, 3]

`InputConvention` records what the model declares (`read_input_convention`: from the declared
dims, the metadata, or an explicit override) and `feed(x)` converts x to it:

    float32  x unchanged                     float16  x.astype(float16)
    uint8    round-to-nearest-even of x, which must be raw pixels in [0, 255] (the artifact's
             scaling "none", no mean/std): exact on integer pixels, the twin of the embedded
             preprocessing's Round -> Clip -> Cast(uint8)
    NHWC     a transpose (B, 3, H, W) -> (B, H, W, 3), after the dtype step

Nothing else changes the values: a uint8 model with a /255 or mean/std scaling is a DetcalError
(`check_preprocess`), and so is a uint8 feed whose values are not pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact.configs import INPUT_DTYPES, INPUT_LAYOUTS
from .errors import DetcalError

# metadata keys an exporter may use to state the layout, and the values that mean NHWC / NCHW
LAYOUT_METADATA_KEYS = ("input_layout", "data_format")
_LAYOUT_WORDS = {"nchw": "NCHW", "channels_first": "NCHW", "nhwc": "NHWC", "channels_last": "NHWC"}
UINT8_SLACK = 0.5          # a uint8 feed may hold pixels in [-0.5, 255.5) before rounding (resampling error)


@dataclass(frozen=True)
class InputConvention:
    """What the model's image input takes: `dtype` (INPUT_DTYPES) and `layout` (INPUT_LAYOUTS)."""

    dtype: str = "float32"
    layout: str = "NCHW"

    def __post_init__(self):
        if self.dtype not in INPUT_DTYPES:
            raise ValueError(f"input dtype must be one of {INPUT_DTYPES}, got {self.dtype!r}")
        if self.layout not in INPUT_LAYOUTS:
            raise ValueError(f"input layout must be one of {INPUT_LAYOUTS}, got {self.layout!r}")

    def hw(self, dims: tuple) -> tuple:
        """The (H, W) entries of declared dims [B, 3, H, W] / [B, H, W, 3] (ints or dim_params)."""
        return (dims[2], dims[3]) if self.layout == "NCHW" else (dims[1], dims[2])

    def feed(self, x: np.ndarray, source: str = "model") -> np.ndarray:
        """x (B, 3, H, W) float32 from detcal's preprocessing -> the array the model declares
        ((B, 3, H, W) or (B, H, W, 3); float32, float16 or uint8). DetcalError (naming `source`)
        for a uint8 feed whose values are not 0..255 pixels."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, H, W), got {x.shape}")
        if self.dtype == "uint8":
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -UINT8_SLACK or hi >= 255 + UINT8_SLACK:
                raise DetcalError(f"{source}: the model takes uint8 pixels but the preprocessed input spans "
                                  f"[{lo:g}, {hi:g}], not 0..255; use --scale none without --mean/--std")
            y = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        elif self.dtype == "float16":
            y = x.astype(np.float16, copy=False)
        else:
            y = x.astype(np.float32, copy=False)
        if self.layout == "NHWC":
            y = np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        return y

    def check_preprocess(self, pre, source: str = "model") -> None:
        """A uint8 model takes raw pixels: the Preprocess (calib.artifact.Preprocess) must have
        scale "none" and no mean/std. DetcalError, one line naming `source`, otherwise."""
        if self.dtype != "uint8":
            return
        plain = tuple(pre.mean) == (0.0, 0.0, 0.0) and tuple(pre.std) == (1.0, 1.0, 1.0)
        if pre.scale != "none" or not plain:
            what = "mean/std scaling" if not plain else "the /255 scaling (--scale div255)"
            raise DetcalError(f"{source}: the model input is uint8 (raw 0..255 pixels) but the preprocessing asks "
                              f"for {what}; use --scale none without --mean/--std, the model scales its own input")

    def to_artifact(self) -> dict:
        """The model block's input keys."""
        return {"input_dtype": self.dtype, "input_layout": self.layout}


def read_input_convention(dims: tuple, dtype: str, *, metadata: dict | None = None, layout: str | None = None,
                          source: str = "model", name: str = "images") -> InputConvention:
    """The convention of an image input with declared `dims` (4 entries: ints, or dim_param / None
    where dynamic) and element type `dtype` (a numpy dtype name).

    Layout: channels 3 at axis 1 -> NCHW, at axis 3 -> NHWC; when both are dynamic, the metadata
    (LAYOUT_METADATA_KEYS: NCHW/NHWC/channels_first/channels_last) decides, else NCHW. `layout`
    overrides all of it, but must fit the dims. DetcalError (one line) for another dtype, a channel
    count other than 3, or an override the dims contradict.
    """
    where = f"{source}: image input '{name}' {list(dims)}"
    if len(dims) != 4:
        raise DetcalError(f"{where} is not 4-D; detcal feeds images [B, 3, H, W] or [B, H, W, 3]")
    if dtype not in INPUT_DTYPES:
        raise DetcalError(f"{where} is {dtype}; detcal feeds float32, float16 or uint8 image inputs")
    fits = {"NCHW": dims[1] in (3, None) or isinstance(dims[1], str),
            "NHWC": dims[3] in (3, None) or isinstance(dims[3], str)}
    if layout is not None:
        if layout not in INPUT_LAYOUTS:
            raise DetcalError(f"unknown input layout {layout!r}; supported: {', '.join(INPUT_LAYOUTS)}")
        if not fits[layout]:
            axis = 1 if layout == "NCHW" else 3
            raise DetcalError(f"{where}: the input layout {layout} needs 3 channels at axis {axis}, found {dims[axis]}")
        return InputConvention(dtype, layout)
    if dims[1] == 3:
        return InputConvention(dtype, "NCHW")
    if dims[3] == 3:
        return InputConvention(dtype, "NHWC")
    if fits["NCHW"] and fits["NHWC"]:      # both channel axes dynamic: ask the metadata, else NCHW
        return InputConvention(dtype, _metadata_layout(metadata or {}) or "NCHW")
    if fits["NCHW"] or fits["NHWC"]:
        return InputConvention(dtype, "NCHW" if fits["NCHW"] else "NHWC")
    raise DetcalError(f"{where} has {dims[1]} channels (NCHW) or {dims[3]} (NHWC); detcal feeds RGB or BGR "
                      "images with 3 channels")


def _metadata_layout(metadata: dict) -> str | None:
    for key in LAYOUT_METADATA_KEYS:
        word = str(metadata.get(key, "")).strip().lower()
        if word in _LAYOUT_WORDS:
            return _LAYOUT_WORDS[word]
    return None

