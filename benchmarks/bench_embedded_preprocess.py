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

SHARED = Path(os.environ.get("DETCAL_SHARED", ROOT.parent / "shared"))
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


def timing(args) -> None:
    raise SystemExit("timing: needs `detcal patch --embed-preprocess` (issue 14, phase 2)")


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
