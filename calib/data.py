"""Deployment validation sets: Ultralytics dataset YAML, a folder of images with YOLO labels, COCO JSON.

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

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DetcalError
from .images import IMAGE_EXTENSIONS, UnreadableImage, image_size, is_image_file, read_image_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "LabelReport",
    "Sample",
    "iter_images",
    "label_path_for",
    "load_dataset",
]

MAX_DETAILS_PER_KIND = 5          # examples kept per kind of finding in LabelReport.details
MAX_UNREADABLE_FRAC = 0.05        # more unreadable images than this stops the run
_EDGE_TOL = 1e-6                  # coordinates this close outside [0, 1] are float noise, clipped uncounted
_SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "valid": ("valid", "val", "validation"),
                  "validation": ("validation", "val", "valid")}


# ---------------------------------------------------------------------------------------- types

@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its ground truth. Arrays are read-only.

    gt_boxes_xyxy_norm: (M, 4) float64 xyxy, normalised to [0, 1] of the EXIF-oriented image.
    gt_classes: (M,) int64 in [0, len(names)).
    label_path: where the labels came from (None for COCO, or when the label file is missing).
    """

    image_path: Path
    gt_boxes_xyxy_norm: np.ndarray
    gt_classes: np.ndarray
    label_path: Path | None = None

    def __post_init__(self):
        boxes = np.array(self.gt_boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4)
        classes = np.array(self.gt_classes, dtype=np.int64).reshape(-1)
        if len(boxes) != len(classes):
            raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes for {self.image_path}")
        boxes.setflags(write=False)
        classes.setflags(write=False)
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "gt_boxes_xyxy_norm", boxes)
        object.__setattr__(self, "gt_classes", classes)

    @property
    def is_negative(self) -> bool:
        """True for a negative scene: no ground-truth boxes."""
        return len(self.gt_classes) == 0

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
            "details": list(self.details),
        }

    def summary(self) -> str:
        """One or two lines for the text summary, e.g.
        ``500 images (120 negative, 3 without a label file), 2210 boxes; 4 boxes clipped to the image``."""
        head = (f"{self.n_images} images ({self.n_negative} negative, "
                f"{self.n_missing_label_files} without a label file), {self.n_boxes} boxes")
        extra = []
        if self.n_clipped_boxes:
            extra.append(f"{self.n_clipped_boxes} boxes clipped to the image")
        if self.n_dropped_zero_size:
            extra.append(f"{self.n_dropped_zero_size} zero-size boxes dropped")
        if self.n_duplicate_boxes:
            extra.append(f"{self.n_duplicate_boxes} duplicate boxes dropped")
        if self.n_polygon_boxes:
            extra.append(f"{self.n_polygon_boxes} polygons used as boxes")
        if self.n_crowd_ignored:
            extra.append(f"{self.n_crowd_ignored} crowd annotations ignored")
        if self.n_unreadable_images:
            extra.append(f"{self.n_unreadable_images} unreadable images skipped")
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


# ------------------------------------------------------------------------------------ entry point

def load_dataset(
    path: str | os.PathLike,
    split: str = "val",
    *,
    names: list[str] | None = None,
    images_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load a validation set's labels (no pixels are decoded).

    path: an Ultralytics dataset YAML (``path``, ``train``/``val``/``test``, ``names``), a folder of
      images with YOLO txt labels (``images/`` -> ``labels/``, or labels beside the images), a .txt
      list of image paths, or a COCO instances JSON.
    split: the YAML key to read; for a folder, ``images/<split>`` is used when it exists.
    names: class names; needed for a folder without ``classes.txt``/``data.yaml`` nearby. When the
      source has names of its own, these replace them and must be as many.
    images_dir: COCO only, the folder that ``file_name`` is relative to (default: ``images/``
      beside the JSON, the JSON's folder, or the layouts COCO itself uses).

    Raises DetcalError for a missing or malformed source, invalid labels, or no images found.
    """
    p = Path(path)
    if not p.exists():
        raise DetcalError(f"dataset not found: {p}")
    if p.is_dir():
        return _load_folder(p, split, names)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _load_yaml(p, split, names)
    if suffix == ".json":
        return _load_coco(p, names, images_dir)
    if suffix == ".txt":
        return _load_image_list_file(p, names)
    raise DetcalError(
        f"unsupported dataset {p}: expected a dataset .yaml, a folder of images with YOLO labels, "
        "a .txt list of images, or a COCO instances .json")


# ---------------------------------------------------------------------------------- image lists

def _list_images(folder: Path) -> list[Path]:
    """Every supported image under ``folder``, recursively; hidden files (e.g. macOS ``._x.jpg``) skipped."""
    out = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):   # symlinked image folders are common
        real = os.path.realpath(root)
        if real in seen:            # a symlink loop, or the same folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and is_image_file(name):
                out.append(Path(root) / name)
    return out


def _read_image_list(txt: Path) -> list[Path]:
    """Image paths listed one a line in ``txt``; relative ones are relative to the file's folder."""
    lines = _read_text(txt).splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if not line or not is_image_file(line):
            continue
        q = Path(line)
        out.append(q if q.is_absolute() else txt.parent / q)
    return out


def _resolve_split_entry(entry: Path, where: str) -> list[Path]:
    if entry.is_dir():
        return _list_images(entry)
    if entry.is_file() and entry.suffix.lower() == ".txt":
        return _read_image_list(entry)
    if entry.is_file() and is_image_file(entry):
        return [entry]
    if entry.exists():
        raise DetcalError(f"{where}: {entry} is neither a folder, a .txt list of images nor an image")
    raise DetcalError(f"{where}: {entry} does not exist")


# --------------------------------------------------------------------------------- YOLO labels

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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DetcalError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DetcalError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse_yolo_label(path: Path, num_classes: int, report: LabelReport) -> tuple[np.ndarray, np.ndarray]:
    """Parse one YOLO txt file -> (boxes (M, 4) xyxy normalised, classes (M,) int64), validated."""
    rows: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    lines: list[int] = []
    for lineno, raw in enumerate(_read_text(path).splitlines(), start=1):
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
    return _clean_boxes(np.array(rows, dtype=np.float64), np.array(classes, dtype=np.int64), where, report)


def _clean_boxes(boxes: np.ndarray, classes: np.ndarray, where: list[str],
                 report: LabelReport) -> tuple[np.ndarray, np.ndarray]:
    """Clip normalised xyxy boxes to [0, 1], drop zero-size and duplicate ones, counting each in ``report``."""
    outside = ((boxes < -_EDGE_TOL) | (boxes > 1 + _EDGE_TOL)).any(axis=1)
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


def _samples_from_yolo(images: Iterable[Path], names: list[str], report: LabelReport) -> list[Sample]:
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


def _finish(names: list[str], samples: list[Sample], report: LabelReport, source: str, where: Path) -> Dataset:
    if not samples:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DetcalError(f"no images found in {where} (looked for {exts})")
    report.n_images = len(samples)
    report.n_negative = sum(s.is_negative for s in samples)
    report.n_boxes = sum(s.n_boxes for s in samples)
    return Dataset(names=list(names), samples=samples, report=report, source=source)


# ------------------------------------------------------------------------------------- names

def _names_from_yaml_value(value: Any, where: str, nc: Any = None) -> list[str]:
    """Ultralytics ``names``: a list, or a dict {id: name} whose ids are 0..n-1."""
    if isinstance(value, list):
        names = [str(v) for v in value]
    elif isinstance(value, dict):
        try:
            by_id = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise DetcalError(f"{where}: 'names' keys must be integer class ids") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise DetcalError(
                f"{where}: 'names' ids must be 0..{len(by_id) - 1}, found {sorted(by_id)[:10]}")
        names = [by_id[i] for i in range(len(by_id))]
    elif value is None and nc is not None:
        names = []
    else:
        raise DetcalError(f"{where}: 'names' must be a list or a {{id: name}} mapping, found {type(value).__name__}")
    if nc is not None:
        try:
            nc_i = int(nc)
        except (TypeError, ValueError):
            raise DetcalError(f"{where}: 'nc' must be an integer, found {nc!r}") from None
        if not names:
            names = [f"class{i}" for i in range(nc_i)]
        elif nc_i != len(names):
            raise DetcalError(f"{where}: 'nc' is {nc_i} but 'names' lists {len(names)} classes")
    if not names:
        raise DetcalError(f"{where}: 'names' is empty")
    return names


def _apply_names_override(source_names: list[str] | None, names: list[str] | None, where: str) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if not names:
            raise DetcalError("the list of class names passed is empty")
        if source_names is not None and len(source_names) != len(names):
            raise DetcalError(f"{where} defines {len(source_names)} classes but {len(names)} names were given")
        return names
    if source_names is None:
        raise DetcalError(
            f"no class names for {where}: put a classes.txt (one name a line) or a data.yaml with 'names' "
            "beside it, or pass the names")
    return source_names


def _names_near(folder: Path) -> tuple[list[str], Path] | None:
    """Class names from classes.txt / obj.names / data.yaml / dataset.yaml, looked for in ``folder``, its
    parents up to the one holding ``images/``, and one level above that (also in a ``labels`` folder
    beside each, where labelImg writes classes.txt). The first found wins."""
    folder = Path(os.path.abspath(folder))
    dirs = [folder]
    if "images" in folder.parts:
        while dirs[-1].name != "images":
            dirs.append(dirs[-1].parent)
        dirs.append(dirs[-1].parent)
    dirs.append(dirs[-1].parent)
    candidates = []
    for d in dirs:
        for sub in (d, d / "labels"):
            for fname in ("classes.txt", "obj.names", "data.yaml", "dataset.yaml"):
                candidates.append(sub / fname)
    for c in candidates:
        if not c.is_file():
            continue
        if c.suffix == ".yaml":
            data = _load_yaml_file(c)
            if "names" in data or "nc" in data:
                return _names_from_yaml_value(data.get("names"), str(c), data.get("nc")), c
            continue
        names = [ln.strip() for ln in _read_text(c).splitlines() if ln.strip()]
        if names:
            return names, c
    return None


# -------------------------------------------------------------------------------------- loaders

def _load_folder(folder: Path, split: str, names: list[str] | None) -> Dataset:
    root = folder
    for alias in _SPLIT_ALIASES.get(split, (split,)):
        if (folder / "images" / alias).is_dir():
            root = folder / "images" / alias
            break
    found = _names_near(root)
    names = _apply_names_override(found[0] if found else None, names, str(found[1]) if found else str(folder))
    report = LabelReport()
    samples = _samples_from_yolo(_list_images(root), names, report)
    origin = f", names from {found[1]}" if found and names == found[0] else ""
    return _finish(names, samples, report, f"{root} (YOLO labels{origin})", root)


def _load_image_list_file(txt: Path, names: list[str] | None) -> Dataset:
    found = _names_near(txt.parent)
    names = _apply_names_override(found[0] if found else None, names, str(found[1]) if found else str(txt))
    report = LabelReport()
    samples = _samples_from_yolo(_read_image_list(txt), names, report)
    return _finish(names, samples, report, f"{txt} (image list, YOLO labels)", txt)


def _load_yaml_file(path: Path) -> dict:
    import yaml

    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DetcalError(f"{loc}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise DetcalError(f"{path}: expected a YAML mapping with 'path', 'val' and 'names', found {type(data).__name__}")
    return data


_YAML_SPLIT_KEYS = ("train", "val", "test", "minival")


def _load_yaml(path: Path, split: str, names: list[str] | None) -> Dataset:
    data = _load_yaml_file(path)
    if "names" not in data and "nc" not in data:
        source_names = None
    else:
        source_names = _names_from_yaml_value(data.get("names"), str(path), data.get("nc"))
    names = _apply_names_override(source_names, names, str(path))

    present = [k for k in _YAML_SPLIT_KEYS if data.get(k)]
    present += [k for k, v in data.items()
                if k not in present and k not in ("path", "names", "nc", "download", "yaml_file")
                and isinstance(v, (str, list)) and v]
    if not data.get(split):
        listed = ", ".join(present) if present else "none"
        raise DetcalError(f"{path}: no split '{split}' (splits present: {listed})")

    root_value = data.get("path")
    if root_value in (None, ""):
        root = path.parent
    else:
        root = Path(str(root_value)).expanduser()
        if not root.is_absolute():
            by_yaml = path.parent / root
            # Ultralytics resolves a relative 'path' against its datasets folder; the YAML's own folder
            # is what users mean in a project, the working directory is the fallback.
            root = by_yaml if by_yaml.exists() or not root.exists() else root
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise DetcalError(f"{path}: '{split}' must be a path or a list of paths, found {entry!r}")
        e = Path(entry).expanduser()
        if not e.is_absolute():
            candidate = root / e
            if not candidate.exists() and entry.startswith("../"):   # Ultralytics' own fallback
                candidate = root / entry[3:]
            e = candidate
        images += _resolve_split_entry(e, f"{path} ({split})")
    report = LabelReport()
    samples = _samples_from_yolo(images, names, report)
    return _finish(names, samples, report, f"{path} (split {split})", path)


# ------------------------------------------------------------------------------------------ COCO

def _load_coco(path: Path, names: list[str] | None, images_dir: str | os.PathLike | None) -> Dataset:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DetcalError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DetcalError(f"{path}: not a COCO instances JSON (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DetcalError(f"{path}: not a COCO instances JSON, '{key}' is missing or not a list")

    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DetcalError(f"{path}: category without 'id' and 'name': {c!r}"[:300])
        if c["id"] in cats:
            raise DetcalError(f"{path}: category id {c['id']} appears twice")
        cats[c["id"]] = str(c["name"])
    if not cats:
        raise DetcalError(f"{path}: 'categories' is empty")
    try:
        cat_ids = sorted(cats)
    except TypeError:
        raise DetcalError(f"{path}: category ids must all be integers") from None
    cat_index = {cid: i for i, cid in enumerate(cat_ids)}
    names = _apply_names_override([cats[c] for c in cat_ids], names, str(path))

    images: dict[Any, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DetcalError(f"{path}: image entry without 'id' and 'file_name': {im!r}"[:300])
        if im["id"] in images:
            raise DetcalError(f"{path}: image id {im['id']} appears twice")
        images[im["id"]] = im
    if not images:
        raise DetcalError(f"no images found in {path} ('images' is empty)")

    folder = _coco_images_folder(path, [im["file_name"] for im in images.values()], images_dir)

    report = LabelReport()
    per_image: dict[Any, list[tuple[list[float], int, str]]] = {i: [] for i in images}
    for k, ann in enumerate(data["annotations"]):
        aid = ann.get("id", f"#{k}") if isinstance(ann, dict) else f"#{k}"
        where = f"{path}: annotation {aid}"
        if not isinstance(ann, dict):
            raise DetcalError(f"{where}: not an object")
        if ann.get("image_id") not in images:
            raise DetcalError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("iscrowd", 0):
            report.n_crowd_ignored += 1
            continue
        if ann.get("category_id") not in cat_index:
            raise DetcalError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise DetcalError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], found {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DetcalError(f"{where}: negative bbox width or height {bbox}")
        per_image[ann["image_id"]].append((bbox, cat_index[ann["category_id"]], where))

    samples = []
    for iid, im in images.items():
        img_path = Path(os.path.normpath(folder / im["file_name"]))
        anns = per_image[iid]
        if not anns:
            samples.append(Sample(img_path, np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)))
            continue
        w, h = im.get("width"), im.get("height")
        if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
            try:
                w, h = image_size(img_path)
            except DetcalError:
                raise DetcalError(
                    f"{path}: image {iid} has no valid 'width'/'height' and {img_path} cannot be read to get them") from None
        xywh = np.array([a[0] for a in anns], dtype=np.float64)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) / np.array([w, h, w, h], dtype=np.float64)
        boxes, classes = _clean_boxes(xyxy, np.array([a[1] for a in anns], dtype=np.int64), [a[2] for a in anns], report)
        samples.append(Sample(img_path, boxes, classes))
    samples.sort(key=lambda s: str(s.image_path))
    if report.n_crowd_ignored:
        report.note("crowd", f"{path}: {report.n_crowd_ignored} iscrowd annotations ignored (not matched, not counted)")
    return _finish(names, samples, report, f"{path} (COCO)", path)


def _coco_images_folder(path: Path, file_names: list[str], images_dir: str | os.PathLike | None) -> Path:
    """The folder COCO ``file_name``s are relative to: ``images_dir``, or the first usual place holding them."""
    probe = file_names[: min(len(file_names), 20)]
    if images_dir is not None:
        d = Path(images_dir)
        if not d.is_dir():
            raise DetcalError(f"images folder not found: {d}")
        return d
    here = path.parent
    candidates = [here / "images", here]
    stem = path.stem
    split = stem[len("instances_"):] if stem.startswith("instances_") else None
    if split:   # COCO's own layout: annotations/instances_val2017.json beside val2017/ or images/val2017/
        candidates += [here.parent / split, here.parent / "images" / split, here / split]
    candidates += [here.parent / "images", here.parent]
    for d in candidates:
        if d.is_dir() and any((d / f).is_file() for f in probe):
            return d
    tried = ", ".join(str(c) for c in candidates)
    raise DetcalError(f"{path}: none of the first images (e.g. {probe[0]}) found in {tried}; pass the images folder")


# ------------------------------------------------------------------------------------ pixels

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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detcal-read") as pool:
        pending = []
        it = iter(todo)
        for s in it:
            pending.append(pool.submit(load, s))
            if len(pending) >= 2 * workers:
                break
        done = 0
        try:
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
            for f in pending:
                f.cancel()
