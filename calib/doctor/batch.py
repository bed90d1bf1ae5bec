"""Check batch_coupling: whether an image's scores depend on the other images run with it.

Only for models whose batch axis lets several images run together and that scale an activation over
the whole tensor (ModelInfo.batch_coupled: onnxruntime's dynamic quantization computes one uint8
scale per tensor, batch included). Measured: the first readable images run one per call, then as one
batch; the largest score change and how many scores cross the deployment threshold.
"""
from __future__ import annotations

import numpy as np

from ..data import Dataset
from ..errors import DetcalError
from ..images import read_image_rgb
from ..layouts import decode
from ..model_info import ModelInfo
from .report import Check, DoctorOptions
from .runs import Run

NAME = "batch_coupling"


def _scores(raw: np.ndarray, layout: str) -> np.ndarray:
    """Raw head output (B, ...) -> its decoded scores (B, N, C) dense or (B, K) end2end."""
    return np.asarray(decode(raw, layout).scores, dtype=np.float64)


def check_batch_coupling(main: Run, dataset: Dataset, info: ModelInfo, opts: DoctorOptions,
                         n_images: int = 8) -> Check:
    """Run up to n_images images alone and together (dynamic batch axis): status warn when a score crosses
    opts.conf between the two (severity high from 1% of the scores above it, else medium), or moves
    by more than 0.01; ok otherwise."""
    runner = main.runner
    if not info.dynamic_batch:
        b = int(info.input_shape[0] or 1)
        return Check(NAME, "warn", "medium",
                     f"dynamically quantized with a batch fixed at {b}: each image's scores depend on the other "
                     f"{b - 1} of its batch (and on the zero images that pad a last, short one)",
                     {"batch": b}, "quantize statically (calibrated QDQ scales), or export with batch 1")
    xs = []
    for sample in dataset.samples:
        if len(xs) == n_images:
            break
        try:
            img = read_image_rgb(sample.image_path)
        except DetcalError:
            continue
        xs.append(runner.prepare(img)[0])
    if len(xs) < 2:
        return Check(NAME, "skipped", "none", "fewer than 2 readable images to run together", {})
    x = np.stack(xs)
    alone = np.concatenate([_scores(runner.run_tensor(x[i:i + 1]), info.layout) for i in range(len(x))])
    together = _scores(runner.run_tensor(x), info.layout)
    moved = np.abs(together - alone)
    above = alone > opts.conf
    crossed = int(((together > opts.conf) != above).sum())
    share = crossed / max(int(above.sum()), 1)
    ev = {"n_images": len(x), "score_change_max": float(moved.max()),
          "score_change_max_median_over_images": float(np.median(moved.reshape(len(x), -1).max(axis=1))),
          "conf": opts.conf, "n_above_conf_alone": int(above.sum()), "n_crossing_conf": crossed,
          "run_batch_size": runner.batch_size}
    finding = (f"dynamically quantized: {len(x)} images run together instead of one by one move scores by up to "
               f"{moved.max():.3f}; {crossed} of {int(above.sum())} scores above {opts.conf:g} alone end up on the "
               "other side of it")
    fix = ("serve one image per call (detcal fit, eval and doctor run it so by default), or quantize statically "
           "(calibrated QDQ scales do not depend on the batch)")
    if crossed:
        return Check(NAME, "warn", "high" if share >= 0.01 else "medium", finding, ev, fix)
    if moved.max() > 0.01:
        return Check(NAME, "warn", "low", finding, ev, fix)
    return Check(NAME, "ok", "none", finding, ev)
