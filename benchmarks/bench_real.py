"""Post-processing routes on real models and real images, interleaved in one process (issue 11).

    python benchmarks/bench_real.py [--runs 200] [--reps 2] [--batches 1,8]
                                    [--only real|real320|fixture320|decoded|project]
                                    [--no-whole | --whole-only] [--whole-runs N] [--whole-sessions S]

The shared folder is ../shared beside the repository, or $DETCAL_SHARED where set (a git
worktree elsewhere). Models: the real Ultralytics YOLOv8n int8 export (../shared/real/models/yolov8n_coco_int8.onnx,
[1,3,640,640] -> [1,84,8400], batch fixed at 1) on 40 real COCO images
(../shared/real/coco_train/images/val, the first 40 photos with objects by name; centred
letterbox 640, pad 114, RGB, /255); the same export rebuilt for 320 (resized_export: its anchor
grid for 320, same weights; [1,3,320,320] -> [1,84,2100], letterbox 320) on the same images; the
project's own detectors (examples/models/detector_xywh_cls.onnx, detector_xywh_obj_cls.onnx, 320,
5 classes) on 40 generated scenes
(examples/detector/scenes.py), and the real multi-output heads that detcal decodes in the graph
(YOLOX-nano 416 yolox_raw, PicoDet-S 320 gfl_multilevel; their own preprocessing; batch 1, post-
processing alone: the patched model's inserted part cut out with onnx.utils.Extractor). Each is
skipped with a message where its files are absent.

Two measurements per model and batch size, each `--reps` repetitions of `--runs` runs:

  post    the post-processing alone on the saved raw head outputs (run i uses the i-th batch of
          images, cyclically): numpy (calib.pipeline.postprocess: detcal's reference), opencv
          (cv2.dnn.NMSBoxesBatched, max_det after NMS), ortx (onnxruntime-extensions' YOLOv8
          steps; it rejects batch > 1, so a batch of 8 is 8 calls), detcal-id (the inserted graph,
          identity calibration, uniform threshold), detcal-fit (temperature calibration,
          per-class thresholds, as `detcal fit` writes them) and detcal-box (the box-aware platt_box
          map that fit's auto chose for the real YOLOv8n: a fitted-like one, seeded, at the 0.911
          fit certified there), detcal-fitted (real models: the artifact `detcal fit` itself writes for
          the model on the real val split, auto calibrator, 1% of negative images; cached; --no-fitted
          leaves it out), the inserted graph built by onnx_ops.patch.build_postprocess_graph as
          `detcal patch` builds it for the model (static batch 1 where the export fixes it, as
          both real YOLOv8n exports do; dynamic batch for every other batch size).
  whole   the whole models: raw, raw2 (a second session of the raw model: the noise floor),
          patched-id, patched-fit, patched-box, patched-fitted (detcal patch) and ortx-whole (the raw model + ortx's
          steps, batch 1 only); with --whole-sessions S each of raw, raw2, patched-* is S sessions of its
          model, a run's time their mean (one session's memory placement moves a 70-100 ms model by
          up to +-1.5%). Also paired ratios (the median over runs of route / raw of the same run) and
          part-id / part-fit / part-box: the patched model's inserted part alone, timed right after
          the raw model has handed it the head tensors it reads (1 + part / raw: the whole-model ratio from
          the parts). Skipped for a batch size the model's batch axis does not allow.

Within a run the routes go in a fresh random order. Every session: CPU provider,
intra_op_num_threads=--threads (2), inter_op 1, session.intra_op.allow_spinning=0 (unless
--spinning). Reported per repetition: the median ms of each route, the load average
(os.getloadavg(), 1 min) at its start and end, ratios of medians against detcal-fit / raw of the
same repetition. Noise floor: the spread between repetitions (max over routes of
|rep_i / rep_j - 1|) and, for whole models, |raw2 / raw - 1|. Agreement: share of the numpy
reference's detections that each route reproduces (same class, IoU >= 0.99) and the largest
score difference (detcal-fit against the numpy reference with the same calibration).

Score threshold 0.25 (detcal-fit: per-class thresholds drawn in 0.2..0.35, seeded; temperature
T drawn in 0.6..2.0, seeded), IoU 0.7, max_det 300, pre-NMS top-k 3000.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import routes  # noqa: E402
from artifact_factory import make_artifact  # noqa: E402
from calib.artifact import identity_map  # noqa: E402
from calib.images import read_image_rgb  # noqa: E402
from calib.model_info import sha256_file  # noqa: E402
from calib.artifact import PostprocessConfig  # noqa: E402
from calib.artifact import Preprocess  # noqa: E402
from calib.preprocess import preprocess_image  # noqa: E402
from onnx_ops.patch import build_postprocess_graph, patch_model  # noqa: E402

SHARED = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared")).resolve()   # ../shared beside the repo
REAL_MODEL = SHARED / "real" / "models" / "yolov8n_coco_int8.onnx"
REAL_IMAGES = SHARED / "real" / "coco_train" / "images" / "val"
# The second model is a YOLO11n int8 at 320 ([1,84,2100]), which ../shared/real does not have. Its
# stand-in: the real YOLOv8n int8 rebuilt for 320 (resized_export.at_input_size: the same trained weights,
# the anchor grid for 320), a really trained [1,84,2100] head on the same images. Also the Ultralytics
# dynamic-shape fixture at 320 (a real export topology, random weights: its scores hardly depend on the
# image, so only the shapes and the cost per run are like a trained model's).
FIXTURE_DYNAMIC = SHARED / "fixtures" / "yolov8n_dynamic.onnx"
# the real multi-output heads decoded in the graph (onnx_ops.decode_graph), with their preprocessing
REAL_DECODED = {
    "yolox_nano_coco_416.onnx": Preprocess(pad_value=114, channel_order="BGR", placement="top_left", scale="none"),
    "picodet_s_coco_320.onnx": Preprocess(pad_value=0, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                                          scale="none"),
}
PROJECT_MODELS = (ROOT / "examples" / "models" / "detector_xywh_cls.onnx",
                  ROOT / "examples" / "models" / "detector_xywh_obj_cls.onnx")
CONF, IOU, MAX_DET = 0.25, 0.7, 300
SPINNING = False


def session(model, threads: int = 2, profile_prefix: str | None = None) -> ort.InferenceSession:
    """CPU session, intra_op_num_threads=threads, spinning off unless --spinning."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3            # no per-initializer warnings from exports that list weights as inputs
    if not SPINNING:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
def real_images(n: int = 40) -> list[Path]:
    """The first n photos with objects (no '_bg' crop) of the real val split, by name."""
    files = sorted(p for p in REAL_IMAGES.glob("*.jpg") if "_bg" not in p.stem)
    return files[:n]


def real_inputs(size, n: int = 40, pre: Preprocess = Preprocess()) -> tuple[np.ndarray, np.ndarray]:
    """n real images -> (x [n, 3, H, W] float32, rows [n, 6] float32); default: centred letterbox pad 114,
    RGB, /255. size: S or (H, W)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    xs, rows = [], []
    for p in real_images(n):
        x, row = preprocess_image(read_image_rgb(p), hw, pre)
        xs.append(x.reshape(3, *hw))
        rows.append(row)
    return np.stack(xs).astype(np.float32), np.stack(rows).astype(np.float32)


def scene_inputs(size: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """n generated deployment scenes, letterboxed like the real images."""
    from examples.detector.scenes import positive_scene

    xs, rows = [], []
    for i in range(n):
        img, _, _ = positive_scene(1000 + i)
        x, row = preprocess_image(img, (size, size), Preprocess())
        xs.append(x.reshape(3, size, size))
        rows.append(row)
    return np.stack(xs).astype(np.float32), np.stack(rows).astype(np.float32)


def raw_outputs(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The raw head output for every image, one image per run (works for a batch fixed at 1)."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(x.shape[0])])


def real_at_320(tmp: Path) -> Path:
    """The real YOLOv8n int8 export rebuilt for 320 px (resized_export), written under tmp."""
    import onnx
    from resized_export import at_input_size

    out = tmp / "yolov8n_coco_int8_at320.onnx"
    onnx.save(at_input_size(onnx.load(str(REAL_MODEL)), 320), str(out))
    return out


def batch_axis_ok(sess: ort.InferenceSession, batch: int) -> bool:
    d = sess.get_inputs()[0].shape[0]
    return not isinstance(d, int) or d == batch


# ------------------------------------------------------------------------------------------
# artifacts
# ------------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One calibration of one model: its map, thresholds and patched / cut graphs."""

    name: str
    artifact: object
    cut: ort.InferenceSession | None = None
    patched: ort.InferenceSession | None = None
    patched_path: Path | None = None

    @property
    def cmap(self):
        return self.artifact.calibration

    @property
    def thresholds(self):
        return self.artifact.score_thresholds


def fitted_like_box_map(c: int, size: int, rng: np.random.Generator):
    """A BoxPlattMap in the ranges of the one `detcal fit` made for the real YOLOv8n (a 1.1..1.5, b 0.2..0.8,
    |w| about 0.18, clip 4, feature means / spreads of COCO boxes), seeded."""
    from calib.artifact import BoxPlattMap

    return BoxPlattMap(rng.uniform(1.1, 1.5, c), rng.uniform(0.2, 0.8, c), rng.normal(0, 0.22, (c, 3)),
                       [-4.0, -0.16, 0.36], [2.0, 0.7, 0.25], 4.0, (size, size))


FIT_CACHE = Path(tempfile.gettempdir()) / "detcal_bench_real_fit"
FIT_ARGS = ("--split", "val", "--max-negative-rate", "0.01", "--quiet")


def fitted_artifact(model_path: Path, data: Path | None = None, cache: Path | None = None):
    """The artifact `detcal fit` writes for this model on the data set's val split (default: the real
    COCO one; auto calibrator, certified at 1% of negative images): what a user of the model gets, not a
    stand-in. Cached by the model's and the data YAML's sha256 under `cache` (default: the temporary
    folder; a fit takes 0.5-2 min). None where the data set is absent."""
    import subprocess

    from calib.artifact import load_artifact

    data = Path(data) if data is not None else REAL_IMAGES.parents[1] / "data.yaml"
    if not data.exists():
        return None
    key = f"{model_path.stem}_{sha256_file(model_path)[:12]}_{sha256_file(data)[:8]}"
    out = Path(cache if cache is not None else FIT_CACHE) / key / "calibration.json"
    if not out.exists():
        print(f"  detcal fit {model_path.name} on {data} {' '.join(FIT_ARGS)} (cached in {out.parent}) ...",
              flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", "import sys; from calib.cli import main; sys.exit(main())", "fit",
               "--model", str(model_path), "--data", str(data), "--out", str(out), *FIT_ARGS]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return load_artifact(out)


def make_variants(model_path: Path, layout: str, c: int, size: int, with_fitted: bool = False) -> dict[str, object]:
    """{'id', 'fit', 'box'} (and 'fitted': `detcal fit`'s own artifact on the real data, where asked for and
    present) -> Artifact, all with the same NMS settings."""
    sha = sha256_file(model_path)
    rng = np.random.default_rng(11)
    fit_thr = rng.uniform(0.2, 0.35, c)
    nms = dict(iou_threshold=IOU, max_det=MAX_DET)
    out = {
        "id": make_artifact(c, calibrator="identity", thresholds=CONF, layout=layout, sha256=sha,
                            input_size=(size, size), **nms),
        "fit": make_artifact(c, calibrator="temperature", thresholds=fit_thr, layout=layout, sha256=sha,
                             input_size=(size, size), seed=11, **nms),
        # box-aware (platt_box), what `detcal fit`'s auto chose for the real YOLOv8n: a fitted-like map (its
        # a, b, w, feature standardisation in the fitted map's ranges) at the level fit certified there (0.911)
        "box": make_artifact(c, calibrator=fitted_like_box_map(c, size, rng), thresholds=np.full(c, 0.911),
                             layout=layout, sha256=sha, input_size=(size, size), **nms),
    }
    fitted = fitted_artifact(model_path) if with_fitted else None
    if fitted is not None:
        # the same NMS settings as the other variants, so that only the calibration and thresholds differ
        fitted.nms = dataclasses.replace(fitted.nms, **nms)
        out["fitted"] = fitted
    return out


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def time_interleaved(units: dict, runs: int, reps: int, seed: int, base: str | None = None) -> list[dict]:
    """units {route: fn(i)} -> per repetition {route: median ms, '_load': (start, end)}; run i calls every
    route once with argument i, in a fresh random order. base: also '_paired' {route: median over runs
    of t_route(i) / t_base(i)}: the routes of one run are back to back on the same input, so drifts of
    the machine between runs cancel (the estimator for ratios near 1, e.g. patched over raw)."""
    rng = np.random.default_rng(seed)
    names = list(units)
    out = []
    for _ in range(reps):
        start = load()
        t = {r: [] for r in names}
        for i in range(runs):
            for k in rng.permutation(len(names)):
                r = names[k]
                s = time.perf_counter()
                got = units[r](i)
                # a unit that times itself returns its seconds (inserted_parts_units: only the part)
                t[r].append(got if isinstance(got, float) else time.perf_counter() - s)
        med = {r: float(np.median(v)) * 1e3 for r, v in t.items()}
        med["_load"] = (start, load())
        if base is not None:
            tb = np.asarray(t[base])
            med["_paired"] = {r: float(np.median(np.asarray(v) / tb)) for r, v in t.items()}
        out.append(med)
    return out


def spread(reps: list[dict], names) -> float:
    """Noise floor: max over routes of |rep_i / rep_j - 1| (the larger over the smaller)."""
    worst = 0.0
    for r in names:
        v = [m[r] for m in reps]
        worst = max(worst, max(v) / min(v) - 1)
    return worst


def print_reps(title: str, reps: list[dict], names, base: str) -> None:
    print(f"\n{title}")
    head = "  " + f"{'route':<12}" + "".join(f"{'rep ' + str(i + 1) + ' ms':>11}{'x ' + base:>13}" for i in range(len(reps)))
    print(head)
    for r in names:
        cells = "".join(f"{m[r]:>11.3f}{m[r] / m[base]:>13.3f}" for m in reps)
        print(f"  {r:<12}{cells}")
    print("  load average (1 min) start/end: " + "; ".join(f"rep {i + 1}: {m['_load'][0]} / {m['_load'][1]}"
                                                        for i, m in enumerate(reps)))
    print(f"  noise floor (spread between repetitions, max over routes): {spread(reps, names):.3f}")


# ------------------------------------------------------------------------------------------
# one model
# ------------------------------------------------------------------------------------------
def bench_model(name, model_path: Path, layout: str, c: int, size: int, inputs, args, cv2, ppp, tmp: Path, report: dict):
    import onnx

    x, rows = inputs
    raw_s = session(str(model_path), args.threads)
    heads = raw_outputs(raw_s, x)                                  # [n, ...] saved raw outputs
    n_img = heads.shape[0]
    n_cand = heads.shape[2] if layout == "xywh_cls" else heads.shape[1]
    cfg = PostprocessConfig(iou_threshold=IOU, max_det=MAX_DET)
    arts = make_variants(model_path, layout, c, size, with_fitted=name.startswith("real") and not args.no_fitted)
    variants = {}
    fixed_batch = raw_s.get_inputs()[0].shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None

    def cut_session(art, batch):
        """The inserted graph as `detcal patch` builds it for this model: a static batch where the model
        fixes it (the real YOLOv8n exports: batch 1), else a dynamic one (and for other batch sizes)."""
        dim = batch if batch == fixed_batch else "batch"
        g = build_postprocess_graph(layout, c, art.calibration, art.score_thresholds, cfg, num_candidates=n_cand,
                                    batch=dim)
        return session(g.SerializeToString(), args.threads)

    for key, art in arts.items():
        pp = patch_model(model_path, art, tmp / f"{model_path.stem}.{key}.detcal.onnx")
        variants[key] = Variant(key, art, None, session(str(pp), args.threads), Path(pp))
    ortx_cut = ortx_whole = None
    if ppp is not None and layout == "xywh_cls":
        ortx_cut = session(routes.ortx_cut_model(ppp, c, n_cand, CONF, IOU, MAX_DET).SerializeToString(), args.threads)
        ortx_whole = session(routes.ortx_model(ppp, onnx.load(str(model_path)), c, CONF, IOU, MAX_DET).SerializeToString(),
                             args.threads)
    in_name = raw_s.get_inputs()[0].name
    idm = identity_map(c)

    for batch in args.batches:
        for v in variants.values():
            v.cut = cut_session(v.artifact, batch)
        nb = n_img // batch
        hb = [heads[i * batch:(i + 1) * batch] for i in range(nb)]
        rb = [rows[i * batch:(i + 1) * batch] for i in range(nb)]
        xb = [x[i * batch:(i + 1) * batch] for i in range(nb)]

        def ortx_post(i):
            h, r = hb[i % nb], rb[i % nb]
            return [routes.ortx_to_dets(ortx_cut.run(None, {"head": h[j:j + 1]})[0], r[j]) for j in range(h.shape[0])]

        def cut_run(v):
            return lambda i: v.cut.run(None, {"head": hb[i % nb], "letterbox": rb[i % nb]})

        post_units = {
            "numpy": lambda i: routes.route_numpy(hb[i % nb], layout, rb[i % nb], idm, CONF, cfg),
            "detcal-id": cut_run(variants["id"]),
            "detcal-fit": cut_run(variants["fit"]),
            "detcal-box": cut_run(variants["box"]),
        }
        if "fitted" in variants:
            post_units["detcal-fitted"] = cut_run(variants["fitted"])
        if cv2 is not None:
            post_units["opencv"] = lambda i: routes.route_opencv(cv2, hb[i % nb], layout, rb[i % nb], CONF, IOU, MAX_DET)
        if ortx_cut is not None:
            post_units["ortx"] = ortx_post

        entry = report.setdefault(name, {}).setdefault(str(batch), {})
        if not args.whole_only:
            post_alone(name, batch, post_units, variants, hb, rb, nb, layout, cfg, args, entry)
        if args.no_whole or not batch_axis_ok(raw_s, batch):
            if not args.no_whole:
                print(f"  whole models: batch axis of {model_path.name} is fixed at {raw_s.get_inputs()[0].shape[0]}, "
                      f"batch {batch} not measured")
            continue
        whole_models(name, batch, raw_s, model_path, variants, ortx_whole, in_name, xb, rb, nb, args, entry)


def post_alone(name, batch, post_units, variants, hb, rb, nb, layout, cfg, args, entry: dict) -> None:
    """The post-processing routes alone on the saved raw outputs: agreement (one untimed pass), then
    interleaved timing; fills entry['post'], ['post_noise'], ['agreement']."""
    # agreement over all batches (one pass, untimed)
    agree = {}
    ref = [d for i in range(nb) for d in post_units["numpy"](i)]
    got = {"detcal-id": [d for i in range(nb) for d in routes.from_fixed(post_units["detcal-id"](i))]}
    for r in ("opencv", "ortx"):
        if r in post_units:
            got[r] = [d for i in range(nb) for d in post_units[r](i)]
    for r, g in got.items():
        agree[r] = routes.agreement(g, ref)
    for key in [k for k in variants if k != "id"]:
        v = variants[key]
        ref_v = [d for i in range(nb) for d in routes.route_numpy(hb[i], layout, rb[i], v.cmap, v.thresholds, cfg)]
        agree[f"detcal-{key} (vs numpy, same calibration)"] = routes.agreement(
            [d for i in range(nb) for d in routes.from_fixed(post_units[f"detcal-{key}"](i))], ref_v)

    for _ in range(args.warmup):
        for fn in post_units.values():
            fn(0)
    post_names = [r for r in ("numpy", "opencv", "ortx", "detcal-id", "detcal-fit", "detcal-box", "detcal-fitted")
                  if r in post_units]
    reps = time_interleaved(post_units, args.runs, args.reps, seed=batch)
    title = f"{name}  batch {batch}  post-processing alone on saved raw outputs ({args.runs} runs x {args.reps} reps, medians)"
    if batch > 1 and "ortx" in post_units:
        title += f"; ortx: {batch} calls of batch 1"
    print_reps(title, reps, post_names, "detcal-fit")
    print(f"  detcal-fit / detcal-id: " + ", ".join(f"{m['detcal-fit'] / m['detcal-id']:.3f}" for m in reps)
          + "; detcal-box / detcal-id: " + ", ".join(f"{m['detcal-box'] / m['detcal-id']:.3f}" for m in reps)
          + ("; detcal-fitted / detcal-id: " + ", ".join(f"{m['detcal-fitted'] / m['detcal-id']:.3f}" for m in reps)
             if "detcal-fitted" in post_units else ""))
    if "fitted" in variants:
        v = variants["fitted"]
        print(f"  detcal-fitted: {type(v.cmap).__name__} ({v.artifact.selection.get('winner', '')}), thresholds "
              f"{np.min(v.thresholds):.3f}..{np.max(v.thresholds):.3f}, as `detcal fit` wrote it")
    print("  agreement with numpy (share of numpy dets matched at IoU>=0.99 same class; extra; max |score diff|; dets):")
    for r, a in agree.items():
        print(f"    {r:<40} matched {a['matched']:.3f}  extra {a['extra']:.3f}  score diff max {a['score_diff_max']:.2e}  "
              f"dets {a['n_got']} vs {a['n_ref']}")
    entry["post"] = reps
    entry["post_noise"] = spread(reps, post_names)
    entry["agreement"] = agree


def whole_models(name, batch, raw_s, model_path, variants, ortx_whole, in_name, xb, rb, nb, args, entry: dict) -> None:
    """raw, raw2, patched-id, patched-fit, patched-box (and ortx-whole at batch 1), interleaved; fills entry['whole']."""
    s_n = max(1, args.whole_sessions)

    def sessions(path, first=None):
        made = [first] if first is not None else []
        return made + [session(str(path), args.threads) for _ in range(s_n - len(made))]

    def averaged(sess_list, feed):
        """One run of every session of a route (a fresh random order), the mean seconds: a session's memory
        placement alone moves a 70-100 ms model by up to +-1.5%, so one session per route cannot resolve 1%."""
        def run(i):
            total = 0.0
            for k in np.random.default_rng(i).permutation(len(sess_list)):
                f = feed(i)
                start = time.perf_counter()
                sess_list[k].run(None, f)
                total += time.perf_counter() - start
            return total / len(sess_list)
        return run

    image = lambda i: {in_name: xb[i % nb]}                                    # noqa: E731
    patched = lambda i: {in_name: xb[i % nb], "letterbox": rb[i % nb]}          # noqa: E731
    whole_units = {
        "raw": averaged(sessions(model_path, raw_s), image),
        "raw2": averaged(sessions(model_path), image),
        "patched-id": averaged(sessions(variants["id"].patched_path, variants["id"].patched), patched),
        "patched-fit": averaged(sessions(variants["fit"].patched_path, variants["fit"].patched), patched),
        "patched-box": averaged(sessions(variants["box"].patched_path, variants["box"].patched), patched),
    }
    if "fitted" in variants:
        whole_units["patched-fitted"] = averaged(sessions(variants["fitted"].patched_path, variants["fitted"].patched),
                                                 patched)
    if ortx_whole is not None and batch == 1:
        whole_units["ortx-whole"] = lambda i: ortx_whole.run(None, {in_name: xb[i % nb]})
    whole_units.update(inserted_parts_units(model_path, variants, in_name, xb, rb, nb, args.threads))
    for _ in range(args.warmup):
        for fn in whole_units.values():
            fn(0)
    runs = args.whole_runs if args.whole_runs else args.runs
    reps_w = time_interleaved(whole_units, runs, args.reps, seed=100 + batch, base="raw")
    names_w = list(whole_units)
    print_reps(f"{name}  batch {batch}  whole models ({runs} runs x {args.reps} reps, medians"
               + (f"; raw, raw2, patched-*: the mean of {s_n} sessions each per run" if s_n > 1 else "") + ")",
               reps_w, names_w, "raw")
    print("  noise floor |raw2/raw - 1|: " + ", ".join(f"{abs(m['raw2'] / m['raw'] - 1):.3f}" for m in reps_w))
    print("  paired (median over runs of route / raw of the same run): "
          + "; ".join(f"rep {i + 1}: " + ", ".join(f"{r} {m['_paired'][r]:.4f}" for r in names_w if r != "raw")
                      for i, m in enumerate(reps_w)))
    print("  paired noise floor |raw2/raw - 1|: " + ", ".join(f"{abs(m['_paired']['raw2'] - 1):.4f}" for m in reps_w))
    parts = [r for r in names_w if r.startswith("part-") and r != "part-null"]
    if parts:
        print("  from the parts (1 + the inserted part alone, on the model's own head tensors of the same run, "
              "over raw, paired; in brackets less part-null, the second session call's own cost): " + "; ".join(
                  f"rep {i + 1}: " + ", ".join(
                      f"patched-{r[5:]} {1 + m['_paired'][r]:.4f} [{1 + m['_paired'][r] - m['_paired'].get('part-null', 0):.4f}]"
                      for r in parts) for i, m in enumerate(reps_w)))
    entry["whole"] = reps_w


def inserted_parts_units(model_path: Path, variants, in_name: str, xb, rb, nb: int, threads: int) -> dict:
    """{'part-<variant>': fn(i) -> seconds}: each patched model's inserted part alone (inserted_part),
    timed right after the raw model (with the head tensors the part reads as extra outputs) has run
    on the same images and handed it those tensors: as inside the patched model, the part's input
    was just written and the model's own work has just been through the caches. What the patched
    model adds to a raw run, without the profiler's per-node overhead (plus one session call's own
    overhead, so a little more)."""
    import onnx

    from calib.artifact import LETTERBOX_INPUT

    parts, wanted = {}, set()
    for key, v in variants.items():
        pm = onnx.load(str(v.patched_path))
        heads_in = sorted({i for n in pm.graph.node if n.name.startswith("detcal/") for i in n.input
                           if i and not i.startswith("detcal/") and i != LETTERBOX_INPUT})
        parts[key] = (session(inserted_part(pm, heads_in).SerializeToString(), threads), heads_in)
        wanted.update(heads_in)
    raw = onnx.load(str(model_path))
    have = {o.name for o in raw.graph.output}
    raw.graph.output.extend([onnx.ValueInfoProto(name=t) for t in sorted(wanted - have)])
    names = sorted(wanted)
    tapped = session(raw.SerializeToString(), threads)

    def unit(s, heads_in):
        def run(i):
            head = dict(zip(names, tapped.run(names, {in_name: xb[i % nb]})))
            feed = {**{t: head[t] for t in heads_in}, LETTERBOX_INPUT: rb[i % nb]}
            start = time.perf_counter()
            s.run(None, feed)
            return time.perf_counter() - start
        return run

    units = {f"part-{key}": unit(s, h) for key, (s, h) in parts.items()}
    # part-null: a session call with the same inputs and four outputs and nothing inside (Identity of
    # the letterbox rows): what handing the head tensors to a second session costs by itself
    from onnx import TensorProto, helper
    null_part = parts[next(iter(parts))][0]
    ins = [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, None) for i in null_part.get_inputs()]
    null = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", [LETTERBOX_INPUT], [f"out{j}"]) for j in range(4)], "null", ins,
        [helper.make_tensor_value_info(f"out{j}", TensorProto.FLOAT, None) for j in range(4)]),
        opset_imports=[helper.make_opsetid("", 17)])
    units["part-null"] = unit(session(null.SerializeToString(), threads), [i.name for i in null_part.get_inputs()
                                                                          if i.name != LETTERBOX_INPUT])
    return units


# ------------------------------------------------------------------------------------------
# heads decoded in the graph (YOLOX, PicoDet): the inserted part cut out of the patched model
# ------------------------------------------------------------------------------------------
def inserted_part(patched, head_outputs: list[str]):
    """The patched model's inserted part alone: inputs the source model's head outputs and `letterbox`,
    outputs the patched model's (onnx.utils.Extractor on the shape-inferred model)."""
    import onnx
    from onnx.utils import Extractor

    from calib.artifact import LETTERBOX_INPUT, PATCHED_OUTPUTS

    part = Extractor(onnx.shape_inference.infer_shapes(patched)).extract_model(
        list(head_outputs) + [LETTERBOX_INPUT], list(PATCHED_OUTPUTS))
    backed = {i.name for i in part.graph.initializer}       # initializers listed as inputs (Paddle exports)
    ins = [i for i in part.graph.input if i.name not in backed]
    del part.graph.input[:]
    part.graph.input.extend(ins)
    return part


def bench_decoded_model(name, model_path: Path, pre: Preprocess, args, cv2, report: dict) -> None:
    """Post-processing alone at batch 1 (the real exports fix it) on a multi-output head: numpy
    (calib.head_decoders.decoded_batch + calib.pipeline.postprocess), opencv (the same decode, then
    NMSBoxesBatched), detcal-id / detcal-fit (the default graph's inserted part: decode in the graph,
    boxes first) and detcal-fit-fixed (the fixed-shape graph, --static-shapes: dense steps)."""
    from calib.head_decoders import decoded_batch
    from calib.model_info import read_model_info
    from onnx_ops.patch import build_patched_model

    info = read_model_info(model_path)
    layout, c, hw = info.layout, info.num_classes or 80, tuple(info.input_size)
    x, rows = real_inputs(hw, pre=pre)
    raw_s = session(str(model_path), args.threads)
    in_name = raw_s.get_inputs()[0].name
    per_image = [raw_s.run(list(info.outputs), {in_name: x[i:i + 1]}) for i in range(x.shape[0])]
    cfg = PostprocessConfig(iou_threshold=IOU, max_det=MAX_DET)
    arts = make_variants(model_path, layout, c, hw[0])
    cuts = {"detcal-id": inserted_part(build_patched_model(model_path, arts["id"]).model, info.outputs),
            "detcal-fit": inserted_part(build_patched_model(model_path, arts["fit"]).model, info.outputs),
            "detcal-fit-fixed": inserted_part(build_patched_model(model_path, arts["fit"], static_shapes=True).model,
                                              info.outputs)}
    sess = {k: session(m.SerializeToString(), args.threads) for k, m in cuts.items()}
    feeds = [dict(zip(info.outputs, outs), letterbox=rows[i:i + 1]) for i, outs in enumerate(per_image)]
    nb = len(feeds)

    def decoded(i):
        return decoded_batch(layout, [np.asarray(o, np.float32) for o in per_image[i % nb]], hw, **info.head_params)

    idm = identity_map(c)
    units = {"numpy": lambda i: routes.route_numpy(decoded(i), layout, rows[i % nb:i % nb + 1], idm, CONF, cfg)}
    if cv2 is not None:
        units["opencv"] = lambda i: routes.route_opencv(cv2, decoded(i), "decoded", rows[i % nb:i % nb + 1], CONF, IOU,
                                                        MAX_DET)
    for k, s_ in sess.items():
        units[k] = (lambda s_: lambda i: s_.run(None, feeds[i % nb]))(s_)
    ref = [d for i in range(nb) for d in units["numpy"](i)]
    agree = {"detcal-id": routes.agreement([d for i in range(nb) for d in routes.from_fixed(units["detcal-id"](i))], ref)}
    if "opencv" in units:
        agree["opencv"] = routes.agreement([d for i in range(nb) for d in units["opencv"](i)], ref)
    fv = arts["fit"]
    ref_fit = [d for i in range(nb) for d in routes.route_numpy(decoded(i), layout, rows[i:i + 1], fv.calibration,
                                                                   fv.score_thresholds, cfg)]
    for k in ("detcal-fit", "detcal-fit-fixed"):
        agree[f"{k} (vs numpy, same calibration)"] = routes.agreement(
            [d for i in range(nb) for d in routes.from_fixed(units[k](i))], ref_fit)
    for _ in range(args.warmup):
        for fn in units.values():
            fn(0)
    reps = time_interleaved(units, args.runs, args.reps, seed=7)
    names = list(units)
    print_reps(f"{name}  batch 1  post-processing alone on saved raw outputs ({args.runs} runs x {args.reps} reps, "
               f"medians)", reps, names, "detcal-fit")
    print("  agreement with numpy (share of numpy dets matched at IoU>=0.99 same class; extra; max |score diff|; dets):")
    for r, a in agree.items():
        print(f"    {r:<40} matched {a['matched']:.3f}  extra {a['extra']:.3f}  score diff max {a['score_diff_max']:.2e}  "
              f"dets {a['n_got']} vs {a['n_ref']}")
    report.setdefault(name, {})["1"] = {"post": reps, "post_noise": spread(reps, names), "agreement": agree}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200, help="runs per repetition")
    ap.add_argument("--whole-runs", type=int, default=0, help="runs per repetition for whole models (default: --runs)")
    ap.add_argument("--whole-sessions", type=int, default=1,
                    help="sessions per whole-model route (raw, raw2, patched-*), each run timed as their mean")
    ap.add_argument("--reps", type=int, default=2, help="repetitions")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (each must divide 40)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", choices=("real", "real320", "fixture320", "decoded", "project"),
                    help="real: YOLOv8n at 640 and at 320; real320: at 320 only; fixture320: the Ultralytics "
                         "dynamic fixture at 320 ([1,84,2100], random weights); decoded: YOLOX-nano and PicoDet-S (post-processing alone, batch 1); "
                         "project: the 5-class detectors")
    whole = ap.add_mutually_exclusive_group()
    whole.add_argument("--no-whole", action="store_true", help="post-processing alone only")
    whole.add_argument("--whole-only", action="store_true",
                       help="whole models only (raw vs patched; for a quiet machine), no post-processing-alone timing")
    ap.add_argument("--no-fitted", action="store_true",
                    help="real models: leave out detcal-fitted (the artifact `detcal fit` writes on the real val "
                         "split, fitted once and cached in the temporary folder)")
    ap.add_argument("--spinning", action="store_true", help="leave onnxruntime's spin-waiting on")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    global SPINNING
    SPINNING = args.spinning
    cv2, cv_note = routes.load_opencv(args.threads)
    ppp, ortx_note = routes.load_ortx()
    import onnx
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC; onnxruntime {ort.__version__} CPU, "
          f"intra_op_num_threads={args.threads}, spinning {'on' if SPINNING else 'off'}; numpy {np.__version__}, "
          f"onnx {onnx.__version__}; os.cpu_count()={os.cpu_count()}; load average {load()}")
    print(f"opencv: {cv_note or cv2.__version__}")
    if ppp is not None:
        import onnxruntime_extensions
        print(f"onnxruntime-extensions: {onnxruntime_extensions.__version__}")
    else:
        print(f"SKIP route ortx: {ortx_note}")
    jobs = []
    if args.only in (None, "real"):
        if REAL_MODEL.exists() and REAL_IMAGES.is_dir():
            jobs.append(("real yolov8n int8 640 [1,84,8400]", REAL_MODEL, "xywh_cls", 80, 640, lambda: real_inputs(640)))
        else:
            print(f"SKIP real model: {REAL_MODEL} or {REAL_IMAGES} not found (../shared/real beside the repo)")
    if args.only in (None, "real", "real320"):
        if REAL_MODEL.exists() and REAL_IMAGES.is_dir():
            jobs.append(("real yolov8n int8 at 320 [1,84,2100] (the 640 export, anchors rebuilt)", real_at_320,
                         "xywh_cls", 80, 320, lambda: real_inputs(320)))
    if args.only in (None, "fixture320"):
        if FIXTURE_DYNAMIC.exists() and REAL_IMAGES.is_dir():
            jobs.append(("fixture yolov8n dynamic 320 [1,84,2100] (random weights)", FIXTURE_DYNAMIC, "xywh_cls", 80, 320,
                         lambda: real_inputs(320)))
        else:
            print(f"SKIP fixture model: {FIXTURE_DYNAMIC} or {REAL_IMAGES} not found (../shared beside the repo)")
    decoded_jobs = []
    if args.only in (None, "decoded") and not args.whole_only:
        for fname, pre in REAL_DECODED.items():
            path = SHARED / "real" / "models" / fname
            if path.exists() and REAL_IMAGES.is_dir():
                decoded_jobs.append((f"real {path.stem}", path, pre))
            else:
                print(f"SKIP real model: {path} or {REAL_IMAGES} not found (../shared/real beside the repo)")
    if args.only in (None, "project"):
        for p in PROJECT_MODELS:
            if p.exists():
                layout = "xywh_obj_cls" if "obj" in p.stem else "xywh_cls"
                jobs.append((f"project {p.stem} 320, 5 cls", p, layout, 5, 320, lambda: scene_inputs(320)))
            else:
                print(f"SKIP project detector: {p} not found (python -m examples.detector.train)")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, layout, c, size, inputs in jobs:
            path = path(Path(tmp)) if callable(path) else path
            bench_model(name, path, layout, c, size, inputs(), args, cv2, ppp, Path(tmp), report)
    for name, path, pre in decoded_jobs:
        bench_decoded_model(name, path, pre, args, cv2, report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
