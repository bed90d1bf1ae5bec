"""Atomic output: write to a temporary file in the same folder, then rename.

Nothing half-written is ever left at the destination, and an input is never overwritten.
The file gets the permissions a plain ``open(path, "w")`` would give it (0o666 less the
user's umask), not mkstemp's private 0o600, so that a serving process running as another
user can read the patched model.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import DetcalError


def check_writable(path: str | os.PathLike, *, inputs=()) -> Path:
    """Validate an output path before any work: its folder exists (or can be made), it is none of
    `inputs` (paths, None skipped: the model, the calibration, a data set's images and labels)."""
    out = Path(path)
    target = out.resolve()
    for src in inputs:
        if src is not None and Path(src).resolve() == target:
            raise DetcalError(f"output path is the same as the input, refusing to overwrite: {out}")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DetcalError(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if out.is_dir():
        raise DetcalError(f"output path is a folder, expected a file: {out}")
    if not os.access(parent, os.W_OK):
        raise DetcalError(f"output folder is not writable: {parent}")
    return out


def check_outside_image_folders(out_dir: str | os.PathLike, images, *, what: str) -> None:
    """Refuse writing `what` (a report's plots) into, or below, a folder that holds one of `images`
    (a data set's image paths): the next run over that data set would take the plots for images."""
    folders = {Path(p).resolve().parent for p in images}
    target = Path(out_dir).resolve()
    for d in (target, *target.parents):
        if d in folders:
            raise DetcalError(f"{what} would go into {d}, a folder of the data set's images: its plots would "
                              "become images of the data set; write it elsewhere")


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it, so set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + rename in the same folder)."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise DetcalError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise DetcalError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def removing_new_empty_dirs(*folders: str | os.PathLike):
    """Run the body; if it fails (an error or Ctrl-C), remove those of `folders` (and of their
    parents) that did not exist before and are still empty, so that a failed command leaves no
    empty output folder behind. Folders that existed, or that hold anything, are kept."""
    created = []
    for folder in folders:
        p = Path(folder).absolute()
        new = []
        while not p.exists() and p != p.parent:
            new.append(p)
            p = p.parent
        created.extend(new)                       # deepest first
    try:
        yield
    except BaseException:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                pass
        raise
