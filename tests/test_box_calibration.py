"""Box-aware calibration: the float32 formula, its graph twin (bit for bit), monotonicity, the fit.

The equivalence property: for random maps (classes, a > 0, b, feature weights, standardisation),
thresholds, input sizes, scores (edges 0 and 1 included) and boxes (degenerate, inverted, outside
the input), onnxruntime running onnx_ops.box_calibration computes the same calibrated logits bit
for bit as calib.artifact.box_map, hence the same survivors, and calibrated scores within a few float32 ulps.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from calib.box_calibrator import PlattBox
from calib.artifact.box_features import LOG_ERROR_BOUND, box_features_f32, log_f32
from calib.artifact.box_map import BoxPlattMap, logit_f32
from calib.calibrators import PerClassPlatt, log_loss
from onnx_ops import box_calibration as bc
from onnx_ops.graph_builder import GraphBuilder

F = np.float32
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ helpers
def random_map(num_classes: int, seed: int, global_w: bool = False, clip: float = 4.0) -> BoxPlattMap:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.7, (1 if global_w else num_classes, 3)) * np.ones((num_classes, 1))
    return BoxPlattMap(rng.uniform(0.3, 2.5, num_classes), rng.uniform(-2, 2, num_classes), w,
                       rng.normal([-4, 0, 0.4], 0.5), rng.uniform(0.2, 2.0, 3), clip)


def random_boxes(rng: np.random.Generator, m: int, size) -> np.ndarray:
    """(m, 4) xyxy input px: ordinary boxes, tiny and zero-size ones, inverted ones, some off the input."""
    h, w = size
    cx, cy = rng.uniform(-0.2 * w, 1.2 * w, m), rng.uniform(-0.2 * h, 1.2 * h, m)
    bw = np.exp(rng.uniform(np.log(1e-3), np.log(1.5 * w), m))
    bh = np.exp(rng.uniform(np.log(1e-3), np.log(1.5 * h), m))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    odd = rng.random(m)
    boxes[odd < 0.05, 2] = boxes[odd < 0.05, 0]                      # zero width
    boxes[(odd >= 0.05) & (odd < 0.1)] = boxes[(odd >= 0.05) & (odd < 0.1)][:, [2, 3, 0, 1]]   # inverted
    return boxes.astype(F)


def random_scores(rng: np.random.Generator, m: int) -> np.ndarray:
    p = rng.beta(0.6, 1.5, m)
    edge = rng.random(m)
    p[edge < 0.03] = 0.0
    p[(edge >= 0.03) & (edge < 0.06)] = 1.0
    p[(edge >= 0.06) & (edge < 0.1)] = rng.choice([1e-7, 1e-6, 0.5, 1 - 1e-6, 1 - 1e-8], int(np.sum((edge >= 0.06) & (edge < 0.1))))
    return p.astype(F)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(b: GraphBuilder, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, "boxcal", inputs, outputs, initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)], producer_name="detcal-test")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return model


@functools.lru_cache(maxsize=32)
def step_session(num_classes: int, seed: int, global_w: bool, size: tuple, thr_seed: int, opset: int):
    """The calibrate-and-threshold step alone: (p [M], cls [M], boxes [M, 4]) -> (s, survives, score)."""
    cmap = random_map(num_classes, seed, global_w)
    thr = np.random.default_rng(thr_seed).uniform(0.05, 0.9, num_classes)
    if thr_seed % 3 == 0:
        thr[:] = thr[0]
    b = GraphBuilder(opset)
    s = bc.box_calibrated_logit(b, "p", "cls", "boxes", cmap, size)
    surv = bc.box_survives(b, "p", "cls", s, cmap, thr)
    score = b.op("Sigmoid", s, name="boxcal/score")        # per candidate: the map's probability
    outs = {"s": s, "survives": surv, "score": score}
    for name, t in outs.items():
        b.nodes.append(helper.make_node("Identity", [t], [name], name=b.name(f"out/{name}")))
    model = _model(b, [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["m"]),
                       helper.make_tensor_value_info("cls", TensorProto.INT64, ["m"]),
                       helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["m", 4])],
                   [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["m"]),
                    helper.make_tensor_value_info("survives", TensorProto.BOOL, ["m"]),
                    helper.make_tensor_value_info("score", TensorProto.FLOAT, ["m"])])
    assert all(n.name.startswith("detcal/") for n in b.nodes)
    assert all(i.name.startswith("detcal/") for i in b.initializers)
    return _session(model), cmap, thr


@functools.lru_cache(maxsize=4)
def log_session(opset: int = 18):
    b = GraphBuilder(opset)
    y = bc.log_f32(b, "x")
    b.nodes.append(helper.make_node("Identity", [y], ["y"], name=b.name("out/y")))
    return _session(_model(b, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])]))


def assert_scores_close(got: np.ndarray, want: np.ndarray) -> None:
    """Calibrated scores (sigmoid of the same logit, two exp kernels): within 4 float32 ulps of the
    value plus 2^-22 (four ulps of 0.5-1): onnxruntime's Sigmoid is accurate in absolute terms, so
    a score of 0.02 can be off by some of its own ulps."""
    tol = 4 * np.spacing(np.abs(want)) + F(2.0 ** -22)
    assert np.all(np.abs(got - want) <= tol), float(np.max(np.abs(got - want) / tol))


# ------------------------------------------------------------------------------------------ log_f32
def test_log_f32_is_accurate_and_monotone():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(-41, 41, 200_000)).astype(F)
    x = np.sort(np.concatenate([x, F([1.0, 2.0, 0.5, 1e-6, 1 - 1e-6, 2.0 ** -60, 2.0 ** 60])]))
    got = log_f32(x)
    want = np.log(x.astype(np.float64))
    assert got.dtype == F
    assert np.max(np.abs(got - want)) < LOG_ERROR_BOUND
    assert np.all(np.diff(got) >= 0)
    assert log_f32(F([1.0]))[0] == 0.0


def test_log_f32_error_bound_is_tight():
    """LOG_ERROR_BOUND is what the two-term series leaves at the edge of the mantissa range (m near
    sqrt 2), not a loose number: the largest error over the clamp's range is within 10% of it."""
    from calib.artifact.box_features import SQRT2
    x = np.concatenate([F(SQRT2 * F(2.0 ** k)) * F([1 - 1e-7, 1.0]) for k in range(-60, 60)]).astype(F)
    err = np.abs(log_f32(x) - np.log(x.astype(np.float64)))
    assert 0.9 * LOG_ERROR_BOUND < err.max() < LOG_ERROR_BOUND


def test_log_f32_nondecreasing_over_whole_octaves_and_every_boundary():
    """Every float32 from sqrt(1/2) 2^k to 4 sqrt(1/2) 2^k (two whole octaves: both range-reduction
    boundaries inside) for k = 0, 41 and -60 (the largest |log|, where the final additions round
    coarsest), and 20,000 ulps either side of each of the 121 boundaries sqrt(1/2) 2^k in the clamp's
    range: log_f32 never decreases. The four-term series it replaced fell by an ulp at 12 boundaries."""
    from calib.artifact.box_features import SQRT_HALF

    def run(lo_bits, hi_bits):
        y = log_f32(np.arange(lo_bits, hi_bits, dtype=np.uint32).view(F))
        assert np.all(np.diff(y) >= 0), (lo_bits, hi_bits)

    for k in (0, 41, -60):
        lo = F(SQRT_HALF * F(2.0 ** k)).view(np.uint32)
        run(lo, F(F(SQRT_HALF * F(2.0 ** k)) * F(4)).view(np.uint32))
    for k in range(-59, 61):
        c = int(F(SQRT_HALF * F(2.0 ** k)).view(np.uint32))
        run(c - 20_000, c + 20_000)


def test_log_f32_graph_is_bit_exact():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.exp(rng.uniform(-45, 45, 300_000)), [0.0, 1e-30, 1.0, 1e30, 2.0 ** -60, 2.0 ** 60]]).astype(F)
    y = log_session().run(None, {"x": x})[0]
    np.testing.assert_array_equal(y.view(np.uint32), log_f32(x).view(np.uint32))


def exponent_boundaries() -> np.ndarray:
    """float32 values at and a few ulps around every boundary of log_f32's range reduction: the powers
    of two and sqrt(1/2) * 2^k (where m's exponent changes) for k in -64..64, and the clamp's ends."""
    from calib.artifact.box_features import SQRT_HALF
    centres = [F(base * F(2.0 ** k)) for k in range(-64, 65) for base in (F(1.0), SQRT_HALF)]
    out = []
    for c in centres:
        lo = hi = c
        out.append(c)
        for _ in range(4):
            lo, hi = np.nextafter(lo, F(0)), np.nextafter(hi, F(np.inf))
            out += [lo, hi]
    return np.array(out, F)


@pytest.mark.parametrize("opset", [11, 18])
def test_log_f32_graph_is_bit_exact_at_every_exponent_boundary(opset):
    """The graph's exponent estimate (the runtime's Log) is corrected exactly: at the values where an
    estimate is most likely off by one, the graph still gives the reference's bits; NaN stays NaN
    (no out-of-range Gather)."""
    x = np.concatenate([exponent_boundaries(), F([np.nan, np.inf, 0.0])])
    y = log_session(opset).run(None, {"x": x})[0]
    want = log_f32(x)
    np.testing.assert_array_equal(y[:-3].view(np.uint32), want[:-3].view(np.uint32))
    assert np.isnan(y[-3]) and np.isnan(want[-3])
    np.testing.assert_array_equal(y[-2:], want[-2:])          # inf and 0: the clamp's ends


def sloppy_log_session(error_nats: float) -> ort.InferenceSession:
    """log_f32's graph with its one Log kernel made worse on purpose: every Log output off by
    `error_nats` (an Add after the Log node)."""
    b = GraphBuilder(18)
    y = bc.log_f32(b, "x")
    b.nodes.append(helper.make_node("Identity", [y], ["y"], name=b.name("out/y")))
    model = _model(b, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    (log_node,) = [n for n in model.graph.node if n.op_type == "Log"]
    exact = log_node.output[0]
    log_node.output[0] = exact + "_kernel"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(error_nats, F), "sloppy"))
    model.graph.node.insert(list(model.graph.node).index(log_node) + 1,
                            helper.make_node("Add", [exact + "_kernel", "sloppy"], [exact], name="sloppy_log"))
    return _session(model)


@pytest.mark.parametrize("error_nats", [-0.04, -1e-5, 1e-5, 0.04])
def test_log_f32_graph_is_bit_exact_with_a_sloppy_log_kernel(error_nats):
    """The exponent estimate may be off by up to 1/16 in log2 units (0.043 nats) on any runtime: the
    one correction step still finds the reference's (e, m), so the bits do not depend on the Log
    kernel. Fails with the estimate's shift or the correction step taken out."""
    rng = np.random.default_rng(7)
    x = np.concatenate([exponent_boundaries(), np.exp(rng.uniform(-41, 41, 50_000))]).astype(F)
    y = sloppy_log_session(error_nats).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y.view(np.uint32), log_f32(x).view(np.uint32))


@SETTINGS
@given(st.floats(float(np.float32(2.0 ** -70)), float(np.float32(2.0 ** 70)), allow_nan=False, width=32))
def test_log_f32_graph_equals_reference_property(v):
    x = F([v, v * F(0.5), v * F(2.0)])
    np.testing.assert_array_equal(log_session().run(None, {"x": x})[0].view(np.uint32), log_f32(x).view(np.uint32))


@SETTINGS
@given(st.lists(st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), allow_nan=False, width=32), min_size=2, max_size=50))
def test_log_f32_monotone_property(xs):
    x = np.sort(np.asarray(xs, dtype=F))
    assert np.all(np.diff(log_f32(x)) >= 0)


# ------------------------------------------------------------------------------------------ features
def test_box_features_values():
    size = (640, 480)                                  # H, W
    boxes = F([[240 - 24, 320 - 32, 240 + 24, 320 + 32],     # centred, 48 x 64
               [0, 0, 480, 640],                              # the whole input
               [-10, -10, -10, -10]])                         # zero size, at a corner outside
    phi = box_features_f32(boxes, size)
    np.testing.assert_allclose(phi[0], [np.log(48 * 64 / (640 * 480)), np.log(48 / 64), 0.0], atol=LOG_ERROR_BOUND)
    np.testing.assert_allclose(phi[1], [0.0, np.log(480 / 640), 0.0], atol=LOG_ERROR_BOUND)
    d = np.hypot((-10 - 240) / 240, (-10 - 320) / 320) / np.sqrt(2)
    np.testing.assert_allclose(phi[2], [np.log(1e-4 / (640 * 480)), 0.0, d], atol=LOG_ERROR_BOUND)
    with pytest.raises(ValueError, match="4"):
        box_features_f32(np.zeros((3, 5)), size)
    with pytest.raises(ValueError, match="input_size"):
        box_features_f32(boxes, (0, 640))


def test_box_features_of_extreme_boxes_are_finite_and_the_graphs_bits():
    """Sides far past MAX_SIDE (and below MIN_SIDE) are clamped before the logs, so every feature
    is finite and the graph, which has no clamp of its own before its one Log, gives the same bits."""
    size = (320, 320)
    boxes = F([[0, 0, 1e30, 1e-30], [-1e30, -1e30, 1e30, 1e30], [5, 5, 5 + 2.0 ** 21, 6], [1, 1, 1, 1],
               [0, 0, 3e38, 3e38]])
    phi = box_features_f32(boxes, size)
    assert np.isfinite(phi[:, :2]).all()
    cmap = random_map(3, 0)
    sess, _, _ = step_session(3, 0, False, size, 1, 18)
    p, cls = F([0.5, 0.9, 0.3, 0.7, 0.99]), np.array([0, 1, 2, 0, 1])
    s = sess.run(None, {"p": p, "cls": cls, "boxes": boxes})[0]
    np.testing.assert_array_equal(s.view(np.uint32), cmap.calibrated_logit(p, cls, boxes, size).view(np.uint32))


@SETTINGS
@given(num_classes=st.sampled_from([1, 3, 80]), seed=st.integers(0, 3), clip=st.sampled_from([0.5, 1.0, 4.0]),
       size=st.sampled_from([(640, 640), (320, 320), (384, 640)]), data_seed=st.integers(0, 2**32 - 1))
def test_folded_logit_is_the_standardised_map(num_classes, seed, clip, size, data_seed):
    """calibrated_logit works on psi with the standardisation folded into its constants; it is the
    documented map a_c z + b_c + w_c . clip((phi - mean) / std, -+clip), evaluated in float64 from the
    same phi and z, to float32 rounding (relative to the terms' size), inside and past the clip."""
    cmap = random_map(num_classes, seed)
    cmap.clip = clip
    rng = np.random.default_rng(data_seed)
    m = 500
    p, cls, boxes = random_scores(rng, m), rng.integers(0, num_classes, m), random_boxes(rng, m, size)
    z = logit_f32(p).astype(np.float64)
    u = np.clip((box_features_f32(boxes, size).astype(np.float64) - cmap.mean) / cmap.std, -clip, clip)
    want = cmap.a[cls] * z + cmap.b[cls] + np.sum(cmap.w[cls] * u, axis=1)
    scale = np.abs(cmap.a[cls] * z) + np.abs(cmap.b[cls]) + np.sum(np.abs(cmap.w[cls] / cmap.std) * 30, axis=1)
    got = cmap.calibrated_logit(p, cls, boxes, size).astype(np.float64)
    # psi's area is in px^2, phi's relative: the two logs differ by up to 2 LOG_ERROR_BOUND
    tol = 2e-6 * scale + 3 * LOG_ERROR_BOUND * np.sum(np.abs(cmap.w[cls] / cmap.std), axis=1)
    assert np.all(np.abs(got - want) <= tol), float(np.max(np.abs(got - want) / tol))


# ------------------------------------------------------------------------------------------ the graph twin
@SETTINGS
@given(num_classes=st.sampled_from([1, 2, 5, 80]), seed=st.integers(0, 3), global_w=st.booleans(),
       size=st.sampled_from([(640, 640), (320, 320), (384, 640), (736, 1280)]), thr_seed=st.integers(0, 5),
       opset=st.sampled_from([11, 13, 18]), m=st.integers(0, 3000), data_seed=st.integers(0, 2**32 - 1))
def test_graph_step_equals_reference(num_classes, seed, global_w, size, thr_seed, opset, m, data_seed):
    sess, cmap, thr = step_session(num_classes, seed, global_w, size, thr_seed, opset)
    rng = np.random.default_rng(data_seed)
    p, cls, boxes = random_scores(rng, m), rng.integers(0, num_classes, m), random_boxes(rng, m, size)
    s, surv, score = sess.run(None, {"p": p, "cls": cls, "boxes": boxes})
    ref_s = cmap.calibrated_logit(p, cls, boxes, size)
    np.testing.assert_array_equal(s.view(np.uint32), ref_s.view(np.uint32))      # the same bits
    np.testing.assert_array_equal(surv, cmap.survives(p, cls, boxes, size, thr))  # the same survivors
    assert_scores_close(score, cmap.transform(p, cls, boxes, size))


def test_graph_step_dense_example():
    """A realistic dense case: 8400 candidates with 80 classes, many near the threshold."""
    sess, cmap, thr = step_session(80, 1, False, (640, 640), 1, 18)
    rng = np.random.default_rng(5)
    m = 8400
    p = rng.uniform(0, 1, m).astype(F)
    cls = rng.integers(0, 80, m)
    boxes = random_boxes(rng, m, (640, 640))
    # put the calibrated logits right at the thresholds: solve for p, then perturb by an ulp or two
    s0 = cmap.calibrated_logit(p, cls, boxes, (640, 640)) - cmap.a[cls].astype(F) * logit_f32(p)
    z = (cmap.logit_thresholds(thr)[cls].astype(np.float64) - s0) / cmap.a[cls]
    near = (1 / (1 + np.exp(-z))).astype(F)
    near = np.nextafter(near, F(2) * rng.integers(0, 2, m).astype(F) - F(0.5))
    s, surv, score = sess.run(None, {"p": near, "cls": cls, "boxes": boxes})
    ref = cmap.survives(near, cls, boxes, (640, 640), thr)
    assert 0 < ref.sum() < m
    np.testing.assert_array_equal(surv, ref)
    np.testing.assert_array_equal(s.view(np.uint32), cmap.calibrated_logit(near, cls, boxes, (640, 640)).view(np.uint32))


# ------------------------------------------------------------------------------------------ the map
@SETTINGS
@given(num_classes=st.sampled_from([1, 3, 80]), seed=st.integers(0, 20), data_seed=st.integers(0, 2**32 - 1),
       clip=st.sampled_from([0.5, 4.0]))
def test_map_is_monotone_in_the_score_and_prefilter_is_sound(num_classes, seed, data_seed, clip):
    cmap = random_map(num_classes, seed, clip=clip)
    rng = np.random.default_rng(data_seed)
    m = 500
    boxes = random_boxes(rng, m, (640, 640))
    cls = rng.integers(0, num_classes, m)
    p = np.sort(random_scores(rng, m))
    box, c = boxes[rng.integers(0, m)], int(cls[0])
    s = cmap.calibrated_logit(p, np.full(m, c), np.tile(box, (m, 1)), (640, 640))
    assert np.all(np.diff(s) >= 0)                               # increasing in p for a fixed box and class
    thr = rng.uniform(0, 1, num_classes)
    s_all = cmap.calibrated_logit(p, cls, boxes, (640, 640))
    exact = s_all > cmap.logit_thresholds(thr)[cls]
    np.testing.assert_array_equal(cmap.survives(p, cls, boxes, (640, 640), thr), exact)   # prefilter drops none


def test_thresholds_edges():
    cmap = random_map(3, 0)
    lt = cmap.logit_thresholds([0.0, 0.5, 1.0])
    assert lt[0] == -np.inf and lt[1] == 0 and lt[2] == np.inf
    pre = cmap.prefilter_thresholds([0.0, 0.5, 1.0])
    assert pre[0] == -np.inf and pre[2] == np.inf and 0 <= pre[1] < 1


def test_artifact_round_trip_and_errors():
    cmap = random_map(4, 2)
    block = cmap.to_artifact()
    back = BoxPlattMap.from_artifact(block, num_classes=4)
    for k in ("a", "b", "w", "mean", "std"):
        np.testing.assert_array_equal(getattr(back, k), getattr(cmap, k))
    assert back.clip == cmap.clip
    with pytest.raises(ValueError, match="lacks 'w'"):
        BoxPlattMap.from_artifact({k: v for k, v in block.items() if k != "w"})
    with pytest.raises(ValueError, match="classes"):
        BoxPlattMap.from_artifact(block, num_classes=80)
    with pytest.raises(ValueError, match="> 0"):
        BoxPlattMap.from_artifact({**block, "a": [1.0, -1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match="w must have shape"):
        BoxPlattMap.from_artifact({**block, "w": [[0.0, 0.0]] * 4})
    with pytest.raises(ValueError, match="features"):
        BoxPlattMap.from_artifact({**block, "features": ["log_area"]})


# ------------------------------------------------------------------------------------------ fitting
def simulate(rng, n, num_classes=3, size=(640, 640), w_true=(-0.8, 0.0, 0.3)):
    """Detections whose true precision depends on the box: P(tp) = sigmoid(z + 0.3 + w_true . u)."""
    h, w = size
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    bw, bh = np.exp(rng.uniform(np.log(8), np.log(500), (2, n)))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(F)
    p = rng.beta(1.0, 1.5, n).astype(F)
    cls = rng.integers(0, num_classes, n)
    phi = box_features_f32(boxes, size).astype(np.float64)
    u = (phi - np.array([-4.0, 0.0, 0.5])) / np.array([2.0, 1.0, 0.3])
    s = logit_f32(p).astype(np.float64) + 0.3 + u @ np.asarray(w_true)
    tp = rng.random(n) < 1 / (1 + np.exp(-s))
    return p, cls, tp, boxes


def test_fit_recovers_a_box_size_bias_and_beats_platt_held_out():
    rng = np.random.default_rng(0)
    size = (640, 640)
    p, cls, tp, boxes = simulate(rng, 20_000)
    model = PlattBox(3, size).fit(p, cls, tp, boxes)
    assert model.map_.kind == "platt_box"
    assert np.all(model.a_ > 0)
    # w in the fitted standardisation <-> w_true in the simulation's (std 2, 1, 0.3)
    w_sim = model.global_w_ / model.std_ * np.array([2.0, 1.0, 0.3])
    np.testing.assert_allclose(w_sim, [-0.8, 0.0, 0.3], atol=0.1)
    p2, cls2, tp2, boxes2 = simulate(np.random.default_rng(1), 20_000)
    box_loss = log_loss(model.transform(p2, cls2, boxes2), tp2)
    platt = PerClassPlatt(3).fit(p, cls, tp)
    assert box_loss < log_loss(platt.transform(p2, cls2), tp2) - 0.01


def test_no_box_effect_gives_small_weights():
    rng = np.random.default_rng(2)
    p, cls, tp, boxes = simulate(rng, 20_000, w_true=(0.0, 0.0, 0.0))
    model = PlattBox(3, (640, 640)).fit(p, cls, tp, boxes)
    assert np.all(np.abs(model.global_w_) < 0.05)


def test_shrinkage_towards_the_global_fit():
    rng = np.random.default_rng(3)
    p, cls, tp, boxes = simulate(rng, 6000, num_classes=2)
    cls[:15] = 2                                         # a rare class; class 3 has none
    for per_class_w in (False, True):
        model = PlattBox(4, (640, 640), shrink=20.0, per_class_w=per_class_w).fit(p, cls, tp, boxes)
        assert model.a_[3] == model.global_a_ and model.b_[3] == model.global_b_
        np.testing.assert_array_equal(model.w_[3], model.global_w_)
        loose = PlattBox(4, (640, 640), shrink=0.0, per_class_w=per_class_w).fit(p, cls, tp, boxes)
        far = abs(loose.b_[2] - loose.global_b_) + abs(loose.a_[2] - loose.global_a_)
        near = abs(model.b_[2] - model.global_b_) + abs(model.a_[2] - model.global_a_)
        assert near < far
        if not per_class_w:
            assert np.all(model.w_ == model.global_w_) and model.map_.global_w


def test_fit_rejects_bad_input():
    rng = np.random.default_rng(4)
    p, cls, tp, boxes = simulate(rng, 100)
    with pytest.raises(ValueError, match="input_size"):
        PlattBox(3).fit(p, cls, tp, boxes)
    with pytest.raises(ValueError, match="boxes_xyxy must have shape"):
        PlattBox(3, (640, 640)).fit(p, cls, tp, boxes[:-1])
    bad = boxes.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PlattBox(3, (640, 640)).fit(p, cls, tp, bad)
    with pytest.raises(ValueError, match="shrink"):
        PlattBox(3, (640, 640), shrink=-1)
    with pytest.raises(RuntimeError, match="not fitted"):
        PlattBox(3, (640, 640)).transform(p, cls, boxes)


# ------------------------------------------------------------------------------------------ whole cut graph
@functools.lru_cache(maxsize=32)
def cut_session(layout: str, num_classes: int, seed: int, multi: bool, max_det: int, top_k: int, mask: bool,
                aware: bool, static_n: int | None, fixed_shape: bool = False):
    """onnx_ops.patch.build_postprocess_graph with a box-aware map (the BOX_AWARE variants; fixed_shape:
    the TensorRT graph, BOX_AWARE_ALL_PAIRS, which must keep every node inside a TensorRT engine)."""
    from calib.artifact import PostprocessConfig
    from onnx_ops.patch import build_postprocess_graph

    base = random_map(num_classes, seed, global_w=seed % 2 == 0)
    cmap = BoxPlattMap(base.a, base.b, base.w, base.mean, base.std, base.clip, (640, 640),
                       np.full(num_classes, 0.05) if seed % 2 else None)
    thr = np.random.default_rng(seed).uniform(0.2, 0.8, num_classes)
    cfg = PostprocessConfig(iou_threshold=0.5, max_det=max_det, pre_nms_top_k=top_k, multi_label=multi,
                            class_aware=aware, mask_padding=mask)
    model = build_postprocess_graph(layout, num_classes, cmap, thr, cfg, num_candidates=static_n,
                                    static_shapes=fixed_shape)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert all(n.name.startswith("detcal/") for n in model.graph.node)
    if fixed_shape:
        from onnx_ops import ep_support

        consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        left = ep_support.leaves_tensorrt(ep_support.check_nodes(model.graph.node, 18, consts=consts))
        assert not left and "NonZero" not in {n.op_type for n in model.graph.node}, left
    return _session(model), cmap, thr, cfg


def _cut_case(layout, num_classes, seed, multi, max_det, top_k, mask, aware, static_n, raw, rows, fixed_shape=False):
    from artifact_factory import assert_same_detections
    from calib.pipeline import pack_fixed, postprocess

    sess, cmap, thr, cfg = cut_session(layout, num_classes, seed, multi, max_det, top_k, mask, aware, static_n,
                                       fixed_shape)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"head": raw, "letterbox": rows})))
    ref = pack_fixed(postprocess(raw, layout, rows, cmap, thr, cfg), cfg.max_det)
    assert_same_detections(got, ref, score_tol=3e-7, context=f"{layout} C={num_classes} multi={multi}")
    return ref


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(["xywh_cls", "xywh_obj_cls", "end2end"]), num_classes=st.sampled_from([1, 3, 80]),
       seed=st.integers(0, 3), multi=st.booleans(), max_det=st.sampled_from([1, 10, 300]),
       top_k=st.sampled_from([5, 3000]), mask=st.booleans(), aware=st.booleans(), static=st.booleans(),
       batch=st.integers(1, 3), n=st.integers(0, 1500), data_seed=st.integers(0, 2**32 - 1), grid=st.booleans(),
       fixed_shape=st.booleans())
def test_cut_graph_equals_pipeline_box_aware(layout, num_classes, seed, multi, max_det, top_k, mask, aware, static,
                                          batch, n, data_seed, grid, fixed_shape):
    """decode -> box-aware threshold/calibrate -> best class -> top-k -> mask -> NMS -> outputs, the patch's
    graph vs calib.pipeline: same detections in the same order (the ranking key is the bit-exact logit),
    in the default graph and in the fixed-shape one for TensorRT (every (box, class) pair, masked)."""
    from artifact_factory import random_head
    from calib.letterbox import letterbox_row

    multi = multi and layout != "end2end"
    n = max(n, 1) if static else n
    rng = np.random.default_rng(data_seed)
    raw = random_head(layout, batch, n, num_classes, rng, grid=grid, dup_frac=0.1)
    rows = np.stack([letterbox_row(int(rng.integers(1, 3000)), int(rng.integers(1, 3000)), (640, 640))
                     for _ in range(batch)]).astype(F)
    _cut_case(layout, num_classes, seed, multi, max_det, top_k, mask, aware, n if static else None, raw, rows,
              fixed_shape)


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls", "end2end"])
@pytest.mark.parametrize("fixed_shape", [False, True], ids=["default", "fixed-shape"])
def test_cut_graph_dense_example(layout, fixed_shape):
    """A fixed busy example per layout: 80 classes, 8400 candidates (300 for end2end), two images; in the
    default graph and in the fixed-shape one (every (box, class) pair calibrated, masked)."""
    from artifact_factory import random_head
    from calib.letterbox import letterbox_row

    rng = np.random.default_rng(7)
    raw = random_head(layout, 2, 8400 if layout != "end2end" else 300, 80, rng)
    rows = np.stack([letterbox_row(1280, 720, (640, 640)), letterbox_row(480, 1200, (640, 640))]).astype(F)
    ref = _cut_case(layout, 80, 1, False, 300, 3000, True, True, None, raw, rows, fixed_shape)
    assert ref["num_dets"].min() > 5
    if fixed_shape:     # multi-label too, and a static N
        _cut_case(layout, 80, 2, layout != "end2end", 300, 3000, True, True, raw.shape[2 if layout == "xywh_cls" else 1],
                  raw, rows, fixed_shape)


# ------------------------------------------------------------------------------------------ selection above the floor
def test_select_on_floor_prefers_box_aware_when_the_bias_is_real_and_identity_when_calibrated():
    from calib.floor_selection import above_floor, nested_oof, select_on_floor

    rng = np.random.default_rng(11)
    p, cls, tp, boxes = simulate(rng, 4000, w_true=(-0.8, 0.0, 0.0))
    groups = rng.integers(0, 200, p.size)
    win, rep = select_on_floor(p, cls, tp, groups, boxes, 3, (640, 640))
    assert win == "platt_box", rep
    assert rep["candidates"]["platt_box"]["log_loss"] < rep["candidates"]["identity"]["log_loss"]
    # already calibrated scores: nothing beats identity on both held-out measures
    p2 = rng.uniform(0.05, 0.95, 4000).astype(F)
    tp2 = rng.random(4000) < p2
    win2, rep2 = select_on_floor(p2, cls, tp2, groups, boxes, 3, (640, 640))
    assert win2 == "identity", rep2
    # without boxes the box-aware candidate is not offered
    _, rep3 = select_on_floor(p, cls, tp, groups, None, 3)
    assert "platt_box" not in rep3["candidates"]
    oof, chosen = nested_oof(p2, cls, tp2, groups, boxes, 3, (640, 640), n_folds=3)
    assert len(chosen) == 3
    if all(c == "identity" for c in chosen):
        np.testing.assert_array_equal(oof, p2.astype(np.float64))
    keep = above_floor(np.array([0.1, 0.3, 0.3]), np.array([0, 0, 1]), [0.2, 0.3])
    np.testing.assert_array_equal(keep, [False, True, False])


def test_map_stores_its_input_size():
    cmap = random_map(2, 0)
    sized = BoxPlattMap(cmap.a, cmap.b, cmap.w, cmap.mean, cmap.std, cmap.clip, (384, 640))
    back = BoxPlattMap.from_artifact(sized.to_artifact())
    assert back.input_size == (384, 640)
    rng = np.random.default_rng(0)
    p, cls, boxes = random_scores(rng, 50), rng.integers(0, 2, 50), random_boxes(rng, 50, (384, 640))
    np.testing.assert_array_equal(back.calibrated_logit(p, cls, boxes), cmap.calibrated_logit(p, cls, boxes, (384, 640)))
    with pytest.raises(ValueError, match="input_size"):
        cmap.calibrated_logit(p, cls, boxes)
    # the mean box: every standardised feature 0, so the box term vanishes
    mean_box = back.transform_mean_box(p, cls)
    np.testing.assert_allclose(mean_box, 1 / (1 + np.exp(-(cmap.a[cls] * logit_f32(p) + cmap.b[cls]))), rtol=1e-6)


def test_choose_on_floor_fits_above_the_floor_only():
    from calib.floor_selection import choose_on_floor

    rng = np.random.default_rng(12)
    p, cls, tp, boxes = simulate(rng, 3000, w_true=(-0.8, 0.0, 0.0))
    groups = rng.integers(0, 100, p.size)
    # below the floor: detections whose labels contradict everything above it
    low = p < 0.3
    tp_noisy = np.where(low, ~tp, tp)
    cal, rep = choose_on_floor("platt_box", p, cls, tp_noisy, groups, boxes, 0.3, 3, (640, 640))
    ref = PlattBox(3, (640, 640)).fit(p[~low], cls[~low], tp[~low], boxes[~low])
    np.testing.assert_allclose(cal.a_, ref.a_)
    assert rep["n_above_floor"] == int((~low).sum()) and rep["fit_floor"] == [0.3] * 3
    cal2, rep2 = choose_on_floor("auto", p, cls, tp, groups, boxes, np.array([0.3, 0.3, 0.3]), 3, (640, 640), n_folds=3)
    assert rep2["winner"] in rep2["candidates"] and len(rep2["nested"]["chosen_per_fold"]) == 3
    cal3, rep3 = choose_on_floor("platt_per_class", p, cls, tp, groups, None, 0.9999, 3)
    assert rep3["winner"] == "identity" and "note" in rep3


def test_raw_floor_is_part_of_the_survival_test():
    """Below the fitting floor the map extrapolates: nothing at or below it survives, in numpy and the graph."""
    cmap = random_map(3, 1)
    floored = BoxPlattMap(cmap.a, cmap.b, cmap.w, cmap.mean, cmap.std, cmap.clip, (640, 640), [0.3, 0.0, np.inf])
    assert BoxPlattMap.from_artifact(floored.to_artifact()).raw_floor.tolist() == [0.3, 0.0, np.inf]
    rng = np.random.default_rng(3)
    m = 4000
    p, cls, boxes = rng.uniform(0, 1, m).astype(F), rng.integers(0, 3, m), random_boxes(rng, m, (640, 640))
    thr = np.array([0.01, 0.01, 0.01])
    surv = floored.survives(p, cls, boxes, None, thr)
    assert not np.any(surv & (cls == 0) & (p <= F(0.3))) and np.any(surv & (cls == 0))
    assert not np.any(surv & (cls == 2))
    np.testing.assert_array_equal(surv[cls == 1], cmap.survives(p, cls, boxes, (640, 640), thr)[cls == 1])
    b = GraphBuilder(18)
    s = bc.box_calibrated_logit(b, "p", "cls", "boxes", floored, (640, 640))
    out = bc.box_survives(b, "p", "cls", s, floored, thr)
    b.nodes.append(helper.make_node("Identity", [out], ["survives"], name=b.name("out/survives")))
    sess = _session(_model(b, [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["m"]),
                               helper.make_tensor_value_info("cls", TensorProto.INT64, ["m"]),
                               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["m", 4])],
                           [helper.make_tensor_value_info("survives", TensorProto.BOOL, ["m"])]))
    np.testing.assert_array_equal(sess.run(None, {"p": p, "cls": cls, "boxes": boxes})[0], surv)


def test_nested_check_keeps_identity_when_the_selection_does_not_generalise():
    """Calibrated scores with a few lucky folds: if the selection, re-run inside each fold, does not beat
    identity on held-out log-loss and D-ECE, choose_on_floor keeps identity whatever single-level CV said."""
    from calib.floor_selection import choose_on_floor

    rng = np.random.default_rng(21)
    for trial in range(4):
        p = rng.uniform(0.05, 0.95, 300).astype(F)
        tp = rng.random(300) < p
        cls = rng.integers(0, 3, 300)
        groups = rng.integers(0, 30, 300)
        cal, rep = choose_on_floor("auto", p, cls, tp, groups, None, 0.0, 3, n_folds=3, seed=trial)
        nest = rep["nested"]
        beats = nest["log_loss"] < nest["identity_log_loss"] and nest["dece"] < nest["identity_dece"]
        if rep["winner"] != "identity":
            assert beats
        if rep.get("nested_fallback"):
            assert not beats and cal.map_.kind == "identity" and rep["selected"] != "identity"


def test_nested_check_at_the_operating_point_judges_log_loss_here_and_defers_d_ece():
    """dece_check="operating_point" (what fit uses): selection and nested check here are by held-out
    log-loss only (D-ECE is judged by fit at the operating point, operating_point_check); the
    floor-level D-ECE is still reported."""
    from calib.floor_selection import choose_on_floor

    rng = np.random.default_rng(5)
    kept_op = 0
    for trial in range(4):
        p = rng.uniform(0.05, 0.95, 300).astype(F)
        tp = rng.random(300) < np.clip(1.3 * p - 0.1, 0, 1)     # miscalibrated: a map can help
        cls = rng.integers(0, 3, 300)
        groups = rng.integers(0, 30, 300)
        _, floor_rep = choose_on_floor("auto", p, cls, tp, groups, None, 0.0, 3, n_folds=3, seed=trial)
        cal, rep = choose_on_floor("auto", p, cls, tp, groups, None, 0.0, 3, n_folds=3, seed=trial,
                                   dece_check="operating_point")
        nest = rep["nested"]
        assert nest["dece_check"] == "operating_point" and floor_rep["nested"]["dece_check"] == "floor"
        beats_ll = nest["log_loss"] < nest["identity_log_loss"]
        assert bool(rep.get("nested_fallback")) == (rep["selected" if rep.get("nested_fallback") else "winner"]
                                                    != "identity" and not beats_ll)
        cands = rep["candidates"]
        ident = cands["identity"]["log_loss"]
        better = {k: r["log_loss"] for k, r in cands.items() if r["log_loss"] < ident}
        chosen = rep.get("selected", rep["winner"])
        assert chosen == (min(better, key=better.get) if better else "identity")     # log-loss alone
        if rep["winner"] != "identity":
            assert beats_ll and cal.map_.kind == rep["winner"]
        kept_op += rep["winner"] != "identity"
    assert kept_op > 0
    with pytest.raises(ValueError, match="dece_check"):
        choose_on_floor("auto", p, cls, tp, groups, None, 0.0, 3, dece_check="somewhere")


def test_fit_mask_keeps_the_certification_images_out_of_the_calibrator():
    """choose_on_floor(fit_mask=...): the calibrator is fitted on the masked detections above the
    floor only (what fit does with the detections of negative images), the others are counted."""
    from calib.floor_selection import choose_on_floor

    rng = np.random.default_rng(3)
    p, cls, tp, boxes = simulate(rng, 2000, w_true=(-0.5, 0.0, 0.0))
    groups = rng.integers(0, 80, p.size)
    on_pos = groups >= 20                       # images 0-19 stand for the negative scenes
    tp_neg = np.where(on_pos, tp, False)        # nothing on a negative image is a true positive
    cal, rep = choose_on_floor("platt_per_class", p, cls, tp_neg, groups, boxes, 0.2, 3, fit_mask=on_pos)
    up = p > 0.2
    from calib.calibrators import make_calibrator
    want = make_calibrator("platt_per_class", 3).fit(p[up & on_pos], cls[up & on_pos], tp_neg[up & on_pos])
    np.testing.assert_allclose(cal.transform(p, cls), want.transform(p, cls))
    assert rep["n_above_floor"] == int((up & on_pos).sum()) and rep["n_above_floor_not_fitted"] == int((up & ~on_pos).sum())
    other = make_calibrator("platt_per_class", 3).fit(p[up], cls[up], tp_neg[up])
    assert not np.allclose(other.transform(p, cls), want.transform(p, cls))   # the mask matters
    with pytest.raises(ValueError, match="fit_mask"):
        choose_on_floor("platt_per_class", p, cls, tp_neg, groups, boxes, 0.2, 3, fit_mask=on_pos[:5])


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
def test_box_aware_takes_boxes_first_where_the_prefilter_is_tight(layout, static):
    """Single-label dense heads with a box-aware map: boxes first (the prefilter's NonZero over the
    [B, M, C] slots) where the lowest raw prefilter is >= BOX_AWARE_MIN_PREFILTER, the dense prefilter
    below it; both equal the reference on a busy two-image example (80 classes, 8400 candidates)."""
    from artifact_factory import random_head
    from calib.artifact import PostprocessConfig
    from calib.letterbox import letterbox_row
    from onnx_ops.patch import build_postprocess_graph
    from onnx_ops.variants import BOX_AWARE_MIN_PREFILTER

    rng = np.random.default_rng(5)
    raw = random_head(layout, 2, 8400, 80, rng, dup_frac=0.1)
    rows = np.stack([letterbox_row(1280, 720, (640, 640)), letterbox_row(500, 900, (640, 640))]).astype(F)
    n = 8400 if static else None
    seen = set()
    for seed in range(4):
        _, cmap, thr, cfg = cut_session(layout, 80, seed, False, 300, 3000, True, True, n)
        tight = bool(np.all(cmap.prefilter_thresholds(thr) >= BOX_AWARE_MIN_PREFILTER))
        graph = build_postprocess_graph(layout, 80, cmap, thr, cfg, num_candidates=n).graph
        assert any(nd.name.startswith("detcal/boxes_first/") for nd in graph.node) == tight
        seen.add(tight)
        ref = _cut_case(layout, 80, seed, False, 300, 3000, True, True, n, raw, rows)
        assert ref["num_dets"].sum() > 0
    assert seen == {True, False}, "the seeds no longer cover both routes"


def test_kept_scores_stay_sorted_though_the_sigmoid_kernel_is_not_monotone():
    """The kept rows come ranked by the calibrated logit; their scores must come out descending too
    (the EfficientNMS contract). onnxruntime's Sigmoid alone turns some descending logit pairs into
    ascending scores; pack_fixed sorts the box-aware scores (Kept.sort_scores), which then are
    box_pipeline.box_scores' within a few ulps (two exp kernels)."""
    import dataclasses

    from calib.box_pipeline import box_scores
    from onnx_ops import steps
    from onnx_ops.graph_types import Kept

    rng = np.random.default_rng(7)
    k, n_ok = 300, 290
    # dense runs of nearly equal logits, where a kernel's last-bit wobble shows, from -20 to 20
    logits = np.concatenate([np.float32(c) + np.float32(1e-5) * np.arange(30, dtype=np.float32)
                             for c in rng.uniform(-20, 20, k // 30)])
    logits = -np.sort(-logits.astype(np.float32))[None].repeat(2, 0)                     # [2, k] descending
    logits[:, n_ok:] = 30.0       # rows past num_dets hold anything (suppressed slots' logits)
    b = GraphBuilder(17)
    plain = bc.box_calibrated_score(b, "s")
    kept = Kept(plain, "cls", "boxes", "num", "row_ok", k, padded=True, sort_scores=True)
    outs = steps.pack_fixed(b, kept, "rows", max_det=k)
    b.nodes.append(helper.make_node("Identity", [plain], ["plain"], name=b.name("out/plain")))
    f = TensorProto.FLOAT
    sess = _session(_model(b, [helper.make_tensor_value_info("s", f, [2, k]),
                               helper.make_tensor_value_info("cls", TensorProto.INT64, [2, k]),
                               helper.make_tensor_value_info("boxes", f, [2, k, 4]),
                               helper.make_tensor_value_info("num", f, [2, 1]),
                               helper.make_tensor_value_info("row_ok", TensorProto.BOOL, [2, k]),
                               helper.make_tensor_value_info("rows", f, [2, 6])],
                           [helper.make_tensor_value_info("plain", f, [2, k]),
                            helper.make_tensor_value_info(outs["det_scores"], f, [2, k])]))
    row_ok = np.arange(k)[None].repeat(2, 0) < n_ok
    feed = {"s": logits, "cls": np.zeros((2, k), np.int64), "boxes": np.zeros((2, k, 4), np.float32),
            "num": np.full((2, 1), n_ok, np.float32), "row_ok": row_ok,
            "rows": np.array([[0, 0, 1, 1, 64, 64]] * 2, np.float32)}
    got_plain, got = sess.run(["plain", outs["det_scores"]], feed)
    assert (np.diff(got_plain[:, :n_ok], axis=1) > 0).any(), "this Sigmoid is monotone here: the test shows nothing"
    assert (np.diff(got, axis=1) <= 0).all() and not got[:, n_ok:].any()
    np.testing.assert_array_equal(np.sort(got[:, :n_ok], axis=1), np.sort(got_plain[:, :n_ok], axis=1))
    ref = box_scores(logits[0, :n_ok])
    assert (np.diff(ref) <= 0).all()
    assert_scores_close(got[0, :n_ok], ref)


def test_patch_keeps_the_default_box_aware_graph_unless_static_shapes_is_asked(blob_model, tmp_path):
    """A box-aware artifact: `patch` keeps its default graph (the prefilter's NonZero: TensorRT's table says
    it may leave the engine, but the fixed-shape graph calibrates every (box, class) pair, ~20x the cost on
    CPU); --static-shapes gives that graph, with no node outside a TensorRT engine, recorded in the metadata."""
    from artifact_factory import make_artifact
    from calib.model_info import sha256_file
    from onnx_ops import ep_support
    from onnx_ops.patch import build_patched_model

    base = random_map(2, 1, global_w=True)
    cmap = BoxPlattMap(base.a, base.b, base.w, base.mean, base.std, base.clip, (128, 128))
    art = make_artifact(2, calibrator=cmap, thresholds=0.5, sha256=sha256_file(blob_model), input_size=(128, 128))
    default = build_patched_model(blob_model, art)
    fixed = build_patched_model(blob_model, art, static_shapes=True)
    ops = lambda r: {n.op_type for n in r.model.graph.node if n.name.startswith("detcal/")}   # noqa: E731
    assert "NonZero" in ops(default) and "NonZero" not in ops(fixed)
    assert ep_support.leaves_tensorrt(default.findings) and not ep_support.leaves_tensorrt(fixed.findings)
    from calib.artifact import PatchedMetadata

    read = lambda r: PatchedMetadata.from_metadata_props({p.key: p.value for p in r.model.metadata_props}, "m")  # noqa: E731
    assert read(fixed).static_shapes is True and read(default).static_shapes is False
