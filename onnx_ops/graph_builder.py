"""A tiny opset-aware ONNX graph builder: named nodes and constants, every name under `detcal/`.

The inserted post-processing is written against this builder so that one description emits the
right operator form for the model's opset (e.g. ReduceMax takes `axes` as an attribute before
opset 18 and as an input from 18; Squeeze/Unsqueeze/ReduceSum switch at 13; GreaterOrEqual and
LessOrEqual exist from 12 only).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PREFIX = "detcal/"
MIN_OPSET = 11   # GatherElements, ScatterND, Pad/Clip with tensor inputs, Round


class GraphBuilder:
    """Collects nodes and initializers; tensor and node names are `detcal/<name>`, made unique."""

    def __init__(self, opset: int, prefix: str = PREFIX):
        if opset < MIN_OPSET:
            raise ValueError(f"the inserted graph needs opset >= {MIN_OPSET}, got {opset}")
        self.opset = int(opset)
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.const_values: dict[str, np.ndarray] = {}
        self.memo: dict = {}          # tensors computed once and reused (shapes, reshaped inputs)
        self._used: set[str] = set()

    # -- names -------------------------------------------------------------------------------
    def name(self, base: str) -> str:
        base = base if base.startswith(self.prefix) else self.prefix + base
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def reserve(self, names) -> None:
        """Mark names of the host graph as taken, so nothing inserted collides with them."""
        self._used.update(names)

    # -- constants and nodes -----------------------------------------------------------------
    def const(self, name: str, value, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        full = self.name(name)
        self.initializers.append(numpy_helper.from_array(arr, full))
        self.const_values[full] = arr
        return full

    def i64(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def f32(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.float32))

    def op(self, op_type: str, *inputs: str, name: str | None = None, outputs: int = 1, out: str | None = None, **attrs):
        """Add a node; returns its output name (or a tuple of names when outputs > 1).
        out: an exact output tensor name (the model's outputs) for the first output, else the node's name."""
        base = name or op_type
        node_name = self.name(base)
        outs = [out or node_name] if outputs == 1 else [self.name(f"{base}_out{i}") for i in range(outputs)]
        if out and outputs > 1:
            outs[0] = out
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if outputs == 1 else tuple(outs)

    # -- opset-dependent forms ---------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes, keepdims: bool = True, name: str | None = None) -> str:
        """ReduceMax/ReduceMin/ReduceSum over `axes` (axes as attribute or input per opset)."""
        axes = [int(a) for a in np.atleast_1d(axes)]
        input_since = 13 if op_type == "ReduceSum" else 18
        if self.opset >= input_since:
            return self.op(op_type, x, self.i64(f"{name or op_type}_axes", axes), name=name, keepdims=int(keepdims))
        return self.op(op_type, x, name=name, axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes, name: str | None = None) -> str:
        axes = [int(a) for a in np.atleast_1d(axes)]
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.i64(f"{name or 'Unsqueeze'}_axes", axes), name=name)
        return self.op("Unsqueeze", x, name=name, axes=axes)

    def squeeze(self, x: str, axes, name: str | None = None) -> str:
        axes = [int(a) for a in np.atleast_1d(axes)]
        if self.opset >= 13:
            return self.op("Squeeze", x, self.i64(f"{name or 'Squeeze'}_axes", axes), name=name)
        return self.op("Squeeze", x, name=name, axes=axes)

    def ge(self, a: str, b: str, name: str | None = None) -> str:
        """a >= b (GreaterOrEqual from opset 12, else Not(Less))."""
        if self.opset >= 12:
            return self.op("GreaterOrEqual", a, b, name=name)
        return self.op("Not", self.op("Less", a, b, name=name), name=(name or "ge") + "_not")

    def le(self, a: str, b: str, name: str | None = None) -> str:
        """a <= b (LessOrEqual from opset 12, else Not(Greater))."""
        if self.opset >= 12:
            return self.op("LessOrEqual", a, b, name=name)
        return self.op("Not", self.op("Greater", a, b, name=name), name=(name or "le") + "_not")

    def min(self, a: str, b: str, name: str | None = None) -> str:
        """Elementwise min; integer Min exists from opset 12 only, so Where(Less) before."""
        if self.opset >= 12:
            return self.op("Min", a, b, name=name)
        n = name or "min"
        return self.op("Where", self.op("Less", a, b, name=n + "_less"), a, b, name=n)

    def max(self, a: str, b: str, name: str | None = None) -> str:
        """Elementwise max; integer Max exists from opset 12 only, so Where(Greater) before."""
        if self.opset >= 12:
            return self.op("Max", a, b, name=name)
        n = name or "max"
        return self.op("Where", self.op("Greater", a, b, name=n + "_greater"), a, b, name=n)

    def slice(self, x: str, starts, ends, axes, name: str | None = None) -> str:
        n = name or "Slice"
        return self.op("Slice", x, self.i64(f"{n}_starts", starts), self.i64(f"{n}_ends", ends),
                       self.i64(f"{n}_axes", axes), name=name)

    def split(self, x: str, sizes, axis: int, name: str | None = None) -> tuple:
        """Split x along `axis` into parts of `sizes` (split as an attribute before opset 13, an input from 13)."""
        sizes = [int(s) for s in sizes]
        n = name or "Split"
        if self.opset >= 13:
            return self.op("Split", x, self.i64(f"{n}_sizes", sizes), name=name, outputs=len(sizes), axis=axis)
        return self.op("Split", x, name=name, outputs=len(sizes), axis=axis, split=sizes)

    def cast(self, x: str, to: int, name: str | None = None) -> str:
        return self.op("Cast", x, name=name, to=int(to))

    def as_float(self, x: str, name: str) -> str:
        """Integer class indices x as float32 (exact below 2^24): one Cast per tensor, made once; x
        itself where it is float already (mark_float)."""
        key = ("float", x)
        if key not in self.memo:
            self.memo[key] = self.mark_float(self.cast(x, FLOAT, name=name))
        return self.memo[key]

    def is_float(self, x: str) -> bool:
        """x was made by as_float or marked float32 (mark_float)."""
        return self.memo.get(("float", x)) == x

    def mark_float(self, x: str) -> str:
        """Record that x is float32 (as_float(x) is then x itself); returns x."""
        self.memo[("float", x)] = x
        return x

    def dim(self, x: str, axis: int, name: str | None = None) -> str:
        """x.shape[axis] as an int64 tensor of shape [1]."""
        key = ("dim", x, axis)
        if key not in self.memo:
            n = name or "dim"
            if ("shape", x) not in self.memo:
                self.memo[("shape", x)] = self.op("Shape", x, name=f"{n}_shape")
            self.memo[key] = self.slice(self.memo[("shape", x)], [axis], [axis + 1], [0], name=n)
        return self.memo[key]


NEG = np.float32(-1e30)          # key of a non-candidate; valid keys are calibrated scores >= 0
BIG = np.float32(3.0e38)          # +/- fill for masked min/max of box coordinates, isotonic knot padding

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL


def pad_last(b: "GraphBuilder", x: str, rank: int, n: int, value, name: str) -> str:
    """Pad the last axis of x by n entries of `value` (constant pads: TensorRT folds them)."""
    if n == 0:
        return x
    pads = [0] * (2 * rank)
    pads[2 * rank - 1] = n
    v = b.const(f"{name}_value", np.asarray(value))
    return _keeps_float(b, x, b.op("Pad", x, b.i64(f"{name}_pads", pads), v, name=name, mode="constant"))


def _keeps_float(b: "GraphBuilder", x: str, y: str) -> str:
    """y, a copy of x's elements (Pad, Gather): float32 for GraphBuilder.as_float where x is."""
    return b.mark_float(y) if b.is_float(x) else y


def gather_rows(b: "GraphBuilder", data: str, index: str, name: str, width: int = 0) -> str:
    """data [B, M] (width 0) or [B, M, width], index [B, K] int64 into axis 1 -> [B, K] | [B, K, width].

    GatherND(batch_dims=1) from opset 12 (row copies: ~3.5x faster than GatherElements with an
    expanded [B, K, width] index on onnxruntime's CPU kernels), GatherElements before. The [B, K, 1]
    index is made once per index tensor (b.memo[("rows_idx", index)]) and shared by every gather with it."""
    if b.opset >= 12:
        key = ("rows_idx", index)
        if key not in b.memo:
            b.memo[key] = b.unsqueeze(index, [2], name=f"{name}_idx")
        return _keeps_float(b, data, b.op("GatherND", data, b.memo[key], name=name, batch_dims=1))
    if not width:
        return _keeps_float(b, data, b.op("GatherElements", data, index, name=name, axis=1))
    idx = b.op("Expand", b.unsqueeze(index, [2], name=f"{name}_idx"), b.i64(f"{name}_shape", [1, 1, width]), name=f"{name}_idx_w")
    return _keeps_float(b, data, b.op("GatherElements", data, idx, name=name, axis=1))
