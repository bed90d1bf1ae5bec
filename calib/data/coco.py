"""COCO instances JSON: categories, images and annotations to samples."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetcalError
from ..images import image_size
from .files import read_text
from .names import apply_names_override
from .types import Dataset, LabelReport, Sample, finish_dataset
from .yolo import clean_boxes


def load_coco(path: Path, names: list[str] | None, images_dir: str | os.PathLike | None) -> Dataset:
    try:
        data = json.loads(read_text(path))
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
    names = apply_names_override([cats[c] for c in cat_ids], names, str(path))

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
        boxes, classes = clean_boxes(xyxy, np.array([a[1] for a in anns], dtype=np.int64), [a[2] for a in anns], report)
        samples.append(Sample(img_path, boxes, classes))
    samples.sort(key=lambda s: str(s.image_path))
    if report.n_crowd_ignored:
        report.note("crowd", f"{path}: {report.n_crowd_ignored} iscrowd annotations ignored (not matched, not counted)")
    return finish_dataset(names, samples, report, f"{path} (COCO)", path)


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
