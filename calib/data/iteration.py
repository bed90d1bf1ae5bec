"""``iter_images``: decode a data set's images, skipping unreadable ones (at most 5%)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetcalError
from ..images import UnreadableImage, read_image_rgb
from .types import MAX_UNREADABLE_FRAC, Dataset, Sample


def iter_images(
    dataset: Dataset,
    *,
    transform: Callable[[np.ndarray], Any] | None = None,
    workers: int = 0,
    max_unreadable_frac: float = MAX_UNREADABLE_FRAC,
    samples: list[Sample] | None = None,
) -> Iterator[tuple[Sample, Any]]:
    """Yield ``(sample, image)`` in dataset order, skipping images that cannot be read.

    image is the (H, W, 3) uint8 RGB array (EXIF-oriented), or ``transform(array)`` when given
    (e.g. letterbox + tensor, so that it runs in the worker threads too).
    workers: decode in this many threads (Pillow releases the GIL while decoding); 0 = in the caller.
    samples: iterate these instead of all of ``dataset.samples`` (the 5% rule then applies to them).

    Unreadable images are recorded in ``dataset.report`` (count, and a few examples in details).
    As soon as more than ``max_unreadable_frac`` of the images are known to be unreadable, raises
    DetcalError: "12 of 100 images (12%) could not be read, e.g. path: reason".
    Errors raised by ``transform`` are not caught (they are not about the file).
    """
    todo = dataset.samples if samples is None else samples
    total = len(todo)
    report = dataset.report
    failed: list[tuple[Path, str]] = []
    allowed = max_unreadable_frac * total

    def load(s: Sample):
        try:
            rgb = read_image_rgb(s.image_path)
        except UnreadableImage as exc:
            return s, None, f"{exc.path}: {exc.reason}"
        if s.labelled_size is not None and tuple(s.labelled_size) != (rgb.shape[1], rgb.shape[0]):
            # its boxes were normalised by the labels' size: on this image they would be misplaced
            lw, lh = s.labelled_size
            return s, None, (f"{s.image_path}: labelled as {lw:g}x{lh:g} (COCO width/height) but the image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}{' after its EXIF rotation' if (lw, lh) == (rgb.shape[0], rgb.shape[1]) else ''}; "
                             "its boxes would be misplaced")
        return s, (transform(rgb) if transform is not None else rgb), None

    def record(s: Sample, reason: str, done: int) -> None:
        failed.append((s.image_path, reason))
        key = str(s.image_path)
        if key not in report.unreadable:
            report.unreadable[key] = reason
            report.note("unreadable", f"{reason} (image skipped)")
        report.n_unreadable_images = len(report.unreadable)
        if len(failed) > allowed:
            pct = 100.0 * len(failed) / total
            example = failed[0][1]
            if done < total:   # already over the limit whatever the rest holds: stop early
                raise DetcalError(
                    f"at least {len(failed)} of {total} images ({pct:.0f}%) could not be read "
                    f"(more than the {max_unreadable_frac:.0%} allowed), e.g. {example}")
            raise DetcalError(f"{len(failed)} of {total} images ({pct:.0f}%) could not be read, e.g. {example}")

    if workers <= 0:
        for done, s in enumerate(todo, start=1):
            s, img, reason = load(s)
            if reason is not None:
                record(s, reason, done)
                continue
            yield s, img
        return

    # Bounded look-ahead: at most 2 * workers images decoded ahead of the consumer.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detcal-read")
    pending = []
    try:
        it = iter(todo)
        for s in it:
            pending.append(pool.submit(load, s))
            if len(pending) >= 2 * workers:
                break
        done = 0
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            s, img, reason = fut.result()
            done += 1
            if reason is not None:
                record(s, reason, done)
                continue
            yield s, img
    finally:
        # no join: a consumer that stops early may drop this generator anywhere, and when the garbage
        # collector closes it on one of the pool's own threads, joining would join that thread itself
        # ("cannot join current thread"); the idle workers exit on their own
        pool.shutdown(wait=False, cancel_futures=True)
