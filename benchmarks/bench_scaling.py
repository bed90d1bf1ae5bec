"""Candidate scaling of the inserted post-processing subgraph alone (the graph cut at the head output).

    python benchmarks/bench_scaling.py [--candidates 1000,8400,33600] [--classes 1,80,365] [--repeats 15]

For every (candidates N, classes C) pair: a cut graph built with
onnx_ops.patch.build_postprocess_graph (xywh_cls layout, head [1, 4+C, N], per-class Platt
calibration near identity by default (--calibrator), score threshold 0.25, IoU 0.7, max_det 300, pre-NMS top-k 3000)
is run on onnxruntime's CPU provider with intra_op_num_threads=2, batch 1, and timed; the
numpy reference (calib.pipeline.postprocess + pack_fixed) is timed on the same input, interleaved.

Head outputs are synthetic but shaped like a trained detector's: background class scores are
small (below the threshold), and a share --share of the N boxes (default 5%: 420 of 8,400, as
a 640x640 image with a few dozen objects gives) carries one class above the threshold; those
boxes come in clusters of ~20 jittered copies around objects, so NMS has real suppression to do.
"cand" is the number of candidates that entered NMS (after threshold, top-k cap and mask).

--profile prints, for one configuration, where the subgraph's time goes by op type
(onnxruntime's profiler).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from artifact_factory import make_calibration, near_identity_platt  # noqa: E402
from calib.pipeline import PostprocessConfig, pack_fixed, postprocess  # noqa: E402
from onnx_ops.patch import build_postprocess_graph  # noqa: E402

SIZE = 640
ROW = np.array([[1280, 720, 0.5, 0.5, 0, 140]], np.float32)   # 1280x720 letterboxed into 640x640


def synthetic_head(n: int, c: int, share: float, conf: float, rng: np.random.Generator) -> np.ndarray:
    """[1, 4+C, N] float32: cx, cy, w, h in input px, then C class probabilities."""
    n_pos = int(round(share * n))
    n_obj = max(1, n_pos // 20)
    obj_c = np.stack([rng.uniform(40, SIZE - 40, n_obj), rng.uniform(150, SIZE - 150, n_obj)], 1)
    obj_wh = rng.uniform(16, 200, (n_obj, 2))
    which = rng.integers(0, n_obj, n_pos)
    cxcy = rng.uniform(0, SIZE, (n, 2))
    wh = rng.uniform(4, 120, (n, 2))
    pos = rng.choice(n, n_pos, replace=False)
    cxcy[pos] = obj_c[which] + rng.normal(0, 0.08, (n_pos, 2)) * obj_wh[which]
    wh[pos] = obj_wh[which] * rng.uniform(0.8, 1.25, (n_pos, 2))
    scores = (rng.random((n, c), dtype=np.float32) ** 8) * np.float32(conf * 0.6)   # background, well below conf
    obj_cls = rng.integers(0, c, n_obj)
    scores[pos, obj_cls[which]] = rng.uniform(conf + 0.01, 0.95, n_pos)
    head = np.concatenate([cxcy, wh], 1).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([head, scores], 1).T[None])


def calibration(kind: str, c: int):
    return near_identity_platt(c) if kind == "platt_near_identity" else make_calibration(kind, c, np.random.default_rng(0))


SPINNING = True


def session(model_bytes: bytes, threads: int, profile_dir: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not SPINNING:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "detcal_cut")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def profile(model_bytes: bytes, feeds: dict, threads: int, runs: int = 20) -> list[tuple[str, float, float]]:
    """[(op type, mean us per run, share)] from onnxruntime's profiler, most expensive first."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(model_bytes, threads, tmp)
        for _ in range(3):
            s.run(None, feeds)
        path = s.end_profiling()
        # the profile counts the warm-up too; take a second session for the timed runs
        s = session(model_bytes, threads, tmp)
        for _ in range(runs):
            s.run(None, feeds)
        path = s.end_profiling()
        events = json.load(open(path))
    per_op = defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev.get("args", {}).get("op_name", "?")] += ev["dur"]
    total = sum(per_op.values()) or 1.0
    return sorted(((op, us / runs, us / total) for op, us in per_op.items()), key=lambda t: -t[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default="1000,8400,33600")
    ap.add_argument("--classes", default="1,80,365")
    ap.add_argument("--share", type=float, default=0.05, help="share of boxes with a class above the threshold")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibrator", default="platt_near_identity",
                    help="platt_near_identity (as fits on a decent detector look) | identity | platt_per_class | "
                         "isotonic_per_class | temperature")
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy reference column")
    ap.add_argument("--profile", default="8400x80", help="NxC to profile by op type ('' to skip)")
    ap.add_argument("--no-spinning", action="store_true", help="onnxruntime worker threads do not spin-wait")
    args = ap.parse_args(argv)
    global SPINNING
    SPINNING = not args.no_spinning
    ns = [int(v) for v in args.candidates.split(",")]
    cs = [int(v) for v in args.classes.split(",")]
    cfg = PostprocessConfig(iou_threshold=0.7, max_det=300)
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__} CPU, intra_op_num_threads={args.threads}, spinning {'on' if SPINNING else 'off'}, batch 1, xywh_cls, "
          f"calibrator {args.calibrator}, conf {args.conf}, share above threshold {args.share:.0%}, "
          f"{args.repeats} runs (medians), load average {os.getloadavg()[0]:.2f}")
    results = {}
    print(f"{'N':>7} {'C':>5} {'head MB':>8} {'cand':>6} {'dets':>5} {'graph ms':>9} {'numpy ms':>9} {'graph/numpy':>11}")
    for n in ns:
        for c in cs:
            cal = calibration(args.calibrator, c)
            model = build_postprocess_graph("xywh_cls", c, cal, args.conf, cfg, num_candidates=n, batch=1)
            s = session(model.SerializeToString(), args.threads)
            head = synthetic_head(n, c, args.share, args.conf, rng)
            feeds = {"head": head, "letterbox": ROW}
            ref = postprocess(head, "xywh_cls", ROW, cal, args.conf, cfg)
            got = s.run(None, feeds)
            if int(got[0][0, 0]) != len(ref[0]):
                print(f"  warning: graph gives {int(got[0][0, 0])} detections, numpy {len(ref[0])} (N={n}, C={c})")
            # candidates that entered NMS, as the reference counts them
            from calib.layouts import decode
            from calib.letterbox import centre_in_content
            from calib.pipeline import select_candidates
            dec = decode(head, "xywh_cls")
            bi, _, _ = select_candidates(dec, 0, cal, cal.raw_thresholds(np.full(c, args.conf)), False)
            bi = bi[: cfg.pre_nms_top_k]
            cand = int(centre_in_content(dec.boxes_xyxy[0][bi], ROW[0]).sum())
            for _ in range(args.warmup):
                s.run(None, feeds)
                if not args.no_numpy:
                    pack_fixed(postprocess(head, "xywh_cls", ROW, cal, args.conf, cfg), cfg.max_det)
            tg, tn = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                s.run(None, feeds)
                t1 = time.perf_counter()
                tg.append(t1 - t0)
                if not args.no_numpy:
                    pack_fixed(postprocess(head, "xywh_cls", ROW, cal, args.conf, cfg), cfg.max_det)
                    tn.append(time.perf_counter() - t1)
            g = float(np.median(tg)) * 1e3
            nn = float(np.median(tn)) * 1e3 if tn else float("nan")
            results[(n, c)] = g
            print(f"{n:>7} {c:>5} {head.nbytes / 2**20:>8.2f} {cand:>6} {len(ref[0]):>5} {g:>9.2f} {nn:>9.2f} {g / nn:>11.2f}",
                  flush=True)
    # growth factors
    print("\ngrowth of the graph time:")
    for c in cs:
        base = results[(ns[0], c)]
        print(f"  C={c:<4} " + "  ".join(f"N={n}: x{results[(n, c)] / base:.2f}" for n in ns))
    for n in ns:
        base = results[(n, cs[0])]
        print(f"  N={n:<6} " + "  ".join(f"C={c}: x{results[(n, c)] / base:.2f}" for c in cs))
    if args.profile:
        n, c = (int(v) for v in args.profile.lower().split("x"))
        cal = calibration(args.calibrator, c)
        model = build_postprocess_graph("xywh_cls", c, cal, args.conf, cfg, num_candidates=n, batch=1)
        head = synthetic_head(n, c, args.share, args.conf, np.random.default_rng(1))
        prof = profile(model.SerializeToString(), {"head": head, "letterbox": ROW}, args.threads)
        print(f"\nwhere the time goes, N={n} C={c} (onnxruntime profiler, kernel time per run by op type):")
        for op, us, share in prof[:8]:
            print(f"  {op:<20} {us / 1e3:>7.3f} ms  {share:>6.1%}")
        rest = sum(us for _, us, _ in prof[8:])
        if rest:
            print(f"  {'(other ops)':<20} {rest / 1e3:>7.3f} ms  {sum(sh for *_, sh in prof[8:]):>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
