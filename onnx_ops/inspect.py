"""`detcal inspect MODEL`: per execution provider, are the model's ops covered?

``inspect_model(path)`` returns plain data and ``format_inspection(d)`` renders it; the
command (printing, exit code) is ``calib.cli.inspect``. The support table and its sources live
in ``onnx_ops.ep_support``.
"""

from __future__ import annotations

import os

import onnx

from calib.errors import DetcalError
from onnx_ops.ep_support import EP_NAMES, EPS, coverage, model_opset


def _load(path: str) -> onnx.ModelProto:
    if not os.path.isfile(path):
        raise DetcalError(f"{path}: no such file")
    try:
        # External weights are not needed to list ops; do not require them to be present.
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise DetcalError(f"{path}: not an ONNX model ({type(exc).__name__})") from None


def _shape(vi: onnx.ValueInfoProto) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]


def _io(vi: onnx.ValueInfoProto) -> dict:
    elem = vi.type.tensor_type.elem_type
    dtype = onnx.TensorProto.DataType.Name(elem).lower() if elem else "?"
    return {"name": vi.name, "dtype": dtype, "shape": _shape(vi)}


def inspect_model(path: str) -> dict:
    """Load an ONNX file and report its I/O, opset, node count and per-EP op coverage.

    Returns {"path", "opset", "num_nodes", "inputs": [{name, dtype, shape}], "outputs": [...],
    "eps": {ep: {"name", "covered", "uncovered": [{op, reason, count}], "warnings": [...]}}}.
    Raises DetcalError (one line, naming the file) for a missing or non-ONNX file.
    """
    model = _load(path)
    if not model.graph.node and not model.graph.output:
        raise DetcalError(f"{path}: not an ONNX model (empty graph)")
    init_names = {i.name for i in model.graph.initializer}
    reports = coverage(model)
    eps = {}
    for ep in EPS:
        r = reports[ep]
        warn = {}
        for f in r.warnings:
            warn[(f.op, f.reason)] = warn.get((f.op, f.reason), 0) + 1
        eps[ep] = {
            "name": EP_NAMES[ep],
            "covered": r.covered,
            "uncovered": [{"op": op, "reason": reason, "count": n} for op, reason, n in r.summary()],
            "warnings": [{"op": op, "reason": reason, "count": n} for (op, reason), n in warn.items()],
        }
    return {
        "path": path,
        "opset": model_opset(model),
        "num_nodes": len(model.graph.node),
        "inputs": [_io(v) for v in model.graph.input if v.name not in init_names],
        "outputs": [_io(v) for v in model.graph.output],
        "eps": eps,
    }


def format_inspection(d: dict) -> str:
    """Render ``inspect_model``'s result as text."""
    fmt = lambda io: f"  {io['name']}: {io['dtype']} [{', '.join(str(s) for s in io['shape'])}]"  # noqa: E731
    lines = [f"model: {d['path']}", f"opset: {d['opset']}   nodes: {d['num_nodes']}", "inputs:"]
    lines += [fmt(io) for io in d["inputs"]]
    lines += ["outputs:"] + [fmt(io) for io in d["outputs"]]
    lines.append("execution providers:")
    for ep in EPS:
        e = d["eps"][ep]
        lines.append(f"  {e['name']:<18} {'covered' if e['covered'] else 'NOT covered'}")
        for u in e["uncovered"]:
            lines.append(f"      x {u['op']} x{u['count']}: {u['reason']}")
        for w in e["warnings"]:
            lines.append(f"      ! {w['op']} x{w['count']}: {w['reason']}")
    return "\n".join(lines)
