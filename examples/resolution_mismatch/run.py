"""The production incident, reproduced and fixed: a detector trained at 320 served at 208.

    python examples/resolution_mismatch/run.py [--layout xywh_cls] [--out examples/resolution_mismatch/out]

Steps (each printed with its time):
  1. generate the deployment data set (validation + held-out test, positive and negative scenes)
  2. measure the raw model served at 208 (the incident) and at 320 (the other fix) on the test split
  3. `detcal fit` on the validation split at the serving resolution (208)
  4. `detcal patch` the 208 model
  5. measure the patched model on the held-out test split
  6. print the before/after table and check the targets; plots and JSON land in --out
The same seed gives the same data and the same numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from calib.errors import DetcalError  # noqa: E402
from examples.common import ExampleError  # noqa: E402

MODELS = ROOT / "examples" / "models"
TRAIN_SIZE, SERVE_SIZE = 320, 208      # the 640 -> 416 ratio of the incident


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f}s)", flush=True)


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DetcalError(f"{what} is missing: {path}")
    return path


ROWS = [
    ("false positives per negative image", "fp_per_negative_image", "{:.3f}"),
    ("negative images with a detection > 0.8", "negative_image_rate_above_0.8", "{:.1%}"),
    ("negative images with any detection", "negative_image_rate", "{:.1%}"),
    ("D-ECE", "dece", "{:.4f}"),
    ("LaECE_0", "laece0", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("AP50", "ap50", "{:.3f}"),
]


def table(columns: list[tuple[str, dict]]) -> str:
    w = max(22, *(len(t) + 2 for t, _ in columns))
    out = ["".ljust(40) + "".join(t.rjust(w) for t, _ in columns)]
    for label, key, fmt in ROWS:
        cells = []
        for _, m in columns:
            v = m.get(key)
            cells.append(("n/a" if v is None else fmt.format(v)).rjust(w))
        out.append(label.ljust(40) + "".join(cells))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="xywh_cls", choices=["xywh_cls", "xywh_obj_cls"], help="which of the project's detectors")
    ap.add_argument("--out", default=str(HERE / "out"), help="working folder (data, artifact, patched model, plots)")
    ap.add_argument("--seed", type=int, default=2026, help="data seed")
    ap.add_argument("--val", type=int, nargs=2, default=(600, 700), metavar=("POS", "NEG"),
                    help="validation split size (>= 299 negatives certify 1%%; about 600 for a per-class threshold shape)")
    ap.add_argument("--test", type=int, nargs=2, default=(900, 300), metavar=("POS", "NEG"),
                    help="held-out test split size (900 positives: D-ECE's sampling noise about 0.013, under the 0.03 target)")
    ap.add_argument("--conf", type=float, default=0.25, help="the raw model's operating threshold today (default 0.25)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (DetcalError, ExampleError) as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from calib.artifact import load_artifact
    from calib.evaluate import evaluate
    from calib.fitting import FitOptions, fit
    from examples.common import make_data
    from onnx_ops.patch import patch_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_train = require(MODELS / f"detector_{args.layout}.onnx", f"the {TRAIN_SIZE}x{TRAIN_SIZE} model")
    model_serve = require(MODELS / f"detector_{args.layout}_{SERVE_SIZE}.onnx", f"the {SERVE_SIZE}x{SERVE_SIZE} export")
    progress = not args.quiet
    t_all = time.perf_counter()

    t = step(f"1. deployment data: val {args.val[0]}+{args.val[1]} / test {args.test[0]}+{args.test[1]} (positive+negative), seed {args.seed}")
    data = make_data(out, args.val, args.test, args.seed)
    done(t)

    t = step(f"2. the incident: raw model served at {SERVE_SIZE} (and the other fix: served at {TRAIN_SIZE}), held-out test split")
    raw_serve = evaluate(model_serve, data, split="test", conf=args.conf, out=out / "eval_raw_208", progress=progress)
    raw_train = evaluate(model_train, data, split="test", conf=args.conf, out=out / "eval_raw_320", progress=progress)
    done(t)

    t = step(f"3. detcal fit on the validation split at {SERVE_SIZE}")
    cal_path = out / "calibration.json"
    fitted = fit(model_serve, data, split="val", out=cal_path, options=FitOptions(), progress=progress)
    print(fitted.summary)
    done(t)

    t = step("4. detcal patch")
    artifact = load_artifact(require(cal_path, "calibration.json"))
    patched = patch_model(model_serve, artifact, out / f"detector_{args.layout}_{SERVE_SIZE}.detcal.onnx")
    patched = Path(getattr(patched, "path", patched))
    print(f"   wrote {patched}")
    done(t)

    t = step("5. the patched model on the held-out test split")
    after = evaluate(model_serve, data, split="test", patched=require(patched, "the patched model"), conf=args.conf,
                     out=out / "eval_patched", progress=progress)
    done(t)

    before = raw_serve.columns["raw"].metrics
    other_fix = raw_train.columns["raw"].metrics
    fixed = after.columns["patched"].metrics
    print("\n== before / after on the held-out test split")
    print(table([(f"raw @{SERVE_SIZE} (incident)", before), (f"raw @{TRAIN_SIZE} (served at training size)", other_fix),
                 (f"detcal @{SERVE_SIZE}", fixed)]))

    checks = targets(before, fixed)
    print("\n== targets (patched vs raw at the same serving resolution)")
    for name, ok, detail in checks:
        print(f"   [{'met' if ok else 'MISSED'}] {name}: {detail}")
    summary = {"before_raw_208": before, "raw_320": other_fix, "after_patched_208": fixed,
               "targets": [{"name": n, "met": ok, "detail": d} for n, ok, d in checks],
               "calibrator": fitted.selection.get("winner"), "thresholds": fitted.artifact.thresholds,
               "seconds": round(time.perf_counter() - t_all, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nplots: {out}/eval_patched/*.png, fit report: {out}/calibration_report/; total {summary['seconds']}s")
    return 0


def targets(before: dict, after: dict) -> list[tuple[str, bool, str]]:
    fp_b, fp_a = before.get("fp_per_negative_image") or 0.0, after.get("fp_per_negative_image") or 0.0
    ratio = fp_b / fp_a if fp_a > 0 else float("inf")
    dece = after.get("dece")
    rec_b, rec_a = before.get("recall") or 0.0, after.get("recall") or 0.0
    return [
        ("false positives per negative image down >= 10x", ratio >= 10, f"{fp_b:.3f} -> {fp_a:.3f} ({ratio:.1f}x)"),
        ("D-ECE <= 0.03", dece is not None and dece <= 0.03, f"{dece if dece is not None else float('nan'):.4f}"),
        ("recall no more than 2 points lower", rec_a >= rec_b - 0.02, f"{rec_b:.3f} -> {rec_a:.3f} ({100 * (rec_a - rec_b):+.1f} points)"),
    ]


if __name__ == "__main__":
    sys.exit(main())
