"""The benchmark's routes (benchmarks/routes.py) do the job they are timed for.

OpenCV and onnxruntime-extensions are benchmark-only dependencies: their tests skip where
they are not installed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import routes  # noqa: E402
from calib.artifact import identity_map  # noqa: E402
from calib.artifact import PostprocessConfig  # noqa: E402

NO_PAD_ROW = np.array([[640, 640, 1, 1, 0, 0]], np.float32)     # orig 640x640 served at 640: no letterbox


def cluster_head(n_cluster=400, n_single=10, c=3, conf_hi=0.9) -> np.ndarray:
    """xywh_cls head [1, 4+C, N]: n_cluster identical high-score boxes of class 0, then n_single
    disjoint lower-score boxes of class 0; every other class score 0.01."""
    boxes = [(100.0, 100.0, 40.0, 40.0)] * n_cluster + [(300.0, 20.0 + 60 * i, 30.0, 30.0) for i in range(n_single)]
    n = len(boxes)
    scores = np.full((n, c), 0.01, np.float32)
    scores[:n_cluster, 0] = conf_hi - np.arange(n_cluster) * 1e-4
    scores[n_cluster:, 0] = 0.5 - np.arange(n_single) * 1e-3
    pred = np.concatenate([np.asarray(boxes, np.float32), scores], 1)   # (N, 4 + C)
    return pred.T[None].copy()


def one_class_head(rng, n=600, c=4) -> np.ndarray:
    """xywh_cls head [1, 4+C, N], boxes inside the 640 input, at most one class per box above 0.25."""
    cx, cy = rng.uniform(40, 600, n), rng.uniform(40, 600, n)
    w, h = rng.uniform(5, 80, n), rng.uniform(5, 80, n)
    scores = rng.uniform(0.0, 0.2, (n, c))
    cls = rng.integers(0, c, n)
    scores[np.arange(n), cls] = rng.uniform(0.0, 1.0, n)
    pred = np.concatenate([np.stack([cx, cy, w, h], 1), scores], 1).astype(np.float32)
    return pred.T[None].copy()


# ------------------------------------------------------------------------------------------
# agreement
# ------------------------------------------------------------------------------------------
dets_strategy = st.integers(0, 12).flatmap(lambda k: st.tuples(
    st.lists(st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(1, 100), st.floats(1, 100)), min_size=k, max_size=k),
    st.lists(st.floats(0, 1, width=32), min_size=k, max_size=k),
    st.lists(st.integers(0, 3), min_size=k, max_size=k)))


def _as_dets(t):
    boxes, scores, classes = t
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    b[:, 2:] += b[:, :2]
    return b, np.asarray(scores, np.float32), np.asarray(classes, np.int64)


@settings(max_examples=60, deadline=None)
@given(dets_strategy, st.randoms(use_true_random=False))
def test_agreement_with_itself_and_any_order(t, rnd):
    d = _as_dets(t)
    a = routes.agreement([d], [d])
    assert a["matched"] == 1.0 and a["extra"] == 0.0 and a["score_diff_max"] == 0.0
    perm = list(range(len(d[1])))
    rnd.shuffle(perm)
    shuffled = tuple(v[perm] for v in d)
    assert routes.agreement([shuffled], [d])["matched"] == 1.0


def test_agreement_counts_class_box_and_score_differences():
    ref = (np.array([[0, 0, 100, 100], [200, 200, 300, 300], [400, 400, 450, 450]], float),
           np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 2]))
    got = (np.array([[0, 0, 100, 100], [200, 200, 300, 300], [400, 400, 460, 450], [0, 0, 5, 5]], float),
           np.array([0.85, 0.8, 0.7, 0.3], np.float32), np.array([0, 2, 2, 0]))
    a = routes.agreement([got], [ref])
    # only the first is matched: the second has another class, the third IoU 50/60 < 0.99
    assert a["matched"] == pytest.approx(1 / 3)
    assert a["n_ref"] == 3 and a["n_got"] == 4 and a["extra"] == pytest.approx(3 / 4)
    assert a["score_diff_max"] == pytest.approx(0.05, abs=1e-6)
    assert routes.agreement([got], [ref], iou_min=0.8)["matched"] == pytest.approx(2 / 3)
    empty = (np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert routes.agreement([empty], [empty])["matched"] == 1.0
    assert routes.agreement([empty], [ref])["matched"] == 0.0


# ------------------------------------------------------------------------------------------
# OpenCV: max_det after NMS, not before
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cv2():
    mod, why = routes.load_opencv()
    if mod is None:
        pytest.skip(why)
    return mod


def test_opencv_caps_after_nms(cv2):
    head = cluster_head()
    cfg = PostprocessConfig(iou_threshold=0.7, max_det=5, mask_padding=False)
    got = routes.route_opencv(cv2, head, "xywh_cls", NO_PAD_ROW, 0.25, 0.7, 5)
    # top_k=max_det before NMS would keep 5 of the identical cluster boxes and return 1 detection
    assert len(got[0][1]) == 5
    assert np.all(np.diff(got[0][1]) <= 0)
    ref = routes.route_numpy(head, "xywh_cls", NO_PAD_ROW, identity_map(3), 0.25, cfg)
    a = routes.agreement(got, ref)
    assert a["matched"] == 1.0 and a["extra"] == 0.0


def test_bench_postprocess_opencv_route_caps_after_nms(cv2):
    import bench_postprocess

    head = cluster_head()
    res = bench_postprocess.route_opencv(cv2, head, "xywh_cls", NO_PAD_ROW.astype(np.float64), 0.25, 0.7, 5)
    assert len(res[0][1]) == 5


def test_opencv_agrees_with_numpy_on_random_heads(cv2):
    rng = np.random.default_rng(3)
    head = one_class_head(rng)
    cfg = PostprocessConfig(iou_threshold=0.5, max_det=50, mask_padding=False)
    got = routes.route_opencv(cv2, head, "xywh_cls", NO_PAD_ROW, 0.25, 0.5, 50)
    ref = routes.route_numpy(head, "xywh_cls", NO_PAD_ROW, identity_map(4), 0.25, cfg)
    assert len(ref[0][1]) > 10
    a = routes.agreement(got, ref)
    assert a["matched"] == 1.0 and a["extra"] == 0.0


# ------------------------------------------------------------------------------------------
# onnxruntime-extensions
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ppp():
    mod, why = routes.load_ortx()
    if mod is None:
        pytest.skip(why)
    return mod


def _ort_run(model, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def test_ortx_cut_agrees_with_numpy_where_one_class_per_box(ppp):
    rng = np.random.default_rng(5)
    head = one_class_head(rng)
    cut = routes.ortx_cut_model(ppp, 4, head.shape[2], 0.25, 0.5, 50)
    got = [routes.ortx_to_dets(_ort_run(cut, {"head": head}), NO_PAD_ROW[0])]
    cfg = PostprocessConfig(iou_threshold=0.5, max_det=50, mask_padding=False)
    ref = routes.route_numpy(head, "xywh_cls", NO_PAD_ROW, identity_map(4), 0.25, cfg)
    assert len(ref[0][1]) > 10
    a = routes.agreement(got, ref)
    assert a["matched"] == 1.0 and a["extra"] == 0.0 and a["score_diff_max"] == 0.0


def test_ortx_is_multi_label(ppp):
    """A box above the threshold in two classes comes out twice (numpy: once, its best class)."""
    head = cluster_head(n_cluster=1, n_single=0)
    head[0, 4 + 1, 0] = 0.6
    got = routes.ortx_to_dets(_ort_run(routes.ortx_cut_model(ppp, 3, 1, 0.25, 0.7, 300), {"head": head}), NO_PAD_ROW[0])
    assert sorted(got[2].tolist()) == [0, 1]


def test_ortx_on_a_whole_model_keeps_its_input(ppp):
    sys.path.insert(0, str(ROOT / "tests"))
    from artifact_factory import synthetic_detector

    model = synthetic_detector("xywh_cls", num_classes=3, batch=1, opset=18)
    full = routes.ortx_model(ppp, model, 3, 0.25, 0.7, 300)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    out = _ort_run(full, {"images": x})
    assert out.ndim == 2 and out.shape[1] == 6
    raw = _ort_run(model, {"images": x})
    ref = _ort_run(routes.ortx_cut_model(ppp, 3, raw.shape[2], 0.25, 0.7, 300), {"head": raw})
    np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------------------------------------
# profiler parsing and the timing helpers
# ------------------------------------------------------------------------------------------
def test_kernel_times_sums_per_op_type_and_filters_by_prefix(tmp_path):
    import profile_graph
    from onnx_ops.patch import build_postprocess_graph

    sys.path.insert(0, str(ROOT / "tests"))
    from artifact_factory import random_head

    head = random_head("xywh_cls", 1, 200, 3, np.random.default_rng(0))
    g = build_postprocess_graph("xywh_cls", 3, None, 0.25, PostprocessConfig(), num_candidates=200)
    feeds = [{"head": head, "letterbox": NO_PAD_ROW}]
    prof = profile_graph.profile_session(g.SerializeToString(), feeds, 3, 1, tmp_path, "t")
    ops = {k: v for k, v in prof.items() if not k.startswith("_")}
    assert "NonMaxSuppression" in ops and all(v["ms"] >= 0 and v["nodes"] >= 1 and 0 <= v["pool"] <= v["nodes"]
                                              for v in ops.values())
    none = profile_graph.profile_session(g.SerializeToString(), feeds, 3, 1, tmp_path, "u", prefix="nothing/")
    assert [k for k in none if not k.startswith("_")] == []
    assert set(prof["_pool_nodes"]) <= {n.name for n in g.graph.node}
    pooled = {"main_thread": {"block_size": [1]}, "sub_threads": {"7": {"num_run": 1}}}
    inline = {"main_thread": {"block_size": []}, "sub_threads": {"7": {"num_run": 0}}}
    events = [{"cat": "Node", "name": "detcal/a_kernel_time", "dur": 3000,
               "args": {"op_name": "TopK", "thread_scheduling_stats": inline}},
              {"cat": "Node", "name": "detcal/b_kernel_time", "dur": 1000,
               "args": {"op_name": "TopK", "thread_scheduling_stats": pooled}},
              {"cat": "Node", "name": "detcal/b_kernel_time", "dur": 1000,      # the same node, a second run
               "args": {"op_name": "TopK", "thread_scheduling_stats": pooled}},
              {"cat": "Node", "name": "conv_kernel_time", "dur": 9000,
               "args": {"op_name": "Conv", "thread_scheduling_stats": pooled}},
              {"cat": "Session", "name": "model_run", "dur": 99000}]
    assert profile_graph.kernel_times(events, 2, "detcal/") == {"TopK": {"ms": 2.5, "nodes": 2, "pool": 1}}
    assert set(profile_graph.kernel_times(events, 1)) == {"TopK", "Conv"}
    assert profile_graph.pool_nodes(events) == ["detcal/b", "conv"]
    assert profile_graph.pool_nodes(events, "detcal/") == ["detcal/b"]
    json.dumps(prof)


def test_time_interleaved_and_spread():
    import bench_real

    calls = []
    reps = bench_real.time_interleaved({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
                                       runs=4, reps=2, seed=0)
    assert len(reps) == 2 and sorted(calls) == sorted([(r, i) for r in "ab" for i in range(4)] * 2)
    assert all(m["a"] >= 0 and len(m["_load"]) == 2 for m in reps)
    assert bench_real.spread([{"a": 1.0}, {"a": 1.5}], ["a"]) == pytest.approx(0.5)


def test_bench_real_on_the_project_detector(capsys):
    import bench_real

    model = ROOT / "examples" / "models" / "detector_xywh_cls.onnx"
    if not model.exists():
        pytest.skip(f"{model} absent (python -m examples.detector.train writes it)")
    bench_real.PROJECT_MODELS = (model,)
    assert bench_real.main(["--only", "project", "--runs", "2", "--reps", "1", "--batches", "8", "--no-whole",
                            "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("detcal-")]
    agree = [ln for ln in lines if "matched" in ln]
    assert len(agree) == 3 and all("matched 1.000" in ln and "extra 0.000" in ln for ln in agree), out   # id, fit, box


def test_bench_real_fitted_artifact_is_detcal_fits_own_and_cached(blob_model, blob_data, tmp_path, monkeypatch):
    """detcal-fitted is the artifact `detcal fit` writes for the model (not a stand-in), fitted once: a
    second call reads the cache; another data set is another fit."""
    import subprocess

    import bench_real
    from calib.artifact import load_artifact

    a = bench_real.fitted_artifact(blob_model, blob_data, cache=tmp_path)
    written = list(tmp_path.glob("*/calibration.json"))
    assert len(written) == 1 and a.to_dict()["calibrator"] == load_artifact(written[0]).to_dict()["calibrator"]
    assert a.model["sha256"] == bench_real.sha256_file(blob_model)
    assert a.selection["winner"] == a.to_dict()["calibrator"]["kind"]            # auto chose it

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again although cached")

    monkeypatch.setattr(subprocess, "run", no_fit)
    again = bench_real.fitted_artifact(blob_model, blob_data, cache=tmp_path)
    assert again.to_dict()["calibrator"] == a.to_dict()["calibrator"]
    assert bench_real.fitted_artifact(blob_model, tmp_path / "absent.yaml", cache=tmp_path) is None


def test_part_cache_times_the_part_after_each_kind_of_work(capsys):
    import bench_real
    import part_cache

    if not (bench_real.REAL_MODEL.exists() and bench_real.REAL_IMAGES.is_dir()):
        pytest.skip(f"{bench_real.REAL_MODEL} or {bench_real.REAL_IMAGES} absent (../shared/real beside the repo)")
    assert part_cache.main(["--runs", "2", "--no-fitted"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0] for ln in out.splitlines()[1:] if ln.startswith("  ")}
    assert rows == {"nothing", "sleep", "busy", "raw", "64"}, out
    assert "AffineLogitMap" in out, out                                 # the temperature stand-in


def test_inserted_over_raw_pairs_nodes_with_their_run():
    import profile_graph

    def node(name, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": "X"}}

    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
              node("conv", 1, 40), node("detcal/a", 50, 4),
              {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
              node("conv", 201, 80), node("detcal/a", 290, 4), node("detcal/b", 295, 4),
              node("stray", 500, 9)]
    ratio, ins, own = profile_graph.inserted_over_raw(events)
    assert ratio == pytest.approx(np.median([4 / 40, 8 / 80]))
    assert ins == pytest.approx(0.006) and own == pytest.approx(0.06)


def test_profile_graph_runs_every_artifact_on_the_real_model(capsys, tmp_path):
    """The profiler's own run over every artifact bench_real makes (identity, temperature, box-aware),
    cut and whole: each prints its kernel table and which nodes ran on the thread pool."""
    import bench_real
    import profile_graph

    if not (bench_real.REAL_MODEL.exists() and bench_real.REAL_IMAGES.is_dir()):
        pytest.skip(f"{bench_real.REAL_MODEL} or {bench_real.REAL_IMAGES} absent (../shared/real beside the repo)")
    out_json = tmp_path / "prof.json"
    assert profile_graph.main(["--runs", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.count("on the intra-op thread pool:") == 6, out          # 3 artifacts x (cut, whole)
    got = json.loads(out_json.read_text())
    assert set(got) == {"id", "fit", "box", "id_patched", "fit_patched", "box_patched"}
    assert "Log" in got["box"] and "Log" not in got["id"]               # the box-aware map's exact log
