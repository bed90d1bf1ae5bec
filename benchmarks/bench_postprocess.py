"""Post-processing routes side by side: raw model vs raw + Python post-processing vs patched model.

    python benchmarks/bench_postprocess.py [--repeats 30,8] [--batches 1,8] [--only fixture|detector]

CPU execution provider, intra_op_num_threads=2, batch 1 and 8, on the yolov8n fixture
(../shared/fixtures/yolov8n_dynamic.onnx, 640x640, 80 classes) and on the project's own
detector (examples/models/detector_xywh_cls.onnx and detector_xywh_obj_cls.onnx, 320x320,
5 classes) where those files exist. Routes, all with identity calibration, score threshold
--conf, IoU 0.7, max_det 300:

  (a) raw      the raw model alone (onnxruntime)
  (b) numpy    (a) + calib.pipeline.postprocess + pack_fixed (detcal's numpy reference:
               threshold, best class, top-k, letterbox mask, class-aware NMS, original px)
  (c) opencv   (a) + decode / threshold / best class in numpy as users write it next to the
               model, then cv2.dnn.NMSBoxesBatched, then back to original px and clip
  (d) tvision  (a) + the same decode in torch, then torchvision.ops.batched_nms, if
               torchvision imports beside the installed torch (else a note says why)
  (e) patched  the patched model (detcal patch: everything above inside the graph)
  (f) cut      the inserted subgraph alone (build_postprocess_graph, the graph cut at the head
               output) run on (a)'s output: the in-graph post-processing cost in isolation

Each repetition runs four units in a random order, drawn anew for every repetition:
(a) followed at once by (b), (c), (d) on (a)'s output; (e); (f) on the latest (a) output; and
(a2) "raw2", a second session of the raw model, whose ratio to (a) is the noise floor of
the measurement (a difference smaller than |raw2/raw - 1| is not resolved). The order
matters: each session has its own thread pool whose workers spin for a while after a run, so
a session that runs right after another one competes with those spinning threads. With a
fixed (or cyclically rotated) order, the raw model always followed the same session and read
10-20% slower than the patched model; a random order spreads this over all routes.
--no-spinning turns spinning off in every session (session.intra_op.allow_spinning=0). Totals of (b)-(d) are (a) + their own
post-processing time of the same repetition; medians over repetitions are reported, with
ratios against (a). Inputs are real-looking letterboxed scenes (examples/detector/scenes.py)
of mixed aspect ratios, one letterbox row per image. "cand" is the number of candidates per
image that entered NMS (mean over the batch): after threshold, best class, top-k and letterbox
mask for detcal's routes; after threshold and best class for opencv/torchvision, which do not
mask the padding. "dets" is the mean number of final detections per image.

Wall-clock medians and process CPU time (all threads of this process) are both printed: on a
shared machine wall time includes waiting for a core, CPU time does not (but includes the
spin-waiting of onnxruntime's thread pool).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from artifact_factory import make_artifact  # noqa: E402
from routes import user_decode  # noqa: E402  (the one copy of the users' decode)
from calib.artifact import identity_map  # noqa: E402
from calib.errors import DetcalError  # noqa: E402
from calib.layouts import decode  # noqa: E402
from calib.letterbox import centre_in_content, letterbox_image  # noqa: E402
from calib.model_info import sha256_file  # noqa: E402
from calib.pipeline import PostprocessConfig, pack_fixed, postprocess, select_candidates  # noqa: E402
from onnx_ops.patch import build_postprocess_graph, patch_model  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "yolov8n_dynamic.onnx"
DETECTORS = (ROOT / "examples" / "models" / "detector_xywh_cls.onnx",
             ROOT / "examples" / "models" / "detector_xywh_obj_cls.onnx")
ROUTES = ("raw", "raw2", "numpy", "opencv", "tvision", "patched", "cut")


SPINNING = True


def session(model, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not SPINNING:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------
# the Python routes users write next to the model
# ------------------------------------------------------------------------------------------
def to_original(xyxy: np.ndarray, row: np.ndarray) -> np.ndarray:
    w, h, sx, sy, px, py = row
    out = (xyxy - np.array([px, py, px, py])) / np.array([sx, sy, sx, sy])
    return np.clip(out, 0, np.array([w, h, w, h]))


def route_opencv(cv2, out, layout, rows, conf, iou, max_det):
    res = []
    for b in range(out.shape[0]):
        boxes, scores, cls = user_decode(out, layout, b, conf)
        # top_k=0: OpenCV applies top_k to the candidates BEFORE NMS; max_det caps the result after
        # it (NMSBoxesBatched returns indices sorted by score, descending)
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(boxes, scores.astype(np.float32), cls.astype(np.int32),
                                                 conf, iou, 1.0, 0), np.int64).reshape(-1)[:max_det]
        xyxy = boxes[idx].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        res.append((to_original(xyxy, rows[b]), scores[idx], cls[idx]))
    return res


def route_torchvision(torch, tv_ops, out, layout, rows, conf, iou, max_det):
    res = []
    t = torch.from_numpy(out)
    for b in range(out.shape[0]):
        if layout == "xywh_cls":
            pred = t[b].T
            cls_scores = pred[:, 4:]
        else:
            pred = t[b]
            cls_scores = pred[:, 5:] * pred[:, 4:5]
        score, cls = cls_scores.max(1)
        keep = score > conf
        box = pred[keep, :4]
        xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
        idx = tv_ops.batched_nms(xyxy, score[keep], cls[keep], iou)[:max_det]
        res.append((to_original(xyxy[idx].numpy(), rows[b]), score[keep][idx].numpy(), cls[keep][idx].numpy()))
    return res


def load_torchvision():
    """(torch, torchvision.ops, None) or (None, None, why not)."""
    try:
        import torch
        import torchvision
        from torchvision import ops
        box = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
        ops.batched_nms(box, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5)   # the C++ op must exist
        torch.set_num_threads(2)
        return torch, ops, None
    except Exception as exc:  # ImportError, or RuntimeError 'operator torchvision::nms does not exist'
        try:
            import torch
            tv = f"torch {torch.__version__}"
        except Exception:
            tv = "torch not importable"
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, None, f"torchvision unavailable beside {tv}: {type(exc).__name__}: {msg}"


def load_opencv():
    try:
        import cv2
        cv2.setNumThreads(2)
        if not hasattr(cv2.dnn, "NMSBoxesBatched"):
            return None, f"opencv {cv2.__version__} has no cv2.dnn.NMSBoxesBatched (needs >= 4.7)"
        return cv2, None
    except Exception as exc:
        return None, f"opencv unavailable ({type(exc).__name__}: {exc}); pip install opencv-python-headless"


# ------------------------------------------------------------------------------------------
# inputs and candidate counts
# ------------------------------------------------------------------------------------------
def scene_batch(batch: int, size: int, seed: int):
    """batch letterboxed scenes -> (x [B,3,S,S] float32 RGB 0..1, rows [B,6] float32)."""
    from examples.detector.scenes import positive_scene

    xs, rows = [], []
    for i in range(batch):
        img, _, _ = positive_scene(seed + i)
        lb, row = letterbox_image(img, (size, size))
        xs.append(lb.transpose(2, 0, 1).astype(np.float32) / 255.0)
        rows.append(row)
    return np.ascontiguousarray(np.stack(xs)), np.stack(rows).astype(np.float32)


def candidates_into_nms(out, layout, rows, conf, cfg: PostprocessConfig):
    """Mean per image: (detcal routes: after threshold, best class, top-k, mask; user routes: after threshold)."""
    dec = decode(out, layout)
    c = dec.scores.shape[2]
    cmap = identity_map(c)
    rthr = cmap.raw_thresholds(np.full(c, conf))
    ours, users = [], []
    for b in range(out.shape[0]):
        box_idx, _, _ = select_candidates(dec, b, cmap, rthr, False)
        users.append(box_idx.size)
        box_idx = box_idx[: cfg.pre_nms_top_k]
        ours.append(int(centre_in_content(dec.boxes_xyxy[b][box_idx], rows[b]).sum()))
    return float(np.mean(ours)), float(np.mean(users))


# ------------------------------------------------------------------------------------------
# one model, one batch size
# ------------------------------------------------------------------------------------------
def bench_one(name, model_path: Path, layout: str, num_classes: int, size: int, batch: int, repeats: int,
              conf: float, args, cv2, tv, tmpdir: Path) -> list[dict] | None:
    cfg = PostprocessConfig(iou_threshold=args.iou, max_det=args.max_det)
    art = make_artifact(num_classes, calibrator="identity", thresholds=conf, layout=layout,
                        sha256=sha256_file(model_path), input_size=(size, size),
                        iou_threshold=args.iou, max_det=args.max_det)
    try:
        patched_path = patch_model(model_path, art, tmpdir / f"{model_path.stem}_{conf}.detcal.onnx")
    except DetcalError as exc:
        # the torch exporter leaves output dims symbolic ('Concatoutput0_dim_1'): pin them from one run
        fixed = static_output_dims(model_path, tmpdir, size)
        print(f"  note: {name}: detcal patch refused the export as written ({str(exc).split(';')[0]}); "
              f"benchmarking a copy with the output's non-batch dims made static")
        model_path = fixed
        art.model["sha256"] = sha256_file(fixed)
        patched_path = patch_model(model_path, art, tmpdir / f"{model_path.stem}_{conf}.detcal.onnx")
    raw_s = session(str(model_path), args.threads)
    inp = raw_s.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] != batch:
        print(f"  {name}: batch axis fixed at {inp.shape[0]}, skipping batch {batch}")
        return None
    pat_s = session(str(patched_path), args.threads)
    raw2_s = session(str(model_path), args.threads)        # a second raw session: the noise floor
    x, rows = scene_batch(batch, size, seed=1000 * batch)
    out0 = raw_s.run(None, {inp.name: x})[0]
    cut = build_postprocess_graph(layout, num_classes, identity_map(num_classes), conf, cfg,
                                  num_candidates=out0.shape[2] if layout == "xywh_cls" else out0.shape[1])
    cut_s = session(cut.SerializeToString(), args.threads)
    cmap = identity_map(num_classes)

    def run_numpy(out):
        return pack_fixed(postprocess(out, layout, rows, cmap, conf, cfg), cfg.max_det)

    routes = {"numpy": run_numpy}
    if cv2 is not None:
        routes["opencv"] = lambda out: route_opencv(cv2, out, layout, rows, conf, args.iou, args.max_det)
    if tv[0] is not None:
        routes["tvision"] = lambda out: route_torchvision(tv[0], tv[1], out, layout, rows, conf, args.iou, args.max_det)

    # detections per route (sanity: the routes do the same job)
    dets = {"numpy": float(np.mean(run_numpy(out0)["num_dets"]))}
    for r in ("opencv", "tvision"):
        if r in routes:
            dets[r] = float(np.mean([len(s) for _, s, _ in routes[r](out0)]))
    pat0 = pat_s.run(None, {inp.name: x, "letterbox": rows})
    dets["patched"] = float(np.mean(pat0[0]))
    dets["cut"] = float(np.mean(cut_s.run(None, {"head": out0, "letterbox": rows})[0]))
    dets["raw"] = float("nan")
    cand_ours, cand_users = candidates_into_nms(out0, layout, rows, conf, cfg)

    for _ in range(args.warmup):
        out = raw_s.run(None, {inp.name: x})[0]
        for fn in routes.values():
            fn(out)
        pat_s.run(None, {inp.name: x, "letterbox": rows})
        raw2_s.run(None, {inp.name: x})
        cut_s.run(None, {"head": out, "letterbox": rows})

    wall = {r: [] for r in ROUTES}
    cpu = {r: [] for r in ROUTES}
    post_wall = {r: [] for r in ROUTES}
    last_out = [out0]

    def unit_raw():
        t0, p0 = time.perf_counter(), time.process_time()
        out = raw_s.run(None, {inp.name: x})[0]
        t1, p1 = time.perf_counter(), time.process_time()
        wall["raw"].append(t1 - t0)
        cpu["raw"].append(p1 - p0)
        for r, fn in routes.items():
            s, q = time.perf_counter(), time.process_time()
            fn(out)
            e, f = time.perf_counter(), time.process_time()
            post_wall[r].append(e - s)
            wall[r].append(t1 - t0 + e - s)
            cpu[r].append(p1 - p0 + f - q)
        last_out[0] = out

    def unit_session(route, sess, feeds):
        def run():
            s, q = time.perf_counter(), time.process_time()
            sess.run(None, feeds() if callable(feeds) else feeds)
            e, f = time.perf_counter(), time.process_time()
            wall[route].append(e - s)
            cpu[route].append(f - q)
        return run

    units = [unit_raw,
             unit_session("raw2", raw2_s, {inp.name: x}),
             unit_session("patched", pat_s, {inp.name: x, "letterbox": rows}),
             unit_session("cut", cut_s, lambda: {"head": last_out[0], "letterbox": rows})]
    order_rng = np.random.default_rng(batch)
    for _ in range(repeats):
        for k in order_rng.permutation(len(units)):   # a fresh random order every repetition
            units[k]()
    post_wall["cut"] = wall["cut"]
    a_med = float(np.median(wall["raw"]))
    post_wall["patched"] = [v - a_med for v in wall["patched"]]

    med = lambda v: float(np.median(v)) * 1e3 if v else float("nan")  # noqa: E731
    a_wall, a_cpu = med(wall["raw"]), med(cpu["raw"])
    rows_out = []
    for r in ROUTES:
        if r == "cut":
            total, tcpu = float("nan"), float("nan")
        elif r in ("raw", "raw2") or wall[r]:
            total, tcpu = med(wall[r]), med(cpu[r])
        else:
            continue
        post = 0.0 if r in ("raw", "raw2") else med(post_wall[r])
        cand = cand_users if r in ("opencv", "tvision") else (cand_ours if r not in ("raw", "raw2") else float("nan"))
        rows_out.append(dict(model=name, batch=batch, route=r, total=total, post=post, ratio=total / a_wall,
                             cpu=tcpu, cpu_ratio=tcpu / a_cpu, cut_cpu=med(cpu["cut"]) if r == "cut" else float("nan"),
                             cand=cand, dets=dets.get(r, float("nan"))))
    return rows_out


def static_output_dims(model_path: Path, tmpdir: Path, size: int) -> Path:
    """A copy of the model whose first output has its non-batch dims fixed to what one run gives."""
    import onnx

    m = onnx.load(str(model_path))
    s = session(str(model_path), 1)
    out = s.run(None, {s.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)})[0]
    for d, v in zip(list(m.graph.output[0].type.tensor_type.shape.dim)[1:], out.shape[1:]):
        d.Clear()
        d.dim_value = int(v)
    path = tmpdir / f"{model_path.stem}_static.onnx"
    onnx.save(m, str(path))
    return path


def print_table(rows: list[dict], conf: float, repeats: int) -> None:
    m, b = rows[0]["model"], rows[0]["batch"]
    print(f"\n{m}  batch {b}  conf {conf}  ({repeats} runs, medians)")
    print(f"  {'route':<8} {'total ms':>9} {'post ms':>8} {'x raw':>6} {'CPU ms':>8} {'CPU x raw':>9} {'cand/img':>9} {'dets/img':>9}")
    for r in rows:
        if r["route"] == "cut":
            print(f"  {'cut':<8} {'-':>9} {r['post']:>8.2f} {'-':>6} {r['cut_cpu']:>8.2f} {'-':>9} {r['cand']:>9.1f} {r['dets']:>9.1f}")
            continue
        cand = "-" if np.isnan(r["cand"]) else f"{r['cand']:.1f}"
        dets = "-" if np.isnan(r["dets"]) else f"{r['dets']:.1f}"
        post = "-" if r["route"] in ("raw", "raw2") else f"{r['post']:.2f}"
        print(f"  {r['route']:<8} {r['total']:>9.2f} {post:>8} {r['ratio']:>6.3f} {r['cpu']:>8.2f} {r['cpu_ratio']:>9.3f} {cand:>9} {dets:>9}")
    by = {r["route"]: r for r in rows}
    raw, cut = by["raw"]["total"], by["cut"]["post"]
    noise = abs(by["raw2"]["ratio"] - 1)
    print(f"  patched x raw from its parts, (raw + cut) / raw = {(raw + cut) / raw:.3f}; "
          f"noise floor |raw2/raw - 1| = {noise:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", default=str(FIXTURE), help="Ultralytics xywh_cls export with a dynamic batch axis")
    ap.add_argument("--detectors", default=",".join(str(p) for p in DETECTORS),
                    help="comma-separated project detector exports (skipped where absent)")
    ap.add_argument("--only", choices=("fixture", "detector"), help="run one family only")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--repeats", default="30,8", help="timed runs per batch size, comma-separated, matched to --batches")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--conf", default="0.25",
                    help="score thresholds for the fixture, comma-separated (e.g. 0.25,0.1 for a heavy NMS load)")
    ap.add_argument("--detector-conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--no-spinning", action="store_true", help="onnxruntime worker threads do not spin-wait")
    args = ap.parse_args(argv)
    global SPINNING
    SPINNING = not args.no_spinning

    batches = [int(v) for v in args.batches.split(",")]
    reps = [int(v) for v in args.repeats.split(",")]
    reps = (reps + [reps[-1]] * len(batches))[: len(batches)]
    cv2, cv_note = load_opencv()
    torch, tv_ops, tv_note = load_torchvision()
    print(f"onnxruntime {ort.__version__} CPUExecutionProvider, intra_op_num_threads={args.threads}, "
          f"spinning {'on' if SPINNING else 'off'}, numpy {np.__version__}, os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"opencv: {cv_note or cv2.__version__ + ' (cv2.dnn.NMSBoxesBatched)'}")
    print(f"torchvision: {tv_note or 'torchvision.ops.batched_nms'}")
    print(f"identity calibration, IoU {args.iou}, max_det {args.max_det}, pre-NMS top-k 3000; "
          "ratios are against (a) raw of the same repetition set")

    jobs = []
    if args.only in (None, "fixture"):
        fx = Path(args.fixture)
        if fx.exists():
            for conf in (float(c) for c in args.conf.split(",")):
                jobs.append((f"yolov8n fixture ({fx.name}, 640, 80 cls)", fx, "xywh_cls", 80, 640, conf))
        else:
            print(f"\nSKIP fixture: {fx} not found (the fixtures live in ../shared/fixtures beside the repo)")
    if args.only in (None, "detector"):
        for p in (Path(s) for s in args.detectors.split(",") if s):
            if p.exists():
                layout = "xywh_obj_cls" if "obj" in p.stem else "xywh_cls"
                jobs.append((f"project detector ({p.name}, 320, 5 cls)", p, layout, 5, 320, args.detector_conf))
            else:
                print(f"\nSKIP project detector: {p} not found (train it: python -m examples.detector.train)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, layout, nc, size, conf in jobs:
            for batch, rep in zip(batches, reps):
                rows = bench_one(name, path, layout, nc, size, batch, rep, conf, args, cv2, (torch, tv_ops), Path(tmp))
                if rows:
                    print_table(rows, conf, rep)
                    results.extend(rows)
    print("\ntotal = median wall ms of the route per repetition (raw run + its post-processing); post = median "
          "post-processing ms alone (patched: patched - raw of the same repetition, noisy); cut = the inserted "
          "subgraph alone on the raw output. Targets: patched x raw <= 1.03; in-graph post-processing "
          "(cut) faster than every Python route's post ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
