"""What `detcal fit` writes beside the artifact: the report folder (reliability.png, thresholds.png,
report.json, summary.txt) and the plain-text metrics table (also used by `detcal eval`)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_write_json, atomic_write_text, current_umask
from .bootstrap import format_interval_rows
from .data import Dataset
from .errors import DetcalError
from .fit_options import FitOptions
from .jsonable import to_jsonable
from .metrics import survives
from .plots import operating_curves, save_operating_curves, save_reliability_diagrams

if TYPE_CHECKING:
    from .fitting import FitResult


def report_dir_for(out: Path) -> Path:
    return out.with_name(out.stem + "_report")


def check_report_dir(out: Path) -> Path:
    """The report folder beside `out` can be made (checked before any work), or a DetcalError."""
    report_dir = report_dir_for(out)
    if report_dir.exists() and not report_dir.is_dir():
        raise DetcalError(f"the report folder {report_dir} is in the way: a file of that name exists")
    return report_dir


def write_outputs(result: FitResult, out: Path, dataset: Dataset, options: FitOptions) -> None:
    """The report folder (PNGs, report.json, summary.txt), then calibration.json. The report is
    written into a staging folder beside it and swapped in whole, and calibration.json (atomic)
    comes last: an interrupted fit leaves the previous report and calibration as they were, never
    a mix of two runs' files."""
    report_dir = check_report_dir(out)
    try:
        report_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{report_dir.name}.", suffix=".tmp", dir=report_dir.parent))
        os.chmod(staging, 0o777 & ~current_umask())
    except OSError as exc:
        raise DetcalError(f"cannot create the report folder {report_dir}: {exc.strerror or exc}") from None
    try:
        summary = _write_report(result, out, dataset, options, staging, report_dir)
        _swap_in(staging, report_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.artifact.save(out)
    result.summary = summary


def _swap_in(staging: Path, report_dir: Path) -> None:
    """Replace report_dir by staging (two renames; the old folder, if any, removed after)."""
    old = None
    if report_dir.exists():
        old = report_dir.with_name(f".{report_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(report_dir, old)
    os.replace(staging, report_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_report(result: FitResult, out: Path, dataset: Dataset, options: FitOptions, folder: Path,
                  report_dir: Path) -> str:
    """The report's files into `folder` (named in them as report_dir); returns the summary text."""
    m = result.matched
    raw_keep = survives(m.scores, m.classes, options.baseline_conf)
    save_reliability_diagrams(folder / "reliability.png", [
        (f"before: raw scores > {options.baseline_conf:g}", m.scores[raw_keep], m.is_tp[raw_keep]),
        ("after: calibrated, held-out", result.oof_scores[result.oof_survive], m.is_tp[result.oof_survive]),
    ])
    grid = np.linspace(0, 1, 201)
    neg_images = np.nonzero(m.negative_image_mask)[0]
    n_gt = int(m.n_gt_per_class.sum())
    curves = {
        "raw": operating_curves(m.scores, m.is_tp, m.image_index, neg_images, n_gt, grid),
        "calibrated (held-out)": operating_curves(result.oof_scores, m.is_tp, m.image_index, neg_images, n_gt, grid),
    }
    thr = np.asarray(result.thresholds.score_)
    save_operating_curves(folder / "thresholds.png", curves,
                          markers={"baseline": options.baseline_conf, "fitted (median class)": float(np.median(thr))})
    report = {
        "artifact": str(out),
        "data": result.artifact.extra,
        "calibrator": result.selection,
        "thresholds": result.thresholds.report(dataset.names),
        "metrics": result.artifact.metrics,
        "intervals": result.intervals,
    }
    summary = format_summary(result, dataset, out, report_dir)
    atomic_write_json(folder / "report.json", to_jsonable(report))
    atomic_write_text(folder / "summary.txt", summary + "\n")
    return summary


ROWS = [
    ("D-ECE", "dece", "{:.4f}"),
    ("D-ECE if perfectly calib.", "dece_if_calibrated", "{:.4f}"),
    ("  p(D-ECE this high | calib.)", "dece_p_value", "{:.2f}"),
    ("LaECE_0", "laece0", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("AP50", "ap50", "{:.3f}"),
    ("AP50:95", "ap50_95", "{:.3f}"),
    ("FP per negative image", "fp_per_negative_image", "{:.3f}"),
    ("negative images firing", "negative_image_rate", "{:.1%}"),
    ("negative images > 0.8", "negative_image_rate_above_0.8", "{:.1%}"),
]


def format_table(columns: list[tuple[str, dict]], rows=ROWS) -> str:
    """A plain-text metrics table: one row per metric, one column per (title, metrics dict).

    rows: (label, key, format) triples; a missing or None value prints as n/a.
    """
    width = max(24, *(len(t) + 2 for t, _ in columns))
    label_width = max(26, *(len(label) + 2 for label, _, _ in rows))
    lines = ["metric".ljust(label_width) + "".join(t.rjust(width) for t, _ in columns)]
    for label, key, fmt in rows:
        cells = []
        for _, m in columns:
            v = m.get(key)
            cells.append(("n/a" if v is None else fmt.format(v)).rjust(width))
        lines.append(label.ljust(label_width) + "".join(cells))
    return "\n".join(lines)


def format_summary(result: FitResult, dataset: Dataset, out: Path, report_dir: Path) -> str:
    a = result.artifact
    m = result.matched
    sel = result.selection
    lines = [
        f"detcal fit: {a.model['file']} on {a.extra['source']}: {m.n_images} images "
        f"({m.n_negative_images} negative), {int(m.n_gt_per_class.sum())} labelled objects, {m.n_detections} raw detections",
    ]
    rep = dataset.report
    if rep.class_order:
        lines.append(f"classes: {rep.class_order}")
    if rep.n_clipped_boxes or rep.n_dropped_zero_size or rep.n_unreadable_images or rep.n_missing_label_files:
        lines.append(f"labels: {rep.n_clipped_boxes} boxes clipped to the image, {rep.n_dropped_zero_size} zero-size dropped, "
                     f"{rep.n_missing_label_files} images without a label file (negative), {rep.n_unreadable_images} unreadable images skipped")
    if sel.get("mode") == "auto":
        cands = sel.get("candidates", {})
        ident = cands.get("identity", {}).get("log_loss")
        win = sel["winner"]
        if sel.get("nested_fallback") or not sel.get("operating_point_check", {}).get("kept", True):
            lines.append(f"calibrator: identity (auto: {sel['note']})")
        elif win in cands:
            lines.append(f"calibrator: {win} (auto, on the {sel.get('n_above_floor')} detections above the fitting floor: "
                         f"{sel.get('n_folds')}-fold CV log-loss {cands[win]['log_loss']:.4f} vs identity {ident:.4f}, "
                         f"D-ECE {cands[win]['dece']:.4f} vs {cands['identity']['dece']:.4f})")
        else:
            lines.append(f"calibrator: {win} (auto: {sel.get('note', 'no comparison')})")
        opc = sel.get("operating_point_check")
        if opc and opc["kept"]:
            lines.append(f"  at the operating point (held-out CV, each fold's certified thresholds): D-ECE "
                         f"{opc['dece']:.4f} on {opc['n_kept']} detections vs identity {opc['identity_dece']:.4f} "
                         f"on {opc['identity_n_kept']}")
    else:
        lines.append(f"calibrator: {sel.get('winner')} (chosen with --calibrator)")
    lines += result.thresholds.summary_lines()
    lines.append("")
    before_title = f"before (raw > {a.metrics['before_definition'].split('threshold ')[1].split(' ')[0]})"
    lines.append(format_table([(before_title, result.before), ("after (held-out CV)", result.after)]))
    target, fold_rate = a.metrics.get("negative_rate_target"), a.metrics.get("after_fold_negative_rate_target")
    if target is not None and fold_rate is not None and fold_rate > target:
        lines.append(f"  (a fold's share of the negative images cannot certify {target:.0%}: the folds' thresholds are "
                     f"certified at {fold_rate:.2%}, so the 'after' column is a little looser than the artifact)")
    if result.intervals:
        lines.append("")
        lines.append(format_interval_rows([(before_title, result.intervals["before"]),
                                           ("after (held-out CV)", result.intervals["after"])]))
    lines.append("")
    lines.append(f"wrote {out} and the report in {report_dir}/ (reliability.png, thresholds.png, report.json)")
    return "\n".join(lines)
