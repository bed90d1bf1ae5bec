"""The quantization check's engine on the project's own detector and int8 copies of it made here.

Three quantized models, all from examples/models/detector_xywh_cls.onnx (tests/quant_pair.py):
healthy (static QDQ calibrated on generated scenes), clipping (calibrated on the same scenes at
a third of their brightness, so deployment activations exceed the calibrated ranges), and the float model
itself (nothing changed: the check must be quiet).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calib.collect import Collected
from calib.data import load_dataset
from calib.doctor.quantization import (QuantizationOptions, activation_ranges, compare_quantization,
                                       pair_detections, qdq_ranges)
from calib.errors import DetcalError
from calib.pipeline import Detections

from quant_pair import FLOAT_MODEL, calibration_batches, make_int8

pytestmark = pytest.mark.skipif(not FLOAT_MODEL.exists(), reason=f"no example detector at {FLOAT_MODEL}")

OPTS = QuantizationOptions(activation_images=6, max_layers=32, bootstrap=300)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from examples.detector.scenes import write_dataset

    root = tmp_path_factory.mktemp("quant")
    data = write_dataset(root / "deploy", n_val_pos=14, n_val_neg=2, n_test_pos=0, n_test_neg=0, seed=5)
    batches = calibration_batches(8)
    return {
        "dataset": load_dataset(data, "val"),
        "int8": make_int8(root / "int8.onnx", batches=batches),
        "clipping": make_int8(root / "int8_dim.onnx", batches=[b * 0.35 for b in batches]),
    }


@pytest.fixture(scope="module")
def healthy(pair):
    return compare_quantization(FLOAT_MODEL, pair["int8"], pair["dataset"], options=OPTS)


def test_healthy_int8_reports_ranges_and_buckets_quietly(healthy, pair):
    r = healthy
    assert r.status == "ok", r.findings
    c = r.compared
    assert c["n_images"] == len(pair["dataset"]) and c["quantization"] == "static QDQ" and c["n_activation_images"] == 6
    # recall per size bucket and class, on every labelled box, with intervals
    assert [g.group for g in r.by_size] == ["small", "medium", "large"]
    assert sum(g.n_gt for g in r.by_size) == c["n_gt"] == sum(g.n_gt for g in r.by_class)
    for g in r.by_size + r.by_class:
        if g.n_gt:
            assert 0 <= g.recall_reference.value <= 1 and g.recall_drop.low <= g.recall_drop.value <= g.recall_drop.high
            assert not g.flagged
    # the int8 copy scores almost like the float model
    assert r.score_shift.n > 20 and abs(r.score_shift.value) < 0.02
    # layer ranges of the float model, with the QDQ range of the same tensor
    assert len(r.layers) >= 20
    for lr in r.layers:
        assert lr.min <= lr.p001 <= lr.p999 <= lr.max and 0 <= lr.outlier_share < 1 and "clips" not in lr.flags
    assert sum(lr.qdq_range is not None for lr in r.layers) >= 10
    assert {"Conv", "Mul"} <= {lr.op for lr in r.layers}
    d = r.to_dict()
    assert d["by_size"][0]["recall_drop"]["interval"] and d["layers"][0]["p99.9"] is not None


def test_float_against_itself_reports_no_change(healthy, pair):
    r = compare_quantization(FLOAT_MODEL, FLOAT_MODEL, pair["dataset"], options=OPTS,
                             quantized_collected=healthy.reference_collected)
    assert r.status == "ok" and r.findings == []
    for g in r.by_size + r.by_class:
        if g.n_gt:
            assert g.recall_drop.value == 0 and g.recall_drop.low == 0 and g.recall_drop.high == 0
            assert g.ap50_reference == g.ap50_quantized
    assert r.score_shift.value == 0 and r.score_shift.low == 0 and r.score_shift.high == 0 and r.n_unpaired == 0
    assert r.compared["n_qdq_tensors"] == 0 and all(lr.qdq_range is None for lr in r.layers)


def test_miscalibrated_int8_fires(pair):
    r = compare_quantization(FLOAT_MODEL, pair["clipping"], pair["dataset"], options=OPTS)
    assert r.status == "fail", r.summary
    drops = [g for g in r.by_size if g.flagged]
    assert drops and all(g.recall_drop.low > 0 and g.recall_drop.value > OPTS.recall_drop_warn for g in drops)
    clipping = [lr for lr in r.layers if "clips" in lr.flags]
    assert clipping and all(lr.max > lr.qdq_range[1] or lr.min < lr.qdq_range[0] for lr in clipping)
    assert any("recall drops" in f for f in r.findings) and any("clip" in f for f in r.findings)


# ---------------------------------------------------------------------------------- units

def _collected(per_image):
    dets = [Detections(np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32), np.asarray(c, np.int64))
            for b, s, c in per_image]
    n = len(dets)
    return Collected(detections=dets, gt_boxes_xyxy=[np.zeros((0, 4))] * n, gt_classes=[np.zeros(0, np.int64)] * n,
                     crowd_boxes_xyxy=[np.zeros((0, 4))] * n, crowd_classes=[np.zeros(0, np.int64)] * n,
                     image_sizes=[(100, 100)] * n, rows=np.zeros((n, 6)), sample_indices=list(range(n)))


def test_pair_detections_same_class_high_iou_once():
    ref = _collected([([[0, 0, 10, 10], [50, 50, 70, 70]], [0.9, 0.8], [0, 1]), ([[0, 0, 10, 10]], [0.1], [0])])
    oth = _collected([([[0, 0, 10, 10.5], [50, 50, 70, 70], [0, 0, 10, 10]], [0.7, 0.6, 0.95], [0, 0, 0]),
                      ([[0, 0, 10, 10]], [0.9], [0])])
    img, s_ref, s_oth, unpaired = pair_detections(ref, oth, conf=0.25, iou=0.9)
    # 0.9 pairs with the exact box (IoU 1) before the 10.5-high one; the class-1 box has no same-class partner;
    # image 1's detection is below conf
    assert img.tolist() == [0] and s_ref.tolist() == pytest.approx([0.9]) and s_oth.tolist() == pytest.approx([0.95])
    assert unpaired == 1


def _tiny_model(path, scale=None):
    """x [1, 1, 4, 4] -> Relu -> Mul by 2 -> y; with `scale`, a QuantizeLinear on the Relu output."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    if scale is not None:
        inits += [numpy_helper.from_array(np.array(scale, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"])]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return path


def test_qdq_ranges_read_scale_and_zero_point(tmp_path):
    m = onnx.load(str(_tiny_model(tmp_path / "q.onnx", scale=0.1)))
    lo, hi, step = qdq_ranges(m)["r"]
    assert lo == 0.0 and hi == pytest.approx(25.5) and step == pytest.approx(0.1)
    assert qdq_ranges(onnx.load(str(_tiny_model(tmp_path / "f.onnx")))) == {}


def test_activation_ranges_exact_extremes_and_clipping(tmp_path):
    path = _tiny_model(tmp_path / "f.onnx")
    x = np.arange(-8, 8, dtype=np.float32).reshape(1, 1, 4, 4)
    layers = {lr.tensor: lr for lr in activation_ranges(path, [x], qdq={"r": (0.0, 3.0, 0.01)})}
    assert set(layers) == {"r"}                 # the graph output itself is not an intermediate
    r = layers["r"]
    assert (r.min, r.max, r.n_values) == (0.0, 7.0, 16) and r.op == "Relu"
    assert r.clipped_share == pytest.approx(4 / 16)   # 4, 5, 6, 7 lie beyond 3.01
    assert r.clip_excess == pytest.approx(4 / 3) and "clips" in r.flags
    assert math.isfinite(r.bits_lost)


def test_incomparable_models_are_refused(pair, tmp_path):
    with pytest.raises(DetcalError, match="208"):
        compare_quantization(FLOAT_MODEL.with_name("detector_xywh_cls_208.onnx"), pair["int8"], pair["dataset"],
                             options=OPTS)
    with pytest.raises(DetcalError, match="base_conf"):
        compare_quantization(FLOAT_MODEL, pair["int8"], pair["dataset"], options=QuantizationOptions(conf=0.0))


def test_outliers_beyond_the_percentiles_waste_the_range(tmp_path):
    path = _tiny_model(tmp_path / "f.onnx")
    bulk = [np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4) for _ in range(100)]
    spike = bulk[0].copy()
    spike[0, 0, 0, 0] = 100.0           # one value in 1600 is 100x the bulk
    r = activation_ranges(path, bulk + [spike])[0]
    assert r.max == 100.0 and r.p999 <= 1.0 + 1e-6
    assert r.outlier_share == pytest.approx(0.99, abs=0.001) and r.bits_lost > 6 and r.flags == ["wastes range"]
    quiet = activation_ranges(path, bulk)[0]
    assert quiet.outlier_share < 0.01 and quiet.flags == []


def test_quantized_output_concat_shifts_the_scores(pair, tmp_path):
    # the classic mistake: the output Concat(boxes in px, scores in 0..1) quantized with one scale
    broken = make_int8(tmp_path / "int8_decode.onnx", batches=calibration_batches(4), quantize_decode=True)
    r = compare_quantization(FLOAT_MODEL, broken, pair["dataset"], options=OPTS)
    assert r.status == "fail" and r.scores_shifted and r.score_shift.low > OPTS.score_shift_fail
    assert r.to_dict()["scores_shifted"] is True
    assert any("do not carry over" in f for f in r.findings)
