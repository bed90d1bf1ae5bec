"""The embedded preprocessing: how its resize differs from Pillow's and OpenCV's, and what it costs.

    python benchmarks/bench_embedded_preprocess.py resize-diff [--images 50] [--sizes 320,416,640,1024]
    python benchmarks/bench_embedded_preprocess.py timing [--repeats 30]

resize-diff: on the real COCO photos of ../shared/real/coco_train/images/val (the first
--images, sorted by name), letterbox each one to every input size three ways and compare the
resized content (the padding is the same constant everywhere):

  detcal   calib.resize.letterbox_resize: ONNX Resize linear, half_pixel, no antialias, float32
  pillow   Pillow's Image.resize(BILINEAR) (calib.letterbox before issue 14): a triangle filter
           whose support widens with the downscale factor, i.e. antialiased, rounded to uint8
  opencv   cv2.resize(INTER_LINEAR): half_pixel, no antialias, 11-bit fixed-point weights,
           rounded to uint8 (needs opencv-python-headless; not a project dependency)

and print, per input size, mean / 99th percentile / max absolute difference in grey levels
over all content pixels and channels of the images that needed a resize (COCO photos are
mostly 640 px on their long side, so at 640 those are copied unchanged and left out).

timing: see the docstring of `timing` below.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calib import resize as R  # noqa: E402

SHARED = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared")).resolve()
REAL_IMAGES = SHARED / "real" / "coco_train" / "images" / "val"


def real_images(n: int) -> list[tuple[str, np.ndarray]]:
    if not REAL_IMAGES.is_dir():
        sys.exit(f"real images absent: {REAL_IMAGES} (../shared/real lives beside the repository)")
    paths = sorted(REAL_IMAGES.glob("*.jpg"))[:n]
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def content_three_ways(img: np.ndarray, size: int):
    """(detcal float32, pillow uint8, opencv uint8 or None) content of the letterbox to size x size."""
    h, w = img.shape[:2]
    new_w, new_h = R.scaled_size(w, h, (size, size))
    ours = R.resize_linear(img, new_h, new_w)
    pil = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR)) if (new_w, new_h) != (w, h) else img
    try:
        import cv2
        cv = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    except ImportError:
        cv = None
    return ours, pil, cv


def resize_diff(args) -> None:
    images = real_images(args.images)
    print(f"{len(images)} images from {REAL_IMAGES}")
    print(f"{'size':>5} {'resized':>8} | {'vs pillow: mean':>15} {'p99':>6} {'max':>6} | "
          f"{'vs opencv: mean':>15} {'p99':>6} {'max':>6} | {'detcal rounded vs opencv: max':>29}")
    for size in [int(s) for s in args.sizes.split(",")]:
        d_pil, d_cv, d_cv_round, n_resized = [], [], [], 0
        for _, img in images:
            ours, pil, cv = content_three_ways(img, size)
            if ours.shape[:2] == img.shape[:2]:
                continue                      # copied unchanged by all three
            n_resized += 1
            d_pil.append(np.abs(ours - pil.astype(np.float32)).ravel())
            if cv is not None:
                d_cv.append(np.abs(ours - cv.astype(np.float32)).ravel())
                d_cv_round.append(np.abs(np.rint(ours) - cv.astype(np.float32)).max())
        dp = np.concatenate(d_pil)
        line = f"{size:>5} {n_resized:>4}/{len(images):<3} | {dp.mean():>15.3f} {np.percentile(dp, 99):>6.2f} {dp.max():>6.2f} | "
        if d_cv:
            dc = np.concatenate(d_cv)
            line += f"{dc.mean():>15.3f} {np.percentile(dc, 99):>6.2f} {dc.max():>6.2f} | {max(d_cv_round):>29.0f}"
        else:
            line += "(cv2 not installed)"
        print(line)


def session(model, threads: int = 2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, (str, bytes)) else str(model), so,
                                providers=["CPUExecutionProvider"])


def embedded_model(src: Path, artifact) -> bytes:
    """src patched with --embed-preprocess (identity calibration from the artifact)."""
    from onnx_ops.patch import build_patched_model
    return build_patched_model(src, artifact, force=True, embed_preprocess=True).model.SerializeToString()


def timing(args) -> None:
    """Per frame, CPU provider, 2 intra-op threads, spinning off, each route once per repetition
    in a random order drawn anew for every repetition; medians over --repeats:

      raw       the raw model alone on an already preprocessed input (the floor)
      numpy     calib.resize letterbox + to_model_input (numpy) + raw model + calib.pipeline
                postprocess + pack_fixed (numpy): what a caller writes without the embedding
      opencv    the same with cv2.resize (INTER_LINEAR) for the resize, if cv2 imports
      embedded  the model patched with --embed-preprocess, fed the uint8 frame
    ratio = embedded / numpy (target <= 1.0), on wall-clock medians; the process CPU time
    (all threads) is printed too, as on a shared machine wall time includes waiting for a core.
    """
    import random
    import time

    sys.path.insert(0, str(ROOT / "tests"))
    from artifact_factory import make_artifact
    from calib.model_info import read_model_info
    from calib.pipeline import pack_fixed, postprocess
    from examples.detector import scenes

    models = [ROOT / "examples" / "models" / "detector_xywh_cls.onnx", SHARED / "real" / "models" / "yolov8n_coco_int8.onnx"]
    try:
        import cv2
    except ImportError:
        cv2 = None
    print(f"CPU provider, 2 threads, spinning off, {args.repeats} repetitions, medians in ms")
    print(f"{'model':<28} {'frame':>9} | {'raw':>7} {'numpy':>7} {'opencv':>7} {'embedded':>8} | {'ratio':>5} {'dets':>4}")
    for src in models:
        if not src.exists():
            print(f"{src.name:<28} absent, skipped")
            continue
        info = read_model_info(src)
        art = make_artifact(info.num_classes, calibrator="identity", thresholds=0.25, layout=info.layout,
                            input_size=info.input_size)
        raw, emb = session(src), session(embedded_model(src, art))
        size, cfg, pre = info.input_size, art.nms, art.preprocess

        def numpy_route(img, resize=R.letterbox_resize):
            canvas, row = resize(img, size, pad_value=pre.pad_value)
            x = R.to_model_input(canvas, pre.channel_order, pre.mean, pre.std)[None]
            out = raw.run(None, {info.input_name: x})[0]
            return pack_fixed(postprocess(out, info.layout, row[None], art.calibration, art.score_thresholds, cfg),
                              cfg.max_det)

        def cv_letterbox(img, size_hw, pad_value):
            h, w = img.shape[:2]
            new_w, new_h = R.scaled_size(w, h, size_hw)
            row = R.resize_row(w, h, size_hw)
            out = np.full((*size_hw, 3), pad_value, np.uint8)
            l, t = int(row[4]), int(row[5])
            out[t:t + new_h, l:l + new_w] = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            return out, row

        for fw, fh in ((1280, 720), (640, 480)):
            img = scenes.positive_scene(1, sizes=[(fw, fh)])[0]
            x0 = R.to_model_input(R.letterbox_resize(img, size, pad_value=pre.pad_value)[0], pre.channel_order)[None]
            routes = {"raw": lambda: raw.run(None, {info.input_name: x0}),
                      "numpy": lambda: numpy_route(img),
                      "embedded": lambda: emb.run(None, {"image": img})}
            if cv2 is not None:
                routes["opencv"] = lambda: numpy_route(img, cv_letterbox)
            for f in routes.values():                      # warm-up
                f()
            times = {k: [] for k in routes}
            cpu = {k: [] for k in routes}
            order = list(routes)
            for _ in range(args.repeats):
                random.shuffle(order)
                for k in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    routes[k]()
                    times[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
            med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            cmed = {k: 1e3 * float(np.median(v)) for k, v in cpu.items()}
            a, b = numpy_route(img), dict(zip(["num_dets", "det_boxes", "det_scores", "det_classes"],
                                               emb.run(None, {"image": img})))
            assert int(a["num_dets"][0, 0]) == int(b["num_dets"][0, 0]), "embedded and numpy routes disagree"
            cvt = f"{med['opencv']:>7.2f}" if "opencv" in med else f"{'-':>7}"
            print(f"{src.name:<28} {fw:>4}x{fh:<4} | {med['raw']:>7.2f} {med['numpy']:>7.2f} {cvt} "
                  f"{med['embedded']:>8.2f} | {med['embedded'] / med['numpy']:>5.2f} {int(a['num_dets'][0, 0]):>4} | "
                  f"cpu ms numpy {cmed['numpy']:.2f} embedded {cmed['embedded']:.2f} "
                  f"ratio {cmed['embedded'] / cmed['numpy']:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("resize-diff", help="detcal's resize vs Pillow's and OpenCV's on real images")
    d.add_argument("--images", type=int, default=50)
    d.add_argument("--sizes", default="320,416,640,1024")
    t = sub.add_parser("timing", help="patched-with-preprocessing vs raw + numpy letterbox + numpy post-processing")
    t.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    {"resize-diff": resize_diff, "timing": timing}[args.what](args)


if __name__ == "__main__":
    main()
