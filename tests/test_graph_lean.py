"""The inserted graph stays lean (issue 11): the few-boxes forms of the steps equal their general
forms, and the boxes-first graph of a real-size head keeps its node budget and shares its helpers
(one row index per gather index, one Gather per letterbox column set). Each step runs as its own
small graph (onnxruntime CPU)."""
from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calib.artifact import PostprocessConfig
from onnx_ops import steps
from onnx_ops.graph_builder import FLOAT, INT64, NEG, GraphBuilder
from onnx_ops.patch import build_postprocess_graph
from test_box_select import _run

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def slot_scores(draw):
    """probs [B, C, M] in [0, 1] (exact threshold values, zeros, ones), cal [B, C, M] (probabilities or
    logits), per-class raw thresholds [C] (some -inf)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bsz, c, m = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 80])), draw(st.integers(1, 60))
    thr = rng.choice(np.array([0.0, 1e-30, 0.25, 0.5, 1.0], np.float32), c)
    if draw(st.booleans()):
        thr[rng.integers(0, c)] = -np.inf
    probs = np.round(rng.uniform(0, 1, (bsz, c, m)) * 4).astype(np.float32) / 4
    probs = np.where(rng.uniform(size=probs.shape) < 0.3, np.clip(np.nan_to_num(thr, neginf=0), 0, 1)[None, :, None],
                     probs).astype(np.float32)
    scale = draw(st.sampled_from([1.0, 50.0]))      # calibrated probabilities or logits
    cal = (rng.uniform(-1, 1, probs.shape) * scale).astype(np.float32)
    return probs, cal, thr


@SETTINGS
@given(slot_scores(), st.sampled_from([13, 18]))
def test_few_boxes_threshold_and_best_class_equal_the_general_forms(case, opset):
    """threshold(few_boxes) (Greater + Where) and select_best_class(few_boxes) (ReduceMax + ArgMax)
    give exactly the keys and classes of the penalty / GatherElements forms."""
    probs, cal, thr = case
    c = thr.size
    outs = {}
    for few in (False, True):
        b = GraphBuilder(opset)
        key = steps.threshold(b, "probs", "cal", thr, (1, c, 1), few_boxes=few)
        best, cls = steps.select_best_class(b, key, 1, few_boxes=few)
        outs[few] = _run(b, {"probs": (FLOAT, list(probs.shape)), "cal": (FLOAT, list(cal.shape))},
                         {key: FLOAT, best: FLOAT, cls: INT64}, {"probs": probs, "cal": cal})
    for general, few in zip(outs[False], outs[True]):
        np.testing.assert_array_equal(general, few)
    want = np.where(probs > thr[None, :, None], cal, NEG).astype(np.float32)
    np.testing.assert_array_equal(outs[True][0], want)
    np.testing.assert_array_equal(outs[True][2], want.argmax(1))


def _graph(calibrated: bool):
    from calib.artifact import AffineLogitMap

    c = 80
    cmap = AffineLogitMap("temperature", np.full(c, 0.8), np.zeros(c)) if calibrated else None
    thr = np.linspace(0.2, 0.35, c) if calibrated else 0.25
    return build_postprocess_graph("xywh_cls", c, cmap, thr, PostprocessConfig(), num_candidates=8400)


def test_boxes_first_graph_keeps_its_node_budget():
    """The real-size boxes-first graph (xywh_cls, 80 classes, N = 8400): at most 110 / 116 nodes
    (identity / temperature; 133 / 139 before issue 11's cuts), no tensor unsqueezed twice, one
    Gather per letterbox column set, no broadcast condition in the NMS bounds' Where."""
    for calibrated, budget in ((False, 110), (True, 116)):
        g = _graph(calibrated).graph
        assert len(g.node) <= budget, (calibrated, len(g.node))
        unsq = Counter(n.input[0] for n in g.node if n.op_type == "Unsqueeze")
        assert max(unsq.values()) == 1, unsq.most_common(3)
        rows = [n for n in g.node if n.op_type == "Gather" and n.input[0] == "letterbox"]
        assert len(rows) == 3 and len({n.input[1] for n in rows}) == 3
        producers = {o: n for n in g.node for o in n.output}
        for n in g.node:
            if n.op_type == "Where" and n.name.startswith("detcal/nms/") and n.name.endswith("_in"):
                assert producers[n.input[0]].op_type == "Expand", n.name
