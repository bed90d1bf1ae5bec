"""Text files, YAML files and image lists: reading them with one-line errors."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DetcalError
from ..images import is_image_file


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DetcalError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DetcalError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_yaml_file(path: Path) -> dict:
    import yaml

    text = read_text(path)
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


def list_images(folder: Path) -> list[Path]:
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


def read_image_list(txt: Path) -> list[Path]:
    """Image paths listed one a line in ``txt``; relative ones are relative to the file's folder."""
    lines = read_text(txt).splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if not line or not is_image_file(line):
            continue
        q = Path(line)
        out.append(q if q.is_absolute() else txt.parent / q)
    return out


def resolve_split_entry(entry: Path, where: str) -> list[Path]:
    if entry.is_dir():
        return list_images(entry)
    if entry.is_file() and entry.suffix.lower() == ".txt":
        return read_image_list(entry)
    if entry.is_file() and is_image_file(entry):
        return [entry]
    if entry.exists():
        raise DetcalError(f"{where}: {entry} is neither a folder, a .txt list of images nor an image")
    raise DetcalError(f"{where}: {entry} does not exist")
