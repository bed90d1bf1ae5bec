"""Sample, label report and data set types, and the rules validation follows.

Deployment validation sets: Ultralytics dataset YAML, a folder of images with YOLO labels, COCO JSON.

``load_dataset`` reads and validates the labels (no pixels); ``iter_images`` decodes the images,
skipping unreadable ones with a count in the report and stopping when more than 5% fail.

Label validation, as a careful user would do it by hand:

- a class id outside [0, len(names)), a line with the wrong number of fields, a non-number,
  NaN/inf or a negative width/height: DetcalError naming file and line;
- a box reaching outside the image: clipped to [0, 1] and counted (``n_clipped_boxes``);
- a box with no area after clipping: dropped and counted (``n_dropped_zero_size``);
- an exact duplicate of a box in the same file: dropped and counted (``n_duplicate_boxes``), as
  Ultralytics does, since it could never be matched;
- a YOLO segmentation line (class and a polygon of >= 3 points): its bounding box is used, counted
  (``n_polygon_boxes``), as Ultralytics does;
- an empty label file, or none at all, is a negative scene (missing files counted separately).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetcalError
from ..images import IMAGE_EXTENSIONS


MAX_DETAILS_PER_KIND = 5          # examples kept per kind of finding in LabelReport.details


MAX_UNREADABLE_FRAC = 0.05        # more unreadable images than this stops the run


EDGE_TOL = 1e-6                  # coordinates this close outside [0, 1] are float noise, clipped uncounted


SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "valid": ("valid", "val", "validation"),
                  "validation": ("validation", "val", "valid")}


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its ground truth. Arrays are read-only.

    gt_boxes_xyxy_norm: (M, 4) float64 xyxy, normalised to [0, 1] of the EXIF-oriented image.
    gt_classes: (M,) int64 in [0, len(names)).
    label_path: where the labels came from (None for COCO, or when the label file is missing).
    crowd_boxes_xyxy_norm: (R, 4) float64 xyxy normalised, COCO ``iscrowd=1`` regions: ignore
        regions (a detection on one is neither TP nor FP), never objects to find. YOLO labels
        have none.
    crowd_classes: (R,) int64, the class of each crowd region.
    labelled_size: (width, height) from the labels (COCO), checked against the decoded image by
        ``iter_images``: boxes normalised by another size would be misplaced.
    """

    image_path: Path
    gt_boxes_xyxy_norm: np.ndarray
    gt_classes: np.ndarray
    label_path: Path | None = None
    crowd_boxes_xyxy_norm: np.ndarray | None = None
    crowd_classes: np.ndarray | None = None
    labelled_size: tuple[int, int] | None = None     # (width, height) the boxes were normalised by, where
                                                     # the labels give it (COCO's width/height)

    def __post_init__(self):
        object.__setattr__(self, "image_path", Path(self.image_path))
        for boxes_name, classes_name in (("gt_boxes_xyxy_norm", "gt_classes"), ("crowd_boxes_xyxy_norm", "crowd_classes")):
            raw_boxes, raw_classes = getattr(self, boxes_name), getattr(self, classes_name)
            boxes = np.array(() if raw_boxes is None else raw_boxes, dtype=np.float64).reshape(-1, 4)
            classes = np.array(() if raw_classes is None else raw_classes, dtype=np.int64).reshape(-1)
            if len(boxes) != len(classes):
                raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes for {self.image_path}")
            boxes.setflags(write=False)
            classes.setflags(write=False)
            object.__setattr__(self, boxes_name, boxes)
            object.__setattr__(self, classes_name, classes)

    @property
    def is_negative(self) -> bool:
        """True for a negative scene: no ground-truth boxes and no crowd regions."""
        return len(self.gt_classes) == 0 and len(self.crowd_classes) == 0

    def crowd_boxes_xyxy_px(self, width: int, height: int) -> np.ndarray:
        """Crowd regions in pixels of a (width, height) image: (R, 4) float64 xyxy."""
        return self.crowd_boxes_xyxy_norm * np.array([width, height, width, height], dtype=np.float64)

    @property
    def n_boxes(self) -> int:
        return len(self.gt_classes)

    def gt_boxes_xyxy_px(self, width: int, height: int) -> np.ndarray:
        """Ground truth in pixels of a (width, height) image: (M, 4) float64 xyxy."""
        return self.gt_boxes_xyxy_norm * np.array([width, height, width, height], dtype=np.float64)


@dataclass
class LabelReport:
    """What validation found, for the report. ``n_unreadable_images`` is filled by ``iter_images``."""

    n_images: int = 0
    n_negative: int = 0
    n_boxes: int = 0
    n_clipped_boxes: int = 0
    n_dropped_zero_size: int = 0
    n_duplicate_boxes: int = 0
    n_polygon_boxes: int = 0
    n_crowd_ignored: int = 0
    n_missing_label_files: int = 0
    n_unreadable_images: int = 0
    class_order: str = ""       # set where the classes were renumbered to the model's names (reorder_to_model_names)
    details: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict, repr=False)  # image path -> reason
    _detail_counts: dict[str, int] = field(default_factory=dict, repr=False)

    def note(self, kind: str, message: str) -> None:
        """Keep ``message`` as an example of ``kind`` unless MAX_DETAILS_PER_KIND are already kept."""
        n = self._detail_counts.get(kind, 0)
        if n < MAX_DETAILS_PER_KIND:
            self.details.append(message)
        self._detail_counts[kind] = n + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "n_negative": self.n_negative,
            "n_boxes": self.n_boxes,
            "n_clipped_boxes": self.n_clipped_boxes,
            "n_dropped_zero_size": self.n_dropped_zero_size,
            "n_duplicate_boxes": self.n_duplicate_boxes,
            "n_polygon_boxes": self.n_polygon_boxes,
            "n_crowd_ignored": self.n_crowd_ignored,
            "n_missing_label_files": self.n_missing_label_files,
            "n_unreadable_images": self.n_unreadable_images,
            "class_order": self.class_order,
            "details": list(self.details),
        }

    def summary(self) -> str:
        """One or two lines for the text summary, e.g.
        ``500 images (120 negative, 3 without a label file), 2210 boxes; 4 boxes clipped to the image``."""
        head = (f"{self.n_images} images ({self.n_negative} negative, "
                f"{self.n_missing_label_files} without a label file), {self.n_boxes} boxes")
        extra = [f"{n} {what}" for n, what in (
            (self.n_clipped_boxes, "boxes clipped to the image"),
            (self.n_dropped_zero_size, "zero-size boxes dropped"),
            (self.n_duplicate_boxes, "duplicate boxes dropped"),
            (self.n_polygon_boxes, "polygons used as boxes"),
            (self.n_crowd_ignored, "crowd regions (ignore regions: neither TP nor FP)"),
            (self.n_unreadable_images, "unreadable images skipped"),
        ) if n] + ([self.class_order] if self.class_order else [])
        return head + ("; " + ", ".join(extra) if extra else "")


@dataclass
class Dataset:
    """A loaded validation set. ``samples`` are sorted by image path."""

    names: list[str]
    samples: list[Sample]
    report: LabelReport
    source: str   # what was loaded, e.g. "data.yaml (split val)"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.names)


def finish_dataset(names: list[str], samples: list[Sample], report: LabelReport, source: str, where: Path) -> Dataset:
    if not samples:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DetcalError(f"no images found in {where} (looked for {exts})")
    report.n_images = len(samples)
    report.n_negative = sum(s.is_negative for s in samples)
    report.n_boxes = sum(s.n_boxes for s in samples)
    return Dataset(names=list(names), samples=samples, report=report, source=source)
