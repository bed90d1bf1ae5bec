"""PNG plots for reports: reliability diagrams and threshold / recall / negative-rate curves.

matplotlib is imported lazily with the Agg backend, so nothing here needs a display.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def reliability_bins(scores: np.ndarray, is_tp: np.ndarray, n_bins: int = 10):
    """Equal-width bins on [0, 1] -> (bin centres, mean score, precision, count), each (n_bins,)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(scores, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=scores, minlength=n_bins) / count
        prec = np.bincount(idx, weights=is_tp, minlength=n_bins) / count
    return (edges[:-1] + edges[1:]) / 2, conf, prec, count


def _reliability_axes(ax, scores, is_tp, title, n_bins=10):
    centres, conf, prec, count = reliability_bins(scores, is_tp, n_bins)
    width = 1.0 / n_bins
    ok = count > 0
    ax.bar(centres[ok], prec[ok], width=width * 0.9, color="#4c72b0", edgecolor="black", label="precision")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(conf[ok], prec[ok], "o", color="#dd8452", label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("precision (matched at IoU 0.5)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def save_reliability_diagrams(path: str | Path, panels: list[tuple[str, np.ndarray, np.ndarray]], n_bins: int = 10) -> Path:
    """Side-by-side reliability diagrams. panels: [(title, scores (N,), is_tp (N,)), ...]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (title, scores, is_tp) in zip(axes[0], panels):
        _reliability_axes(ax, scores, is_tp, title, n_bins)
    return _save(fig, path)


def operating_curves(scores, is_tp, image_index, negative_images: np.ndarray, n_gt: int, thresholds: np.ndarray) -> dict:
    """For each global threshold t: recall, negative-image rate and FP per negative image.

    scores/is_tp/image_index (N,) per detection; negative_images: indices of negative images.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    image_index = np.asarray(image_index)
    neg = np.isin(image_index, negative_images)
    n_neg = max(len(negative_images), 1)
    tp_scores = np.sort(scores[is_tp])
    neg_scores = np.sort(scores[neg])
    # an image fires at t when its best detection is > t
    neg_best = np.full(int(image_index.max()) + 1 if image_index.size else 0, -np.inf)
    np.maximum.at(neg_best, image_index[neg], scores[neg])
    neg_best = np.sort(neg_best[np.isin(np.arange(neg_best.size), negative_images)])
    t = np.asarray(thresholds, dtype=np.float64)
    recall = (tp_scores.size - np.searchsorted(tp_scores, t, side="right")) / max(n_gt, 1)
    fp_per_neg = (neg_scores.size - np.searchsorted(neg_scores, t, side="right")) / n_neg
    neg_rate = (neg_best.size - np.searchsorted(neg_best, t, side="right")) / n_neg
    return {"threshold": t, "recall": recall, "negative_image_rate": neg_rate, "fp_per_negative_image": fp_per_neg}


def save_operating_curves(path: str | Path, curves: dict[str, dict], markers: dict[str, float] | None = None) -> Path:
    """Recall and negative-image rate against the threshold, one line per named curve set."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, c in curves.items():
        ax1.plot(c["threshold"], c["recall"], label=f"recall ({name})")
        ax1.plot(c["threshold"], c["negative_image_rate"], "--", label=f"negative-image rate ({name})")
        ax2.plot(c["fp_per_negative_image"], c["recall"], label=name)
    for name, t in (markers or {}).items():
        ax1.axvline(t, color="grey", lw=0.8, ls=":")
        ax1.text(t, 0.02, f" {name}", rotation=90, fontsize=7, va="bottom")
    ax1.set_xlabel("score threshold")
    ax1.set_ylabel("rate")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=7)
    ax1.set_title("threshold vs recall and negative-scene firing")
    ax2.set_xscale("symlog", linthresh=0.01)
    ax2.set_xlabel("false positives per negative image")
    ax2.set_ylabel("recall")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    ax2.set_title("recall vs FP per negative image")
    return _save(fig, path)
