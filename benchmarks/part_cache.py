"""Why the inserted part costs more inside the patched model than alone: the same cut graph timed right
after different kinds of work (issue 11, benchmarks/README.md 4m).

    python benchmarks/part_cache.py [--runs 300] [--no-fitted]

The real YOLOv8n int8 rebuilt for 320 ([1,84,2100], bench_real.real_at_320) on bench_real's 40 real
images; the inserted graph (onnx_ops.patch.build_postprocess_graph, static batch 1, as `detcal patch`
builds it) for the artifact `detcal fit` writes for that model (bench_real.fitted_artifact; with
--no-fitted the seeded temperature stand-in). Each run does every "before" in a fresh random order,
each followed by one timed call of the part on the saved head outputs:

  nothing      the part's own previous call came just before (warm caches)
  sleep 2 ms   time.sleep(0.002)
  busy 2 ms    2 ms of Python busy loop
  raw model    the raw model on the run's image
  64 MiB pass  a += 1 over 64 MiB of float32 (evicts the caches)

Prints the median ms of the part after each. CPU provider, 2 threads, spinning off (bench_real.session).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_real as br  # noqa: E402
from calib.artifact import PostprocessConfig  # noqa: E402
from onnx_ops.patch import build_postprocess_graph  # noqa: E402


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def befores(raw, x: np.ndarray) -> dict:
    """{name: fn(i)}: the work done before the part's timed call of run i."""
    big = np.ones((64 << 20) // 4, np.float32)
    name = raw.get_inputs()[0].name
    return {
        "nothing": lambda i: None,
        "sleep 2 ms": lambda i: time.sleep(0.002),
        "busy 2 ms": lambda i: busy(0.002),
        "raw model": lambda i: raw.run(None, {name: x[i % len(x)][None]}),
        "64 MiB pass": lambda i: big.__iadd__(1.0),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--no-fitted", action="store_true", help="the seeded temperature stand-in, not fit's artifact")
    args = ap.parse_args(argv)
    if not (br.REAL_MODEL.exists() and br.REAL_IMAGES.is_dir()):
        raise SystemExit(f"part_cache: {br.REAL_MODEL} or {br.REAL_IMAGES} not found (../shared beside the repo, "
                         "or $DETCAL_SHARED)")
    with tempfile.TemporaryDirectory() as tmp:
        model = br.real_at_320(Path(tmp))
        raw = br.session(str(model))
        x, rows = br.real_inputs(320)
        heads = br.raw_outputs(raw, x)
        arts = br.make_variants(model, "xywh_cls", 80, 320, with_fitted=not args.no_fitted)
        art = arts.get("fitted", arts["fit"])
        g = build_postprocess_graph("xywh_cls", 80, art.calibration, art.score_thresholds,
                                    PostprocessConfig(iou_threshold=br.IOU, max_det=br.MAX_DET),
                                    num_candidates=heads.shape[2], batch=1)
        part = br.session(g.SerializeToString())
        work = befores(raw, x)
        times = {k: [] for k in work}
        rng = np.random.default_rng(0)
        names = list(work)
        for i in range(args.runs):
            for j in rng.permutation(len(names)):
                work[names[j]](i)
                start = time.perf_counter()
                part.run(None, {"head": heads[i % len(heads)][None], "letterbox": rows[i % len(rows)][None]})
                times[names[j]].append(time.perf_counter() - start)
    print(f"the inserted part ({type(art.calibration).__name__}, {len(g.graph.node)} nodes) on the real 320 head, "
          f"{args.runs} runs, load average {br.load()}; median ms after:")
    for k, v in times.items():
        print(f"  {k:<12} {np.median(v) * 1e3:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
