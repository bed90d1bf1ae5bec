"""`auto`'s last guard: the chosen calibrator is kept only if its held-out D-ECE at the held-out
certified operating point is below identity's (calib.fitting.operating_point_check)."""
from __future__ import annotations

import numpy as np
import pytest

from calib.fitting import FitOptions, fit, operating_point_check
from calib.matching import MatchedDetections
from calib.metrics import dece


def _matched(is_tp: np.ndarray, n_images: int = 50) -> MatchedDetections:
    k = is_tp.size
    img = np.arange(k) % n_images
    return MatchedDetections(image_index=img, scores=np.full(k, 0.5), classes=np.zeros(k, np.int64), is_tp=is_tp,
                             iou=np.where(is_tp, 0.8, 0.0), gt_index=np.where(is_tp, np.arange(k), -1),
                             gt_image_index=img[is_tp], gt_classes=np.zeros(int(is_tp.sum()), np.int64),
                             n_gt_per_class=np.array([int(is_tp.sum())]), negative_image_mask=np.zeros(n_images, bool),
                             n_images=n_images, num_classes=1, iou_threshold=0.5)


@pytest.mark.parametrize("seed", range(3))
def test_check_keeps_the_calibrated_and_refuses_the_overconfident(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 0.95, 3000)
    m = _matched(rng.random(p.size) < p)
    over = np.clip(p + 0.15, 0, 1)
    keep = rng.random(p.size) < 0.8
    keep_id = rng.random(p.size) < 0.6
    good = operating_point_check(m, p, keep, over, keep_id)          # calibrated vs overconfident identity
    assert good["kept"] and good["dece"] < good["identity_dece"]
    assert good["n_kept"] == keep.sum() and good["identity_n_kept"] == keep_id.sum()
    assert good["dece"] == pytest.approx(dece(p[keep], m.is_tp[keep]))
    bad = operating_point_check(m, over, keep, p, keep_id)           # overconfident vs calibrated identity
    assert not bad["kept"] and "identity kept" in bad["note"]


def test_fit_auto_keeps_a_calibrator_only_if_it_beats_identity_at_the_operating_point(blob_model, blob_data):
    res = fit(blob_model, blob_data, options=FitOptions(folds=3, seed=1), progress=False)
    sel = res.selection
    if res.calibrator.map_.kind == "identity":
        check = sel.get("operating_point_check")
        assert check is None or not check["kept"]
        return
    check = sel["operating_point_check"]
    assert check["kept"] and check["dece"] < check["identity_dece"]
    # the check's D-ECE is the "after" column's: the same held-out survivors
    assert check["dece"] == pytest.approx(res.after["dece"], abs=1e-9)


def test_fit_falls_back_to_identity_when_the_check_refuses(blob_model, blob_data, monkeypatch):
    """Where the check says no, the artifact is identity, with thresholds certified on the raw scores,
    and the "after" column is identity's held-out one (not the refused calibrator's)."""
    import calib.fitting as fitting

    seen = {}

    def refuse(matched, oof, keep, oof_id, keep_id):
        out = operating_point_check(matched, oof, keep, oof_id, keep_id)
        seen["identity"] = (oof_id.copy(), keep_id.copy())
        return {**out, "kept": False, "note": "refused for the test: identity kept"}

    monkeypatch.setattr(fitting, "operating_point_check", refuse)
    res = fit(blob_model, blob_data, options=FitOptions(folds=3, seed=1), progress=False)
    assert res.calibrator.map_.kind == "identity" and res.selection["winner"] == "identity"
    assert res.selection["selected"] != "identity"
    oof_id, keep_id = seen["identity"]
    np.testing.assert_array_equal(res.oof_survive, keep_id)
    np.testing.assert_array_equal(res.oof_scores, oof_id)
    ref = fit(blob_model, blob_data, options=FitOptions(calibrator="identity", folds=3, seed=1), progress=False)
    np.testing.assert_array_equal(res.thresholds.score_, ref.thresholds.score_)
