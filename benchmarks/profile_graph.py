"""Where the inserted graph spends its time: onnxruntime's profiler, kernel time per op type.

    python benchmarks/profile_graph.py [--runs 100] [--batch 1] [--size 640|320] [--json out.json]

On the real YOLOv8n int8 raw outputs (../shared/real, 40 COCO images, see bench_real.py; --size 320:
the same export rebuilt for a [1,84,2100] head, bench_real.real_at_320), the inserted part alone
(onnx_ops.patch.build_postprocess_graph, the graph cut at the head, with a static batch of 1 at
--batch 1 as `detcal patch` builds it for these exports) for the three artifacts bench_real.py
makes: identity calibration with a uniform threshold 0.25, the fitted-like temperature one
(per-class thresholds 0.2..0.35) and the box-aware platt_box one. Each session runs `--runs` times
with SessionOptions.enable_profiling (CPU provider, 2 threads, spinning off); the profile's kernel
events ("cat": "Node", "name" ending in "_kernel_time") are summed per op type and divided by the
number of runs. At batch 1 also the whole patched model (detcal patch, where the head's Sigmoid
front lets calibration work on the logits), counting only the inserted nodes (names starting with
`detcal/`). Prints ms per run per op type, the share of the kernel total, the number of nodes,
how many of them ran on onnxruntime's intra-op thread pool (its thread_scheduling_stats: with
spinning off every such node wakes a sleeping worker, ~15 us on this 2-core VM), and the total;
--json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_real  # noqa: E402
from calib.artifact import PostprocessConfig  # noqa: E402
from onnx_ops.patch import build_postprocess_graph, patch_model  # noqa: E402


def ran_on_pool(ev: dict) -> bool:
    """A kernel event whose node split its work over onnxruntime's intra-op thread pool (the main
    thread's thread_scheduling_stats list the blocks it handed out)."""
    stats = ev.get("args", {}).get("thread_scheduling_stats") or {}
    return bool(stats.get("main_thread", {}).get("block_size"))


def kernel_times(profile_json: list[dict], runs: int, prefix: str = "") -> dict[str, dict]:
    """onnxruntime profile events -> {op type: {"ms": ms per run, "nodes": distinct nodes, "pool": those
    of them that ran on the intra-op thread pool in some run}}, over the nodes whose name starts with
    `prefix` ("detcal/": the inserted part of a patched model)."""
    ms = defaultdict(float)
    nodes = defaultdict(set)
    pool = defaultdict(set)
    for ev in profile_json:
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time") or not name.startswith(prefix):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        ms[op] += float(ev.get("dur", 0)) / 1e3 / runs
        nodes[op].add(name[: -len("_kernel_time")])
        if ran_on_pool(ev):
            pool[op].add(name[: -len("_kernel_time")])
    return {op: {"ms": ms[op], "nodes": len(nodes[op]), "pool": len(pool[op])} for op in ms}


def pool_nodes(profile_json: list[dict], prefix: str = "") -> list[str]:
    """The names of the nodes (under `prefix`) that ran on the intra-op thread pool, in graph order."""
    seen = {}
    for ev in profile_json:
        name = str(ev.get("name", ""))
        if ev.get("cat") == "Node" and name.endswith("_kernel_time") and name.startswith(prefix) and ran_on_pool(ev):
            seen.setdefault(name[: -len("_kernel_time")], None)
    return list(seen)


def inserted_over_raw(profile_json: list[dict], prefix: str = "detcal/") -> tuple[float, float, float]:
    """Per run of a patched model: kernel time of the inserted nodes (`prefix`) over that of the
    model's own nodes -> (median ratio, median inserted ms, median model ms). Both sums come from the
    same run, so machine load mostly cancels out (the whole-model target reads 1 + ratio)."""
    runs = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in profile_json
                  if ev.get("cat") == "Session" and ev.get("name") == "model_run")
    ins, own = [0.0] * len(runs), [0.0] * len(runs)
    starts = [r[0] for r in runs]
    import bisect
    for ev in profile_json:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, ev["ts"]) - 1
        if i < 0 or ev["ts"] > runs[i][1]:
            continue
        (ins if ev["name"].startswith(prefix) else own)[i] += ev["dur"] / 1e3
    pairs = [(a, o) for a, o in zip(ins, own) if o > 0]
    if not pairs:
        return float("nan"), float("nan"), float("nan")
    a, o = np.array(pairs).T
    return float(np.median(a / o)), float(np.median(a)), float(np.median(o))


def profile_session(model_bytes, feeds_list: list[dict], runs: int, threads: int, tmp: Path, tag: str,
                    prefix: str = "") -> dict:
    sess = bench_real.session(model_bytes, threads, profile_prefix=str(tmp / tag))
    for i in range(runs):
        sess.run(None, feeds_list[i % len(feeds_list)])
    path = sess.end_profiling()
    events = json.loads(Path(path).read_text())
    if prefix:
        ratio, ins, own = inserted_over_raw(events, prefix)
        print(f"  per run (medians): inserted nodes {ins:.3f} ms, the model's own nodes {own:.3f} ms, "
              f"inserted / own = {ratio:.4f} (whole model over raw from the parts: {1 + ratio:.4f})")
        times = kernel_times(events, runs, prefix)
        times["_inserted_over_own"] = {"ms": ratio, "nodes": 0, "pool": 0}
    else:
        times = kernel_times(events, runs, prefix)
    times["_pool_nodes"] = pool_nodes(events, prefix)
    return times


def print_profile(title: str, prof: dict) -> None:
    pooled = prof.get("_pool_nodes", [])
    prof = {k: v for k, v in prof.items() if not k.startswith("_")}
    total = sum(v["ms"] for v in prof.values())
    print(f"\n{title}: {total:.3f} ms per run in kernels, {sum(v['nodes'] for v in prof.values())} nodes")
    print(f"  {'op type':<22}{'ms/run':>9}{'share':>8}{'nodes':>7}{'pool':>6}")
    for op, v in sorted(prof.items(), key=lambda kv: -kv[1]["ms"]):
        print(f"  {op:<22}{v['ms']:>9.3f}{v['ms'] / total:>8.1%}{v['nodes']:>7}{v['pool']:>6}")
    print(f"  on the intra-op thread pool: {', '.join(pooled) if pooled else 'none'}")


LABELS = {"id": "identity, uniform 0.25", "fit": "temperature, per-class thresholds",
          "box": "platt_box, box-aware"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1, help="images per run (divides 40)")
    ap.add_argument("--size", type=int, choices=(640, 320), default=640,
                    help="640: the real export as it is; 320: rebuilt for a [1,84,2100] head")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write {artifact: {op type: {ms, nodes, pool}}} here")
    args = ap.parse_args(argv)
    if not (bench_real.REAL_MODEL.exists() and bench_real.REAL_IMAGES.is_dir()):
        print(f"SKIP: {bench_real.REAL_MODEL} or {bench_real.REAL_IMAGES} not found (../shared/real beside the repo)")
        return 0
    if 40 % args.batch:
        ap.error(f"--batch must divide the 40 images, got {args.batch}")
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} CPU, {args.threads} threads, spinning off, batch {args.batch}, "
          f"{args.runs} runs, load average {os.getloadavg()[0]:.2f}")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = bench_real.REAL_MODEL if args.size == 640 else bench_real.real_at_320(Path(tmp))
        x, rows = bench_real.real_inputs(args.size)
        heads = bench_real.raw_outputs(bench_real.session(str(model), args.threads), x)
        b = args.batch
        feeds = [{"head": heads[i:i + b], "letterbox": rows[i:i + b]} for i in range(0, heads.shape[0] - b + 1, b)]
        cfg = PostprocessConfig(iou_threshold=bench_real.IOU, max_det=bench_real.MAX_DET)
        arts = bench_real.make_variants(model, "xywh_cls", 80, args.size)
        for key, art in arts.items():
            # as `detcal patch` builds it: both real exports fix the batch at 1
            g = build_postprocess_graph("xywh_cls", 80, art.calibration, art.score_thresholds, cfg,
                                        num_candidates=heads.shape[2], batch=1 if b == 1 else "batch")
            prof = profile_session(g.SerializeToString(), feeds, args.runs, args.threads, Path(tmp), key)
            label = LABELS.get(key, key)
            print_profile(f"inserted graph ({label}), real YOLOv8n raw outputs [{b},84,{heads.shape[2]}]", prof)
            out[key] = prof
            if b == 1:
                patched = patch_model(model, art, Path(tmp) / f"{key}.detcal.onnx")
                whole = [{"images": x[i:i + 1], "letterbox": rows[i:i + 1]} for i in range(x.shape[0])]
                runs = max(10, args.runs // 2)
                prof = profile_session(str(patched), whole, runs, args.threads, Path(tmp), f"{key}_whole", "detcal/")
                print_profile(f"patched model ({label}), the detcal/ nodes only, {runs} runs", prof)
                out[f"{key}_patched"] = prof
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
