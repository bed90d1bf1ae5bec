"""Running the raw model over a dataset and collecting its detections with ground truth.

The raw detections are the reference pipeline's output at identity calibration and a low
score floor (`base_conf`), in original-image pixels: what calibration and thresholds are
fitted on, and what `eval` and `doctor` measure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import Dataset, iter_images
from .model_info import ModelInfo
from .artifact import PostprocessConfig, Preprocess
from .pipeline import Detections, postprocess
from .progress import Progress
from .runner import DetectorRunner


@dataclass
class Collected:
    """Per-image raw detections and ground truth of a dataset, in dataset order (unreadable images left out)."""

    detections: list[Detections]
    gt_boxes_xyxy: list[np.ndarray]   # (M, 4) original px
    gt_classes: list[np.ndarray]      # (M,) int64
    crowd_boxes_xyxy: list[np.ndarray]   # (R, 4) original px, COCO crowd (ignore) regions
    crowd_classes: list[np.ndarray]      # (R,) int64
    image_sizes: list[tuple[int, int]]  # (width, height)
    rows: np.ndarray                  # (n, 6) letterbox rows
    sample_indices: list[int]         # index into dataset.samples
    infer_seconds: list[float] = field(default_factory=list)   # model time per batch
    batch_sizes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.detections)


def collect_detections(
    dataset: Dataset,
    info: ModelInfo,
    preprocess: Preprocess,
    input_size: tuple[int, int],
    *,
    num_classes: int,
    base_conf: float = 0.001,
    config: PostprocessConfig = PostprocessConfig(),
    batch_size: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "running model",
    runner: DetectorRunner | None = None,
) -> Collected:
    """Run the raw model over every readable image; keep detections with raw score > base_conf."""
    import time

    runner = runner or DetectorRunner(info, preprocess, input_size, batch_size=batch_size, threads=threads)
    samples = dataset.samples
    dets, gtb, gtc, crb, crc, sizes, rows, idxs, secs, bss = [], [], [], [], [], [], [], [], [], []
    thresholds = np.full(num_classes, base_conf)

    def images():
        pos = {id(s): i for i, s in enumerate(samples)}
        for sample, img in iter_images(dataset, workers=2):
            yield pos[id(sample)], img

    with Progress(len(samples), desc, enabled=progress) as bar:
        gen = runner.run(images(), label=str(dataset.source))
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(gen)
            except StopIteration:
                break
            secs.append(time.perf_counter() - t0)
            bss.append(len(batch.indices))
            out = postprocess(batch.raw, info.layout, batch.rows, None, thresholds, config)
            for i, d, row in zip(batch.indices, out, batch.rows):
                s = samples[i]
                w, h = int(row[0]), int(row[1])
                dets.append(d)
                gtb.append(s.gt_boxes_xyxy_px(w, h))
                gtc.append(np.asarray(s.gt_classes, dtype=np.int64))
                crb.append(s.crowd_boxes_xyxy_px(w, h))
                crc.append(np.asarray(s.crowd_classes, dtype=np.int64))
                sizes.append((w, h))
                rows.append(row)
                idxs.append(i)
            bar.update(len(batch.indices))
    return Collected(dets, gtb, gtc, crb, crc, sizes, np.asarray(rows).reshape(-1, 6), idxs, secs, bss)
