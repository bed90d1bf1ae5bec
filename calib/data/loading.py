"""``load_dataset``: a data YAML, a folder of images with YOLO labels, an image list or a COCO JSON."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DetcalError
from .coco import load_coco
from .files import is_image_file, list_images, load_yaml_file, read_image_list, resolve_split_entry
from .names import apply_names_override, names_from_yaml_value, names_near
from .types import SPLIT_ALIASES, Dataset, LabelReport, finish_dataset
from .yolo import samples_from_yolo


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
    if images_dir is not None and p.suffix.lower() != ".json":
        raise DetcalError(f"--images (the folder of a COCO JSON's file_names) goes with a COCO .json --data, not {p}")
    if p.is_dir():
        return _load_folder(p, split, names)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _load_yaml(p, split, names)
    if suffix == ".json":
        return load_coco(p, names, images_dir)
    if suffix == ".txt":
        return _load_image_list_file(p, names)
    raise DetcalError(
        f"unsupported dataset {p}: expected a dataset .yaml, a folder of images with YOLO labels, "
        "a .txt list of images, or a COCO instances .json")


def _load_folder(folder: Path, split: str, names: list[str] | None) -> Dataset:
    root = folder
    for alias in SPLIT_ALIASES.get(split, (split,)):
        if (folder / "images" / alias).is_dir():
            root = folder / "images" / alias
            break
    splits = _split_folders(folder / "images")
    if root == folder and splits:
        # images/ holds split folders only: reading the whole tree would mix the splits (the fitting
        # images in an evaluation, say)
        raise DetcalError(f"{folder}: no split '{split}' under images/ (splits present: {', '.join(splits)}); "
                          "pick one with --split")
    found = names_near(root)
    names = apply_names_override(found[0] if found else None, names, str(found[1]) if found else str(folder))
    report = LabelReport()
    samples = samples_from_yolo(list_images(root), names, report)
    origin = f", names from {found[1]}" if found and names == found[0] else ""
    return finish_dataset(names, samples, report, f"{root} (YOLO labels{origin})", root)


def _split_folders(images: Path) -> list[str]:
    """The subfolders of images/ when it holds folders and no image of its own, else []."""
    if not images.is_dir():
        return []
    entries = [e for e in images.iterdir() if not e.name.startswith(".")]
    if any(e.is_file() and is_image_file(e.name) for e in entries):
        return []
    return sorted(e.name for e in entries if e.is_dir())


def _load_image_list_file(txt: Path, names: list[str] | None) -> Dataset:
    found = names_near(txt.parent)
    names = apply_names_override(found[0] if found else None, names, str(found[1]) if found else str(txt))
    report = LabelReport()
    samples = samples_from_yolo(read_image_list(txt), names, report)
    return finish_dataset(names, samples, report, f"{txt} (image list, YOLO labels)", txt)


_YAML_SPLIT_KEYS = ("train", "val", "test", "minival")


def _load_yaml(path: Path, split: str, names: list[str] | None) -> Dataset:
    data = load_yaml_file(path)
    if "names" not in data and "nc" not in data:
        source_names = None
    else:
        source_names = names_from_yaml_value(data.get("names"), str(path), data.get("nc"))
    names = apply_names_override(source_names, names, str(path))

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
        images += resolve_split_entry(e, f"{path} ({split})")
    report = LabelReport()
    samples = samples_from_yolo(images, names, report)
    return finish_dataset(names, samples, report, f"{path} (split {split})", path)
