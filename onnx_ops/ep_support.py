"""Which ONNX ops run where, per node: the checks over the table in ``onnx_ops.ep_table``.

``check_nodes`` / ``coverage`` turn the table into per-node findings. ``detcal patch`` checks
every inserted node with ``check_nodes(..., forbid=DETCAL_FORBIDDEN)``; ``detcal inspect``
prints ``coverage``. The table's names (SUPPORT, SOURCES, EPS, ...) are re-exported here.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from calib.model_info import model_opset  # noqa: F401 (re-exported for inspect)

from .ep_table import (DETCAL_FORBIDDEN, EP_NAMES, EPS, NO, PARTIAL, SOURCES, SUPPORT, TRT86_MAX_OPSET,  # noqa: F401
                       TRT_NMS_TOPK_BOX_LIMIT, TRT_TOPK_MAX_K, TYPE_LIMITS, YES, EPStatus, OpSupport)

# --------------------------------------------------------------------------------------
# Node checks
# --------------------------------------------------------------------------------------

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """One problem of one node on one EP.

    level "error": the node will not import / has no kernel / breaks a documented constraint.
    level "warning": supported, but with a documented restriction that could not be checked
    statically, or a runtime fallback (e.g. an op without a CUDA kernel runs on CPU).
    """

    ep: str
    node: str
    op: str
    level: str
    reason: str
    source: str = ""


def _is_default_domain(domain: str) -> bool:
    return domain in ("", "ai.onnx")


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _constant_outputs(nodes: Iterable[onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Values of the outputs of Constant nodes (``value`` / ``value_int(s)`` / ``value_float(s)``)."""
    out: dict[str, np.ndarray] = {}
    for n in nodes:
        if n.op_type != "Constant" or not _is_default_domain(n.domain):
            continue
        for a in n.attribute:
            v = onnx.helper.get_attribute_value(a)
            if a.name == "value":
                out[n.output[0]] = numpy_helper.to_array(v)
            elif a.name in ("value_int", "value_ints", "value_float", "value_floats"):
                out[n.output[0]] = np.asarray(v)
    return out


class _Ctx:
    """What is known about the tensors around the checked nodes."""

    def __init__(self, nodes: list[onnx.NodeProto], consts: Mapping[str, np.ndarray | None] | None):
        consts = dict(consts or {})
        self.values: dict[str, np.ndarray] = {k: v for k, v in consts.items() if v is not None}
        self.values.update(_constant_outputs(nodes))
        # Build-time constants without a known value: outputs of nodes fed only by constants
        # (TensorRT folds these); Shape/Size of anything is *not* counted (dynamic shapes).
        self.const = set(self.values) | set(consts)
        for n in nodes:  # nodes are in topological order in a valid graph
            ins = [i for i in n.input if i]
            if n.op_type not in ("Shape", "Size", "RandomNormal", "RandomUniform",
                                 "RandomNormalLike", "RandomUniformLike") and ins \
                    and all(i in self.const for i in ins):
                self.const.update(o for o in n.output if o)

        # Upper bounds of run-time scalars: Min with a one-value constant bounds its output (through
        # Cast, Identity, Squeeze, Unsqueeze and Reshape too): a data-dependent TopK K is read this way.
        self.upper: dict[str, float] = {}
        for n in nodes:
            ins = [i for i in n.input if i]
            if n.op_type == "Min":
                caps = [float(np.asarray(self.values[i]).reshape(-1)[0]) for i in ins
                        if i in self.values and np.asarray(self.values[i]).size == 1]
                caps += [self.upper[i] for i in ins if i in self.upper]
                if caps and n.output:
                    self.upper[n.output[0]] = min(caps)
            elif n.op_type in ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape") and ins and ins[0] in self.upper:
                self.upper[n.output[0]] = self.upper[ins[0]]

    def upper_bound(self, name: str) -> float | None:
        """A build-time upper bound on a run-time tensor's values, where the graph proves one."""
        return self.upper.get(name)

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.const

    def value(self, name: str) -> np.ndarray | None:
        return self.values.get(name)


_CAST_OK = {
    "trt86": {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64,
              TensorProto.INT8, TensorProto.BOOL, TensorProto.DOUBLE},
    "trt10": {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
              TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL, TensorProto.DOUBLE},
}

# Element types the TensorRT parser converts before building (trt-onnx-8.5: INT64 and DOUBLE are cast down
# to INT32 / FLOAT before 9.0; trt-onnx-10: DOUBLE to FLOAT): checked against TYPE_LIMITS as what they become.
_TRT_CAST_DOWN = {"trt86": {"int64": "int32", "float64": "float32"}, "trt10": {"float64": "float32"}}

# Inputs that TensorRT needs constant, per (op, ep): (input index, what, source, opset from which
# the value is an input rather than an attribute).
_TRT_CONST_INPUTS: dict[str, list[tuple[int, str, str, int]]] = {
    "Slice": [(3, "axes", "trt-onnx-8.5", 10)],
    "Squeeze": [(1, "axes", "trt-onnx-10", 13)],
    "Unsqueeze": [(1, "axes", "trt-onnx-10", 13)],
    "ReduceMax": [(1, "axes", "trt-onnx-10", 18)],
    "ReduceMin": [(1, "axes", "trt-onnx-10", 18)],
    "ReduceMean": [(1, "axes", "trt-onnx-10", 18)],
    "ReduceSum": [(1, "axes", "trt-onnx-10", 13)],
    "CumSum": [(1, "axis", "trt-onnx-10", 11)],
    "Conv": [(1, "weights W", "trt-onnx-8.5", 1)],
    "ConvTranspose": [(1, "weights W", "trt-onnx-8.5", 1)],
}
# (NonMaxSuppression's max boxes / IoU / score inputs: both the 8.5 and the 10.x importers take run-time
# tensors (trt-importer-8.5); only the 8.4 plugin-era matrix asked for initializers.)
# Which of those apply to TRT 8.6 only (10.x accepts runtime tensors there).
_TRT86_ONLY = {("Slice", "axes"), ("Conv", "weights W"), ("ConvTranspose", "weights W")}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


def _trt_constraints(node: onnx.NodeProto, ep: str, opset: int, ctx: _Ctx) -> list[tuple[str, str, str]]:
    """(level, reason, source) for TensorRT-specific constraints of one node."""
    op, out = node.op_type, []
    for idx, what, src, from_opset in _TRT_CONST_INPUTS.get(op, []):
        if ep == "trt10" and (op, what) in _TRT86_ONLY:
            continue
        name = _input(node, idx)
        if opset >= from_opset and name and not ctx.is_const(name):
            out.append((ERROR, f"{what} (input {idx}) must be a build-time constant", src))
    if op == "TopK":
        k_name = _input(node, 1) if opset >= 10 else ""
        k = ctx.value(k_name) if k_name else np.asarray(_attr(node, "k", 0))
        limit_ok = (lambda v: v <= TRT_TOPK_MAX_K) if ep == "trt86" else (lambda v: v < TRT_TOPK_MAX_K)
        bound = f"<= {TRT_TOPK_MAX_K}" if ep == "trt86" else f"< {TRT_TOPK_MAX_K}"
        if k is not None and np.asarray(k).size:
            if not limit_ok(int(np.asarray(k).reshape(-1)[0])):
                out.append((ERROR, f"K={int(np.asarray(k).reshape(-1)[0])}: TensorRT needs K {bound}", "trt-topk"))
        elif ctx.is_const(k_name):
            out.append((WARNING, f"K is constant but its value is unknown here: check K {bound}", "trt-topk"))
        elif (top := ctx.upper_bound(k_name)) is not None and limit_ok(int(top)):
            out.append((WARNING, f"K is computed at run time, at most {int(top)} (a Min with a constant): TensorRT "
                        "takes a dynamic K from 8.6 on", "trt-changelog"))
        elif top is not None:
            out.append((ERROR, f"K is computed at run time and can reach {int(top)}: TensorRT needs K {bound}",
                        "trt-topk"))
        else:
            out.append((ERROR, f"K is not a constant and has no bound here: TensorRT needs K {bound} "
                        "(a constant, or a Min with one)", "trt-topk"))
        if ep == "trt10" and _attr(node, "sorted", 1) != 1:
            out.append((ERROR, "sorted=0 is unsupported (must be 1)", "trt-onnx-10"))
    elif op == "NonMaxSuppression":
        out.append((WARNING, "runs outside TensorRT under onnxruntime's TensorRT EP up to 1.20 (later: where "
                    "trt_op_types_to_exclude names it); a TensorRT engine considers at most "
                    f"{TRT_NMS_TOPK_BOX_LIMIT} candidates per image and orders tied scores arbitrarily", "trt-nms"))
    elif op == "NonZero":
        out.append((WARNING, "data-dependent shape; onnxruntime's TensorRT EP up to 1.20 runs it outside TensorRT "
                    "(later: where trt_op_types_to_exclude names it, advised for TensorRT 10.0-10.7)",
                    "ort-trt-ep-nms"))
    elif op == "Pad" and _input(node, 3):
        if ep == "trt86":
            out.append((ERROR, "an `axes` input (opset 18) is unsupported by the 8.5/8.6 importer", "trt-importer-8.5"))
        elif not ctx.is_const(_input(node, 3)):
            out.append((WARNING, "a run-time `axes` input needs TensorRT 10.4 or newer", "trt-changelog"))
    elif op in ("ScatterElements", "ScatterND"):
        red = _attr(node, "reduction")
        if red not in (None, "none"):
            out.append((ERROR, f"reduction='{red}' is unsupported (only 'none')", "trt-scatter"))
        elif op == "ScatterND" and red is not None:
            out.append((ERROR if ep == "trt10" else WARNING,
                        "a `reduction` attribute, even 'none', fails to import on TensorRT 10.x up to "
                        "10.7: omit the attribute", "trt-scatter"))
    elif op == "Resize":
        mode = _attr(node, "mode", "nearest")
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if mode not in ("nearest", "linear"):
            out.append((ERROR, f"mode='{mode}' unsupported (nearest, linear)", SUPPORT["Resize"][ep].source))
        if coord not in _RESIZE_COORD:
            out.append((ERROR, f"coordinate_transformation_mode='{coord}' unsupported", SUPPORT["Resize"][ep].source))
        if mode == "nearest" and nearest not in _RESIZE_NEAREST:
            out.append((ERROR, f"nearest_mode='{nearest}' unsupported", SUPPORT["Resize"][ep].source))
        if _attr(node, "antialias", 0):
            out.append((ERROR, "antialias is unsupported", "trt-onnx-10"))
    elif op == "Cast":
        to = _attr(node, "to")
        if to is not None and to not in _CAST_OK[ep]:
            out.append((ERROR, f"Cast to {TensorProto.DataType.Name(to)} unsupported", SUPPORT["Cast"][ep].source))
        elif to == TensorProto.UINT8 and ep == "trt10":
            out.append((WARNING, "UINT8 only as a network input or output tensor", "trt-onnx-10"))
    elif op == "MaxPool" and len([o for o in node.output if o]) > 1:
        out.append((ERROR, "the Indices output is unsupported", SUPPORT["MaxPool"][ep].source))
    elif op == "Loop":
        m = _input(node, 0)
        n_carried = max(len(node.input) - 2, 0)
        has_scan = len(node.output) > n_carried
        if has_scan and not ctx.is_const(m):
            out.append((ERROR, "scan outputs with a runtime trip count (dynamic scan length)",
                        SUPPORT["Loop"][ep].source))
        else:
            out.append((WARNING, SUPPORT["Loop"][ep].note, SUPPORT["Loop"][ep].source))
    elif op == "If":
        out.append((WARNING, SUPPORT["If"][ep].note, SUPPORT["If"][ep].source))
    elif op == "Range" and ep == "trt86":
        ins = [i for i in node.input if i]
        # Only flag when we can tell the inputs are floating point from a known value.
        vals = [ctx.value(i) for i in ins]
        if any(v is not None and v.dtype.kind == "f" for v in vals) and not all(ctx.is_const(i) for i in ins):
            out.append((ERROR, "floating-point Range needs constant start/limit/delta", "trt-onnx-8.5"))
    elif op == "Einsum" and ep == "trt86" and "..." in str(_attr(node, "equation", "")):
        out.append((ERROR, "ellipsis in the Einsum equation is unsupported", "trt-onnx-8.5"))
    return out


def _ort_constraints(node: onnx.NodeProto, ep: str, opset: int) -> list[tuple[str, str, str]]:
    out = []
    if ep == "cuda" and node.op_type == "ScatterElements" and _attr(node, "reduction") not in (None, "none"):
        out.append((WARNING, "CUDA ScatterElements reductions had wrong results for some integer types",
                    "ort-cuda-scatter"))
    if ep == "cuda" and node.op_type == "NonMaxSuppression":
        out.append((WARNING, "host loop over (batch, class) pairs with a device->host copy per pair",
                    "ort-cuda-nms"))
    return out


def check_nodes(
    nodes: Iterable[onnx.NodeProto],
    opset: int,
    *,
    consts: Mapping[str, np.ndarray | None] | None = None,
    eps: Iterable[str] = EPS,
    forbid: Iterable[str] = (),
    types: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Check nodes against the support table; return the findings, per node and per EP.

    nodes: in topological order (as in a graph). opset: the model's default-domain opset.
    consts: known constant tensors (initializers) by name, value None when not loaded;
        Constant nodes among ``nodes`` are
        picked up automatically. A tensor not known to be constant counts as a runtime tensor,
        so pass the initializers when checking part of a graph.
    forbid: op types to reject on every EP as a policy (``DETCAL_FORBIDDEN`` for detcal's own
        inserted nodes).
    types: tensor name -> numpy dtype name (``tensor_types``), for the kernels registered for some
        element types only (``TYPE_LIMITS``); a tensor not in it is not checked.
    Nodes of a non-default domain (custom ops) are errors on every EP. Subgraphs of Loop/If/Scan
    are checked too.
    """
    nodes = list(nodes)
    eps = tuple(eps)
    forbid = frozenset(forbid)
    ctx = _Ctx(nodes, consts)
    findings: list[Finding] = []
    for node in nodes:
        name = node.name or (node.output[0] if node.output else node.op_type)
        op = node.op_type
        for ep in eps:
            def add(level: str, reason: str, source: str = "") -> None:
                findings.append(Finding(ep, name, op, level, reason, source))

            if not _is_default_domain(node.domain):
                add(ERROR, f"custom op of domain '{node.domain}': no kernel/importer")
                continue
            if op in forbid:
                add(ERROR, "not allowed in detcal's inserted graph (issue 3: no Unique, loops or If)")
                continue
            sup = SUPPORT.get(op)
            if sup is None:
                add(ERROR, "op not in detcal's support table (unknown support)")
                continue
            st = sup[ep]
            if st.status == NO:
                if ep == "cuda":
                    add(WARNING, "no CUDA kernel: runs on CPU with device<->host copies", st.source)
                else:
                    add(ERROR, st.note or "not supported", st.source)
                continue
            if (st.since is not None and opset < st.since) or (st.until is not None and opset > st.until):
                rng = f"{st.since}..{st.until}" if st.until else f"{st.since}+"
                level = WARNING if ep == "cuda" else ERROR
                add(level, f"no kernel for opset {opset} (registered: {rng})"
                    + ("; runs on CPU" if ep == "cuda" else ""), st.source)
            if ep.startswith("trt"):
                for level, reason, source in _trt_constraints(node, ep, opset, ctx):
                    add(level, reason, source)
            else:
                for level, reason, source in _ort_constraints(node, ep, opset):
                    add(level, reason, source)
            limit = TYPE_LIMITS.get((op, ep))
            dtype = (types or {}).get(_input(node, limit[2])) if limit is not None else None
            dtype = _TRT_CAST_DOWN.get(ep, {}).get(dtype, dtype)
            if limit is not None and dtype is not None and dtype not in limit[0]:
                add(WARNING if ep == "cuda" else ERROR, f"no kernel for {dtype} data (registered: "
                    f"{', '.join(sorted(limit[0]))})" + ("; runs on CPU with device<->host copies" if ep == "cuda"
                                                          else ""), limit[1])
            if ep == "cpu" and types:
                for level, reason, source in cpu_type_findings(node, opset, types):
                    add(level, reason, source)
        for a in node.attribute:  # subgraphs
            if a.type == onnx.AttributeProto.GRAPH:
                findings += check_nodes(a.g.node, opset, consts=consts, eps=eps, forbid=forbid, types=types)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    findings += check_nodes(g.node, opset, consts=consts, eps=eps, forbid=forbid, types=types)
    return findings


# numpy dtype names (tensor_types) -> the type names of onnxruntime's kernel registry
_ORT_TYPE = {"float32": "float", "float64": "double", "object": "string"}


@functools.lru_cache(maxsize=1)
def _cpu_kernel_types() -> dict[tuple[str, str], list[tuple[int, int, frozenset[str]]]]:
    """(op, type constraint) -> [(first opset, last opset, element types)] of the installed
    onnxruntime's CPU kernels (default domain); {} where the registry cannot be read."""
    try:
        from onnxruntime.capi import _pybind_state as C
        defs = C.get_all_opkernel_def()
    except Exception:                       # no onnxruntime, or a build without the registry call
        return {}
    out: dict[tuple[str, str], list[tuple[int, int, frozenset[str]]]] = {}
    for k in defs:
        if k.provider != "CPUExecutionProvider" or k.domain not in ("", "ai.onnx"):
            continue
        lo, hi = k.version_range
        for constraint, ts in k.type_constraints.items():
            out.setdefault((k.op_name, constraint), []).append(
                (lo, hi, frozenset(t[len("tensor("):-1] for t in ts if t.startswith("tensor("))))
    return out


def cpu_type_findings(node: onnx.NodeProto, opset: int, types: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(level, reason, source) for inputs of `node` whose element type (from `types`) no CPU kernel of
    the installed onnxruntime registers at `opset`. float16 is a warning (onnxruntime casts it to
    float32 around such a node), any other type an error (the session does not load)."""
    registry = _cpu_kernel_types()
    if not registry or not _is_default_domain(node.domain):
        return []
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:                       # an op onnx does not know at this opset: the table says so
        return []
    formals = list(schema.inputs)
    out, seen = [], set()
    for i, name in enumerate(node.input):
        if not name or name not in types or not formals:
            continue
        formal = formals[min(i, len(formals) - 1)]          # the last formal input may be variadic
        ranges = registry.get((node.op_type, formal.type_str))
        if not ranges:
            continue
        allowed = frozenset().union(*[ts for lo, hi, ts in ranges if lo <= opset <= hi])
        dtype = types[name]
        if not allowed or _ORT_TYPE.get(dtype, dtype) in allowed or (formal.type_str, dtype) in seen:
            continue
        seen.add((formal.type_str, dtype))                 # one finding per type constraint (MatMul's A and B)
        listed = ", ".join(sorted(allowed))
        if dtype == "float16":
            out.append((WARNING, f"no float16 CPU kernel for {formal.name} (registered: {listed}): onnxruntime "
                        "runs it in float32 with Casts around it", "ort-cpu-registry"))
        else:
            out.append((ERROR, f"no CPU kernel for {dtype} {formal.name} (registered: {listed})", "ort-cpu-registry"))
    return out


def falls_back(f: Finding) -> bool:
    """On a TensorRT EP: the finding's node may not run inside the engine (an error, or a node
    onnxruntime's TensorRT EP leaves outside it: NonZero and NonMaxSuppression up to onnxruntime 1.20,
    and later where `trt_op_types_to_exclude` names them, as advised for TensorRT 10.0-10.7). Kept
    conservative on purpose: it decides when `patch` takes the fixed-shape graph, which stays whole
    inside an engine on every version."""
    return f.ep.startswith("trt") and (f.level == ERROR or "outside TensorRT" in f.reason)


def leaves_tensorrt(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that put an inserted node outside a TensorRT engine (falls_back), other than
    NonMaxSuppression, which every variant of the inserted graph has."""
    return [f for f in findings if falls_back(f) and f.op != "NonMaxSuppression"]


@dataclass
class EPReport:
    """Coverage of one model on one EP: covered = no error findings."""

    ep: str
    covered: bool
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    def summary(self) -> list[tuple[str, str, int]]:
        """(op, reason, count) for the errors, most frequent first."""
        c = Counter((f.op, f.reason) for f in self.errors)
        return [(op, reason, n) for (op, reason), n in c.most_common()]


def tensor_types(model: onnx.ModelProto, *, inferred: bool = False) -> dict[str, str]:
    """Tensor name -> numpy dtype name, for the graph's inputs, outputs, initializers and every
    tensor shape inference types (run here unless `inferred`: the model is its result already); {}
    for what a model inference cannot handle leaves out."""
    if not inferred:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:   # a model shape inference cannot handle: only what is declared
            pass
    g = model.graph
    out = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    for init in g.initializer:
        out[init.name] = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name
    return out


def coverage(model: onnx.ModelProto, *, forbid: Iterable[str] = ()) -> dict[str, EPReport]:
    """Check every node of a model; return an ``EPReport`` per EP in ``EPS``. Calls of the model's
    own functions (FunctionProto, as onnxscript and torch's dynamo exporter write) are checked as
    the nodes they stand for: onnxruntime inlines them."""
    if model.functions:
        import onnx.inliner

        model = onnx.inliner.inline_local_functions(model)
    consts: dict[str, np.ndarray | None] = {}
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            consts[init.name] = None  # constant, value not loaded
        else:
            consts[init.name] = numpy_helper.to_array(init)
    opset = model_opset(model)
    findings = check_nodes(model.graph.node, opset, consts=consts, forbid=forbid, types=tensor_types(model))
    if opset > TRT86_MAX_OPSET:
        findings.append(Finding("trt86", "(model)", "(opset)", WARNING,
                                f"opset {opset}: the TensorRT 8.6 parser reads opsets up to {TRT86_MAX_OPSET} "
                                "(it tries a newer model op by op; forms changed since, e.g. Pad's `axes` input, "
                                "fail)", "trt-onnx-8.5"))
    reports = {ep: EPReport(ep, True) for ep in EPS}
    for f in findings:
        r = reports[f.ep]
        (r.errors if f.level == ERROR else r.warnings).append(f)
    for r in reports.values():
        r.covered = not r.errors
    return reports
