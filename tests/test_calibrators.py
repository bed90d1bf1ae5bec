"""Calibrators: recovery of known parameters, monotonicity, shrinkage, auto-selection, artifacts."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calib import calibrators as cal
from calib import cross_validation as cv
from calib.artifact import MAX_KNOTS, IsotonicMap, map_from_artifact

KINDS = cal.CANDIDATES


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def overconfident(n, temperatures, seed=0, spread=2.0):
    """Detections whose true logit is z; the raw score is sigmoid(T_c * z) (over-confident for
    T_c > 1), the label ~ Bernoulli(sigmoid(z)). Dividing the raw logit by T_c recovers z."""
    rng = np.random.default_rng(seed)
    temperatures = np.asarray(temperatures, dtype=float)
    classes = rng.integers(0, temperatures.size, n)
    z = rng.normal(-0.5, spread, n)
    scores = sigmoid(temperatures[classes] * z)
    is_tp = rng.random(n) < sigmoid(z)
    groups = rng.integers(0, max(n // 20, 2), n)
    return scores, classes, is_tp, groups


# --------------------------------------------------------------------------- recovery

@pytest.mark.parametrize("t_true", [0.6, 1.0, 2.5])
def test_global_temperature_recovered_within_5_percent(t_true):
    scores, classes, is_tp, _ = overconfident(40_000, [t_true], seed=1)
    fitted = cal.GlobalTemperature(num_classes=1).fit(scores, classes, is_tp)
    assert fitted.temperature_ == pytest.approx(t_true, rel=0.05)
    assert fitted.to_artifact()["kind"] == "temperature"
    assert fitted.to_artifact()["b"] == [0.0]


def test_per_class_temperature_recovered_within_5_percent():
    temps = [0.7, 1.5, 3.0]
    scores, classes, is_tp, _ = overconfident(90_000, temps, seed=2)
    fitted = cal.PerClassTemperature(num_classes=3).fit(scores, classes, is_tp)
    np.testing.assert_allclose(fitted.temperature_, temps, rtol=0.05)


def test_platt_recovers_known_slope_and_offset():
    rng = np.random.default_rng(3)
    n = 60_000
    a_true, b_true = np.array([0.5, 1.8]), np.array([-1.0, 0.7])
    classes = rng.integers(0, 2, n)
    u = rng.normal(0, 2.5, n)
    scores = sigmoid(u)
    is_tp = rng.random(n) < sigmoid(a_true[classes] * u + b_true[classes])
    fitted = cal.PerClassPlatt(num_classes=2).fit(scores, classes, is_tp)
    np.testing.assert_allclose(fitted.a_, a_true, atol=0.08)
    np.testing.assert_allclose(fitted.b_, b_true, atol=0.08)
    assert np.all(fitted.map_.a > 0)


def test_isotonic_fits_a_nonlogistic_curve_better_than_temperature():
    rng = np.random.default_rng(4)
    n = 40_000
    scores = rng.random(n)
    true_p = np.where(scores < 0.5, 0.05, 0.9)      # a step: no logit-affine map fits it
    is_tp = rng.random(n) < true_p
    classes = np.zeros(n, dtype=int)
    iso = cal.PerClassIsotonic(num_classes=1).fit(scores, classes, is_tp)
    tmp = cal.GlobalTemperature(num_classes=1).fit(scores, classes, is_tp)
    assert cal.log_loss(iso.transform(scores, classes), is_tp) \
        < cal.log_loss(tmp.transform(scores, classes), is_tp) - 0.05


# --------------------------------------------------------------------------- monotonicity

@st.composite
def detections(draw, max_n=120, max_classes=4):
    n = draw(st.integers(2, max_n))
    c = draw(st.integers(1, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mode = draw(st.sampled_from(["uniform", "extreme", "ties"]))
    if mode == "uniform":
        scores = rng.random(n)
    elif mode == "extreme":
        scores = rng.choice([0.0, 1e-9, 1e-3, 0.5, 1 - 1e-9, 1.0], n)
    else:
        scores = rng.choice(np.linspace(0, 1, 5), n)
    classes = rng.integers(0, c, n)
    is_tp = rng.random(n) < draw(st.floats(0.05, 0.95))
    is_tp[0], is_tp[1] = True, False
    groups = rng.integers(0, max(n // 3, 2), n)
    return scores, classes, is_tp, groups, c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detections(), st.sampled_from(KINDS))
def test_every_calibrator_is_monotone_per_class(data, kind):
    scores, classes, is_tp, _, c = data
    fitted = cal.make_calibrator(kind, c).fit(scores, classes, is_tp)
    grid = np.unique(np.concatenate([np.linspace(0, 1, 513), scores, [1e-12, 1 - 1e-12]]))
    for k in range(c):
        out = fitted.transform(grid, np.full(grid.size, k))
        assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))
        assert np.all(np.diff(out) >= 0), f"{kind} class {k} decreases"


# --------------------------------------------------------------------------- isotonic table

def test_isotonic_table_is_compact_and_valid():
    scores, classes, is_tp, _ = overconfident(60_000, [1.0, 2.0, 0.5, 1.2], seed=5)
    classes[:3] = 3            # class 3 almost empty ... and class 4 empty
    classes[3:][classes[3:] == 3] = 0
    fitted = cal.PerClassIsotonic(num_classes=5).fit(scores, classes, is_tp)
    block = json.loads(json.dumps(fitted.to_artifact()))
    m = map_from_artifact(block, num_classes=5)
    assert isinstance(m, IsotonicMap)
    for x, y in zip(m.x, m.y):
        assert 1 <= x.size <= MAX_KNOTS
        assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
        assert np.all((y >= 1e-4) & (y <= 1 - 1e-4))
    np.testing.assert_array_equal(m.x[4], fitted.global_x_)
    np.testing.assert_array_equal(m.y[4], fitted.global_y_)
    # compression costs little: close to the uncompressed per-class fit's in-sample loss
    loose = cal.log_loss(fitted.transform(scores, classes), is_tp)
    assert loose < cal.log_loss(scores, is_tp)


# --------------------------------------------------------------------------- shrinkage

def _rare_class_data(seed=6):
    scores, classes, is_tp, groups = overconfident(30_000, [2.0], seed=seed)
    classes = np.zeros(scores.size + 3, dtype=int)
    classes[-3:] = 1                                  # class 1: 3 detections, all positive
    scores = np.concatenate([scores, [0.2, 0.3, 0.4]])  # ... at low scores: own fit would be wild
    is_tp = np.concatenate([is_tp, [True, True, True]])
    return scores, classes, is_tp                    # class 2: no detections


def test_rare_platt_class_shrinks_to_global():
    scores, classes, is_tp = _rare_class_data()
    fitted = cal.PerClassPlatt(num_classes=3).fit(scores, classes, is_tp)
    assert abs(fitted.a_[1] - fitted.global_a_) < 0.1 * fitted.global_a_
    assert abs(fitted.b_[1] - fitted.global_b_) < 0.5
    assert fitted.a_[2] == fitted.global_a_ and fitted.b_[2] == fitted.global_b_
    free = cal.PerClassPlatt(num_classes=3, shrink=0).fit(scores, classes, is_tp)
    assert abs(free.b_[1] - free.global_b_) > abs(fitted.b_[1] - fitted.global_b_)


def test_rare_temperature_class_shrinks_to_global():
    scores, classes, is_tp = _rare_class_data()
    fitted = cal.PerClassTemperature(num_classes=3).fit(scores, classes, is_tp)
    free = cal.PerClassTemperature(num_classes=3, shrink=0).fit(scores, classes, is_tp)
    g = fitted.global_temperature_
    assert free.temperature_[1] == pytest.approx(20.0)   # its own fit runs to the bound ...
    assert abs(fitted.temperature_[1] - g) < 0.25 * g   # ... shrinkage keeps it near global
    assert fitted.temperature_[2] == g
    assert fitted.temperature_[0] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("kind", ["temperature_per_class", "platt_per_class"])
def test_typical_rare_class_ends_close_to_global(kind):
    scores, classes, is_tp, _ = overconfident(30_000, [2.0], seed=13)
    classes[:3] = 1
    is_tp[:3] = [True, False, True]
    scores[:3] = [0.3, 0.6, 0.9]
    fitted = cal.make_calibrator(kind, 2).fit(scores, classes, is_tp)
    glob = cal.make_calibrator(kind, 2).fit(scores, np.zeros_like(classes), is_tp)
    probe = np.linspace(0.01, 0.99, 99)
    rare = fitted.transform(probe, np.ones(99, int))
    np.testing.assert_allclose(rare, glob.transform(probe, np.zeros(99, int)), atol=0.05)
    np.testing.assert_allclose(fitted.map_.a[1], glob.map_.a[0], rtol=0.1)


def test_rare_isotonic_class_shrinks_to_global():
    scores, classes, is_tp = _rare_class_data()
    fitted = cal.PerClassIsotonic(num_classes=3).fit(scores, classes, is_tp)
    grid = np.linspace(0, 1, 101)
    glob = np.interp(grid, fitted.global_x_, fitted.global_y_)
    rare = fitted.transform(grid, np.full(grid.size, 1))
    assert np.max(np.abs(rare - glob)) <= 3 / 23 + 0.02
    np.testing.assert_array_equal(fitted.transform(grid, np.full(grid.size, 2)), glob)


# --------------------------------------------------------------------------- auto

def test_auto_never_worse_than_identity_on_calibrated_data():
    scores, classes, is_tp, groups = overconfident(20_000, [1.0, 1.0, 1.0], seed=7)
    best, report = cv.select_calibrator(scores, classes, is_tp, groups, 3)
    cands = report["candidates"]
    assert set(cands) == set(KINDS)
    ident = cands["identity"]["log_loss"]
    assert report["winner"] == best.kind
    assert report["winner"] == "identity" or cands[report["winner"]]["log_loss"] < ident
    for kind, row in cands.items():
        if kind != report["winner"]:
            assert row["log_loss"] >= cands[report["winner"]]["log_loss"]
    oof = cv.cross_val_oof(report["winner"], scores, classes, is_tp, groups, 3)
    assert oof.shape == scores.shape
    assert cal.log_loss(oof, is_tp) == pytest.approx(cands[report["winner"]]["log_loss"])


def test_auto_picks_identity_when_nothing_else_is_offered_or_better():
    scores, classes, is_tp, groups = overconfident(5_000, [1.0], seed=8)
    best, report = cv.select_calibrator(scores, classes, is_tp, groups, 1,
                                         candidates=("identity",))
    assert report["winner"] == "identity" and best.map_.is_identity


def test_auto_calibrates_overconfident_data():
    scores, classes, is_tp, groups = overconfident(20_000, [3.0, 2.0], seed=9)
    best, report = cv.select_calibrator(scores, classes, is_tp, groups, 2)
    assert report["winner"] != "identity"
    cands = report["candidates"]
    assert cands[report["winner"]]["log_loss"] < cands["identity"]["log_loss"] - 0.01
    assert report["n_folds"] == 5 and len(cands["identity"]["fold_log_loss"]) == 5


def test_folds_keep_images_whole():
    groups = np.repeat(np.arange(50), 7)
    folds = cv.fold_ids(groups, groups.size, 5, seed=0)
    for g in range(50):
        assert np.unique(folds[groups == g]).size == 1
    assert set(np.unique(folds)) == set(range(5))
    with pytest.raises(ValueError, match="at least 2 images"):
        cv.fold_ids(np.zeros(10), 10, 5, seed=0)


def test_cross_val_oof_uses_only_other_folds():
    scores, classes, is_tp, groups = overconfident(6_000, [2.0, 1.0], seed=10)
    oof = cv.cross_val_oof("platt_per_class", scores, classes, is_tp, groups, 2, n_folds=3)
    folds = cv.fold_ids(groups, scores.size, 3, seed=0)
    test = folds == 0
    ref = cal.PerClassPlatt(num_classes=2).fit(scores[~test], classes[~test], is_tp[~test])
    np.testing.assert_allclose(oof[test], ref.transform(scores[test], classes[test]))
    in_sample = cal.PerClassPlatt(num_classes=2).fit(scores, classes, is_tp)
    assert not np.allclose(oof, in_sample.transform(scores, classes))


# --------------------------------------------------------------------------- artifacts

@pytest.mark.parametrize("kind", KINDS)
def test_artifact_round_trip_gives_identical_transform(kind):
    scores, classes, is_tp, _ = overconfident(5_000, [2.0, 0.8, 1.0], seed=11)
    fitted = cal.make_calibrator(kind, 4).fit(scores, classes, is_tp)
    block = json.loads(json.dumps(fitted.to_artifact()))
    assert block["kind"] == kind
    m = map_from_artifact(block, num_classes=4)
    probe = np.random.default_rng(0).random(1000)
    probe_cls = np.arange(1000) % 4
    for dtype in (np.float64, np.float32):
        np.testing.assert_array_equal(m.transform(probe.astype(dtype), probe_cls),
                                      fitted.transform(probe.astype(dtype), probe_cls))


_FITTED = {}


def _fitted(kind):
    if kind not in _FITTED:
        scores, classes, is_tp, _ = overconfident(8_000, [2.5, 0.7, 1.0], seed=12)
        _FITTED[kind] = cal.make_calibrator(kind, 3).fit(scores, classes, is_tp).map_
    return _FITTED[kind]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(KINDS), st.lists(st.floats(0, 1), min_size=3, max_size=3),
       st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_raw_thresholds_agree_with_calibrated_scores(kind, thresholds, raw):
    m = _fitted(kind)
    t = np.asarray(thresholds)
    r = m.raw_thresholds(t)
    scores = np.asarray(raw)
    for c in range(3):
        cal_scores = m.transform(scores, np.full(scores.size, c))
        near = (np.abs(scores - r[c]) < 1e-9) | (np.abs(cal_scores - t[c]) < 1e-12)
        assert np.array_equal((cal_scores > t[c])[~near], (scores > r[c])[~near])


# --------------------------------------------------------------------------- bad input

def test_factory_rejects_unknown_kind_and_bad_params():
    with pytest.raises(ValueError, match="known: identity, temperature"):
        cal.make_calibrator("beta", 3)
    with pytest.raises(ValueError, match="shrink"):
        cal.make_calibrator("platt_per_class", 3, shrink=-1)
    with pytest.raises(ValueError, match="bad parameters"):
        cal.make_calibrator("identity", 3, shrink=1)
    with pytest.raises(ValueError, match="max_knots"):
        cal.PerClassIsotonic(num_classes=2, max_knots=65)


@pytest.mark.parametrize("kind", KINDS)
def test_fit_validates_inputs(kind):
    ok_s, ok_c, ok_t = np.array([0.1, 0.9, 0.5]), np.array([0, 1, 1]), np.array([0, 1, 1], bool)
    c = cal.make_calibrator(kind, 2)
    with pytest.raises(ValueError, match="shape"):
        c.fit(ok_s[:2], ok_c, ok_t)
    with pytest.raises(ValueError, match="NaN"):
        c.fit(np.array([0.1, np.nan, 0.5]), ok_c, ok_t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        c.fit(np.array([0.1, 1.5, 0.5]), ok_c, ok_t)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        c.fit(ok_s, np.array([0, 2, 1]), ok_t)
    with pytest.raises(ValueError, match="at least one matched"):
        c.fit(ok_s, ok_c, np.zeros(3, bool))
    with pytest.raises(ValueError, match="at least one matched"):
        c.fit(ok_s, ok_c, np.ones(3, bool))
    with pytest.raises(ValueError, match="num_classes"):
        cal._KINDS[kind]().fit(ok_s, ok_c, ok_t)
    with pytest.raises(RuntimeError, match="not fitted"):
        c.transform(ok_s, ok_c)
    assert cal._KINDS[kind]().fit(ok_s, ok_c, ok_t, num_classes=2).map_.num_classes == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detections(max_n=200))
def test_auto_never_worse_than_identity_on_random_data(data):
    scores, classes, is_tp, groups, c = data
    assume(np.unique(groups).size >= 2)
    best, report = cv.select_calibrator(scores, classes, is_tp, groups, c, n_folds=3)
    cands = report["candidates"]
    assert cands[report["winner"]]["log_loss"] <= cands["identity"]["log_loss"]
    assert best.kind == report["winner"]
    oof = cv.cross_val_oof(report["winner"], scores, classes, is_tp, groups, c, n_folds=3)
    assert np.all((oof >= 0) & (oof <= 1))
