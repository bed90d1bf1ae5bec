"""One example per supported head layout: fit -> patch -> eval with the `detcal` CLI.

    python examples/layouts/run.py --layout xywh_cls        # YOLOv8 / YOLO11 style  [B, 4+C, N]
    python examples/layouts/run.py --layout xywh_obj_cls    # YOLOv5 / v7 / X style  [B, N, 5+C]
    python examples/layouts/run.py --layout end2end         # YOLOv10 style TopK head [B, K, 6]
    python examples/layouts/run.py --layout all             # the three, one after the other

Each uses the project's own trained detector (examples/models/, 320x320) exported in that
layout, generates a small seeded deployment data set (validation + held-out test, positive
and negative scenes), then runs the three commands a user types, printing each first:

    detcal fit   --model M.onnx --data data.yaml --split val --imgsz 320 --out calibration.json
    detcal patch --model M.onnx --calibration calibration.json --out M.detcal.onnx
    detcal eval  --model M.onnx --patched M.detcal.onnx --data data.yaml --split test --out eval

and ends with a before/after table read from eval.json. At 320 (the training size) the
detector hardly fires on empty scenes, so the example mostly shows calibration; `--size 208`
serves the 208x208 exports of the same weights, the resolution-mismatch incident
(examples/resolution_mismatch/), where the false positives on negative scenes appear. `--small` (or DETCAL_EXAMPLES_SMALL=1)
shrinks the data to a smoke test. The default validation split has fewer than 299 negative
images, too few to certify a 1% negative-image rate at 95% confidence: `detcal fit` says so
and sets thresholds so that no validation negative fires; pass `--val 60 300` to certify.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from examples.common import ExampleError, detcal, make_data, show  # noqa: E402

MODELS = ROOT / "examples" / "models"
LAYOUTS = ("xywh_cls", "xywh_obj_cls", "end2end")
IMGSZ = 320
SMALL = {"val": (16, 16), "test": (10, 10)}
DEFAULT = {"val": (60, 60), "test": (40, 40)}

ROWS = [
    ("AP50 (at operating point)", "ap50_at_op", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("D-ECE", "dece", "{:.4f}"),
    ("LaECE_0", "laece0", "{:.4f}"),
    ("false positives per negative image", "fp_per_negative_image", "{:.3f}"),
    ("negative images with any detection", "negative_image_rate", "{:.1%}"),
    ("negative images with a detection > 0.8", "negative_image_rate_above_0.8", "{:.1%}"),
]




def model_path(layout: str, size: int = IMGSZ) -> Path:
    suffix = "" if size == IMGSZ else f"_{size}"
    p = MODELS / f"detector_{layout}{suffix}.onnx"
    if not p.exists():
        hint = (" (make it with: python examples/detector/to_end2end.py examples/models/detector_xywh_cls"
                f"{suffix}.onnx examples/models/detector_end2end{suffix}.onnx)") if layout == "end2end" else ""
        raise ExampleError(f"the {layout} model is missing: {p}{hint}")
    return p


def run_layout(layout: str, data: Path, out: Path, *, size: int = IMGSZ, quiet: bool = True,
               in_process: bool = False) -> dict:
    """fit -> patch -> eval for one layout, served at `size`; returns eval.json's content."""
    model = model_path(layout, size)
    work = out / (layout if size == IMGSZ else f"{layout}_{size}")
    work.mkdir(parents=True, exist_ok=True)
    cal, patched, ev = work / "calibration.json", work / f"{model.stem}.detcal.onnx", work / "eval"
    q = ["--quiet"] if quiet else []
    print(f"\n==== layout {layout}: {show(model)} at {size}x{size}", flush=True)
    t0 = time.perf_counter()
    detcal(["inspect", show(model)], in_process=in_process)
    detcal(["fit", "--model", show(model), "--data", show(data), "--split", "val", "--imgsz", size,
            "--out", show(cal), *q], in_process=in_process)
    require(cal, "calibration.json from `detcal fit`")
    detcal(["patch", "--model", show(model), "--calibration", show(cal), "--out", show(patched)], in_process=in_process)
    require(patched, "the patched model from `detcal patch`")
    detcal(["eval", "--model", show(model), "--patched", show(patched), "--data", show(data), "--split", "test",
            "--out", show(ev), *q], in_process=in_process)
    result = json.loads(require(ev / "eval.json", "eval.json from `detcal eval`").read_text())
    seconds = time.perf_counter() - t0
    print(f"\n==== {layout}: before / after on the held-out test split ({seconds:.1f}s)")
    print(table(result))
    result["example_seconds"] = round(seconds, 1)
    return result


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ExampleError(f"{what} is missing: {path}")
    return path


def table(result: dict) -> str:
    cols = result.get("columns", {})
    if "raw" not in cols or "patched" not in cols:
        raise ExampleError(f"eval.json has no raw/patched columns (found: {', '.join(cols) or 'none'})")
    raw, pat = cols["raw"]["metrics"], cols["patched"]["metrics"]
    lines = ["".ljust(42) + "raw (> 0.25)".rjust(14) + "detcal".rjust(14)]
    for label, key, fmt in ROWS:
        cells = ["n/a" if m.get(key) is None else fmt.format(m[key]) for m in (raw, pat)]
        lines.append(label.ljust(42) + "".join(c.rjust(14) for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", required=True, choices=[*LAYOUTS, "all"], help="which head layout (or all)")
    ap.add_argument("--out", default=str(HERE / "out"), help="working folder (default: examples/layouts/out)")
    ap.add_argument("--size", type=int, default=IMGSZ, choices=[IMGSZ, 208],
                    help="serving size: 320 = the training size (default); 208 = the resolution-mismatch incident "
                         "(the *_208.onnx exports), where the raw model fires on empty scenes")
    ap.add_argument("--seed", type=int, default=2026, help="data seed (default: 2026)")
    ap.add_argument("--val", type=int, nargs=2, metavar=("POS", "NEG"), help="validation split size (default 60 60)")
    ap.add_argument("--test", type=int, nargs=2, metavar=("POS", "NEG"), help="test split size (default 40 40)")
    ap.add_argument("--small", action="store_true", default=os.environ.get("DETCAL_EXAMPLES_SMALL") == "1",
                    help="smoke-test sizes (val 16+16, test 10+10); also DETCAL_EXAMPLES_SMALL=1")
    ap.add_argument("--progress", action="store_true", help="show detcal's progress bars")
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests: calib.cli.main, no subprocess
    args = ap.parse_args(argv)
    sizes = SMALL if args.small else DEFAULT
    val, test = tuple(args.val or sizes["val"]), tuple(args.test or sizes["test"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layouts = LAYOUTS if args.layout == "all" else (args.layout,)
    t0 = time.perf_counter()
    try:
        for layout in layouts:
            model_path(layout, args.size)
        data = make_data(out, val, test, args.seed)
        results = {layout: run_layout(layout, data, out, size=args.size, quiet=not args.progress, in_process=args.in_process)
                   for layout in layouts}
    except ExampleError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    summary = {layout: {"patched": r["columns"]["patched"]["metrics"], "raw": r["columns"]["raw"]["metrics"],
                        "seconds": r["example_seconds"]} for layout, r in results.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nwork folder: {show(out)} (calibration.json, patched model, eval/ plots per layout); "
          f"total {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
