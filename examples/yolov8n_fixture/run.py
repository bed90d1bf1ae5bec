"""A real Ultralytics YOLOv8n export (dynamic batch and size): inspect, patch, run.

    python examples/yolov8n_fixture/run.py [--imgsz 640] [--out examples/yolov8n_fixture/out]

Uses ../shared/fixtures/yolov8n_dynamic.onnx (the Ultralytics exporter's graph with random
weights, next to the repository; skipped with a message where that folder is absent). Random
weights give no real detections, so `detcal fit` has nothing to fit: instead this example
writes by code the calibration.json an identity calibration would give (scores unchanged,
one score threshold for every class, the default NMS settings), then

    detcal inspect yolov8n_dynamic.onnx
    detcal patch --model yolov8n_dynamic.onnx --calibration calibration.json --out yolov8n_dynamic.detcal.onnx

and runs the patched model with onnxruntime on a batch of two images of different sizes,
letterboxed to --imgsz, checking its detections against the numpy reference pipeline
(calib.pipeline.postprocess) applied to the raw model's output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from examples.common import ExampleError, detcal, show  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "yolov8n_dynamic.onnx"


def identity_artifact(model: Path, imgsz: int, conf: float):
    """The artifact `detcal fit --calibrator identity` would write for this model, built in code."""
    from calib.artifact import Artifact
    from calib.artifact import identity_map
    from calib.model_info import read_model_info
    from calib.artifact import PostprocessConfig
    from calib.artifact import Preprocess

    info = read_model_info(model)
    c = info.num_classes
    return Artifact(
        model={"file": model.name, "sha256": info.sha256, "input_name": info.input_name, "input_size": [imgsz, imgsz],
               "input_dtype": info.input_dtype, "output_name": info.output_name, "layout": info.layout,
               "num_classes": c, "class_names": info.class_names or [str(i) for i in range(c)]},
        preprocess=Preprocess(),                       # RGB, /255, letterbox with grey 114 (Ultralytics)
        calibration=identity_map(c),
        thresholds={"score": [conf] * c, "max_negative_rate": None,
                    "note": "written by hand: identity calibration, one threshold for every class"},
        nms=PostprocessConfig(),                       # IoU 0.7, max_det 300, pre-NMS top-k 3000
    )


def main(argv=None) -> int:
    try:
        return run(argv)
    except ExampleError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2


def run(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640, help="serving size (multiple of 32; default 640)")
    ap.add_argument("--conf", type=float, default=0.25, help="score threshold for every class (default 0.25)")
    ap.add_argument("--out", default=str(HERE / "out"), help="working folder")
    args = ap.parse_args(argv)
    if not FIXTURE.exists():
        print(f"skipped: the fixture export {FIXTURE} is absent (it lives beside the repository in "
              "../shared/fixtures/, not in a user's clone)")
        return 0
    import numpy as np
    import onnxruntime as ort

    from calib.artifact import load_artifact
    from calib.pipeline import pack_fixed, postprocess
    from calib.preprocess import Preprocess, preprocess_image
    from examples.detector.scenes import positive_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detcal(["inspect", show(FIXTURE)])

    cal = out / "calibration.json"
    identity_artifact(FIXTURE, args.imgsz, args.conf).save(cal)
    print(f"\nwrote {show(cal)}: identity calibration, threshold {args.conf} for all classes, input {args.imgsz}")

    patched = out / "yolov8n_dynamic.detcal.onnx"
    detcal(["patch", "--model", show(FIXTURE), "--calibration", show(cal), "--out", show(patched)])
    if not patched.exists():
        raise SystemExit(f"run.py: error: the patched model is missing: {patched}")

    # two images of different sizes, letterboxed into one batch
    pre, size = Preprocess(), (args.imgsz, args.imgsz)
    images = [positive_scene((7, i))[0] for i in range(2)]
    xs, rows = zip(*(preprocess_image(img, size, pre) for img in images))
    x, rows = np.stack(xs).astype(np.float32), np.stack(rows).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    raw_sess = ort.InferenceSession(str(FIXTURE), so, providers=["CPUExecutionProvider"])
    pat_sess = ort.InferenceSession(str(patched), so, providers=["CPUExecutionProvider"])
    print(f"\npatched model inputs:  {[(i.name, i.shape) for i in pat_sess.get_inputs()]}")
    print(f"patched model outputs: {[(o.name, o.shape) for o in pat_sess.get_outputs()]}")
    got = dict(zip([o.name for o in pat_sess.get_outputs()], pat_sess.run(None, {"images": x, "letterbox": rows})))
    raw = raw_sess.run(None, {"images": x})[0]
    art = load_artifact(cal)
    ref = pack_fixed(postprocess(raw, "xywh_cls", rows, art.calibration, art.score_thresholds, art.nms), art.nms.max_det)
    print(f"\nraw output {list(raw.shape)}; batch of {len(images)} images "
          f"({', '.join(f'{im.shape[1]}x{im.shape[0]}' for im in images)}) letterboxed to {args.imgsz}")
    for b in range(len(images)):
        n = int(got["num_dets"][b, 0])
        top = ", ".join(f"class {int(c)} {s:.3f}" for c, s in zip(got["det_classes"][b, :3], got["det_scores"][b, :3]))
        print(f"  image {b}: {n} detections (random weights){': ' + top if n else ''}")
    same_n = np.array_equal(got["num_dets"], ref["num_dets"])
    same = same_n and all(np.allclose(got[k], ref[k], atol=1e-3) for k in ("det_boxes", "det_scores")) and \
        np.array_equal(got["det_classes"], ref["det_classes"])
    print(f"patched graph vs numpy reference pipeline: {'same detections' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
