"""`detcal patch`: the command line over `onnx_ops.patch_model`.

Everything the patch does (the sha256 and layout checks, the gate that refuses inserted nodes
unsupported on the onnxruntime CPU/CUDA providers, the atomic write) is `patch_model`'s; this
module parses, calls it and prints what the patched model's metadata records.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "patch", help="insert calibration, masking, thresholds and NMS into the ONNX graph",
        description="Rewrite the raw exported model so that its outputs are final detections "
                    "(num_dets, det_boxes, det_scores, det_classes) in original-image pixels.")
    p.add_argument("--model", required=True, help="the raw exported detector (.onnx)")
    p.add_argument("--calibration", required=True, help="calibration.json from `detcal fit`")
    p.add_argument("--out", help="output path (default: <model>.detcal.onnx beside the model)")
    p.add_argument("--iou", type=float, help="override the NMS IoU threshold")
    p.add_argument("--max-det", type=int, help="override the number of detections per image (K)")
    p.add_argument("--conf", type=float, help="override every class's score threshold (calibrated scale)")
    p.add_argument("--force", action="store_true", help="patch even if the model's sha256 differs from the artifact's")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import json
    import warnings

    import onnx

    from onnx_ops import patch_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = patch_model(args.model, args.calibration, args.out, iou=args.iou, max_det=args.max_det,
                          conf=args.conf, force=args.force)
    model = onnx.load(str(out), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    s = json.loads(meta["detcal"])
    thr, nms = s["thresholds"], s["nms"]
    print(f"detcal patch: wrote {out}")
    print(f"  head {s['layout']} ({s['num_classes']} classes)"
          f"{', calibration before the Sigmoid' if s['calibration_in_logit_space'] else ''}; "
          f"calibrator {s['calibrator']}; thresholds {min(thr):.3g}..{max(thr):.3g}; "
          f"NMS IoU {nms['iou_threshold']:g}, pre-NMS top-k {nms['pre_nms_top_k']}, max_det {nms['max_det']}")
    print(f"  inputs: {model.graph.input[0].name}, letterbox [B, 6]; outputs: num_dets, det_boxes, det_scores, det_classes")
    for w in dict.fromkeys(str(w.message) for w in caught):
        print(f"  note: {w}", file=sys.stderr)
    return 0
