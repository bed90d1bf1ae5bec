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


def _is_id(v) -> bool:
    """COCO ids are integers (strings accepted too); never null, a bool, a float or a container."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def load_coco(path: Path, names: list[str] | None, images_dir: str | os.PathLike | None) -> Dataset:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DetcalError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:       # a 5000-digit number, nesting too deep
        raise DetcalError(f"{path}: invalid JSON: {str(exc).split(';')[0][:120]}") from None
    if not isinstance(data, dict):
        raise DetcalError(f"{path}: not a COCO instances JSON (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DetcalError(f"{path}: not a COCO instances JSON, '{key}' is missing or not a list")

    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_id(c.get("id")) or "name" not in c:
            raise DetcalError(f"{path}: category without an integer 'id' and a 'name': {c!r}"[:300])
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
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise DetcalError(f"{path}: image entry without an integer 'id' and a 'file_name': {im!r}"[:300])
        if im["id"] in images:
            raise DetcalError(f"{path}: image id {im['id']} appears twice")
        images[im["id"]] = im
    if not images:
        raise DetcalError(f"no images found in {path} ('images' is empty)")

    folder = _coco_images_folder(path, [im["file_name"] for im in images.values()], images_dir)

    report = LabelReport()
    per_image: dict[Any, list[tuple[list[float], int, str]]] = {i: [] for i in images}
    crowd: dict[Any, list[tuple[list[float], int, str]]] = {i: [] for i in images}
    for k, ann in enumerate(data["annotations"]):
        aid = ann.get("id") if isinstance(ann, dict) and _is_id(ann.get("id")) else f"#{k}"
        where = f"{path}: annotation {aid}"
        if not isinstance(ann, dict):
            raise DetcalError(f"{where}: not an object")
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in images:
            raise DetcalError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in cat_index:
            raise DetcalError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise DetcalError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], found {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DetcalError(f"{where}: negative bbox width or height {bbox}")
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1, True, False, None):
            raise DetcalError(f"{where}: 'iscrowd' must be 0 or 1, found {iscrowd!r}"[:300])
        if iscrowd:                    # an ignore region, not an object to find
            report.n_crowd_ignored += 1
            crowd[ann["image_id"]].append((bbox, cat_index[ann["category_id"]], where))
            continue
        per_image[ann["image_id"]].append((bbox, cat_index[ann["category_id"]], where))

    samples = []
    for iid, im in images.items():
        img_path = Path(os.path.normpath(folder / im["file_name"]))
        anns = per_image[iid]
        if not anns and not crowd[iid]:
            samples.append(Sample(img_path, np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)))
            continue
        w, h = im.get("width"), im.get("height")
        labelled = (w, h)
        if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
            labelled = None
            try:
                w, h = image_size(img_path)
            except DetcalError:
                raise DetcalError(
                    f"{path}: image {iid} has no valid 'width'/'height' and {img_path} cannot be read to get them") from None
        scale = np.array([w, h, w, h], dtype=np.float64)
        xywh = np.array([a[0] for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) / scale
        boxes, classes = clean_boxes(xyxy, np.array([a[1] for a in anns], dtype=np.int64), [a[2] for a in anns], report)
        cw = np.array([a[0] for a in crowd[iid]], dtype=np.float64).reshape(-1, 4)
        crowd_xyxy = np.clip(np.concatenate([cw[:, :2], cw[:, :2] + cw[:, 2:]], axis=1) / scale, 0.0, 1.0)
        crowd_keep = (crowd_xyxy[:, 2] > crowd_xyxy[:, 0]) & (crowd_xyxy[:, 3] > crowd_xyxy[:, 1])
        crowd_classes = np.array([a[1] for a in crowd[iid]], dtype=np.int64).reshape(-1)
        samples.append(Sample(img_path, boxes, classes, crowd_boxes_xyxy_norm=crowd_xyxy[crowd_keep],
                              crowd_classes=crowd_classes[crowd_keep], labelled_size=labelled))
    samples.sort(key=lambda s: str(s.image_path))
    if report.n_crowd_ignored:
        report.note("crowd", f"{path}: {report.n_crowd_ignored} iscrowd annotations are ignore regions: a detection "
                             "on one is neither a true nor a false positive, and their images are not negative scenes")
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
    raise DetcalError(f"{path}: none of the first images (e.g. {probe[0]}) found in {tried}; pass the images folder with --images")
