"""`detcal eval`'s like-for-like AP at the operating point (the raw model at the same raw thresholds the
calibrated pipeline applies) and the D-ECE noise floor (what a perfectly calibrated detector shows)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from artifact_factory import make_artifact
from calib.artifact import AffineLogitMap, BoxPlattMap
from calib.evaluate import evaluate
from calib.evaluate.columns import raw_space_thresholds
from calib.metrics import dece, dece_noise_floor

patch = pytest.importorskip("onnx_ops.patch")


@pytest.fixture(scope="module")
def strong_platt(blob_dir) -> tuple[Path, object]:
    """A per-class Platt map far from identity, so that raw thresholds differ from the calibrated ones."""
    cmap = AffineLogitMap("platt_per_class", np.array([0.6, 1.7]), np.array([0.9, -0.8]))
    art = make_artifact(2, calibrator=cmap, thresholds=[0.4, 0.3], input_size=(128, 128))
    path = blob_dir / "strong_platt_calibration.json"
    art.save(path)
    return path, art


def test_raw_ap_at_the_patched_models_raw_thresholds(tmp_path, blob_dir, blob_model, blob_data, strong_platt):
    path, art = strong_platt
    patched = patch.patch_model(blob_model, art, blob_dir / "blob_strong_platt.detcal.onnx")
    r = evaluate(blob_model, blob_data, patched=patched, calibration=path, split="val", progress=False,
                 out=tmp_path / "ev")
    raw, pat = r.metrics("raw"), r.metrics("patched")
    rthr = np.array(list(raw["fitted_raw_thresholds"].values()))
    # the comparison has power: the raw thresholds are not the calibrated ones, nor the raw conf 0.25
    assert np.all(np.abs(rthr - np.array([0.4, 0.3])) > 0.05) and np.all(np.abs(rthr - 0.25) > 0.02)
    # a raw detection is kept at rthr exactly when its calibrated score passes the artifact's threshold
    m = r.columns["raw"].matched
    cal = art.calibration.transform(m.scores.astype(np.float64), m.classes)
    differ = (m.scores > rthr[m.classes]) != (cal > art.score_thresholds[m.classes])
    assert np.all(np.abs(cal - art.score_thresholds[m.classes])[differ] < 1e-6)
    assert pat["ap50_at_op"] == pytest.approx(raw["ap50_at_fitted_thresholds"], abs=0.01)
    assert pat["ap50_minus_raw_at_same_thresholds"] == pytest.approx(pat["ap50_at_op"] - raw["ap50_at_fitted_thresholds"])
    # today's numbers stay, and both go to eval.json and the printed table
    assert raw["ap50_at_op"] is not None and raw["ap50"] is not None
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["columns"]["raw"]["metrics"]["ap50_at_fitted_thresholds"] == pytest.approx(raw["ap50_at_fitted_thresholds"])
    assert "AP50 raw @ fitted raw thr." in r.table
    assert any("same raw per-class thresholds" in n for n in r.notes)


def test_without_the_artifact_eval_says_how_to_get_it(blob_dir, blob_model, blob_data, strong_platt):
    patched = patch.patch_model(blob_model, strong_platt[1], blob_dir / "blob_strong_platt2.detcal.onnx")
    r = evaluate(blob_model, blob_data, patched=patched, split="val", progress=False)
    assert "ap50_at_fitted_thresholds" not in r.metrics("raw")
    assert any("pass --calibration" in n for n in r.notes)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.2, 3.0), b=st.floats(-3.0, 3.0), t=st.floats(0.02, 0.98), seed=st.integers(0, 2**16))
def test_raw_space_thresholds_keep_what_the_map_keeps(a, b, t, seed):
    """Affine-logit maps: raw score > r  <=>  calibrated score > t, on float32 scores as the graph sees them
    (up to ties: a raw score one float32 step from r whose calibrated value equals t)."""
    cmap = AffineLogitMap("platt_per_class", np.array([a]), np.array([b]))
    r = raw_space_thresholds(cmap, np.array([t]))
    rng = np.random.default_rng(seed)
    s = rng.random(2000).astype(np.float32)
    near = np.float32(np.clip(r[0], 0, 1)) if np.isfinite(r[0]) else np.float32(0.5)
    s = np.concatenate([s, np.array([np.nextafter(near, np.float32(0)), near, np.nextafter(near, np.float32(1))], np.float32)])
    cal = cmap.transform(s.astype(np.float64), np.zeros(s.size, np.int64))
    differ = (s > r[0]) != (cal > t)
    # only at the boundary: a raw score within one float32 step of r (where the float32 r rounds)
    assert np.all(np.abs(s[differ].astype(np.float64) - r[0]) <= np.spacing(np.float32(near)))


def test_raw_space_thresholds_of_the_box_map_at_the_mean_box():
    rng = np.random.default_rng(0)
    c = 3
    cmap = BoxPlattMap(rng.uniform(0.5, 2, c), rng.uniform(-1, 1, c), rng.normal(size=(c, 3)), np.zeros(3), np.ones(3),
                       raw_floor=np.array([0.2, 0.9, 0.0]))
    t = np.array([0.5, 0.5, 0.7])
    r = raw_space_thresholds(cmap, t)
    assert np.all(r >= cmap.raw_floor)
    free = r > cmap.raw_floor          # where the floor does not bind, the mean box sits at the threshold
    np.testing.assert_allclose(cmap.transform_mean_box(r[free], np.flatnonzero(free)), t[free], atol=1e-5)
    assert r[1] == pytest.approx(0.9) or not free[1]


# ------------------------------------------------------------------------ the D-ECE noise floor


def test_noise_floor_is_zero_for_certain_scores():
    nf = dece_noise_floor(np.array([0.0, 1.0, 1.0, 0.0]), observed=0.0)
    assert nf["mean"] == 0.0 and nf["p90"] == 0.0 and nf["p_value"] == 1.0


def test_noise_floor_matches_the_normal_approximation():
    """One bin, K detections at score p: D-ECE = |mean(is_tp) - p|, whose mean is ~ sqrt(2 p (1-p) / (pi K))."""
    k, p = 400, 0.85
    nf = dece_noise_floor(np.full(k, p), n_sim=4000, seed=1)
    assert nf["mean"] == pytest.approx(math.sqrt(2 * p * (1 - p) / (math.pi * k)), rel=0.08)


def test_noise_floor_p_value_separates_calibrated_from_not():
    rng = np.random.default_rng(2)
    s = rng.uniform(0.3, 1.0, 500)
    calibrated = rng.random(500) < s
    overconfident = rng.random(500) < s - 0.15
    p_ok = dece_noise_floor(s, observed=dece(s, calibrated), seed=3)["p_value"]
    p_bad = dece_noise_floor(s, observed=dece(s, overconfident), seed=3)["p_value"]
    assert p_bad < 0.01 < p_ok


def test_noise_floor_without_detections():
    nf = dece_noise_floor(np.zeros(0), observed=float("nan"))
    assert nf["mean"] is None and nf["p_value"] is None
