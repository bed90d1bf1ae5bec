"""Declared constraints for the artifact's JSON blocks, checked in one place (`check_block`).

Each block's class declares what its keys may hold, once, as scikit-learn declares
`_parameter_constraints`:

    _artifact_constraints = {
        "iou_threshold": Real(0, 1),
        "max_det": Int(1, 10_000),
        "a": Array(Real(0, MAX_SLOPE, low_open=True), length=PER_CLASS),
    }

and `check_block(block, constraints, path, num_classes=C)` walks the block and raises
`ConstraintError(key, value, expected)` for the first key that breaks its constraint; the key
is a JSON path such as `calibrator.a[3]`. `Artifact.from_dict` turns that into one
DetcalError line naming the file, the key and the value. Keys not declared are left alone
(report-only fields); a declared key that may be absent is `Optional(...)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PER_CLASS = "num_classes"          # Array(length=PER_CLASS): one entry per class of the model block


class ConstraintError(ValueError):
    """A value that breaks its declared constraint: `key` (JSON path), `value`, what was expected."""

    def __init__(self, key: str, value, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key} = {short_repr(value)}: {expected}")


def short_repr(value, limit: int = 60) -> str:
    """JSON-ish repr of a value, cut to `limit` characters (the error stays one short line)."""
    if value is _MISSING:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Missing:
    def __repr__(self):
        return "(missing)"


_MISSING = _Missing()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Real:
    """A finite JSON number in [low, high] (open ends with low_open / high_open)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        if self.low == -math.inf and self.high == math.inf:
            return "a finite number"
        return f"a finite number in {lo}{self.low:g}, {self.high:g}{hi}"

    def check(self, v, key, ctx):
        if not _is_number(v):
            raise ConstraintError(key, v, f"expected {self.describe()}")
        try:
            f = float(v)
        except OverflowError:
            raise ConstraintError(key, v, f"expected {self.describe()}") from None
        if not math.isfinite(f):
            raise ConstraintError(key, v, f"expected {self.describe()}, not NaN or infinite")
        if f < self.low or f > self.high or (self.low_open and f == self.low) or (self.high_open and f == self.high):
            raise ConstraintError(key, v, f"expected {self.describe()}")


@dataclass(frozen=True)
class Int:
    """A JSON integer (not a bool, not 3.0) in [low, high]."""

    low: int | None = None
    high: int | None = None

    def check(self, v, key, ctx):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConstraintError(key, v, f"expected an integer{self._range()}")
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            raise ConstraintError(key, v, f"expected an integer{self._range()}")

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in {self.low}..{self.high}"
        if self.low is not None:
            return f" >= {self.low}"
        return f" <= {self.high}" if self.high is not None else ""


@dataclass(frozen=True)
class Bool:
    def check(self, v, key, ctx):
        if not isinstance(v, bool):
            raise ConstraintError(key, v, "expected true or false")


@dataclass(frozen=True)
class Str:
    """A JSON string; one of `choices` when given."""

    choices: tuple = ()

    def check(self, v, key, ctx):
        if not isinstance(v, str):
            raise ConstraintError(key, v, "expected a string" + (f", one of {', '.join(self.choices)}" if self.choices else ""))
        if self.choices and v not in self.choices:
            raise ConstraintError(key, v, f"expected one of {', '.join(self.choices)}")


@dataclass(frozen=True)
class Array:
    """A JSON list of `item`s. length: an int, PER_CLASS (the model's num_classes) or None;
    min_len / max_len bounds; order: "increasing" (strictly) or "non_decreasing" for numbers;
    same_length_as: the sibling key whose list (at the same index path) sets the length."""

    item: object
    length: int | str | None = None
    min_len: int = 0
    max_len: int | None = None
    order: str | None = None
    same_length_as: str | None = None

    def check(self, v, key, ctx):
        if not isinstance(v, list):
            raise ConstraintError(key, v, f"expected a list{self._len_text(ctx)}")
        want = ctx.get(self.length) if isinstance(self.length, str) else self.length
        if want is not None and len(v) != want:
            if self.length == PER_CLASS:
                raise ConstraintError(key, v, f"one value per class expected: found {len(v)} classes' values, "
                                              f"model.num_classes is {want}")
            raise ConstraintError(key, v, f"expected {want} values, found {len(v)}")
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            raise ConstraintError(key, v, f"expected a list{self._len_text(ctx)}, found {len(v)} values")
        like = ctx.get("_like")          # the sibling list this one must match in length (same_length_as)
        for i, item in enumerate(v):
            item_ctx = ctx
            if isinstance(self.item, Array) and isinstance(like, list):   # nested: match like[i] in turn
                item_ctx = {**ctx, "_like": like[i] if i < len(like) else None}
            _check_value(self.item, item, f"{key}[{i}]", item_ctx)
        if isinstance(like, list) and not isinstance(self.item, Array) and len(like) != len(v):
            raise ConstraintError(key, v, f"expected as many values as {self.same_length_as} ({len(like)}), found {len(v)}")
        if self.order and len(v) > 1:
            for i in range(1, len(v)):
                bad = v[i] <= v[i - 1] if self.order == "increasing" else v[i] < v[i - 1]
                if bad:
                    what = "strictly increasing" if self.order == "increasing" else "non-decreasing"
                    raise ConstraintError(f"{key}[{i}]", v[i], f"values must be {what} (previous {v[i - 1]!r})")

    def _len_text(self, ctx) -> str:
        want = ctx.get(self.length) if isinstance(self.length, str) else self.length
        if want is not None:
            return f" of {want} values"
        if self.max_len is not None:
            return f" of {self.min_len}..{self.max_len} values"
        return f" of at least {self.min_len} values" if self.min_len else ""


@dataclass(frozen=True)
class Block:
    """A JSON object whose keys follow `constraints` (a nested block, e.g. preprocess.scaling)."""

    constraints: dict

    def check(self, v, key, ctx):
        check_block(v, self.constraints, key, **{k: val for k, val in ctx.items() if not k.startswith("_")})


@dataclass(frozen=True)
class AnyObject:
    """A JSON object, contents free (report-only blocks such as metrics)."""

    def check(self, v, key, ctx):
        if not isinstance(v, dict):
            raise ConstraintError(key, v, "expected a JSON object")


@dataclass(frozen=True)
class Optional:
    """The key may be absent (or null when `nullable`); when present it follows `inner`."""

    inner: object
    nullable: bool = True


def _check_value(constraint, v, key, ctx):
    if isinstance(constraint, Optional):
        if v is None and constraint.nullable:
            return
        constraint = constraint.inner
    constraint.check(v, key, ctx)


def check_block(block, constraints: dict, path: str, **ctx) -> None:
    """Check a JSON object against its declared constraints ({key: constraint}); raises
    ConstraintError naming `path.key` (and the index, for lists) on the first violation."""
    if not isinstance(block, dict):
        raise ConstraintError(path, block, "expected a JSON object")
    for name, constraint in constraints.items():
        key = f"{path}.{name}" if path else name
        if name not in block:
            if isinstance(constraint, Optional):
                continue
            raise ConstraintError(key, _MISSING, "required key is missing")
        value = block[name]
        inner = constraint.inner if isinstance(constraint, Optional) else constraint
        like = block.get(inner.same_length_as) if isinstance(inner, Array) and inner.same_length_as else None
        _check_value(constraint, value, key, {**ctx, "_like": like})
