"""Class names: from a data YAML's ``names``/``nc``, from files near the images, or a names file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DetcalError
from .files import load_yaml_file, read_text


def names_from_yaml_value(value: Any, where: str, nc: Any = None) -> list[str]:
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


def apply_names_override(source_names: list[str] | None, names: list[str] | None, where: str) -> list[str]:
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


def names_near(folder: Path) -> tuple[list[str], Path] | None:
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
            data = load_yaml_file(c)
            if "names" in data or "nc" in data:
                return names_from_yaml_value(data.get("names"), str(c), data.get("nc")), c
            continue
        names = [ln.strip() for ln in read_text(c).splitlines() if ln.strip()]
        if names:
            return names, c
    return None


def read_names_file(path: str | os.PathLike | None) -> list[str] | None:
    """Class names from a text file, one a line (blank lines skipped); None when no path is given.

    Raises DetcalError when the file is missing or lists no name.
    """
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        raise DetcalError(f"names file not found: {p}")
    names = [line.strip() for line in read_text(p).splitlines() if line.strip()]
    if not names:
        raise DetcalError(f"names file is empty: {p}")
    return names
