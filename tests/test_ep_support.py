"""Tests for onnx_ops.ep_support (the EP support table) and onnx_ops.inspect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.errors import DetcalError
from onnx_ops.ep_support import (
    DETCAL_FORBIDDEN, EPS, SOURCES, SUPPORT, TRT_TOPK_MAX_K, check_nodes, coverage, falls_back,
)
from calib.cli import main as cli_main
from onnx_ops.inspect import format_inspection, inspect_model

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FIXTURE_FILES = ["yolov8n_640.onnx", "yolov8n_dynamic.onnx", "yolov10n_e2e_640.onnx"]
TRT = ("trt86", "trt10")


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _errors(reports, ep):
    return [(f.op, f.reason) for f in reports[ep].errors]


def _conv_sigmoid(opset=17):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    return _model(nodes, [_vi("x", shape=[1, 3, 8, 8])], [_vi("y", shape=[1, 4, 8, 8])], [w], opset)


def _topk(k: int):
    kt = numpy_helper.from_array(np.array([k], np.int64), "k")
    node = helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)
    return _model([node], [_vi("s", shape=[1, 8400])],
                  [_vi("v"), _vi("i", TensorProto.INT64)], [kt])


# ---------------------------------------------------------------- the table itself

def test_table_is_complete_and_sourced():
    brief_ops = """Conv ConvTranspose BatchNormalization Relu Sigmoid LeakyRelu HardSigmoid HardSwish Add
    Sub Mul Div Pow Sqrt Exp Log Concat Split Slice Reshape Transpose Squeeze Unsqueeze Resize Upsample
    MaxPool AveragePool GlobalAveragePool Softmax MatMul Gemm Shape Gather GatherElements GatherND Cast
    Constant ConstantOfShape Expand Tile Range Equal Greater GreaterOrEqual Less LessOrEqual And Or Not
    Where Max Min Clip Floor Ceil Round Abs Neg Reciprocal ReduceMax ReduceMin ReduceSum ReduceMean ArgMax
    ArgMin TopK NonMaxSuppression NonZero ScatterND ScatterElements Einsum Identity Flatten Pad CumSum Mod
    Sign Erf Tanh Softplus Unique Loop If Scan Sum Mean Size Trilu""".split()
    assert not set(brief_ops) - set(SUPPORT)
    for op, sup in SUPPORT.items():
        for ep in EPS:
            st = sup[ep]
            assert st.status in ("yes", "partial", "no"), (op, ep)
            assert st.source in SOURCES, (op, ep, st.source)
            if st.status == "partial":
                assert st.note, f"{op} on {ep} is partial without a note"


def test_cpu_column_matches_installed_onnxruntime():
    """Every op the table says runs on CPU has a registered kernel (or is expanded/folded)."""
    C = pytest.importorskip("onnxruntime.capi._pybind_state")
    lo: dict[str, int] = {}
    for k in C.get_all_opkernel_def():
        if k.domain in ("", "ai.onnx") and k.provider == "CPUExecutionProvider":
            lo[k.op_name] = min(lo.get(k.op_name, 10**9), k.version_range[0])
    for op, sup in SUPPORT.items():
        st = sup["cpu"]
        if st.status == "yes" and st.source != "ort-functions":
            assert op in lo, f"{op}: table says CPU kernel, onnxruntime has none"
            assert st.since == lo[op], f"{op}: table since={st.since}, onnxruntime {lo[op]}"


# ---------------------------------------------------------------- small graphs

def test_plain_conv_sigmoid_fully_covered():
    reports = coverage(_conv_sigmoid())
    for ep in EPS:
        assert reports[ep].covered, (ep, _errors(reports, ep))
        assert not reports[ep].warnings


def test_custom_domain_op_flagged_everywhere():
    node = helper.make_node("EfficientNMS_TRT", ["x"], ["y"], domain="com.example")
    m = helper.make_model(
        helper.make_graph([node], "g", [_vi("x")], [_vi("y")]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    reports = coverage(m)
    for ep in EPS:
        assert not reports[ep].covered
        assert "custom op" in reports[ep].errors[0].reason


def test_unique_flagged_for_trt_and_falls_back_on_cuda():
    node = helper.make_node("Unique", ["x"], ["y"], sorted=1)
    reports = coverage(_model([node], [_vi("x", shape=[10])], [_vi("y")]))
    assert reports["cpu"].covered
    assert reports["cuda"].covered and reports["cuda"].warnings  # runs, but on CPU
    for ep in TRT:
        assert [op for op, _ in _errors(reports, ep)] == ["Unique"]


def test_loop_with_runtime_trip_count_and_scan_output_flagged_for_trt():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["x"], ["scan"])],
        "body",
        [_vi("iter", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, [])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("scan", shape=[2])])
    loop = helper.make_node("Loop", ["M", "cond"], ["out"], body=body)
    m = _model([loop], [_vi("M", TensorProto.INT64, []), _vi("cond", TensorProto.BOOL, []),
                        _vi("x", shape=[2])], [_vi("out")])
    reports = coverage(m)
    assert reports["cpu"].covered and reports["cuda"].covered
    for ep in TRT:
        assert any(op == "Loop" for op, _ in _errors(reports, ep)), ep


def test_forbid_policy_rejects_loops_everywhere():
    node = helper.make_node("If", ["c"], ["y"],
                            then_branch=helper.make_graph([], "t", [], []),
                            else_branch=helper.make_graph([], "e", [], []))
    findings = check_nodes([node], 17, forbid=DETCAL_FORBIDDEN)
    assert {f.ep for f in findings if f.level == "error"} == set(EPS)


def test_topk_k_5000_flagged_for_trt_only():
    reports = coverage(_topk(5000))
    assert reports["cpu"].covered and reports["cuda"].covered
    for ep in TRT:
        (op, reason), = _errors(reports, ep)
        assert op == "TopK" and "5000" in reason


def test_topk_limit_boundary():
    ok = coverage(_topk(TRT_TOPK_MAX_K - 1))
    assert ok["trt86"].covered and ok["trt10"].covered
    edge = coverage(_topk(TRT_TOPK_MAX_K))  # 8.6 layer doc: k <= 3840; 10.x matrix: K < 3840
    assert edge["trt86"].covered and not edge["trt10"].covered


def test_topk_runtime_k_flagged_for_trt():
    node = helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)
    findings = check_nodes([node], 17)  # "k" is not known to be constant
    assert {f.ep for f in findings if f.level == "error"} == set(TRT)


def _runtime_k_through_min(cap: float, cast_to=TensorProto.INT64):
    """TopK whose K is a run-time count capped by Min with a constant, cast to int64 (as boxes first's
    pre-NMS TopK): K = Cast(Min(Max(count, 300), cap))."""
    inits = {"lo": np.array([300.0], np.float32), "cap": np.array([cap], np.float32)}
    nodes = [helper.make_node("Max", ["count", "lo"], ["at_least"]),
             helper.make_node("Min", ["at_least", "cap"], ["k_f"]),
             helper.make_node("Cast", ["k_f"], ["k"], to=cast_to),
             helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)]
    return check_nodes(nodes, 17, consts=inits)


def test_topk_runtime_k_bounded_by_min_is_accepted_for_trt():
    findings = _runtime_k_through_min(3000.0)
    assert not [f for f in findings if f.level == "error"]
    warned = {f.ep: f.reason for f in findings if f.op == "TopK"}
    assert set(warned) == set(TRT) and all("at most 3000" in r for r in warned.values())
    from onnx_ops.ep_support import leaves_tensorrt
    assert leaves_tensorrt(findings) == []


def test_topk_runtime_k_bounded_above_the_limit_is_flagged():
    over = [f for f in _runtime_k_through_min(5000.0) if f.level == "error"]
    assert {f.ep for f in over} == set(TRT) and all("5000" in f.reason for f in over)
    # the bound must come from a Min with a constant: a Max with one bounds nothing from above
    nodes = [helper.make_node("Max", ["count", "lo"], ["k_f"]), helper.make_node("Cast", ["k_f"], ["k"], to=TensorProto.INT64),
             helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)]
    errs = [f for f in check_nodes(nodes, 17, consts={"lo": np.array([3.0], np.float32)}) if f.level == "error"]
    assert {f.ep for f in errs} == set(TRT)


def test_topk_k_from_constant_node_is_constant():
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([300], np.int64))),
             helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)]
    assert not [f for f in check_nodes(nodes, 17) if f.level == "error"]


def test_nms_warned_and_its_runtime_limits_accepted():
    """NMS: a warning on CUDA (host loop) and TensorRT (outside the engine under older onnxruntime TensorRT
    EPs, the 5000-candidate limit); run-time IoU / score limits are no error (the 8.5 and 10.x importers
    take tensors there; only the 8.4 plugin-era matrix asked for initializers)."""
    node = helper.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "st"], ["sel"])
    consts = {"m": np.array([100], np.int64), "iou": np.array([0.5], np.float32),
              "st": np.array([0.0], np.float32)}
    f_const = check_nodes([node], 17, consts=consts)
    assert not [f for f in f_const if f.level == "error"]
    assert {f.ep for f in f_const if f.level == "warning"} == {"cuda", "trt86", "trt10"}
    assert all(falls_back(f) for f in f_const if f.ep in TRT)           # the graph choice stays conservative
    f_rt = check_nodes([node], 17, consts={"m": consts["m"]})
    assert not [f for f in f_rt if f.level == "error"]


def test_type_limits_read_the_data_input():
    """TYPE_LIMITS: Where's data is input 1 (input 0 is the bool condition); a bool Where has no CUDA kernel
    (a warning: it runs on CPU) and no CPU kernel either (an error, from the installed onnxruntime)."""
    node = helper.make_node("Where", ["c", "x", "y"], ["z"])
    ok = check_nodes([node], 17, types={"c": "bool", "x": "float32", "y": "float32"})
    assert not [f for f in ok if f.ep in ("cpu", "cuda")]
    bad = check_nodes([node], 17, types={"c": "bool", "x": "bool", "y": "bool"})
    cuda = [f for f in bad if f.ep == "cuda"]
    assert len(cuda) == 1 and cuda[0].level == "warning" and "bool" in cuda[0].reason
    cpu = [f for f in bad if f.ep == "cpu"]
    assert cpu and cpu[0].level == "error" and "no CPU kernel for bool" in cpu[0].reason
    argmax = helper.make_node("ArgMax", ["i"], ["a"])
    assert [f.ep for f in check_nodes([argmax], 17, types={"i": "int64"})] == ["cuda"]
    assert not check_nodes([argmax], 17, types={"i": "float32"})


def test_cpu_types_come_from_the_installed_onnxruntime():
    """A float16 TopK has no CPU kernel (onnxruntime casts around it: a warning); an int64 MatMul has one
    from opset 9, none before (an error there)."""
    C = pytest.importorskip("onnxruntime.capi._pybind_state")
    have = {(k.op_name, k.version_range) for k in C.get_all_opkernel_def() if k.provider == "CPUExecutionProvider"}
    assert any(op == "TopK" for op, _ in have)
    topk = helper.make_node("TopK", ["x", "k"], ["v", "i"])
    f = [f for f in check_nodes([topk], 17, consts={"k": np.array([5], np.int64)},
                                types={"x": "float16", "k": "int64"}) if f.ep == "cpu"]
    assert len(f) == 1 and f[0].level == "warning" and "float16" in f[0].reason
    mm = helper.make_node("MatMul", ["a", "b"], ["c"])
    assert not [f for f in check_nodes([mm], 13, types={"a": "int64", "b": "int64"}) if f.ep == "cpu"]
    old = [f for f in check_nodes([mm], 8, types={"a": "int64", "b": "int64"}) if f.ep == "cpu"]
    assert len(old) == 1 and old[0].level == "error"


def test_pad_axes_input_and_opset_ceiling_for_tensorrt_86():
    pad = helper.make_node("Pad", ["x", "p", "v", "ax"], ["y"])
    f = check_nodes([pad], 18, consts={"p": np.zeros(4, np.int64), "ax": np.array([1, 2], np.int64)})
    assert [x.ep for x in f if x.level == "error"] == ["trt86"]
    assert not [x for x in f if x.ep == "trt10"]
    f_rt = check_nodes([pad], 18, consts={"p": np.zeros(4, np.int64)})
    assert [x.level for x in f_rt if x.ep == "trt10"] == ["warning"]
    reports = coverage(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=19))
    assert [w.op for w in reports["trt86"].warnings] == ["(opset)"] and reports["trt86"].covered
    assert not reports["trt10"].warnings
    assert not coverage(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")],
                               opset=17))["trt86"].warnings


def test_scatter_reduction_flagged_for_trt():
    se = helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], reduction="add")
    findings = check_nodes([se], 18)
    assert {f.ep for f in findings if f.level == "error"} == set(TRT)
    snd = helper.make_node("ScatterND", ["d", "i", "u"], ["y"], reduction="none")
    assert [f.ep for f in check_nodes([snd], 18) if f.level == "error"] == ["trt10"]
    assert not check_nodes([helper.make_node("ScatterND", ["d", "i", "u"], ["y"])], 18)


def test_opset_ranges_and_attributes():
    sign = helper.make_node("Sign", ["x"], ["y"])
    f = check_nodes([sign], 11)
    assert [(x.ep, x.level) for x in f] == [("cuda", "warning")]  # CUDA Sign kernel from 13 only
    assert not check_nodes([sign], 13)
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT16)
    assert {x.ep for x in check_nodes([cast], 17)} == set(TRT)
    resize = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")
    assert {x.ep for x in check_nodes([resize], 17, consts={"sc": np.ones(4, np.float32)})} == set(TRT)
    sl = helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])
    consts = {"st": np.array([0]), "en": np.array([1])}
    assert [x.ep for x in check_nodes([sl], 17, consts=consts)] == ["trt86"]  # axes not constant


# ---------------------------------------------------------------- fixtures and inspect

def _fixture(name: str) -> Path:
    p = FIXTURES / name
    if not p.is_file():
        pytest.skip(f"fixture {p} absent (../shared/fixtures is outside the project)")
    return p


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_exports_covered_everywhere(name):
    d = inspect_model(str(_fixture(name)))
    for ep in EPS:
        assert d["eps"][ep]["covered"], (ep, d["eps"][ep]["uncovered"])
    assert d["opset"] == 18 and d["num_nodes"] > 100
    assert d["inputs"][0]["name"] == "images"


def test_main_inspect_prints_and_returns(capsys, tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_topk(5000), str(p))
    assert cli_main(["inspect", str(p)]) == 1
    out = capsys.readouterr().out
    assert "TensorRT 10.x" in out and "NOT covered" in out and "TopK x1" in out
    onnx.save(_conv_sigmoid(), str(p))
    assert cli_main(["inspect", str(p)]) == 0
    text = format_inspection(inspect_model(str(p)))
    assert "x: float [1, 3, 8, 8]" in text and "opset: 17" in text


def test_bad_input_raises_detcal_error(tmp_path):
    with pytest.raises(DetcalError, match="nope.onnx"):
        inspect_model(str(tmp_path / "nope.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffnot a protobuf at all\x12\x99")
    with pytest.raises(DetcalError, match="bad.onnx") as exc:
        inspect_model(str(bad))
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- kernels of some element types only
@pytest.mark.parametrize("elem,warned", [(TensorProto.INT64, True), (TensorProto.INT32, True),
                                         (TensorProto.FLOAT, False), (TensorProto.FLOAT16, False)])
def test_cuda_pad_on_integers_is_warned_as_a_cpu_fallback(elem, warned):
    """onnxruntime registers CUDA Pad for bool, double, float and float16 data only: integer data runs
    on CPU with copies, which coverage (types from shape inference) reports on the CUDA EP. TensorRT 8.6
    takes int64 as the int32 it casts it to; onnxruntime's CPU Pad has no float16 kernel (it casts around
    it: a warning)."""
    pads = numpy_helper.from_array(np.array([0, 0, 0, 3], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="constant")
    reports = coverage(_model([node], [_vi("x", elem, [2, 5])], [_vi("y", elem, [2, 8])], [pads]))
    cuda = [f for f in reports["cuda"].warnings if f.op == "Pad"]
    assert bool(cuda) == warned, cuda
    if warned:
        assert "no kernel for int" in cuda[0].reason and "runs on CPU" in cuda[0].reason
    assert not [f for ep in ("trt86", "trt10") for f in reports[ep].warnings + reports[ep].errors if f.op == "Pad"]
    cpu = [f for f in reports["cpu"].warnings + reports["cpu"].errors if f.op == "Pad"]
    assert [(f.level, "float16" in f.reason) for f in cpu] == ([("warning", True)] if elem == TensorProto.FLOAT16
                                                               else [])


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("n,max_det", [(500, 50), (30, 100)])        # K' = K, and K' < K (the output's Pad)
def test_inserted_graphs_use_only_types_with_cuda_kernels(layout, static, multi_label, n, max_det):
    """Every inserted graph's nodes have kernels for the element types they get on CUDA (no Pad of
    int64 class indices or int32 output classes): nothing of it falls back to CPU for a type."""
    from artifact_factory import make_calibration
    from calib.artifact import PostprocessConfig
    from onnx_ops.patch import build_postprocess_graph

    for kind in ("identity", "temperature", "platt_box"):
        cmap = make_calibration(kind, 4, np.random.default_rng(0))
        cfg = PostprocessConfig(multi_label=multi_label and kind != "platt_box", max_det=max_det, pre_nms_top_k=200)
        g = build_postprocess_graph(layout, 4, cmap, [0.2, 0.3, 0.25, 0.4], cfg, num_candidates=n,
                                    static_shapes=static)
        typed = [f for f in coverage(g)["cuda"].warnings if "no kernel for" in f.reason]
        assert typed == [], (kind, typed)


def test_calls_of_model_local_functions_are_checked_as_their_nodes():
    """A model-local function (onnxscript, torch's dynamo exporter) is not a custom op: onnxruntime
    inlines it, so coverage checks its body; an unsupported op inside is still found."""
    def model_with(body_op):
        fn = helper.make_function("local", "Head", ["a"], ["b"], [helper.make_node(body_op, ["a"], ["b"])],
                                  [helper.make_opsetid("", 17)])
        m = _model([helper.make_node("Head", ["x"], ["y"], domain="local")], [_vi("x", shape=[1, 4])],
                   [_vi("y", shape=[1, 4])])
        m.opset_import.append(helper.make_opsetid("local", 1))
        m.functions.append(fn)
        return m

    ok = coverage(model_with("Sigmoid"))
    assert all(r.covered for r in ok.values()), {ep: _errors(ok, ep) for ep in EPS}
    bad = coverage(model_with("Unique"))
    assert not bad["trt10"].covered and any(op == "Unique" for op, _ in _errors(bad, "trt10"))
