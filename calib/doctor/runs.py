"""Running the raw model for the doctor: the runs at the serving and native sizes, serving emulated on fixed-size models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..collect import Collected, collect_detections
from ..errors import DetcalError
from ..fitting import match_collected
from ..layouts import decode
from ..artifact import PAD_LEFT, PAD_TOP
from ..letterbox import letterbox_image
from ..matching import MatchedDetections
from ..metrics import summarize
from ..model_info import ModelInfo
from ..preprocess import Preprocess, preprocess_image
from ..runner import DetectorRunner


def embed_at_serve_size(image: np.ndarray, serve_size: tuple[int, int], input_size: tuple[int, int],
                        pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Emulate serving at a smaller size on a fixed-size model.

    image (h, w, 3) uint8 -> ((H, W, 3) float32 canvas of the model's input size, letterbox row (6,)).
    The image is letterboxed into serve_size (S_h, S_w) and that canvas is centred in the input
    (H, W), padded with ``pre.pad_value``; the row maps input px to original px, so the content
    region it describes is the image only (the serving bars and the extra border are padding).
    """
    sh, sw = int(serve_size[0]), int(serve_size[1])
    ih, iw = int(input_size[0]), int(input_size[1])
    if sh > ih or sw > iw:
        raise ValueError(f"serving size {sh}x{sw} does not fit in the input {ih}x{iw}")
    small, row = letterbox_image(image, (sh, sw), mode=pre.resize, pad_value=pre.pad_value)
    canvas = np.full((ih, iw, 3), pre.pad_value, dtype=small.dtype)   # float32: no rounding between the two
    top, left = (ih - sh) // 2, (iw - sw) // 2
    canvas[top:top + sh, left:left + sw] = small
    row = row.copy()
    row[PAD_LEFT] += left
    row[PAD_TOP] += top
    return canvas, row


class DoctorRunner(DetectorRunner):
    """DetectorRunner that can emulate a smaller serving size inside a fixed input and counts,
    per image, the candidates above `count_conf` before NMS (best class per box)."""

    def __init__(self, info: ModelInfo, preprocess: Preprocess, input_size, *, emulate_size=None,
                 count_conf: float = 0.25, **kw):
        super().__init__(info, preprocess, input_size, **kw)
        self.emulate_size = tuple(emulate_size) if emulate_size is not None else None
        self.count_conf = float(count_conf)
        self.candidates: dict[int, int] = {}

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image (h, w, 3) uint8 -> (model input (3, H, W) float32, row (6,)), as this runner feeds the model."""
        if self.emulate_size is None:
            return preprocess_image(image, self.input_size, self.preprocess)
        canvas, row = embed_at_serve_size(image, self.emulate_size, self.input_size, self.preprocess)
        x, _ = preprocess_image(canvas, self.input_size, self.preprocess)
        return x, row

    def run(self, images: Iterable[tuple[int, np.ndarray]], label: str = ""):
        rows: dict[int, np.ndarray] = {}

        def feed():
            for idx, img in images:
                if self.emulate_size is not None:
                    img, rows[idx] = embed_at_serve_size(img, self.emulate_size, self.input_size, self.preprocess)
                yield idx, img

        for batch in super().run(feed(), label):
            if self.emulate_size is not None:   # the canvas is the input size: replace its identity rows
                batch.rows = np.stack([rows.pop(i) for i in batch.indices])
            for i, n in zip(batch.indices, candidate_counts(batch.raw, self.info.layout, self.count_conf)):
                self.candidates[i] = int(n)
            yield batch


def candidate_counts(raw: np.ndarray, layout: str, conf: float) -> np.ndarray:
    """Raw head output (B, ...) -> (B,) number of boxes whose best class score is > conf (pre-NMS)."""
    dec = decode(raw, layout)
    best = dec.scores.max(axis=2) if dec.is_dense else dec.scores
    return (best > conf).sum(axis=1)


@dataclass
class Run:
    size: tuple[int, int]
    emulated: bool
    collected: Collected
    matched: MatchedDetections
    metrics: dict
    runner: DoctorRunner


def run_model(dataset, info, pre, size, num_classes, opts, *, emulate_size=None, batch_size=None, threads=None,
         progress=True, desc="running model", session=None) -> Run:
    runner = DoctorRunner(info, pre, size, emulate_size=emulate_size, count_conf=opts.conf,
                           batch_size=batch_size, threads=threads, session=session)
    collected = collect_detections(dataset, info, pre, size, num_classes=num_classes, base_conf=opts.base_conf,
                                   config=opts.postprocess, progress=progress, desc=desc, runner=runner)
    if len(collected) == 0:
        raise DetcalError(f"{dataset.source}: no readable image")
    matched = match_collected(collected, num_classes, opts.match_iou)
    metrics = summarize(matched, opts.conf, high_score=opts.high_score)
    shown = tuple(emulate_size) if emulate_size is not None else tuple(size)
    return Run(shown, emulate_size is not None, collected, matched, metrics, runner)
