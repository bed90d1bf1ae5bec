"""Choosing the calibrator where users look: on the detections at and above a fitting floor.

Kuzucu et al. (ECCV 2024, "On Calibration of Object Detectors") fit post-hoc calibrators on the
detections that survive a per-class operating threshold chosen before calibration, not on every
detection down to a 0.001 score floor (almost all of them low-score false positives, which pull
the fit away from the few hundred detections a user keeps). Here:

* the caller passes the fitting floor (C,) raw per-class scores (e.g. the thresholds the
  operating-point rule picks on the raw scores) and the detections above it (`above_floor`);
* `select_on_floor`: k-fold by image over those detections, every candidate fitted on the other
  folds; the winner has the lowest pooled held-out log-loss among the candidates that beat
  identity on BOTH held-out log-loss and held-out D-ECE; if none does, identity;
* `nested_oof`: the selection itself repeated inside each outer fold, so that the held-out
  scores (and every "after" number computed from them) include the choice of calibrator.

Inputs everywhere: scores (N,) raw in [0, 1], classes (N,) int, is_tp (N,) bool, groups (N,) the
image of each detection, boxes (N, 4) xyxy model-input px (needed by the box-aware candidate only).
"""
from __future__ import annotations

import numpy as np

from .box_calibrator import PlattBox
from .calibrators import log_loss, make_calibrator
from .cross_validation import fold_ids
from .metrics import dece

FLOOR_CANDIDATES = ("identity", "temperature", "platt_per_class", "isotonic_per_class", "platt_box")
BOX_KIND = "platt_box"


def above_floor(scores: np.ndarray, classes: np.ndarray, floor) -> np.ndarray:
    """(N,) bool: score > floor[class] (the pipeline's survival rule), floor a scalar or (C,)."""
    classes = np.asarray(classes, dtype=np.int64)
    floor = np.asarray(floor, dtype=np.float64)
    return np.asarray(scores) > (floor[classes] if floor.ndim else floor)


def fit_kind(kind: str, scores, classes, is_tp, boxes, num_classes: int, input_size=None, params: dict | None = None,
             raw_floor=None):
    """A calibrator of `kind` fitted on the given detections (boxes only used by platt_box, which
    also stores raw_floor, see BoxPlattMap)."""
    params = dict(params or {})
    if kind == BOX_KIND:
        if boxes is None or input_size is None:
            raise ValueError("the box-aware calibrator needs boxes and input_size")
        return PlattBox(num_classes, tuple(input_size), **params).fit(scores, classes, is_tp, boxes, raw_floor=raw_floor)
    return make_calibrator(kind, num_classes, **params).fit(scores, classes, is_tp)


def calibrate(cal, scores, classes, boxes) -> np.ndarray:
    """Calibrated scores (N,) float64 of any fitted calibrator (box-aware or not)."""
    if getattr(cal, "kind", "") == BOX_KIND:
        return np.asarray(cal.transform(scores, classes, boxes), dtype=np.float64)
    return np.asarray(cal.transform(scores, classes), dtype=np.float64)


def _oof_kind(kind, folds, k, scores, classes, is_tp, boxes, num_classes, input_size, params):
    out = np.asarray(scores, dtype=np.float64).copy()
    degenerate = 0
    for f in range(k):
        test = folds == f
        train = ~test
        n_pos = int(is_tp[train].sum())
        if kind == "identity" or n_pos == 0 or n_pos == int(train.sum()) or not test.any():
            degenerate += kind != "identity" and test.any()
            continue
        cal = fit_kind(kind, scores[train], classes[train], is_tp[train], None if boxes is None else boxes[train],
                       num_classes, input_size, params.get(kind))
        out[test] = calibrate(cal, scores[test], classes[test], None if boxes is None else boxes[test])
    return out, degenerate


def select_on_floor(scores, classes, is_tp, groups, boxes, num_classes: int, input_size=None,
                    candidates=FLOOR_CANDIDATES, n_folds: int = 5, seed: int = 0, params: dict | None = None,
                    dece_check: str = "floor"):
    """Pick a calibrator on detections above the fitting floor -> (winner kind, report).

    The winner: the lowest held-out log-loss among the candidates that beat identity on held-out
    log-loss and (dece_check "floor") held-out D-ECE; with dece_check "operating_point" the D-ECE
    condition is left to the caller, who judges it at the operating point (see choose_on_floor).

    report = {"winner", "rule", "n_detections", "n_images", "n_folds", "candidates": {kind:
    {"log_loss", "dece", "degenerate_folds"}}}; held-out (k-fold by image) pooled values.
    """
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    is_tp = np.asarray(is_tp, dtype=bool)
    params = dict(params or {})
    kinds = ("identity",) + tuple(c for c in dict.fromkeys(candidates) if c != "identity")
    if boxes is None or input_size is None:
        kinds = tuple(k for k in kinds if k != BOX_KIND)
    n_groups = np.unique(groups).size
    rule = ("lowest held-out log-loss among candidates beating identity on held-out log-loss and D-ECE"
            if dece_check == "floor" else "lowest held-out log-loss among candidates beating identity on held-out "
            "log-loss (D-ECE: checked at the operating point)")
    report = {"rule": rule,
              "n_detections": int(scores.size), "n_images": int(n_groups), "candidates": {}}
    if scores.size == 0 or n_groups < 2 or is_tp.all() or not is_tp.any():
        report.update(winner="identity", n_folds=0, note="too few detections above the floor to compare calibrators")
        return "identity", report
    folds = fold_ids(groups, scores.size, n_folds, seed)
    k = int(folds.max()) + 1
    report["n_folds"] = k
    for kind in kinds:
        oof, degenerate = _oof_kind(kind, folds, k, scores, classes, is_tp, boxes, num_classes, input_size, params)
        report["candidates"][kind] = {"log_loss": log_loss(oof, is_tp), "dece": dece(np.clip(oof, 0, 1), is_tp),
                                      "degenerate_folds": int(degenerate)}
    ident = report["candidates"]["identity"]
    winner, best = "identity", ident["log_loss"]
    for kind in kinds[1:]:
        r = report["candidates"][kind]
        dece_ok = dece_check != "floor" or r["dece"] < ident["dece"]
        if r["log_loss"] < ident["log_loss"] and dece_ok and r["log_loss"] < best:
            winner, best = kind, r["log_loss"]
    report["winner"] = winner
    return winner, report


def nested_oof(scores, classes, is_tp, groups, boxes, num_classes: int, input_size=None,
               candidates=FLOOR_CANDIDATES, n_folds: int = 5, seed: int = 0, params: dict | None = None,
               dece_check: str = "floor"):
    """Held-out calibrated scores (N,) float64 with the selection inside each outer fold, and the
    kind chosen in each outer fold (list of k). Outer and inner folds are both by image."""
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    is_tp = np.asarray(is_tp, dtype=bool)
    groups = np.asarray(groups)
    out = scores.copy()
    if scores.size == 0 or np.unique(groups).size < 2:
        return out, []
    folds = fold_ids(groups, scores.size, n_folds, seed)
    chosen = []
    for f in range(int(folds.max()) + 1):
        test = folds == f
        train = ~test
        b_tr = None if boxes is None else boxes[train]
        kind, _ = select_on_floor(scores[train], classes[train], is_tp[train], groups[train], b_tr, num_classes,
                                  input_size, candidates, n_folds, seed + 1, params, dece_check)
        chosen.append(kind)
        if kind != "identity":
            cal = fit_kind(kind, scores[train], classes[train], is_tp[train], b_tr, num_classes, input_size,
                           (params or {}).get(kind))
            out[test] = calibrate(cal, scores[test], classes[test], None if boxes is None else boxes[test])
    return out, chosen


def input_boxes_of(detections) -> np.ndarray:
    """Per-image detections (calib.pipeline.Detections, with boxes_input_xyxy) -> (K, 4) float32
    xyxy model-input px, in the order calib.matching flattens them (image 0's first)."""
    parts = [np.asarray(d.boxes_input_xyxy, dtype=np.float32).reshape(-1, 4) for d in detections]
    return np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)


def choose_on_floor(kind: str, scores, classes, is_tp, groups, boxes, floor, num_classes: int, input_size=None,
                    n_folds: int = 5, seed: int = 0, candidates=FLOOR_CANDIDATES, nested: bool = True,
                    dece_check: str = "floor", fit_mask=None):
    """Fit the calibrator on the detections above `floor` (C,) raw -> (fitted calibrator, report).

    kind "auto": select_on_floor picks among `candidates`; with nested, the whole selection is
    also run inside each fold (nested_oof) and, unless its held-out scores beat identity on both
    log-loss and D-ECE, identity is kept (report["nested_fallback"] True). An explicit kind is
    fitted as asked. With too few detections above the floor to fit (no positive or no negative),
    identity.

    dece_check: where the selection and the nested check judge D-ECE. "floor": on the held-out
    detections above the floor (as log-loss). "operating_point": not here; the caller checks
    held-out D-ECE at the operating point (``calib.fitting.operating_point_check``, the survivors
    of certified thresholds), where D-ECE is defined, and selection and nested check here are by
    log-loss only (the floor-level D-ECE is still reported, with report["nested"]["dece_check"]
    saying where it is judged). Detections between the floor and the certified thresholds are never kept, so a D-ECE
    over them can veto a map that is better where users look (YOLOX-nano: under-confident at
    high scores).

    fit_mask (N,) bool or None: the detections the calibrator may be fitted and chosen on (with
    the floor). ``calib.fitting`` passes the detections on positive images: the negative images
    certify the thresholds (``calib.certify``), and a map fitted on their detections (per class or
    per box) is a threshold shape chosen on the certification images, which voids the bound
    (PicoDet-S at a 3% target: 3 of 313 val negatives fire, 7.3% of the test ones).
    """
    if dece_check not in ("floor", "operating_point"):
        raise ValueError(f"dece_check must be 'floor' or 'operating_point', got {dece_check!r}")
    scores = np.asarray(scores, dtype=np.float64)
    keep = above_floor(scores, classes, floor)
    n_excluded = 0
    if fit_mask is not None:
        fit_mask = np.asarray(fit_mask, dtype=bool)
        if fit_mask.shape != scores.shape:
            raise ValueError(f"fit_mask must have shape {scores.shape}, got {fit_mask.shape}")
        n_excluded = int((keep & ~fit_mask).sum())
        keep &= fit_mask
    s, c, t, g = scores[keep], np.asarray(classes)[keep], np.asarray(is_tp, bool)[keep], np.asarray(groups)[keep]
    b = None if boxes is None else np.asarray(boxes)[keep]
    report = {"fit_floor": [float(v) for v in np.broadcast_to(np.asarray(floor, np.float64), (num_classes,))],
              "n_above_floor": int(keep.sum()), "n_collected": int(scores.size)}
    if fit_mask is not None:
        report["n_above_floor_not_fitted"] = n_excluded
    if kind == "auto":
        winner, sel = select_on_floor(s, c, t, g, b, num_classes, input_size, candidates, n_folds, seed,
                                      dece_check=dece_check)
        report.update(mode="auto", **sel)
        if nested and sel.get("n_folds"):
            oof, chosen = nested_oof(s, c, t, g, b, num_classes, input_size, candidates, n_folds, seed,
                                     dece_check=dece_check)
            nest = {"chosen_per_fold": chosen, "log_loss": log_loss(oof, t), "dece": dece(np.clip(oof, 0, 1), t),
                    "identity_log_loss": log_loss(s, t), "identity_dece": dece(s, t)}
            nest["dece_check"] = dece_check
            report["nested"] = nest
            beats_ll = nest["log_loss"] < nest["identity_log_loss"]
            beats = beats_ll and (dece_check == "operating_point" or nest["dece"] < nest["identity_dece"])
            if winner != "identity" and not beats:
                report["nested_fallback"] = True
                report["selected"] = winner
                what = "log-loss and D-ECE" if dece_check == "floor" else "log-loss"
                report["note"] = (f"{winner} won the selection, but the selection re-run inside each fold (nested CV) "
                                  f"does not beat identity on held-out {what}: identity kept")
                winner = report["winner"] = "identity"
    else:
        winner = kind
        report.update(mode="explicit", winner=kind)
    if winner != "identity" and 0 < int(t.sum()) < t.size:
        return fit_kind(winner, s, c, t, b, num_classes, input_size, raw_floor=floor), report
    if winner != "identity":
        report["note"] = f"{winner} asked for, but the detections above the floor lack a positive or a negative: identity"
        report["winner"] = "identity"
    return make_calibrator("identity", num_classes).fit(scores, classes, is_tp), report
