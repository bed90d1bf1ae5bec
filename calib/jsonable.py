"""Turning results into strict JSON: numpy to Python, NaN and inf to null."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def finite_or_none(x, ndigits: int | None = None):
    """float(x), rounded to ndigits where given; None for None, NaN and inf."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, ndigits) if ndigits is not None else x


def to_jsonable(obj, ndigits: int | None = None):
    """Recursively: dicts, lists, tuples, numpy arrays and scalars, Paths -> JSON-ready values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, ndigits) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), ndigits)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj, ndigits)
    if isinstance(obj, Path):
        return str(obj)
    return obj
