"""`detcal eval`'s outputs: the table, the summary text, eval.json and the PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..bootstrap import format_interval_rows
from ..fitting import ROWS, format_table
from ..metrics import survives
from ..plots import operating_curves, save_operating_curves, save_reliability_diagrams
from .columns import EvalResult

EVAL_ROWS = [
    ("AP50 (all it outputs)", "ap50", "{:.3f}"),
    ("AP50:95 (all it outputs)", "ap50_95", "{:.3f}"),
    ("AP50 (at operating point)", "ap50_at_op", "{:.3f}"),
    ("AP50:95 (at operating point)", "ap50_95_at_op", "{:.3f}"),
    ("AP50 raw @ fitted raw thr.", "ap50_at_fitted_thresholds", "{:.3f}"),
    *[r for r in ROWS if r[1] not in ("ap50", "ap50_95")],
    ("detections kept", "n_kept", "{:d}"),
    ("latency model ms/img median", "latency_model_ms_median", "{:.3f}"),
    ("latency model ms/img p90", "latency_model_ms_p90", "{:.3f}"),
    ("latency numpy post ms/img med", "latency_post_ms_median", "{:.3f}"),
    ("latency total ms/img median", "latency_total_ms_median", "{:.3f}"),
    ("latency total ms/img p90", "latency_total_ms_p90", "{:.3f}"),
]

TITLES = {"raw": "raw (> {conf:g})", "reference": "reference (calibrated)", "patched": "patched"}
CURVE_NAMES = {"raw": "raw", "reference": "reference (calibrated)", "patched": "patched"}


def format_eval_table(result: EvalResult) -> str:
    conf = result.settings["conf"]
    cols = [(TITLES[n].format(conf=conf), c.metrics) for n, c in result.columns.items()]
    return format_table(cols, rows=EVAL_ROWS)


def format_eval_summary(result: EvalResult) -> str:
    d, s = result.data, result.settings
    lines = [f"detcal eval: {Path(s['model']['file']).name} on {d['source']}: {d['n_images']} images "
             f"({d['n_negative_images']} negative), {d['n_labelled_objects']} labelled objects; "
             f"input {s['input_size'][0]}x{s['input_size'][1]}, preprocessing from {s['preprocess_source']}",
             "", result.table, ""]
    if all("intervals" in c.metrics for c in result.columns.values()):
        conf = s["conf"]
        lines += [format_interval_rows([(TITLES[n].format(conf=conf), c.metrics["intervals"])
                                        for n, c in result.columns.items()]), ""]
    lines += [f"note: {n}" for n in result.notes]
    if result.out is not None:
        lines.append(f"wrote {result.out / 'eval.json'}, reliability.png and operating_curves.png in {result.out}/")
    return "\n".join(lines)


def write_eval_outputs(result: EvalResult, out_dir: Path) -> None:
    """eval.json, reliability.png (side by side), operating_curves.png (recall vs FP per negative image)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = result.settings["conf"]
    panels, curves = [], {}
    grid = np.linspace(0, 1, 201)
    for name, col in result.columns.items():
        m = col.matched.without_ignored()        # detections on crowd regions: neither TP nor FP
        keep = survives(m.scores, m.classes, col.thresholds)
        title = TITLES[name].format(conf=conf)
        panels.append((f"{title}: D-ECE {_fmt(col.metrics.get('dece'))}", m.scores[keep], m.is_tp[keep]))
        curves[CURVE_NAMES[name]] = operating_curves(m.scores, m.is_tp, m.image_index, np.nonzero(m.negative_image_mask)[0],
                                         int(m.n_gt_per_class.sum()), grid)
    save_reliability_diagrams(out_dir / "reliability.png", panels)
    save_operating_curves(out_dir / "operating_curves.png", curves, markers={f"raw conf {conf:g}": conf})
    result.out = out_dir
    payload = result.to_dict()
    payload["plots"] = ["reliability.png", "operating_curves.png"]
    atomic_write_json(out_dir / "eval.json", payload)
    atomic_write_text(out_dir / "summary.txt", format_eval_summary(result) + "\n")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
