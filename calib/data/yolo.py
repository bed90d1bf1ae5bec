"""YOLO txt labels: where they are (Ultralytics' rule), parsing and validating them."""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DetcalError
from .files import read_text
from .types import EDGE_TOL, LabelReport, Sample


# a normalised coordinate, centre or size, this far beyond [0, 1] is no annotation slip: pixels
PIXEL_LIKE = 2.0


def label_path_for(image_path: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``.

    With no ``images`` folder in the path the label file sits beside the image.
    """
    parts = image_path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def _find_label_file(image_path: Path) -> Path | None:
    primary = label_path_for(image_path)
    if primary.is_file():
        return primary
    beside = image_path.with_suffix(".txt")
    if beside != primary and beside.is_file():
        return beside
    return None


def _parse_yolo_label(path: Path, num_classes: int, report: LabelReport) -> tuple[np.ndarray, np.ndarray]:
    """Parse one YOLO txt file -> (boxes (M, 4) xyxy normalised, classes (M,) int64), validated."""
    rows: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    lines: list[int] = []
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        n = len(fields)
        if n != 5 and not (n >= 7 and n % 2 == 1):
            raise DetcalError(
                f"{where}: expected 5 fields 'class cx cy w h' (or a class and a polygon), found {n}: {raw.strip()!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DetcalError(f"{where}: not a number in {raw.strip()!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise DetcalError(f"{where}: NaN or infinite value in {raw.strip()!r}")
        cls_f = values[0]
        if cls_f != int(cls_f):
            raise DetcalError(f"{where}: class id {fields[0]} is not an integer")
        cls = int(cls_f)
        if max(abs(v) for v in values[1:]) > PIXEL_LIKE:
            raise DetcalError(f"{where}: coordinate {max(values[1:], key=abs):g} in {raw.strip()!r}: YOLO labels are "
                              "normalised to [0, 1] of the image (x / width, y / height); these look like pixels")
        if not 0 <= cls < num_classes:
            raise DetcalError(
                f"{where}: class id {cls} out of range, the dataset has {num_classes} classes (0..{num_classes - 1})")
        if n == 5:
            cx, cy, w, h = values[1:]
            if w < 0 or h < 0:
                raise DetcalError(f"{where}: negative box width or height in {raw.strip()!r}")
            rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        else:
            xs, ys = values[1::2], values[2::2]
            rows.append((min(xs), min(ys), max(xs), max(ys)))
            report.n_polygon_boxes += 1
            report.note("polygon", f"{where}: polygon of {len(xs)} points, its bounding box is used")
        classes.append(cls)
        lines.append(lineno)
    if not rows:
        return np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)
    where = [f"{path}:{ln}" for ln in lines]
    return clean_boxes(np.array(rows, dtype=np.float64), np.array(classes, dtype=np.int64), where, report)


def clean_boxes(boxes: np.ndarray, classes: np.ndarray, where: list[str],
                 report: LabelReport) -> tuple[np.ndarray, np.ndarray]:
    """Clip normalised xyxy boxes to [0, 1], drop zero-size and duplicate ones, counting each in ``report``."""
    outside = ((boxes < -EDGE_TOL) | (boxes > 1 + EDGE_TOL)).any(axis=1)
    for i in np.flatnonzero(outside):
        report.note("clipped", f"{where[i]}: box {_fmt_box(boxes[i])} reaches outside the image, clipped")
    report.n_clipped_boxes += int(outside.sum())
    boxes = np.clip(boxes, 0.0, 1.0)
    zero = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    for i in np.flatnonzero(zero):
        report.note("zero", f"{where[i]}: zero-size box {_fmt_box(boxes[i])} after clipping, dropped")
    report.n_dropped_zero_size += int(zero.sum())
    keep = ~zero
    boxes, classes, where = boxes[keep], classes[keep], [w for w, k in zip(where, keep) if k]
    if len(boxes) > 1:
        keyed = np.concatenate([classes[:, None].astype(np.float64), boxes], axis=1)
        _, first = np.unique(keyed, axis=0, return_index=True)
        if len(first) < len(boxes):
            first = np.sort(first)
            dup = np.setdiff1d(np.arange(len(boxes)), first)
            for i in dup:
                report.note("duplicate", f"{where[i]}: duplicate of another box of the same class, dropped")
            report.n_duplicate_boxes += len(dup)
            boxes, classes = boxes[first], classes[first]
    return boxes, classes


def _fmt_box(b: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in b) + "]"


def samples_from_yolo(images: Iterable[Path], names: list[str], report: LabelReport) -> list[Sample]:
    """Build sorted, de-duplicated samples with their YOLO labels; fills ``report``."""
    unique = sorted({Path(os.path.normpath(p)) for p in images}, key=str)
    samples = []
    for img in unique:
        label = _find_label_file(img)
        if label is None:
            report.n_missing_label_files += 1
            report.note("missing", f"{img}: no label file ({label_path_for(img)}), taken as a negative scene")
            boxes, classes = np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)
        else:
            boxes, classes = _parse_yolo_label(label, len(names), report)
        samples.append(Sample(img, boxes, classes, label))
    if samples and report.n_missing_label_files == len(samples):
        report.details.insert(0, f"no label file found for any image, e.g. expected {label_path_for(samples[0].image_path)}")
    return samples
