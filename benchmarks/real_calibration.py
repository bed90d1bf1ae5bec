"""Calibration on the real detectors in ../shared/real: fit on val (library `calib.fit`), measure on test.

Not a unit test. Runs the raw model once per split and caches its detections in the temporary
folder, then for each --max-negative-rate prints what `auto` chose and why (the held-out table of
every candidate on the detections above the fitting floor, and the nested check), the certified
thresholds, and on the test split: D-ECE at the operating point with its bootstrap interval by
image, recall, the negative-image rate, and the AP50 of the calibrated detections next to the raw
model's AP50 at the same raw thresholds. With --per-candidate, also every candidate fitted on val
and measured on test (a diagnostic only: the choice is made on val, by nested CV).

    python benchmarks/real_calibration.py [--model yolov8n|yolox|picodet] [--rates 0.01 0.03] [--per-candidate]
    python benchmarks/real_calibration.py --eval      # also `detcal patch` + `detcal eval` for real

Models and their preprocessing (../shared/real/README.md): yolov8n = YOLOv8n int8 640, centred
letterbox pad 114, RGB, /255; yolox = YOLOX-nano 416 (official export, decode not in the graph),
top-left letterbox pad 114, BGR, raw 0..255; picodet = PP-PicoDet-S 320 (DFL heads), centred
letterbox pad 0, RGB, mean/std in 0..255 units. With --diagnose, also what the raw model does on
test: its negative-image rate at 0.25 and the hindsight-best recall at the target (one global
threshold, and per-class thresholds chosen greedily on test itself).

The test numbers without --eval apply the fitted map and thresholds to the cached raw detections
(after the raw NMS at 0.001); `detcal eval` runs the patched graph (best class after calibration,
NMS after thresholds) and is the number to report.
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared")).resolve() / "real"
DATA = REAL / "coco_train" / "data.yaml"
CACHE = Path(tempfile.gettempdir()) / "detcal_real_calibration"

# name -> (model file, Preprocess keyword arguments, CLI preprocessing flags), from ../shared/real/README.md
MODELS = {
    "yolov8n": ("yolov8n_coco_int8.onnx", {}, []),
    "yolox": ("yolox_nano_coco_416.onnx", dict(pad_value=114, channel_order="BGR", placement="top_left", scale="none"),
              ["--pad-value", "114", "--channel-order", "BGR", "--placement", "top_left", "--scale", "none"]),
    "picodet": ("picodet_s_coco_320.onnx",
                dict(pad_value=0, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), scale="none"),
                ["--pad-value", "0", "--mean", "123.675,116.28,103.53", "--std", "58.395,57.12,57.375",
                 "--scale", "none"]),
}
MODEL = REAL / "models" / MODELS["yolov8n"][0]
PRE_KW: dict = {}
CLI_PRE: list = []


def select_model(name: str) -> None:
    """Point MODEL, PRE_KW and CLI_PRE at one of MODELS."""
    global MODEL, PRE_KW, CLI_PRE
    file, PRE_KW, CLI_PRE = MODELS[name]
    MODEL = REAL / "models" / file


def preprocess():
    from calib.artifact import Preprocess

    return Preprocess(**PRE_KW)


def collected_split(split: str):
    """calib.collect.Collected of the raw model on one split (cached as a pickle)."""
    from calib.collect import collect_detections
    from calib.fitting import FitOptions, postprocess_for_layout
    from calib.data import load_dataset
    from calib.model_info import read_model_info
    from calib.runner import resolve_input_size

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{MODEL.stem}_{split}_{MODEL.stat().st_size}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    dataset = load_dataset(DATA, split)
    info = read_model_info(MODEL, num_classes=dataset.num_classes)
    col = collect_detections(dataset, info, preprocess(), resolve_input_size(info, None),
                             num_classes=dataset.num_classes, base_conf=0.001,
                             config=postprocess_for_layout(info.layout, FitOptions()), progress=False)
    with open(path, "wb") as f:
        pickle.dump(col, f)
    return col


def _apply(result, collected, size):
    """The fitted map and thresholds on cached raw detections -> MatchedDetections with the
    calibrated scores, survivors (K,) bool, and the raw per-class thresholds (C,)."""
    import dataclasses

    from calib.artifact import BOX_KIND
    from calib.evaluate.columns import raw_space_thresholds
    from calib.fitting import match_collected
    from calib.floor_selection import input_boxes_of

    m = match_collected(collected, result.matched.num_classes, 0.5)
    art = result.artifact
    cmap, thr = art.calibration, art.score_thresholds
    boxes = input_boxes_of(collected.detections)
    if cmap.kind == BOX_KIND:
        cal = cmap.transform(m.scores.astype(np.float32), m.classes, boxes, size).astype(np.float64)
        keep = cmap.survives(m.scores.astype(np.float32), m.classes, boxes, size, thr)
    else:
        cal = cmap.transform(m.scores.astype(np.float32), m.classes).astype(np.float64)
        keep = cal > thr[m.classes]
    return dataclasses.replace(m, scores=np.where(keep, cal, 0.0)), keep, m, raw_space_thresholds(cmap, thr)


def report_rate(val, test, rate: float, per_candidate: bool) -> dict:
    from calib.bootstrap import metric_intervals
    from calib.certify import ScoredImages, global_baseline
    from calib.fitting import FitOptions, fit
    from calib.metrics import dece_noise_floor, mean_ap, summarize, survives

    opts = FitOptions(max_negative_rate=rate)
    res = fit(MODEL, DATA, split="val", options=opts, preprocess=preprocess(), progress=False, collected=val)
    sel = res.selection
    size = tuple(res.artifact.model["input_size"])
    print(f"\n=== --max-negative-rate {rate:g}: calibrator {sel['winner']} "
          f"({sel.get('n_above_floor')} of {sel.get('n_collected')} val detections above the fitting floor)")
    cands = sel.get("candidates", {})
    print(f"  {'candidate':<22} {'CV log-loss':>11} {'CV D-ECE':>9}")
    for k, r in cands.items():
        print(f"  {k:<22} {r['log_loss']:>11.4f} {r['dece']:>9.4f}")
    if "nested" in sel:
        n = sel["nested"]
        print(f"  nested CV: chosen per fold {n['chosen_per_fold']}; log-loss {n['log_loss']:.4f} vs identity "
              f"{n['identity_log_loss']:.4f}, D-ECE above the floor {n['dece']:.4f} vs {n['identity_dece']:.4f} "
              f"(D-ECE judged: {n.get('dece_check', 'floor')})")
    opc = sel.get("operating_point_check")
    if opc:
        print(f"  operating-point check (held-out survivors of each fold's certified thresholds): D-ECE {opc['dece']:.4f} "
              f"on {opc['n_kept']} vs identity {opc['identity_dece']:.4f} on {opc['identity_n_kept']}: "
              f"{'kept' if opc['kept'] else 'identity kept'}")
    if sel.get("note"):
        print(f"  note: {sel['note']}")
    for line in res.thresholds.summary_lines():
        print(f"  {line}")
    print(f"  fit's held-out CV after: D-ECE {res.after['dece']:.4f}, recall {res.after['recall']:.3f}, "
          f"negative images firing {res.after['negative_image_rate']:.1%}")

    mt, keep, raw_m, raw_thr = _apply(res, test, size)
    raw_keep = survives(raw_m.scores, raw_m.classes, 0.25)
    out = {"rate": rate, "winner": sel["winner"]}
    for title, m, thr in (("raw > 0.25", raw_m, 0.25), ("calibrated", mt, 0.0)):
        s = summarize(m, thr)
        iv = metric_intervals(m.without_ignored(), thresholds=thr)
        nf = dece_noise_floor(m.scores[survives(m.scores, m.classes, thr) & ~m.ignored], observed=s["dece"])
        print(f"  test {title:<11}: D-ECE {iv['dece']} (perfectly calibrated: {nf['mean']:.4f}, p = {nf['p_value']:.2f})  "
              f"recall {iv['recall']}  negative firing {iv['negative_image_rate']}  kept {s['n_kept']}")
        out[title] = {"dece": s["dece"], "recall": s["recall"], "neg": s["negative_image_rate"]}
    ap_cal = mean_ap(mt.subset(keep), [0.5])
    ap_raw_same = mean_ap(raw_m.subset(survives(raw_m.scores, raw_m.classes, raw_thr)), [0.5])
    g = global_baseline(ScoredImages.from_matched(raw_m), out["calibrated"]["neg"])
    print(f"  test AP50 at the operating point: calibrated {ap_cal:.4f}, raw at the same raw thresholds "
          f"{ap_raw_same:.4f} (raw at 0.25: {mean_ap(raw_m.subset(raw_keep), [0.5]):.4f}); best single raw threshold "
          f"at the same negative rate (hindsight): recall {g['recall']:.3f} (t={g['threshold']:.3f})")
    if per_candidate:
        _per_candidate(res, val, test, size, opts)
    return out


def hindsight(matched, rate: float, base: float = 0.0) -> dict:
    """On the images of ``matched`` themselves (hindsight, not a method): the best recall at a
    negative-image rate <= rate, with one global raw threshold and with per-class raw thresholds
    (the greedy path of calib.certify on every negative image, pooled recall), both >= base."""
    from calib.certify import ScoredImages, _greedy_path, _Recall, global_baseline
    from calib.thresholds import _negative_entries

    data = ScoredImages.from_matched(matched.without_ignored())
    g = global_baseline(data, rate)
    img, s, cl, n = data.negatives()
    tp_s, tp_c, n_gt = data.true_positive_scores()
    c = data.num_classes
    b = np.full(c, float(base))
    recall = _Recall(tp_s, tp_c, n_gt, c)
    allowed = int(np.floor(rate * n + 1e-9))
    rows = _greedy_path(_negative_entries(img, s, cl, b, c), b, c, n, recall, allowed)
    best = max(((recall.recall(t), np.unique(img[s > t[cl]]).size) for t in rows), key=lambda x: x[0])
    return {"global_recall": g["recall"], "global_threshold": g["threshold"], "per_class_recall": best[0],
            "per_class_firing": best[1], "n_negative": n, "allowed": allowed}


def diagnose(test, rate: float) -> None:
    """What the raw model allows on test at the target (hindsight), see ``hindsight``."""
    from calib.fitting import match_collected
    from calib.metrics import summarize

    m = match_collected(test, 80, 0.5)
    s = summarize(m, 0.25)
    h = hindsight(m, rate)
    h25 = hindsight(m, rate, 0.25)
    print(f"  diagnose (test, raw, hindsight): at 0.25 recall {s['recall']:.3f}, negative images firing "
          f"{s['negative_image_rate']:.1%}; at <= {rate:g} ({h['allowed']} of {h['n_negative']} may fire): best global "
          f"recall {h['global_recall']:.3f} (t={h['global_threshold']:.3f}), best per-class {h['per_class_recall']:.3f} "
          f"({h['per_class_firing']} fire); per-class with every threshold >= 0.25: {h25['per_class_recall']:.3f}")


def _per_candidate(res, val, test, size, opts):
    """Each candidate fitted on the val detections above the floor, measured on test above the same
    floor (no thresholds beyond it): a diagnostic of what the selection could have picked."""
    from calib.fitting import match_collected
    from calib.floor_selection import FLOOR_CANDIDATES, above_floor, calibrate, fit_kind, input_boxes_of
    from calib.calibrators import log_loss
    from calib.metrics import dece

    floor = np.asarray(res.selection["fit_floor"])
    C = res.matched.num_classes
    mv, mt = match_collected(val, C, 0.5).without_ignored(), match_collected(test, C, 0.5)
    bv = input_boxes_of(val.detections)[~match_collected(val, C, 0.5).ignored]
    bt = input_boxes_of(test.detections)[~mt.ignored]
    mt = mt.without_ignored()
    kv, kt = above_floor(mv.scores, mv.classes, floor), above_floor(mt.scores, mt.classes, floor)
    print(f"  per candidate, fitted on val above the floor ({kv.sum()}), on test above it ({kt.sum()}):")
    for kind in FLOOR_CANDIDATES:
        if kind == "identity":
            p = mt.scores[kt].astype(np.float64)
        else:
            cal = fit_kind(kind, mv.scores[kv], mv.classes[kv], mv.is_tp[kv], bv[kv], C, size, raw_floor=floor)
            p = calibrate(cal, mt.scores[kt], mt.classes[kt], bt[kt])
        print(f"    {kind:<22} test log-loss {log_loss(p, mt.is_tp[kt]):.4f}  D-ECE {dece(np.clip(p, 0, 1), mt.is_tp[kt]):.4f}")


def run_cli(rate: float, work: Path) -> None:
    """detcal fit (val) -> patch -> eval (test), printed as the CLI prints it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    exe = [sys.executable, "-m", "calib.cli"]
    cal = work / f"{MODEL.stem}_calibration_{rate:g}.json"
    patched = work / f"{MODEL.stem}.detcal_{rate:g}.onnx"
    for cmd in (["fit", "--model", str(MODEL), "--data", str(DATA), "--out", str(cal), "--quiet",
                 "--max-negative-rate", str(rate), *CLI_PRE],
                ["patch", "--model", str(MODEL), "--calibration", str(cal), "--out", str(patched)],
                ["eval", "--model", str(MODEL), "--patched", str(patched), "--calibration", str(cal), "--data",
                 str(DATA), "--split", "test", "--quiet", "--out", str(work / f"{MODEL.stem}_eval_{rate:g}")]):
        print("$ detcal " + " ".join(cmd), flush=True)
        subprocess.run(exe + cmd, check=True, env=env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="yolov8n")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.03])
    ap.add_argument("--per-candidate", action="store_true")
    ap.add_argument("--diagnose", action="store_true", help="also the hindsight recall of the raw model on test")
    ap.add_argument("--eval", action="store_true", help="also run detcal fit/patch/eval for real")
    ap.add_argument("--work", type=Path, default=CACHE / "cli")
    args = ap.parse_args(argv)
    select_model(args.model)
    if not MODEL.exists():
        print(f"skipped: {MODEL} is absent")
        return 0
    val, test = collected_split("val"), collected_split("test")
    for rate in args.rates:
        report_rate(val, test, rate, args.per_candidate)
        if args.diagnose:
            diagnose(test, rate)
    if args.eval:
        args.work.mkdir(parents=True, exist_ok=True)
        for rate in args.rates:
            run_cli(rate, args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
