"""The data: which ONNX ops run where (onnxruntime CPU, onnxruntime CUDA, TensorRT 8.6, TensorRT 10.x).

The table is data (``SUPPORT``), the sources are data (``SOURCES``); ``onnx_ops.ep_support``
turns them into per-node findings (``check_nodes``, ``coverage``).

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
- ``ort-trt-ep-nms``: microsoft/onnxruntime#17434 and #22681 (1.20.1): onnxruntime's TensorRT
  EP leaves NonMaxSuppression, NonZero and RoiAlign outside TensorRT (on the CUDA/CPU EP, a
  partition break); #23705 (merged 2025-02) keeps them inside by default, with the provider
  option ``trt_op_types_to_exclude`` to move them out again, advised for TensorRT 10.0-10.7
  (slow data-dependent shapes). The table stays with "outside" for choosing the graph: the
  fixed-shape variant runs whole inside the engine either way.
- ``trt-importer-8.5``: onnx-tensorrt ``builtin_op_importers.cpp`` of the 8.5 era: runtime
  NonMaxSuppression limits (max boxes, IoU, score) are accepted as tensors; Pad with an
  ``axes`` input is refused ("TensorRT does not support dynamic axes for pad!").
- ``trt-scatter``: NVIDIA/TensorRT#2396 (IScatterLayer only has reduction "none"),
  NVIDIA/TensorRT#3750 (TRT 8.6.1 ignores ScatterElements reduction="add": wrong results,
  no error), NVIDIA/TensorRT#3650 (TRT 10, reduction "not fully supported");
  onnx/onnx-tensorrt#957 and microsoft/onnxruntime#23618 (ScatterND fails to import when a
  ``reduction`` attribute is present at all, even "none").
- ``ort-cuda-scatter``: microsoft/onnxruntime#19198 (CUDA ScatterElements opset 18 with
  reductions, via atomics) and #32061 (reductions dispatched by element size: wrong results
  for some integer types).

The TensorRT 8.6 matrix itself was not in the stored material; where the 8.5 matrix and the
8.6 changelog leave a question open, the 8.6 entry says so and is conservative. The 8.5/8.6
parser reads opsets up to 17: ``coverage`` says so for a newer model (``TRT86_MAX_OPSET``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


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
    "ort-trt-ep-nms": "https://github.com/microsoft/onnxruntime/issues/17434 ; "
    "https://github.com/microsoft/onnxruntime/pull/22681 ; https://github.com/microsoft/onnxruntime/pull/23705",
    "trt-importer-8.5": "https://github.com/onnx/onnx-tensorrt/blob/release/8.5-GA/builtin_op_importers.cpp",
    "trt-scatter": "https://github.com/NVIDIA/TensorRT/issues/2396 ; https://github.com/NVIDIA/TensorRT/issues/3750 ; "
    "https://github.com/NVIDIA/TensorRT/issues/3650 ; https://github.com/onnx/onnx-tensorrt/issues/957 ; "
    "https://github.com/microsoft/onnxruntime/issues/23618",
    "ort-cuda-scatter": "https://github.com/microsoft/onnxruntime/pull/19198 ; https://github.com/microsoft/onnxruntime/issues/32061",
}

# TensorRT limits (see SOURCES["trt-topk"], SOURCES["trt-nms"]).
TRT_TOPK_MAX_K = 3840          # layer doc: k <= 3840; onnx-tensorrt 10.x: "less than 3840"
TRT_NMS_TOPK_BOX_LIMIT = 5000  # candidates considered per batch item by INMSLayer
TRT86_MAX_OPSET = 17           # "TensorRT 8.5 supports operators up to Opset 17" (8.6: the same parser line)

#: Ops that detcal never inserts (issue 3: "Unique, loops and If nodes are out").
DETCAL_FORBIDDEN: frozenset[str] = frozenset({"Unique", "Loop", "If", "Scan"})

# (op, EP) -> (the element types, as numpy dtype names, its kernels take for the data input,
# source, the input's index): a node on another type has no kernel there (on CUDA: it runs on CPU,
# with copies). From ort-kernels' CUDAExecutionProvider section (docs/OperatorKernels.md at
# 001d12d2, the type list of the newest opset range). The CPU EP is not listed here: its kernels'
# types are read from the installed onnxruntime (ep_support.cpu_type_findings). Clip is left out:
# its CUDA types change with the opset (float only up to 11, no int32 from 12).
_FLOATS = frozenset({"float64", "float32", "float16"})
TYPE_LIMITS: dict[tuple[str, str], tuple[frozenset[str], str, int]] = {
    ("Pad", "cuda"): (frozenset({"bool", "float64", "float32", "float16"}), "ort-kernels", 0),
    ("ArgMax", "cuda"): (_FLOATS, "ort-kernels", 0),
    ("ArgMin", "cuda"): (_FLOATS, "ort-kernels", 0),
    ("MatMul", "cuda"): (_FLOATS | {"bfloat16"}, "ort-kernels", 0),
    ("GatherND", "cuda"): (_FLOATS | {"bfloat16", "bool", "int64"}, "ort-kernels", 0),
    ("Where", "cuda"): (_FLOATS | {"bfloat16", "int32", "int64", "uint8"}, "ort-kernels", 1),
    ("ReduceMax", "cuda"): (_FLOATS | {"int32", "int64"}, "ort-kernels", 0),
    ("ReduceMin", "cuda"): (_FLOATS | {"int32", "int64", "int8", "uint8"}, "ort-kernels", 0),
    ("NonZero", "cuda"): (frozenset({"bool", "float32", "float16", "int32", "int64", "uint8"}), "ort-kernels", 0),
    ("Mod", "cuda"): (_FLOATS | {"bfloat16", "int32", "int64", "uint32", "uint64"}, "ort-kernels", 0),
    # TensorRT matrices: no BOOL Pad (8.5: FP32, FP16, INT8, INT32; 10.x: FP32, FP16, BF16, INT32, INT64),
    # no integer MatMul, Reduce* FP32/FP16 only in the 8.5 matrix (INT32 from the 10.x one)
    ("Pad", "trt86"): (frozenset({"float32", "float16", "int8", "int32"}), "trt-onnx-8.5", 0),
    ("Pad", "trt10"): (frozenset({"float32", "float16", "bfloat16", "int32", "int64"}), "trt-onnx-10", 0),
    ("MatMul", "trt86"): (frozenset({"float32", "float16"}), "trt-onnx-8.5", 0),
    ("MatMul", "trt10"): (frozenset({"float32", "float16", "bfloat16"}), "trt-onnx-10", 0),
    ("ReduceMax", "trt86"): (frozenset({"float32", "float16"}), "trt-onnx-8.5", 0),
    ("ReduceMin", "trt86"): (frozenset({"float32", "float16"}), "trt-onnx-8.5", 0),
    ("ReduceSum", "trt86"): (frozenset({"float32", "float16"}), "trt-onnx-8.5", 0),
    ("ScatterND", "trt86"): (frozenset({"float32", "float16", "int8", "int32"}), "trt-onnx-8.5", 0),
    ("ScatterND", "trt10"): (frozenset({"float32", "float16", "bfloat16", "int32", "int64"}), "trt-onnx-10", 0),
}

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
    ("Cast", "trt10"): (None, "FP32, FP16, BF16, INT32, INT64, UINT8, BOOL; DOUBLE cast down to FLOAT; UINT8 "
                        "only as network I/O", "trt-onnx-10"),
    ("Pad", "trt86"): (None, "FP32, FP16, INT8, INT32; no `axes` input (opset 18)", "trt-importer-8.5"),
    ("Pad", "trt10"): (None, "FP32, FP16, BF16, INT32, INT64; a tensor `axes` input from 10.4 (a constant "
                       "before)", "trt-changelog"),
    ("Range", "trt86"): (None, "floating-point Range needs start/limit/delta as initializers "
                         "(stated in the 8.4 matrix; kept as a precaution)", "trt-onnx-8.5"),
    ("ReduceMax", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("ReduceMin", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("ReduceSum", "trt10"): (None, "`axes` (an input from opset 13) must be an initializer", "trt-onnx-10"),
    ("ReduceMean", "trt10"): (None, "`axes` (an input from opset 18) must be an initializer", "trt-onnx-10"),
    ("TopK", "trt86"): (None, f"K must be a constant <= {TRT_TOPK_MAX_K} (layer limit; the 8.6.0 EA operator "
                        "doc still says 1024); dynamic K from 8.6 EA; FP32/FP16/INT32 input", "trt-topk"),
    ("TopK", "trt10"): (None, f"`sorted` must be 1; K < {TRT_TOPK_MAX_K}", "trt-topk"),
    ("NonMaxSuppression", "cuda"): (None, "registered for opset 10 and 11+; loops over (batch, class) on the "
                                    "host with a device->host copy each: use one call with a class "
                                    "offset, few classes", "ort-cuda-nms"),
    ("NonMaxSuppression", "trt86"): (None, "native INMSLayer since 8.5; at most 5000 candidates per image are "
                                     "considered; tie order unspecified; onnxruntime's TensorRT EP up to 1.20 "
                                     "leaves the node outside TensorRT (CUDA/CPU); later ones keep it inside "
                                     "unless trt_op_types_to_exclude names it", "trt-nms"),
    ("NonMaxSuppression", "trt10"): (None, "as 8.6: INMSLayer, top-5000 candidate limit, tie order unspecified; "
                                     "outside TensorRT under onnxruntime's TensorRT EP up to 1.20 (and where "
                                     "trt_op_types_to_exclude names it, advised for TensorRT 10.0-10.7's slow "
                                     "data-dependent shapes)", "trt-nms"),
    ("NonZero", "trt86"): (None, "supported since 8.5 (data-dependent shape); onnxruntime's TensorRT EP up to "
                           "1.20 leaves it outside TensorRT (CUDA/CPU)", "ort-trt-ep-nms"),
    ("NonZero", "trt10"): (None, "data-dependent output shape; outside TensorRT under onnxruntime's TensorRT EP "
                           "up to 1.20 or where trt_op_types_to_exclude names it (advised for 10.0-10.7)",
                           "ort-trt-ep-nms"),
    ("ScatterND", "trt86"): (None, "reduction other than none is ignored (wrong results, no error): "
                             "omit the `reduction` attribute", "trt-scatter"),
    ("ScatterND", "trt10"): (None, "`reduction` other than none unsupported; 10.x up to 10.7 reject the attribute "
                             "even when 'none' (the 10.15 matrix accepts it): omit it", "trt-scatter"),
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
