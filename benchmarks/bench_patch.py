"""Cost of detcal's inserted post-processing on the yolov8n fixture, CPU EP, 2 threads.

Side by side in one run, batch 1 and 8 at 640x640:
  (a) the raw model alone,
  (b) the raw model + the numpy reference post-processing (calib.pipeline.postprocess),
  (c) the patched model (calibration, thresholds, letterbox mask, NMS inside).
Prints median times and the ratios c/a (target <= 1.03) and c/b (target < 1).

    python benchmarks/bench_patch.py [--model PATH] [--repeats 30] [--calibrator platt_per_class]

The artifact is realistic: per-class Platt near identity (a ~ 1, b ~ 0), thresholds 0.25.
Timings of (a), (b) and (c) are interleaved run by run so that machine noise hits them alike.
Besides wall-clock medians, the process CPU time per run is reported (all onnxruntime threads):
on a shared, loaded machine wall time includes waiting for a core, CPU time does not.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from artifact_factory import make_artifact, near_identity_isotonic, near_identity_platt  # noqa: E402
from calib.model_info import sha256_file  # noqa: E402
from calib.pipeline import pack_fixed, postprocess  # noqa: E402
from onnx_ops.patch import patch_model  # noqa: E402


def session(path_or_bytes, threads: int, spinning: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "fixtures" / "yolov8n_dynamic.onnx"),
                    help="an Ultralytics xywh_cls export with a dynamic batch axis (default: the yolov8n_dynamic fixture)")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per configuration")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--calibrator", default="platt_near_identity",
                    help="platt_near_identity | isotonic_near_identity | identity | temperature | platt_per_class")
    ap.add_argument("--conf", type=float, default=0.25, help="score threshold for every class")
    ap.add_argument("--no-spinning", action="store_true",
                    help="set session.intra_op.allow_spinning=0 on both sessions (fairer on a shared machine)")
    args = ap.parse_args(argv)

    model = Path(args.model)
    if not model.exists():
        print(f"bench_patch: model not found: {model}", file=sys.stderr)
        return 2
    cal = {"platt_near_identity": near_identity_platt(80), "isotonic_near_identity": near_identity_isotonic(80)}.get(
        args.calibrator, args.calibrator)
    art = make_artifact(80, calibrator=cal, thresholds=args.conf, sha256=sha256_file(model))
    with tempfile.TemporaryDirectory() as tmp:
        patched = patch_model(model, art, Path(tmp) / "m.detcal.onnx")
        spin = not args.no_spinning
        raw_s, pat_s = session(str(model), args.threads, spin), session(str(patched), args.threads, spin)
    in_name = raw_s.get_inputs()[0].name
    print(f"model {model.name}, calibrator {art.calibration.kind}, conf {args.conf}, "
          f"{args.threads} threads{'' if spin else ' (no spinning)'}, {args.repeats} runs, onnxruntime {ort.__version__} CPU")
    print(f"{'':>5} {'--------------- wall-clock median ---------------':>58}   {'------ CPU time median ------':>34}")
    print(f"{'batch':>5} {'(a) raw ms':>11} {'(b) raw+numpy ms':>17} {'(c) patched ms':>15} {'c/a':>6} {'c/b':>6}"
          f"   {'(a) ms':>8} {'(b) ms':>8} {'(c) ms':>8} {'c/a':>6} {'c/b':>6}")
    rng = np.random.default_rng(0)
    for batch in [int(v) for v in args.batches.split(",")]:
        x = rng.uniform(0, 1, (batch, 3, 640, 640)).astype(np.float32)
        rows = np.tile(np.array([[1280, 720, 0.5, 0.5, 0, 140]], np.float32), (batch, 1))
        for _ in range(3):
            raw_s.run(None, {in_name: x})
            pat_s.run(None, {in_name: x, "letterbox": rows})
        ta, tb, tc, ca, cb, cc = [], [], [], [], [], []
        for _ in range(args.repeats):
            t0, p0 = time.perf_counter(), time.process_time()
            out = raw_s.run(None, {in_name: x})[0]
            t1, p1 = time.perf_counter(), time.process_time()
            pack_fixed(postprocess(out, "xywh_cls", rows, art.calibration, art.score_thresholds, art.nms), art.nms.max_det)
            t2, p2 = time.perf_counter(), time.process_time()
            pat_s.run(None, {in_name: x, "letterbox": rows})
            t3, p3 = time.perf_counter(), time.process_time()
            ta.append(t1 - t0)
            tb.append(t2 - t0)
            tc.append(t3 - t2)
            ca.append(p1 - p0)
            cb.append(p2 - p0)
            cc.append(p3 - p2)
        a, b, c, pa, pb, pc = (float(np.median(v)) * 1e3 for v in (ta, tb, tc, ca, cb, cc))
        print(f"{batch:>5} {a:>11.2f} {b:>17.2f} {c:>15.2f} {c / a:>6.3f} {c / b:>6.3f}"
              f"   {pa:>8.2f} {pb:>8.2f} {pc:>8.2f} {pc / pa:>6.3f} {pc / pb:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
