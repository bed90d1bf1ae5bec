"""k-fold cross-validation by image: the one fold assignment, out-of-fold calibrated scores,
and ``--calibrator auto``.

`image_folds` is the only fold assignment in detcal: calibrator selection
(`select_calibrator`) and the cross-validated "after" numbers of `calib.fitting.fit` both use
it, so that for the same seed every image is held out in the same fold by both.

`select_calibrator`: k-fold by image, the lowest cross-validated log-loss wins, and nothing
that is not strictly better than identity is ever picked. `cross_val_oof` gives the
out-of-fold calibrated scores of one kind, as selection computes them for every candidate.
"""
from __future__ import annotations

import numpy as np

from calib.calibrators import (CANDIDATES, brier, check_int, make_calibrator, per_detection_log_loss,
                               validate_inputs)


def image_folds(n_images: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every image (n_images,) int64 in [0, k), k = min(n_folds, n_images).

    A seeded permutation of the images dealt round-robin into the folds: image i is in fold
    permutation[i] % k. Fewer than 2 images -> ValueError.
    """
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    n_images = int(n_images)
    if n_images < 2:
        raise ValueError(f"k-fold cross-validation needs detections from at least 2 images, got {n_images}")
    k = min(n_folds, n_images)
    return (np.random.default_rng(seed).permutation(n_images) % k).astype(np.int64)


def fold_ids(groups: np.ndarray | None, n: int, n_folds: int, seed: int, n_groups: int | None = None) -> np.ndarray:
    """Fold of every detection (n,), whole images per fold: ``image_folds(n_groups, ...)[groups]``.

    groups (n,) non-negative int image index in [0, n_groups) (default n_groups: groups.max()
    + 1; other labels are first numbered in sorted order), or None: every detection is its own
    image. Detections from fewer than 2 images -> ValueError.
    """
    return _fold_ids(groups, n, n_folds, seed, n_groups)[0]


def _fold_ids(groups, n, n_folds, seed, n_groups=None):
    """(fold per detection (n,), number of distinct images with detections, k)."""
    if groups is None:
        index, total = np.arange(n), n
    else:
        groups = np.asarray(groups).reshape(-1)
        if np.issubdtype(groups.dtype, np.integer) and (groups.size == 0 or groups.min() >= 0):
            index = groups.astype(np.int64)
        else:
            index = np.unique(groups, return_inverse=True)[1].reshape(-1)
        total = (int(index.max()) + 1 if index.size else 0) if n_groups is None else int(n_groups)
        if index.size and total <= int(index.max()):
            raise ValueError(f"groups index {int(index.max()) + 1} images but n_groups is {total}")
    n_distinct = int(np.unique(index).size)
    if n_distinct < 2:
        raise ValueError(f"k-fold cross-validation needs detections from at least 2 images, got {n_distinct}")
    folds = image_folds(total, n_folds, seed)
    return folds[index], n_distinct, min(int(n_folds), total)


class _Splits:
    """Per fold: held-out indices and the training part's arrays, built once and shared by
    every candidate."""

    def __init__(self, scores, classes, is_tp, folds, k):
        self.folds = folds
        self.k = k
        self.parts = []
        for f in range(self.k):
            test = folds == f
            train = np.flatnonzero(~test)
            t_tp = is_tp[train]
            n_pos = int(t_tp.sum())
            ok = 0 < n_pos < train.size
            self.parts.append((np.flatnonzero(test), scores[train] if ok else None,
                               classes[train] if ok else None, t_tp if ok else None))


def _oof(kind, scores, classes, splits, num_classes, params):
    """Out-of-fold calibrated scores (N,) float64 for `kind`, and the number of folds whose
    training part lacked a positive or a negative (those folds fall back to identity)."""
    out = np.empty(scores.size, dtype=np.float64)
    degenerate = 0
    for test, tr_scores, tr_classes, tr_tp in splits.parts:
        if kind == "identity" or tr_scores is None:
            degenerate += kind != "identity" and test.size > 0
            out[test] = scores[test]
            continue
        model = make_calibrator(kind, num_classes, **params)
        model.num_classes_ = num_classes
        model.class_counts_ = np.bincount(tr_classes, minlength=num_classes)
        model._fit(tr_scores, tr_classes, tr_tp, num_classes)   # inputs validated by caller
        out[test] = model.transform(scores[test], classes[test])
    return out, degenerate


def _splits(scores, classes, is_tp, groups, n_folds, seed, n_groups):
    folds, n_distinct, k = _fold_ids(groups, scores.size, n_folds, seed, n_groups)
    return _Splits(scores, classes, is_tp, folds, k), n_distinct


def cross_val_oof(kind: str, scores, classes, is_tp, groups, num_classes: int,
                  n_folds: int = 5, seed: int = 0, n_groups: int | None = None, **params) -> np.ndarray:
    """Out-of-fold calibrated scores (N,) float64: each detection calibrated by `kind` fitted on
    the other folds (`fold_ids`: k-fold by image, groups (N,) image index). A fold whose
    training part has no positive or no negative detection is left uncalibrated (identity)."""
    make_calibrator(kind, num_classes, **params)   # validates kind and params up front
    scores, classes, is_tp, groups = validate_inputs(scores, classes, is_tp, groups, num_classes)
    splits, _ = _splits(scores, classes, is_tp, groups, n_folds, seed, n_groups)
    return _oof(kind, scores, classes, splits, num_classes, params)[0]


def select_calibrator(scores, classes, is_tp, groups, num_classes: int,
                      candidates=CANDIDATES, n_folds: int = 5, seed: int = 0,
                      params: dict | None = None, n_groups: int | None = None):
    """``--calibrator auto``: pick the candidate with the lowest k-fold (by image) log-loss.

    scores (N,), classes (N,), is_tp (N,), groups (N,) image index (None: per detection);
    n_groups: the number of images (default groups.max() + 1; pass it to get the folds of
    `image_folds(n_images, ...)` that fit's "after" numbers use). params: optional
    {kind: {constructor params}}. Identity is always evaluated and wins unless a candidate's
    cross-validated log-loss is strictly lower.

    Returns (calibrator fitted on all data, report dict): report = {"winner", "n_folds", "seed",
    "n_detections", "n_groups", "candidates": {kind: {"log_loss", "brier", "fold_log_loss",
    "degenerate_folds"}}}; fold_log_loss is None for a fold without detections.
    """
    params = dict(params or {})
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("select_calibrator needs at least one candidate")
    for kind in candidates:
        make_calibrator(kind, num_classes, **params.get(kind, {}))
    scores, classes, is_tp, groups = validate_inputs(scores, classes, is_tp, groups, num_classes)
    splits, n_distinct = _splits(scores, classes, is_tp, groups, n_folds, seed, n_groups)
    folds, k = splits.folds, splits.k
    fold_n = np.bincount(folds, minlength=k)
    kinds = ("identity",) + tuple(c for c in dict.fromkeys(candidates) if c != "identity")

    results = {}
    for kind in kinds:
        oof, degenerate = _oof(kind, scores, classes, splits, num_classes, params.get(kind, {}))
        losses = per_detection_log_loss(oof, is_tp)
        fold_sum = np.bincount(folds, weights=losses, minlength=k)
        results[kind] = {
            "log_loss": float(losses.mean()),
            "brier": brier(oof, is_tp),
            "fold_log_loss": [float(s / n) if n else None for s, n in zip(fold_sum, fold_n)],
            "degenerate_folds": int(degenerate),
        }
    winner = "identity"
    best = results["identity"]["log_loss"]
    for kind in kinds[1:]:
        if kind in candidates and results[kind]["log_loss"] < best:
            winner, best = kind, results[kind]["log_loss"]
    report = {
        "winner": winner,
        "n_folds": k,
        "seed": seed,
        "n_detections": int(scores.size),
        "n_groups": n_distinct,
        "candidates": {kind: results[kind] for kind in kinds},
    }
    best_cal = make_calibrator(winner, num_classes, **params.get(winner, {}))
    best_cal.fit(scores, classes, is_tp)
    return best_cal, report
