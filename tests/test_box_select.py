"""onnx_ops.box_select on its own: the boxes-first margin is a superset of the reference's
survivors, the compaction lists exactly the marked boxes in ascending index, and the pre-NMS
padding keeps TopK's order. Each step runs as its own small graph (onnxruntime CPU)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnx_ops import box_select, steps
from onnx_ops.graph_builder import BOOL, FLOAT, INT64, NEG, GraphBuilder

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(b: GraphBuilder, inputs: dict, outputs: dict, feeds: dict) -> list[np.ndarray]:
    """inputs {name: (elem type, shape)}, outputs {tensor: elem type} -> the outputs for `feeds`."""
    graph = helper.make_graph(
        b.nodes, "box_select_step",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(outputs), feeds)


@st.composite
def heads(draw):
    """A raw head with probabilities in [0, 1] (zeros, ones, exact threshold values, ties, tiny values)
    and per-class raw thresholds (some -inf, some 0, some +inf)."""
    layout = draw(st.sampled_from(["xywh_cls", "xywh_obj_cls"]))
    batch, n, c = draw(st.integers(1, 3)), draw(st.integers(1, 300)), draw(st.sampled_from([1, 2, 5, 80]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    thr = rng.choice(np.array([0.0, 1e-30, 0.1, 0.25, 0.5, 0.9, 1.0, np.inf], np.float32), c)   # inf: nothing passes
    if draw(st.booleans()):
        thr[rng.integers(0, c)] = -np.inf
    kind = draw(st.sampled_from(["sparse", "dense", "grid", "at_threshold"]))
    at = np.clip(np.nan_to_num(thr, neginf=0.0), 0, 1)
    p = {"sparse": lambda s: rng.beta(0.05, 5.0, s), "dense": lambda s: rng.uniform(0, 1, s),
         "grid": lambda s: np.round(rng.uniform(0, 1, s) * 4) / 4,
         # scores exactly at their class's threshold or 0; objectness 0 or 1 (obj * cls stays exact)
         "at_threshold": lambda s: (np.broadcast_to(at, s) if s[-1] == c else 1.0) * (rng.uniform(0, 1, s) < 0.5)}[kind]
    boxes = rng.uniform(-100, 740, (batch, n, 4))
    if layout == "xywh_cls":
        scores = p((batch, n, c)).astype(np.float32)
        raw = np.concatenate([boxes, scores], 2).transpose(0, 2, 1)
        probs = scores
    else:
        obj = p((batch, n, 1)).astype(np.float32)
        cls = p((batch, n, c)).astype(np.float32)
        raw = np.concatenate([boxes, obj, cls], 2)
        probs = obj * cls                                   # float32, as calib.layouts decodes it
    return layout, np.ascontiguousarray(raw, np.float32), thr, probs


def _margin_and_slots(layout, raw, thr, opset, static_n, max_row=None):
    b = GraphBuilder(opset)
    b.reserve(["head"])
    lead = 4 if layout == "xywh_cls" else 0
    alive = box_select.box_margin(b, "head", thr, layout, lead=lead)
    n = raw.shape[2] if layout == "xywh_cls" else raw.shape[1]
    if max_row is not None:          # the static-N TopK compaction with short rows: several rows, a padded last one
        slots = box_select.compact_boxes_topk(b, alive, n, max_row=max_row)
    else:
        slots = box_select.compact_boxes(b, alive, n if static_n else None)
    shape = list(raw.shape)
    if not static_n:                                                  # the candidate axis dynamic
        shape[2 if layout == "xywh_cls" else 1] = "n"
    return _run(b, {"head": (FLOAT, shape)}, {alive: BOOL, slots.box: INT64, slots.valid: BOOL}, {"head": raw})


@SETTINGS
@given(heads(), st.sampled_from([13, 18]), st.booleans())
def test_margin_is_a_superset_and_the_slots_list_it_in_box_order(case, opset, static_n):
    layout, raw, thr, probs = case
    alive, box, valid = _margin_and_slots(layout, raw, thr, opset, static_n)
    exact = (probs > thr[None, None, :]).any(2)                       # the reference's survivors [B, N]
    assert not (exact & ~alive).any()                                 # superset: no survivor lost
    assert box.shape == valid.shape and box.shape[1] == alive.sum(1).max(initial=0)
    for i in range(alive.shape[0]):
        want = np.flatnonzero(alive[i])
        assert valid[i].sum() == want.size and valid[i, :want.size].all()
        np.testing.assert_array_equal(box[i, :want.size], want)      # ascending box index, nothing capped


@SETTINGS
@given(heads(), st.sampled_from([13, 18]))
def test_margin_weighs_each_class_by_its_threshold(case, opset):
    """Where every threshold is positive the margin is sum_c p_c / t_c > 1 - 2^-8 (tighter than the
    plain sum against the lowest threshold): checked against that sum in float64, away from the level."""
    layout, raw, thr, probs = case
    weighted = box_select.margin_weights(thr)
    if weighted is None:                                   # some t_c <= 0: the plain sum (every box may pass)
        assert not (thr >= box_select.WEIGHTED_MARGIN_MIN_THRESHOLD).all()
        return
    w, level = weighted
    alive = _margin_and_slots(layout, raw, thr, opset, True)[0]
    if layout == "xywh_cls":
        mass = probs.astype(np.float64) @ w.astype(np.float64)
    else:
        mass = raw[..., 4].astype(np.float64) * (raw[..., 5:].astype(np.float64) @ w.astype(np.float64))
    clear = np.abs(mass - level) > 1e-5
    np.testing.assert_array_equal(alive[clear], (mass > level)[clear])


@SETTINGS
@given(heads(), st.sampled_from([11, 13, 18]), st.sampled_from([1, 7, 64, 299]))
def test_topk_compaction_by_rows_lists_every_survivor_in_box_order(case, opset, max_row):
    """compact_boxes_topk with rows shorter than N: the valid slots are exactly the marked boxes in
    ascending index (unfilled slots between rows), every slot points at a real box, and the slot
    count is rows * (most survivors of any row)."""
    layout, raw, thr, probs = case
    alive, box, valid = _margin_and_slots(layout, raw, thr, opset, True, max_row=max_row)
    n = alive.shape[1]
    rows = -(-n // max_row)
    length = -(-n // rows)
    padded = np.zeros((alive.shape[0], rows * length), bool)
    padded[:, :n] = alive
    assert box.shape == valid.shape and box.shape[1] == rows * padded.reshape(-1, length).sum(1).max(initial=0)
    assert ((box >= 0) & (box < n)).all()
    for i in range(alive.shape[0]):
        np.testing.assert_array_equal(box[i][valid[i]], np.flatnonzero(alive[i]))


@pytest.mark.parametrize("pad", [0, 1, 7, 300])
def test_descending_pad_keeps_top_k_order(pad):
    """The non-candidate tail of pre_nms_top_k sorts after every key and never reads as valid; the
    valid prefix is the keys sorted descending, ties by lower index."""
    rng = np.random.default_rng(pad)
    key = np.round(rng.uniform(0, 1, (2, 50)) * 8).astype(np.float32) / 8
    key[:, ::4] = NEG                                                   # non-candidates among the slots
    b = GraphBuilder(18)
    b.reserve(["key"])
    padded = steps.pad_key_descending(b, "key", pad)
    k = b.i64("k", [50 + pad])
    score, index = b.op("TopK", padded, k, outputs=2, axis=-1, largest=1, sorted=1)
    s, idx = _run(b, {"key": (FLOAT, [2, 50])}, {score: FLOAT, index: INT64}, {"key": key})
    for i in range(2):
        order = np.lexsort((np.arange(50), -key[i]))
        nv = int((key[i] > NEG / 2).sum())
        np.testing.assert_array_equal(idx[i, :nv], order[:nv])
        assert (s[i, nv:] <= NEG / 2).all()
        if pad:    # the 50 - nv non-candidate slots first (key NEG > every pad), then the pads in order
            np.testing.assert_array_equal(idx[i, 50:], np.arange(50, 50 + pad))


@pytest.mark.parametrize("n", [2100, 8400])
@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_default_graph_stays_inside_tensorrt(layout, opset, n):
    """The boxes-first graph uses only ops and input forms TensorRT's table accepts (TopK with a
    constant K, or the pre-NMS one with K bounded by a Min with K1; no NonZero, no op outside the
    table), so `detcal patch` keeps it by default."""
    from calib.artifact import PostprocessConfig
    from onnx_ops import ep_support
    from onnx_ops.patch import build_postprocess_graph
    from artifact_factory import make_calibration

    c = 5
    cmap = make_calibration("temperature", c, np.random.default_rng(0))
    g = build_postprocess_graph(layout, c, cmap, np.linspace(0.2, 0.3, c), PostprocessConfig(), num_candidates=n,
                                opset=opset).graph
    assert any(n.name.startswith("detcal/boxes_first/") for n in g.node)
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    findings = ep_support.check_nodes(list(g.node), opset, consts=consts, forbid=ep_support.DETCAL_FORBIDDEN)
    assert ep_support.leaves_tensorrt(findings) == []
