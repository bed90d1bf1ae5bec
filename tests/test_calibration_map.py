"""Calibration maps: thresholds on raw scores agree with thresholds on calibrated ones, monotone,
identity, artifact round trip, malformed blocks."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.artifact import (EPS, MAX_KNOTS, AffineLogitMap, IsotonicMap, identity_map,
                                   map_from_artifact)

SETTINGS = settings(deadline=None, max_examples=150)


@st.composite
def affine_maps(draw, max_classes=4):
    c = draw(st.integers(1, max_classes))
    kind = draw(st.sampled_from(["temperature", "temperature_per_class", "platt_per_class", "identity"]))
    if kind == "identity":
        return identity_map(c)
    a = [draw(st.floats(0.05, 20)) for _ in range(c)]
    b = [0.0] * c if kind.startswith("temperature") else [draw(st.floats(-8, 8)) for _ in range(c)]
    if kind == "temperature":
        a = [a[0]] * c
    return AffineLogitMap(kind, a, b)


@st.composite
def isotonic_maps(draw, max_classes=4, max_knots=10):
    c = draw(st.integers(1, max_classes))
    xs, ys = [], []
    levels = st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0])   # repeats: plateaus
    for _ in range(c):
        k = draw(st.integers(1, max_knots))
        x = sorted(draw(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=k, max_size=k, unique=True)))
        y = sorted(draw(st.lists(st.one_of(levels, st.floats(0, 1, allow_subnormal=False)), min_size=k, max_size=k)))
        xs.append(x)
        ys.append(y)
    return IsotonicMap(xs, ys)


def probe_scores(m, r):
    """Scores to test at: a grid, the knots, 0, 1, EPS, and just around the raw thresholds."""
    pts = [np.linspace(0, 1, 101), [0.0, EPS / 2, EPS, 1 - EPS, 1.0]]
    if isinstance(m, IsotonicMap):
        pts += [xc for xc in m.x]
    fin = r[np.isfinite(r)]
    pts += [fin, fin + 1e-7, fin - 1e-7, np.nextafter(fin, 2.0), np.nextafter(fin, -1.0)]
    p = np.concatenate([np.ravel(v) for v in pts])
    return np.unique(np.clip(p, 0, 1))


def assert_threshold_consistent(m, t):
    """Exact in float64: a score equal to r is rejected; only scores within 1e-12 of r (but not
    equal to it) are left out, where the map's slope can round either way."""
    c = m.num_classes
    r = m.raw_thresholds(t)
    assert r.shape == (c,)
    for cls in range(c):
        p = probe_scores(m, r[cls:cls + 1])
        cal = m.transform(p, np.full(p.shape, cls))
        lhs = cal > t[cls]
        rhs = p > r[cls]
        near = (np.abs(p - r[cls]) < 1e-12) & (p != r[cls])
        lhs, rhs = lhs[~near], rhs[~near]
        bad = np.nonzero(lhs != rhs)[0]
        assert bad.size == 0, (cls, t[cls], r[cls], p[~near][bad][:5], cal[~near][bad][:5])


thresholds_01 = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-7, 1 - 1e-7]), st.floats(0, 1, allow_subnormal=False))


@SETTINGS
@given(affine_maps(), st.data())
def test_affine_raw_thresholds_consistent(m, data):
    t = np.asarray([data.draw(thresholds_01) for _ in range(m.num_classes)])
    assert_threshold_consistent(m, t)


@SETTINGS
@given(isotonic_maps(), st.data())
def test_isotonic_raw_thresholds_consistent(m, data):
    # thresholds at knot values (plateaus), between them, and outside the table's range
    cand = st.one_of(st.sampled_from(sorted({float(v) for yc in m.y for v in yc})), thresholds_01)
    t = np.asarray([data.draw(cand) for _ in range(m.num_classes)])
    assert_threshold_consistent(m, t)


@SETTINGS
@given(st.one_of(affine_maps(), isotonic_maps()), st.data())
def test_raw_thresholds_memo_is_the_computation(m, data):
    """The memoised raw thresholds (first call and again) are the computed ones, bit for bit; another
    map with the same parameters shares them; changing a threshold recomputes."""
    t = np.asarray([data.draw(thresholds_01) for _ in range(m.num_classes)])
    if m.is_identity:
        np.testing.assert_array_equal(m.raw_thresholds(t), t)
        return
    want = m._raw_thresholds(t)
    np.testing.assert_array_equal(m.raw_thresholds(t), want)
    np.testing.assert_array_equal(m.raw_thresholds(t), want)
    twin = map_from_artifact(json.loads(json.dumps(m.to_artifact())))
    np.testing.assert_array_equal(twin.raw_thresholds(t), want)
    t2 = t.copy()
    t2[0] = 0.5 if t[0] != 0.5 else 0.25
    np.testing.assert_array_equal(m.raw_thresholds(t2), m._raw_thresholds(t2))


def test_raw_thresholds_memo_follows_in_place_changes_and_hands_out_copies():
    m = AffineLogitMap("platt_per_class", np.array([1.0, 2.0]), np.array([0.0, -1.0]))
    t = np.array([0.6, 0.6])
    first = m.raw_thresholds(t)
    first[:] = 7.0                                   # the caller's copy, not the memo
    np.testing.assert_array_equal(m.raw_thresholds(t), m._raw_thresholds(t))
    m.a[0] = 4.0                                      # the map changed in place: a new key
    after = m.raw_thresholds(t)
    np.testing.assert_array_equal(after, m._raw_thresholds(t))
    assert after[0] < 0.6 and after[0] != AffineLogitMap("platt_per_class", np.array([1.0, 2.0]),
                                                          np.array([0.0, -1.0])).raw_thresholds(t)[0]
    iso = IsotonicMap([[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]])
    before = iso.raw_thresholds(np.array([0.25]))
    iso.y[0][1] = 0.25                                # a knot moved
    assert iso.raw_thresholds(np.array([0.25]))[0] != before[0]
    np.testing.assert_array_equal(iso.raw_thresholds(np.array([0.25])), iso._raw_thresholds(np.array([0.25])))


def test_isotonic_plateau_threshold_example():
    m = IsotonicMap([[0.1, 0.4, 0.6, 0.9]], [[0.1, 0.3, 0.3, 0.8]])
    r = m.raw_thresholds(np.array([0.3]))
    assert r[0] == pytest.approx(0.6)          # the plateau is at 0.3, so only p > 0.6 exceeds it
    assert m.raw_thresholds(np.array([0.05]))[0] == -np.inf
    assert m.raw_thresholds(np.array([0.8]))[0] == np.inf
    assert m.raw_thresholds(np.array([0.1]))[0] == pytest.approx(0.1)
    assert m.raw_thresholds(np.array([0.55]))[0] == pytest.approx(0.75)


@SETTINGS
@given(st.one_of(affine_maps(), isotonic_maps()))
def test_maps_are_monotone(m):
    p = np.linspace(0, 1, 513)
    for cls in range(m.num_classes):
        for dtype in (np.float64, np.float32):
            cal = m.transform(p.astype(dtype), np.full(p.shape, cls))
            assert cal.dtype == dtype
            assert np.all(np.diff(cal.astype(np.float64)) >= 0)
            assert np.all((cal >= 0) & (cal <= 1))


@SETTINGS
@given(st.one_of(affine_maps(), isotonic_maps()))
def test_artifact_round_trip(m):
    block = json.loads(json.dumps(m.to_artifact()))
    back = map_from_artifact(block, m.num_classes)
    assert back.kind == m.kind and back.num_classes == m.num_classes
    p = np.linspace(0, 1, 101)
    for cls in range(m.num_classes):
        c = np.full(p.shape, cls)
        np.testing.assert_array_equal(back.transform(p, c), m.transform(p, c))
    t = np.linspace(0.1, 0.9, m.num_classes)
    np.testing.assert_array_equal(back.raw_thresholds(t), m.raw_thresholds(t))


def test_identity_returns_scores_unchanged():
    m = identity_map(3)
    assert m.is_identity
    p = np.array([0.0, 1e-9, 0.3, 0.999999999, 1.0], np.float32)
    out = m.transform(p, np.array([0, 1, 2, 0, 1]))
    np.testing.assert_array_equal(out, p)
    assert out is not p
    np.testing.assert_array_equal(m.raw_thresholds(np.array([0.0, 0.25, 1.0])), [0.0, 0.25, 1.0])


def test_temperature_values():
    m = AffineLogitMap("temperature", [0.5, 0.5], [0.0, 0.0])        # T = 2
    p = np.array([0.5, 0.9])
    z = np.log(p / (1 - p)) / 2
    np.testing.assert_allclose(m.transform(p, np.array([0, 1])), 1 / (1 + np.exp(-z)))


@pytest.mark.parametrize("block", [
    {"kind": "magic", "a": [1.0], "b": [0.0]},
    {"a": [1.0], "b": [0.0]},
    {"kind": "platt_per_class", "a": [0.0], "b": [0.0]},
    {"kind": "platt_per_class", "a": [-1.0], "b": [0.0]},
    {"kind": "platt_per_class", "a": [float("nan")], "b": [0.0]},
    {"kind": "platt_per_class", "a": [1.0], "b": [float("inf")]},
    {"kind": "platt_per_class", "a": [1.0, 1.0], "b": [0.0]},
    {"kind": "platt_per_class", "a": [], "b": []},
    {"kind": "platt_per_class", "a": ["x"], "b": [0.0]},
    {"kind": "platt_per_class", "a": [1.0]},                         # missing b
    {"kind": "platt_per_class", "a": None, "b": None},
    {"kind": "isotonic_per_class", "x": [[0.2, 0.1]], "y": [[0.1, 0.2]]},
    {"kind": "isotonic_per_class", "x": [[0.1, 0.1]], "y": [[0.1, 0.2]]},
    {"kind": "isotonic_per_class", "x": [[0.1, 0.2]], "y": [[0.3, 0.2]]},
    {"kind": "isotonic_per_class", "x": [[0.1, 0.2]], "y": [[0.1, 1.5]]},
    {"kind": "isotonic_per_class", "x": [[0.1, float("nan")]], "y": [[0.1, 0.2]]},
    {"kind": "isotonic_per_class", "x": [[0.1, 0.2]], "y": [[0.1]]},
    {"kind": "isotonic_per_class", "x": [[]], "y": [[]]},
    {"kind": "isotonic_per_class", "x": [list(np.linspace(0, 1, MAX_KNOTS + 1))],
     "y": [list(np.linspace(0, 1, MAX_KNOTS + 1))]},
    {"kind": "isotonic_per_class", "x": [[0.1]]},                    # missing y
    {"kind": "isotonic_per_class", "x": [], "y": []},
    "platt_per_class",                                               # not a dict at all
])
def test_invalid_blocks_raise_value_error(block):
    with pytest.raises(ValueError):
        map_from_artifact(block)


def test_class_count_checked():
    block = identity_map(3).to_artifact()
    with pytest.raises(ValueError, match="3 classes"):
        map_from_artifact(block, 2)
    assert map_from_artifact(block, 3).num_classes == 3
