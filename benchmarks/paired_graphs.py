"""The inserted graph before and after a change, paired: the same cut graphs built from two revisions,
timed interleaved in one process.

    python benchmarks/paired_graphs.py --base REV [--model real320|real|project-cls|project-obj]
                                       [--batch 1] [--maps id,fit,box] [--runs 2000] [--reps 2]

Builds the inserted part alone for bench_real.py's artifacts (identity, the fitted-like temperature
map, the fitted-like box-aware map; onnx_ops.patch.build_postprocess_graph as `detcal patch` builds it
for the model: a static batch of 1 where the export fixes it) twice: from this checkout, and from REV,
checked out by `git worktree add --detach` into a temporary folder and built there by this script in
a subprocess with that tree first on sys.path (the worktree is removed afterwards). Then, on the
model's raw head outputs for bench_real's 40 inputs:

- agreement: for each map, whether REV's graph and this one give the same outputs bit for bit, else
  the largest score difference and whether the detection counts agree;
- timing: every run calls every graph once, in a fresh random order, on the same batch of inputs;
  per map, the median ms of each side and the median over runs of the per-run ratio this / REV with
  its quartiles (drifts of the machine between runs cancel: the estimator for changes of a few
  percent), per side the paired ratio of each map to the first one (e.g. box/id), the node counts
  and the load average (1 min) at the start and end of each repetition.

Models: real320 (the real YOLOv8n int8 rebuilt for 320, [1,84,2100]) and real (the 640 export) need
../shared (or $DETCAL_SHARED); project-cls / project-obj are the project's own 5-class detectors
(examples/models), on generated scenes. CPU provider, 2 threads, spinning off, as bench_real.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
MODELS = ("real320", "real", "project-cls", "project-obj")
MAPS = ("id", "fit", "box")


def _import_bench_real(root: Path):
    """bench_real from `root` (its calib and onnx_ops first on sys.path)."""
    for p in (root / "tests", root / "benchmarks", root):
        sys.path.insert(0, str(p))
    import bench_real
    return bench_real


def _model_spec(br, model: str, tmp: Path) -> tuple[Path, str, int, int]:
    """-> (model path, layout, classes, input size)."""
    if model in ("real", "real320") and not br.REAL_MODEL.exists():
        raise SystemExit(f"paired_graphs: {br.REAL_MODEL} not found (the real models: ../shared beside the "
                         "repository, or $DETCAL_SHARED)")
    if model == "real320":
        return br.real_at_320(tmp), "xywh_cls", 80, 320
    if model == "real":
        return br.REAL_MODEL, "xywh_cls", 80, 640
    name = {"project-cls": "detector_xywh_cls", "project-obj": "detector_xywh_obj_cls"}[model]
    return br.ROOT / "examples" / "models" / f"{name}.onnx", name[len("detector_"):], 5, 320


def build_graphs(root: Path, model: str, batch: int, maps, out: Path, n_cand: int | None = None) -> dict:
    """Write out/<map>.onnx as `root`'s code builds them for n_cand candidates per image; with n_cand
    None also out/heads.npz (the model's raw outputs and letterbox rows for bench_real's 40 inputs),
    whose candidate count is then used. Returns {map: node count, '_n_cand': n_cand}."""
    br = _import_bench_real(root)
    import onnxruntime as ort
    from calib.artifact import PostprocessConfig
    from onnx_ops.patch import build_postprocess_graph

    out.mkdir(parents=True, exist_ok=True)
    path, layout, c, size = _model_spec(br, model, out)
    if not Path(path).exists():
        raise SystemExit(f"paired_graphs: {path} not found")
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fixed = raw.get_inputs()[0].shape[0]
    if n_cand is None:
        x, rows = br.real_inputs(size) if model.startswith("real") else br.scene_inputs(size)
        heads = br.raw_outputs(raw, x)
        np.savez(out / "heads.npz", heads=heads, rows=rows)
        n_cand = int(heads.shape[2 if layout == "xywh_cls" else 1])
    arts = br.make_variants(Path(path), layout, c, size)
    cfg = PostprocessConfig(iou_threshold=br.IOU, max_det=br.MAX_DET)
    nodes = {}
    for key in maps:
        art = arts[key]
        g = build_postprocess_graph(layout, c, art.calibration, art.score_thresholds, cfg, num_candidates=n_cand,
                                    batch=batch if batch == fixed else "batch")
        (out / f"{key}.onnx").write_bytes(g.SerializeToString())
        nodes[key] = len(g.graph.node)
    nodes["_n_cand"] = n_cand
    (out / "nodes.json").write_text(json.dumps(nodes))
    return nodes


def build_at_revision(rev: str, model: str, batch: int, maps, out: Path, n_cand: int) -> dict:
    """build_graphs from `rev`'s tree: a temporary git worktree, this script run there in a subprocess."""
    repo = HERE.parents[1]
    holder = Path(tempfile.mkdtemp(prefix="detcal-paired-"))
    wt = holder / "tree"
    try:
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(wt), rev],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        shutil.rmtree(holder, ignore_errors=True)
        raise SystemExit(f"paired_graphs: cannot check out {rev!r} from {repo}: "
                         f"{getattr(e, 'stderr', '') or e}".strip())
    try:
        env = dict(os.environ)
        env["DETCAL_SHARED"] = str(_import_bench_real(repo).SHARED)          # resolved: the child runs elsewhere
        cmd = [sys.executable, str(HERE), "--build-only", "--root", str(wt), "--model", model,
               "--batch", str(batch), "--maps", ",".join(maps), "--out", str(out), "--n-cand", str(n_cand)]
        done = subprocess.run(cmd, cwd=str(wt), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"paired_graphs: building at {rev} failed:\n{done.stderr[-2000:]}")
        return json.loads((out / "nodes.json").read_text())
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(wt)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(holder, ignore_errors=True)


def agreement(a: list, b: list) -> str:
    """Outputs (num_dets, det_boxes, det_scores, det_classes) of two graphs over all batches -> one line."""
    if all(np.array_equal(x, y) for oa, ob in zip(a, b) for x, y in zip(oa, ob)):
        return "same bits"
    counts = all(np.array_equal(oa[0], ob[0]) for oa, ob in zip(a, b))
    diff = max((float(np.max(np.abs(oa[2] - ob[2]))) if oa[2].shape == ob[2].shape else float("inf"))
               for oa, ob in zip(a, b))
    return f"differ: detection counts {'equal' if counts else 'DIFFER'}, largest score difference {diff:.3g}"


def time_pairs(sessions: dict, feeds: list, runs: int, reps: int, seed: int = 0) -> list[dict]:
    """sessions {(side, map): session} -> per repetition {'t': {(side, map): [s per run]}, 'load': (a, b)}."""
    rng = np.random.default_rng(seed)
    keys = list(sessions)
    out = []
    for _ in range(reps):
        start = os.getloadavg()[0]
        t = {k: [] for k in keys}
        for r in range(runs):
            f = feeds[r % len(feeds)]
            for j in rng.permutation(len(keys)):
                s = time.perf_counter()
                sessions[keys[j]].run(None, f)
                t[keys[j]].append(time.perf_counter() - s)
        out.append({"t": {k: np.asarray(v) for k, v in t.items()}, "load": (start, os.getloadavg()[0])})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="the revision to compare with (default HEAD: the last commit)")
    ap.add_argument("--model", choices=MODELS, default="real320")
    ap.add_argument("--batch", type=int, default=1, help="images per run (divides 40)")
    ap.add_argument("--maps", default="id,fit,box", help=f"comma-separated, of {', '.join(MAPS)}")
    ap.add_argument("--runs", type=int, default=2000, help="runs per repetition")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n-cand", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    maps = [m for m in args.maps.split(",") if m]
    if not maps or any(m not in MAPS for m in maps):
        ap.error(f"--maps: choose from {', '.join(MAPS)}, got {args.maps!r}")
    if args.batch < 1 or 40 % args.batch:
        ap.error(f"--batch must divide 40, got {args.batch}")
    if args.build_only:
        build_graphs(args.root, args.model, args.batch, maps, args.out, args.n_cand)
        return 0

    with tempfile.TemporaryDirectory(prefix="detcal-paired-") as tmp:
        tmp = Path(tmp)
        print(f"building {args.model}, batch {args.batch}, maps {', '.join(maps)}: this checkout ...", flush=True)
        this_nodes = build_graphs(HERE.parents[1], args.model, args.batch, maps, tmp / "this")
        print(f"... and {args.base} (a temporary git worktree)", flush=True)
        base_nodes = build_at_revision(args.base, args.model, args.batch, maps, tmp / "base", this_nodes["_n_cand"])
        br = _import_bench_real(HERE.parents[1])
        br.SPINNING = False
        data = np.load(tmp / "this" / "heads.npz")
        heads, rows = data["heads"], data["rows"].astype(np.float32)
        b = args.batch
        feeds = [{"head": heads[i:i + b], "letterbox": rows[i:i + b]} for i in range(0, heads.shape[0], b)]
        sessions = {(side, m): br.session(str(tmp / side / f"{m}.onnx"), args.threads)
                    for m in maps for side in ("base", "this")}

        print(f"\n{args.model}, batch {b}: this checkout against {args.base}, {args.runs} runs x {args.reps} reps")
        for m in maps:
            outs = {side: [sessions[(side, m)].run(None, f) for f in feeds] for side in ("base", "this")}
            print(f"  {m:4s} nodes {base_nodes[m]} -> {this_nodes[m]}; outputs: {agreement(outs['base'], outs['this'])}")
        reps = time_pairs(sessions, feeds, args.runs, args.reps)
        for i, rep in enumerate(reps, 1):
            t = rep["t"]
            print(f"  rep {i} (load {rep['load'][0]:.2f} / {rep['load'][1]:.2f}):")
            for m in maps:
                tb, tt = t[("base", m)], t[("this", m)]
                r = tt / tb
                print(f"    {m:4s} base {np.median(tb) * 1e3:.4f} ms  this {np.median(tt) * 1e3:.4f} ms  "
                      f"paired this/base {np.median(r):.4f} (quartiles {np.quantile(r, 0.25):.3f}, {np.quantile(r, 0.75):.3f})")
            for m in maps[1:]:
                pb = np.median(t[("base", m)] / t[("base", maps[0])])
                pt = np.median(t[("this", m)] / t[("this", maps[0])])
                print(f"    {m}/{maps[0]} paired: base {pb:.4f}, this {pt:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
