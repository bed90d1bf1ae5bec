"""Which ONNX ops run where: onnxruntime CPU, onnxruntime CUDA, TensorRT 8.6 and TensorRT 10.x.

The table is data (``SUPPORT``), the sources are data (``SOURCES``), and ``check_nodes`` /
``coverage`` turn them into per-node findings. ``detcal patch`` checks every inserted node
with ``check_nodes(..., forbid=DETCAL_FORBIDDEN)``; ``detcal inspect`` prints ``coverage``.

Execution providers (keys of every per-EP mapping):

    "cpu"   onnxruntime CPUExecutionProvider
    "cuda"  onnxruntime CUDAExecutionProvider (kernel registrations; ops without a CUDA
            kernel still *run* under the CUDA EP by falling back to CPU, with copies)
    "trt86" TensorRT 8.6 ONNX parser
    "trt10" TensorRT 10.x ONNX parser

Sources (keys of ``SOURCES``; entries cite them per op where the fact is specific):

- ``ort-kernels``: onnxruntime ``docs/OperatorKernels.md`` (generated from the registered
  kernels), CUDAExecutionProvider section; opset ranges in the "cuda" column come from it.
- ``ort-cpu-registry``: the CPU column's lowest registered opset was read from
  ``onnxruntime.capi._pybind_state.get_all_opkernel_def()`` of onnxruntime 1.32
  (tests/test_ep_support.py re-checks the table against the installed onnxruntime).
- ``ort-cuda-nms``: ``onnxruntime/core/providers/cuda/object_detection/non_max_suppression.cc``:
  CUDA NonMaxSuppression registered for opset 10 and 11+, looping over (batch, class) on the
  host and copying the selected count to the host for each pair.
- ``trt-onnx-8.5``: onnx-tensorrt ``docs/operators.md`` at release 8.5 ("TensorRT 8.5 supports
  operators up to Opset 17"); with ``trt-changelog`` (8.6 EA/GA entries) it is the TRT 8.6 column.
- ``trt-changelog``: onnx-tensorrt ``docs/Changelog.md``: 8.5 GA added NonZero, Mod, Trilu and
  native NonMaxSuppression; 8.6 EA added TopK with dynamic K and INT32 TopK/ArgMax/ArgMin;
  9.0 added INT64 (no more INT64 -> INT32 cast).
- ``trt-onnx-10``: onnx-tensorrt ``docs/operators.md`` for TensorRT 10.x ("TensorRT 10.15
  supports operators in the inclusive range of opset 9 to opset 24").
- ``trt-topk``: TensorRT operator doc TopK: "k must obey k <= d, k <= 3840"; the
  onnx-tensorrt 10.x matrix says "`sorted` must be 1. `K` input must be less than 3840".
- ``trt-nms``: TensorRT INMSLayer / operator doc NMS: per batch item at most the "TopK box
  limit" candidates (default and maximum 5000, 2000 on SM 5.3/6.2) are considered; the
  order of tied scores is unspecified; MaxOutputBoxesPerClass is an int32 scalar.
- ``ort-trt-ep-nms``: microsoft/onnxruntime#17434: inside onnxruntime's TensorRT EP the
  onnx-tensorrt parser filters out NonMaxSuppression, NonZero and RoiAlign, so those nodes
  are placed on the CUDA/CPU EP (a partition break).
- ``trt-scatter``: NVIDIA/TensorRT#2396 (IScatterLayer only has reduction "none"),
  NVIDIA/TensorRT#3750 (TRT 8.6.1 ignores ScatterElements reduction="add": wrong results,
  no error), NVIDIA/TensorRT#3650 (TRT 10, reduction "not fully supported");
  onnx/onnx-tensorrt#957 and microsoft/onnxruntime#23618 (ScatterND fails to import when a
  ``reduction`` attribute is present at all, even "none").
- ``ort-cuda-scatter``: microsoft/onnxruntime#19198 (CUDA ScatterElements opset 18 with
  reductions, via atomics) and #32061 (reductions dispatched by element size: wrong results
  for some integer types).

The TensorRT 8.6 matrix itself was not in the stored material; where the 8.5 matrix and the
8.6 changelog leave a question open, the 8.6 entry says so and is conservative.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

EPS: tuple[str, ...] = ("cpu", "cuda", "trt86", "trt10")
EP_NAMES: dict[str, str] = {
    "cpu": "onnxruntime CPU",
    "cuda": "onnxruntime CUDA",
    "trt86": "TensorRT 8.6",
    "trt10": "TensorRT 10.x",
}

SOURCES: dict[str, str] = {
    "ort-kernels": "https://github.com/microsoft/onnxruntime/blob/main/docs/OperatorKernels.md",
    "ort-cpu-registry": "onnxruntime 1.32 onnxruntime.capi._pybind_state.get_all_opkernel_def()",
    "ort-cuda-nms": "https://github.com/microsoft/onnxruntime/blob/main/onnxruntime/core/providers/cuda/object_detection/non_max_suppression.cc",
    "ort-functions": "onnxruntime expands ONNX function ops (e.g. HardSwish) that have no kernel; "
    "Constant nodes become initializers at load time",
    "trt-onnx-8.5": "https://github.com/onnx/onnx-tensorrt/blob/release/8.5-GA/docs/operators.md",
    "trt-changelog": "https://github.com/onnx/onnx-tensorrt/blob/main/docs/Changelog.md",
    "trt-onnx-10": "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md",
    "trt-topk": "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/TopK.html",
    "trt-nms": "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/NMS.html ; "
    "https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-861/api/c_api/classnvinfer1_1_1_i_n_m_s_layer.html",
    "ort-trt-ep-nms": "https://github.com/microsoft/onnxruntime/issues/17434",
    "trt-scatter": "https://github.com/NVIDIA/TensorRT/issues/2396 ; https://github.com/NVIDIA/TensorRT/issues/3750 ; "
    "https://github.com/NVIDIA/TensorRT/issues/3650 ; https://github.com/onnx/onnx-tensorrt/issues/957 ; "
    "https://github.com/microsoft/onnxruntime/issues/23618",
    "ort-cuda-scatter": "https://github.com/microsoft/onnxruntime/pull/19198 ; https://github.com/microsoft/onnxruntime/issues/32061",
}

# TensorRT limits (see SOURCES["trt-topk"], SOURCES["trt-nms"]).
TRT_TOPK_MAX_K = 3840          # layer doc: k <= 3840; onnx-tensorrt 10.x: "less than 3840"
TRT_NMS_TOPK_BOX_LIMIT = 5000  # candidates considered per batch item by INMSLayer

#: Ops that detcal never inserts (issue 3: "Unique, loops and If nodes are out").
DETCAL_FORBIDDEN: frozenset[str] = frozenset({"Unique", "Loop", "If", "Scan"})

YES, PARTIAL, NO = "yes", "partial", "no"


@dataclass(frozen=True)
class EPStatus:
    """Support of one op on one EP.

    status: "yes", "partial" (supported with restrictions, see note) or "no".
    since: lowest opset with a registered kernel (onnxruntime EPs); None = any / not applicable.
    until: highest opset with a kernel when registration stops (e.g. Upsample, deprecated).
    """

    status: str
    note: str = ""
    source: str = ""
    since: int | None = None
    until: int | None = None


@dataclass(frozen=True)
class OpSupport:
    """Support of one ONNX op (default domain) on every EP in ``EPS``."""

    op: str
    eps: Mapping[str, EPStatus]

    def __getitem__(self, ep: str) -> EPStatus:
        return self.eps[ep]


# --------------------------------------------------------------------------------------
# The compact table. Columns: op, cpu, cuda, trt86, trt10.
#   cpu/cuda: lowest registered opset ("1".."20"), "7-9" for a closed range, "f" = no kernel
#             but onnxruntime expands the ONNX function / handles it in the graph, "-" = none.
#   trt*: "y", "p" (partial: see _NOTES), "n".
# Sources: cpu = ort-cpu-registry, cuda = ort-kernels, trt86 = trt-onnx-8.5 + trt-changelog,
# trt10 = trt-onnx-10, unless _NOTES says otherwise.
# --------------------------------------------------------------------------------------
_TABLE = """
Conv                1   1   p  y
ConvTranspose       1   1   p  y
BatchNormalization  7   7   y  y
Relu                6   6   y  y
Sigmoid             6   6   y  y
LeakyRelu           6   6   y  y
HardSigmoid         6   6   y  y
HardSwish           f   14  y  y
Add                 7   7   y  y
Sub                 7   7   y  y
Mul                 7   7   y  y
Div                 7   7   y  y
Pow                 7   7   y  y
Sqrt                6   6   y  y
Exp                 6   6   y  y
Log                 6   6   y  y
Concat              4   4   y  y
Split               2   2   y  y
Slice               1   1   p  y
Reshape             1   1   y  y
Transpose           1   1   y  y
Squeeze             1   1   p  p
Unsqueeze           1   1   p  p
Resize              10  10  p  p
Upsample            7-9 7-9 y  y
MaxPool             1   1   p  p
AveragePool         7   7   p  p
GlobalAveragePool   1   1   y  y
Softmax             1   1   y  y
MatMul              1   1   y  y
Gemm                7   7   y  y
Shape               1   1   y  y
Gather              1   1   y  y
GatherElements      11  11  y  y
GatherND            11  11  y  y
Cast                6   6   p  p
Constant            f   f   y  y
ConstantOfShape     9   9   y  y
Expand              8   8   y  y
Tile                6   6   y  y
Range               11  11  p  y
Equal               7   7   y  y
Greater             7   7   y  y
GreaterOrEqual      12  12  y  y
Less                7   7   y  y
LessOrEqual         12  12  y  y
And                 7   7   y  y
Or                  7   7   y  y
Not                 1   1   y  y
Where               9   9   y  y
Max                 6   6   y  y
Min                 6   6   y  y
Clip                6   6   y  y
Floor               6   6   y  y
Ceil                6   6   y  y
Round               11  11  y  y
Abs                 6   6   y  y
Neg                 6   6   y  y
Reciprocal          6   6   y  y
ReduceMax           1   1   y  p
ReduceMin           1   1   y  p
ReduceSum           1   1   y  p
ReduceMean          1   1   y  p
ArgMax              1   1   y  y
ArgMin              1   1   y  y
TopK                1   1   p  p
NonMaxSuppression   10  10  p  p
NonZero             9   9   p  p
ScatterND           11  11  p  p
ScatterElements     11  11  p  p
Einsum              12  12  p  y
Identity            1   1   y  y
Flatten             1   1   y  y
Pad                 2   2   y  y
CumSum              11  11  p  p
Mod                 10  10  y  y
Sign                9   13  y  y
Erf                 9   9   y  y
Tanh                6   6   y  y
Softplus            1   1   y  y
Unique              11  -   n  n
Loop                1   1   p  p
If                  1   1   p  p
Scan                8   8   y  y
Sum                 6   6   y  y
Mean                6   -   y  y
Size                1   1   y  y
Trilu               14  14  y  y
Dropout             7   7   y  p
"""

# (op, ep) -> (status override or None, note, source). Notes for "p" entries and caveats.
_NOTES: dict[tuple[str, str], tuple[str | None, str, str]] = {
    ("Conv", "trt86"): (None, "2D/3D only; weights W must be an initializer", "trt-onnx-8.5"),
    ("ConvTranspose", "trt86"): (None, "2D/3D only; weights W must be an initializer", "trt-onnx-8.5"),
    ("HardSwish", "cpu"): (None, "no CPU kernel; onnxruntime expands the ONNX function body", "ort-functions"),
    ("HardSwish", "trt86"): (None, "listed in the 8.5 matrix", "trt-onnx-8.5"),
    ("Constant", "cpu"): (None, "folded into an initializer when the session loads", "ort-functions"),
    ("Constant", "cuda"): (None, "folded into an initializer when the session loads", "ort-functions"),
    ("Slice", "trt86"): (None, "`axes` must be an initializer", "trt-onnx-8.5"),
    ("Squeeze", "trt86"): (None, "`axes` must be an initializer", "trt-onnx-8.5"),
    ("Squeeze", "trt10"): (None, "`axes` must be resolvable to a constant", "trt-onnx-10"),
    ("Unsqueeze", "trt86"): (None, "`axes` must be a constant tensor", "trt-onnx-8.5"),
    ("Unsqueeze", "trt10"): (None, "`axes` must be resolvable to a constant", "trt-onnx-10"),
    ("Resize", "trt86"): (None, "modes nearest/linear; coordinate modes half_pixel, pytorch_half_pixel, "
                          "tf_half_pixel_for_nn, asymmetric, align_corners; nearest modes floor, ceil, "
                          "round_prefer_floor, round_prefer_ceil", "trt-onnx-8.5"),
    ("Resize", "trt10"): (None, "as 8.6, plus: no antialias, keep_aspect_ratio_policy stretch only",
                          "trt-onnx-10"),
    ("MaxPool", "trt86"): (None, "2D/3D only; the Indices output is unsupported", "trt-onnx-8.5"),
    ("MaxPool", "trt10"): (None, "2D/3D only; Indices output unsupported; dilations all 1", "trt-onnx-10"),
    ("AveragePool", "trt86"): (None, "2D/3D only", "trt-onnx-8.5"),
    ("AveragePool", "trt10"): (None, "2D/3D only; dilations all 1", "trt-onnx-10"),
    ("Cast", "trt86"): (None, "FP32, FP16, INT32, INT8, BOOL; INT64 and DOUBLE are cast down to INT32/FLOAT "
                        "(clamped); UINT8 only as network I/O", "trt-onnx-8.5"),
    ("Cast", "trt10"): (None, "FP32, FP16, BF16, INT32, INT64, UINT8, BOOL; DOUBLE cast down to FLOAT",
                        "trt-onnx-10"),
    ("Range", "trt86"): (None, "floating-point Range needs start/limit/delta as initializers "
                         "(stated in the 8.4 matrix; kept as a precaution)", "trt-onnx-8.5"),
    ("ReduceMax", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("ReduceMin", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("ReduceSum", "trt10"): (None, "`axes` (an input from opset 13) must be an initializer", "trt-onnx-10"),
    ("ReduceMean", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("TopK", "trt86"): (None, f"K must be a constant <= {TRT_TOPK_MAX_K} (layer limit); dynamic K from 8.6 EA; "
                        "FP32/FP16/INT32 input", "trt-topk"),
    ("TopK", "trt10"): (None, f"`sorted` must be 1; K < {TRT_TOPK_MAX_K}", "trt-topk"),
    ("NonMaxSuppression", "cuda"): (None, "registered for opset 10 and 11+; loops over (batch, class) on the "
                                    "host with a device->host copy each: use one call with a class "
                                    "offset, few classes", "ort-cuda-nms"),
    ("NonMaxSuppression", "trt86"): (None, "native INMSLayer since 8.5; inside onnxruntime's TensorRT EP the node "
                                     "is filtered out and runs on CUDA/CPU; at most 5000 candidates per "
                                     "image are considered; tie order unspecified; keep "
                                     "max_output_boxes_per_class/iou/score inputs constant",
                                     "trt-nms"),
    ("NonMaxSuppression", "trt10"): (None, "as 8.6: INMSLayer, top-5000 candidate limit, tie order "
                                     "unspecified; filtered out by onnxruntime's TensorRT EP",
                                     "trt-nms"),
    ("NonZero", "trt86"): (None, "supported since 8.5 (data-dependent shape); onnxruntime's TensorRT EP "
                           "filters it out (runs on CUDA/CPU)", "ort-trt-ep-nms"),
    ("NonZero", "trt10"): (None, "data-dependent output shape; filtered out by onnxruntime's TensorRT EP",
                           "ort-trt-ep-nms"),
    ("ScatterND", "trt86"): (None, "reduction other than none is ignored (wrong results, no error): "
                             "omit the `reduction` attribute", "trt-scatter"),
    ("ScatterND", "trt10"): (None, "`reduction` other than none unsupported; older 10.x reject the attribute "
                             "even when 'none': omit it", "trt-scatter"),
    ("ScatterElements", "trt86"): (None, "reduction must be 'none' (8.6.1 silently ignores 'add')", "trt-scatter"),
    ("ScatterElements", "trt10"): (None, "reduction must be 'none' (IScatterLayer has no reduction; "
                                   "reductions 'not fully supported')", "trt-scatter"),
    ("ScatterElements", "cuda"): (None, "reductions (opset 16+) via atomics; integer reductions had "
                                  "wrong results", "ort-cuda-scatter"),
    ("Einsum", "trt86"): (None, "no ellipsis, no diagonal, no broadcasting between inputs", "trt-onnx-8.5"),
    ("CumSum", "trt86"): (None, "`axis` must be an initializer; FP32/FP16 only", "trt-onnx-8.5"),
    ("CumSum", "trt10"): (None, "`axis` must be a build-time constant; FP32/FP16/BF16 only", "trt-onnx-10"),
    ("Sign", "cuda"): (None, "CUDA kernel only from opset 13", "ort-kernels"),
    ("Mod", "trt86"): (None, "added in 8.5 (FP32, FP16, INT32)", "trt-changelog"),
    ("Unique", "cuda"): (None, "no CUDA kernel (falls back to CPU)", "ort-kernels"),
    ("Unique", "trt86"): (None, "not supported", "trt-onnx-8.5"),
    ("Unique", "trt10"): (None, "not supported", "trt-onnx-10"),
    ("Loop", "trt86"): (None, "supported with restrictions; scan outputs need a build-time trip count",
                        "trt-onnx-8.5"),
    ("Loop", "trt10"): (None, "scan output length cannot be dynamic; loop-carried shapes must not change",
                        "trt-onnx-10"),
    ("If", "trt86"): (None, "branch outputs must have broadcastable shapes and different names", "trt-onnx-8.5"),
    ("If", "trt10"): (None, "branch outputs must have the same rank and different names", "trt-onnx-10"),
    ("Mean", "cuda"): (None, "no CUDA kernel (falls back to CPU)", "ort-kernels"),
    ("Dropout", "trt10"): (None, "`is_training` must be an initializer evaluating to False", "trt-onnx-10"),
    ("Trilu", "trt86"): (None, "N-D Trilu from 8.6 GA", "trt-changelog"),
}

_DEFAULT_SOURCE = {"cpu": "ort-cpu-registry", "cuda": "ort-kernels", "trt86": "trt-onnx-8.5",
                   "trt10": "trt-onnx-10"}


def _parse_ort(cell: str, ep: str) -> EPStatus:
    if cell == "-":
        return EPStatus(NO, f"no {EP_NAMES[ep]} kernel", _DEFAULT_SOURCE[ep])
    if cell == "f":
        return EPStatus(YES, "", "ort-functions")
    if "-" in cell:
        lo, hi = cell.split("-")
        return EPStatus(YES, f"kernel for opset {lo}..{hi} only", _DEFAULT_SOURCE[ep], int(lo), int(hi))
    return EPStatus(YES, "", _DEFAULT_SOURCE[ep], int(cell))


def _parse_trt(cell: str, ep: str) -> EPStatus:
    return EPStatus({"y": YES, "p": PARTIAL, "n": NO}[cell], "", _DEFAULT_SOURCE[ep])


def _build() -> dict[str, OpSupport]:
    table: dict[str, OpSupport] = {}
    for line in _TABLE.strip().splitlines():
        op, cpu, cuda, t86, t10 = line.split()
        eps = {"cpu": _parse_ort(cpu, "cpu"), "cuda": _parse_ort(cuda, "cuda"),
               "trt86": _parse_trt(t86, "trt86"), "trt10": _parse_trt(t10, "trt10")}
        for ep in EPS:
            if (op, ep) in _NOTES:
                status, note, source = _NOTES[(op, ep)]
                old = eps[ep]
                eps[ep] = EPStatus(status or old.status, note, source, old.since, old.until)
        table[op] = OpSupport(op, eps)
    return table


#: op_type -> OpSupport, for the ONNX default domain.
SUPPORT: dict[str, OpSupport] = _build()


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
    "NonMaxSuppression": [(2, "max_output_boxes_per_class", "trt-nms", 10),
                          (3, "iou_threshold", "trt-nms", 10),
                          (4, "score_threshold", "trt-nms", 10)],
}
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
        else:
            out.append((ERROR, f"K is not a constant: TensorRT needs a constant K {bound}", "trt-topk"))
        if ep == "trt10" and _attr(node, "sorted", 1) != 1:
            out.append((ERROR, "sorted=0 is unsupported (must be 1)", "trt-onnx-10"))
    elif op == "NonMaxSuppression":
        out.append((WARNING, "runs outside TensorRT under onnxruntime's TensorRT EP; a standalone "
                    f"TensorRT engine considers at most {TRT_NMS_TOPK_BOX_LIMIT} candidates per image "
                    "and orders tied scores arbitrarily", "trt-nms"))
    elif op == "NonZero":
        out.append((WARNING, "data-dependent shape; onnxruntime's TensorRT EP runs it outside TensorRT",
                    "ort-trt-ep-nms"))
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
) -> list[Finding]:
    """Check nodes against the support table; return the findings, per node and per EP.

    nodes: in topological order (as in a graph). opset: the model's default-domain opset.
    consts: known constant tensors (initializers) by name, value None when not loaded;
        Constant nodes among ``nodes`` are
        picked up automatically. A tensor not known to be constant counts as a runtime tensor,
        so pass the initializers when checking part of a graph.
    forbid: op types to reject on every EP as a policy (``DETCAL_FORBIDDEN`` for detcal's own
        inserted nodes).
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
        for a in node.attribute:  # subgraphs
            if a.type == onnx.AttributeProto.GRAPH:
                findings += check_nodes(a.g.node, opset, consts=consts, eps=eps, forbid=forbid)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    findings += check_nodes(g.node, opset, consts=consts, eps=eps, forbid=forbid)
    return findings


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


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of a model (1 if absent, per the ONNX spec)."""
    for o in model.opset_import:
        if _is_default_domain(o.domain):
            return o.version
    return 1


def coverage(model: onnx.ModelProto, *, forbid: Iterable[str] = ()) -> dict[str, EPReport]:
    """Check every node of a model; return an ``EPReport`` per EP in ``EPS``."""
    consts: dict[str, np.ndarray | None] = {}
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            consts[init.name] = None  # constant, value not loaded
        else:
            consts[init.name] = numpy_helper.to_array(init)
    findings = check_nodes(model.graph.node, model_opset(model), consts=consts, forbid=forbid)
    reports = {ep: EPReport(ep, True) for ep in EPS}
    for f in findings:
        r = reports[f.ep]
        (r.errors if f.level == ERROR else r.warnings).append(f)
    for r in reports.values():
        r.covered = not r.errors
    return reports
