"""`detcal inspect MODEL`: the recognised head (layout and why, classes, strides, metadata
hints) and, per execution provider, are the model's ops covered?

``inspect_model(path)`` returns plain data and ``format_inspection(d)`` renders it; the
command (printing, exit code) is ``calib.cli.inspect``. The support table and its sources live
in ``onnx_ops.ep_support``; the head is `calib.head_recognition.describe_head`.

Ops that are not in the table are unknown, not unsupported: they are listed as "not in the
table" and do not make an EP "NOT covered". On the CPU provider they are also looked up in the
installed onnxruntime's registered kernels (quantized exports: ConvInteger,
DynamicQuantizeLinear, QLinearConv, QuantizeLinear, DequantizeLinear run there).
"""

from __future__ import annotations


import onnx

from calib.errors import DetcalError
from onnx_ops.ep_support import EP_NAMES, EPS, coverage, falls_back, model_opset


def _load(path: str) -> onnx.ModelProto:
    from calib.model_info import check_model_path

    check_model_path(path)          # not found / a directory / an empty file: the same line in every command
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


UNKNOWN_PREFIX = "op not in detcal's support table"


def _cpu_registered_ops() -> set[str]:
    """Default-domain op types with a CPU kernel in the installed onnxruntime (empty when unknown)."""
    try:
        from onnxruntime.capi import _pybind_state as C

        return {k.op_name for k in C.get_all_opkernel_def()
                if k.provider == "CPUExecutionProvider" and k.domain in ("", "ai.onnx")}
    except Exception:  # an onnxruntime build without the registry API
        return set()


def _split_unknown(errors, ep: str, cpu_ops: set[str]):
    """errors -> (known errors, [{op, count, note}] for ops not in the table)."""
    known, unknown = [], {}
    for f in errors:
        if f.reason.startswith(UNKNOWN_PREFIX):
            unknown[f.op] = unknown.get(f.op, 0) + 1
        else:
            known.append(f)
    rows = []
    for op, n in unknown.items():
        note = "not in the table"
        if ep == "cpu" and op in cpu_ops:
            note += "; registered in the installed onnxruntime's CPU kernels"
        rows.append({"op": op, "count": n, "note": note})
    return known, rows


def inspect_model(path: str) -> dict:
    """Load an ONNX file and report its I/O, opset, node count and per-EP op coverage.

    Returns {"path", "opset", "num_nodes", "inputs": [{name, dtype, shape}], "outputs": [...],
    "input": input_convention(...) (dtype, layout and why, the scaling a uint8 input needs),
    "head": calib.head_recognition.describe_head(...),
    "eps": {ep: {"name", "covered", "uncovered": [{op, reason, count}], "warnings": [...],
                 "not_in_table": [{op, count, note}],
                 "falls_back": [node names that would run outside a TensorRT engine (TensorRT EPs only)]}}}.
    covered: no known limitation (unknown ops aside).
    Raises DetcalError (one line, naming the file) for a missing or non-ONNX file.
    """
    model = _load(path)
    if not model.graph.node and not model.graph.output:
        raise DetcalError(f"{path}: not an ONNX model (empty graph)")
    init_names = {i.name for i in model.graph.initializer}
    reports = coverage(model)
    cpu_ops = _cpu_registered_ops()
    eps = {}
    for ep in EPS:
        r = reports[ep]
        warn = {}
        for f in r.warnings:
            warn[(f.op, f.reason)] = warn.get((f.op, f.reason), 0) + 1
        known, unknown = _split_unknown(r.errors, ep, cpu_ops)
        errs = {}
        for f in known:
            errs[(f.op, f.reason)] = errs.get((f.op, f.reason), 0) + 1
        unresolved = [u for u in unknown if "registered" not in u["note"]]
        eps[ep] = {
            "name": EP_NAMES[ep],
            "covered": not known,
            "status": "NOT covered" if known else ("unknown: ops not in the table" if unresolved else "covered"),
            "uncovered": [{"op": op, "reason": reason, "count": n}
                          for (op, reason), n in sorted(errs.items(), key=lambda kv: -kv[1])],
            "warnings": [{"op": op, "reason": reason, "count": n} for (op, reason), n in warn.items()],
            "not_in_table": unknown,
            "falls_back": list(dict.fromkeys(f.node for f in r.errors + r.warnings if falls_back(f))),
        }
    return {
        "path": path,
        "opset": model_opset(model),
        "num_nodes": len(model.graph.node),
        "inputs": [_io(v) for v in model.graph.input if v.name not in init_names],
        "outputs": [_io(v) for v in model.graph.output],
        "input": input_convention(model, path),
        "head": _head(model, path),
        "eps": eps,
    }


def input_convention(model: onnx.ModelProto, path: str) -> dict:
    """The image input's convention as fit, eval and patch read it (calib.model_input):
    {"name", "dtype", "layout", "why", "scaling"} or {"error": one line} where detcal cannot feed it.

    why: how the layout was decided (the axis holding 3 channels, or for dynamic channel axes the
    metadata key, else the NCHW default); scaling: what the preprocessing must be (uint8: none)."""
    from calib.model_info import value_info_dims, value_info_dtype
    from calib.model_input import LAYOUT_METADATA_KEYS, read_input_convention

    init_names = {i.name for i in model.graph.initializer}
    images = [i for i in model.graph.input if i.name not in init_names and len(value_info_dims(i)) == 4]
    if not images:
        return {"error": "no 4-D image input [B, 3, H, W] or [B, H, W, 3]"}
    inp = images[0]
    dims, metadata = value_info_dims(inp), {m.key: m.value for m in model.metadata_props}
    try:
        conv = read_input_convention(dims, value_info_dtype(inp), metadata=metadata, source=path, name=inp.name)
    except DetcalError as exc:
        return {"name": inp.name, "error": str(exc)}
    axis = 1 if conv.layout == "NCHW" else 3
    if dims[axis] == 3:
        why = f"3 channels at axis {axis} of {list(dims)}"
    elif isinstance(dims[4 - axis], int) and dims[4 - axis] != 3:      # the other axis cannot be the channels
        why = f"axis {4 - axis} is {dims[4 - axis]}, so the dynamic axis {axis} holds the channels"
    else:
        key = next((k for k in LAYOUT_METADATA_KEYS if k in metadata), None)
        why = (f"both channel axes dynamic; the metadata {key} = {metadata[key]!r}" if key else
               "both channel axes dynamic, nothing in the metadata: NCHW by default (fit --input-layout to choose)")
    scaling = {"uint8": "none: the model takes raw 0..255 pixels (fit --scale none, no --mean/--std)",
               "float16": "any (--scale); fed as float16"}.get(conv.dtype, "any (--scale div255, none, --mean/--std)")
    return {"name": inp.name, "dtype": conv.dtype, "layout": conv.layout, "why": why, "scaling": scaling}


def _format_input(c: dict | None) -> list[str]:
    if not c:
        return []
    if "error" in c:
        return [f"image input: not fed by detcal: {c['error']}"]
    return [f"image input: {c['name']} {c['dtype']} {c['layout']}", f"  layout: {c['why']}",
            f"  scaling: {c['scaling']}"]


def _head(model: onnx.ModelProto, path: str) -> dict:
    """The recognised head (calib.head_recognition.describe_head); weights are loaded for its probe."""
    from calib.head_recognition import describe_head

    try:
        full = onnx.load(path) if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer) \
            else model
    except Exception:
        full = model
    return describe_head(full, path)


def _format_head(h: dict | None) -> list[str]:
    if not h:
        return []
    if "error" in h:
        lines = [f"head: not recognised: {h['error']}"]
    else:
        extra = [f"{h['num_classes']} classes" if h.get("num_classes") is not None else "classes: not fixed by the shape"]
        if h.get("strides"):
            s = h["strides"]
            extra.append(f"strides {', '.join(map(str, s)) if isinstance(s, list) else s}")
        if h.get("reg_max") is not None:
            extra.append(f"reg_max {h['reg_max']}")
        if h.get("mask_coeffs"):
            extra.append(f"{h['mask_coeffs']} mask coefficients, prototypes {h['prototypes']}")
        if h.get("input_hw"):
            extra.append(f"input {h['input_hw'][0]}x{h['input_hw'][1]}")
        lines = [f"head: {h['layout']} ({', '.join(extra)})", f"  why: {h['reason']}",
                 f"  outputs: {', '.join(h['outputs'])}"]
    for k, v in (h.get("hints") or {}).items():
        lines.append(f"  hint {k}: {v}")
    return lines


def format_inspection(d: dict) -> str:
    """Render ``inspect_model``'s result as text."""
    fmt = lambda io: f"  {io['name']}: {io['dtype']} [{', '.join(str(s) for s in io['shape'])}]"  # noqa: E731
    lines = [f"model: {d['path']}", f"opset: {d['opset']}   nodes: {d['num_nodes']}", "inputs:"]
    lines += [fmt(io) for io in d["inputs"]]
    lines += ["outputs:"] + [fmt(io) for io in d["outputs"]]
    lines += _format_input(d.get("input"))
    lines += _format_head(d.get("head"))
    lines.append("execution providers:")
    for ep in EPS:
        e = d["eps"][ep]
        lines.append(f"  {e['name']:<18} {e.get('status') or ('covered' if e['covered'] else 'NOT covered')}")
        for u in e["uncovered"]:
            lines.append(f"      x {u['op']} x{u['count']}: {u['reason']}")
        for w in e["warnings"]:
            lines.append(f"      ! {w['op']} x{w['count']}: {w['reason']}")
        for u in e.get("not_in_table", []):
            lines.append(f"      ? {u['op']} x{u['count']}: {u['note']}")
        if e.get("falls_back"):
            lines.append(f"      nodes outside the TensorRT engine ({len(e['falls_back'])}): {', '.join(e['falls_back'])}")
    return "\n".join(lines)
