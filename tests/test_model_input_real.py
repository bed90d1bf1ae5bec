"""uint8 NHWC input on a real detector: YOLOX-nano (../shared/real, raw 0..255 BGR pixels, top-left
letterbox) behind a uint8 [1, 416, 416, 3] input, built in code from the real export.

Skips where ../shared/real is absent (a user's clone).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from test_model_input import with_input

SHARED = Path(os.environ.get("DETCAL_SHARED", Path(__file__).resolve().parents[1].parent / "shared")).resolve()
YOLOX = SHARED / "real" / "models" / "yolox_nano_coco_416.onnx"
IMAGES = SHARED / "real" / "coco_train" / "images" / "val"

pytestmark = pytest.mark.skipif(not YOLOX.exists() or not IMAGES.is_dir(),
                                reason=f"real YOLOX-nano and COCO images not found under {SHARED / 'real'}")


@pytest.fixture(scope="module")
def yolox_u8(tmp_path_factory) -> Path:
    """The real YOLOX-nano behind a uint8 NHWC input (Cast, Transpose; YOLOX takes raw pixels: no scaling)."""
    path = tmp_path_factory.mktemp("real_u8") / "yolox_nano_u8_nhwc.onnx"
    onnx.save(with_input(onnx.load(str(YOLOX)), "uint8", "NHWC", scale=None), str(path))
    return path


def _pre():
    from calib.artifact import Preprocess
    return Preprocess(placement="top_left", channel_order="BGR", scale="none")


def _photos(n: int) -> list[np.ndarray]:
    from calib.images import read_image_rgb
    paths = sorted(p for p in IMAGES.iterdir() if "_" not in p.stem and p.stem.isdigit())[:n]   # photos, not crops
    return [read_image_rgb(p) for p in paths]


def test_real_yolox_raw_outputs_through_the_adapter_equal_the_float_export(yolox_u8):
    """At 416x416 (no resampling: integer pixels) the uint8 NHWC model computes exactly what the
    float NCHW export computes; on photos of other sizes the rounding of resampled pixels moves the
    decoded detections by little."""
    from PIL import Image

    from calib.model_info import read_model_info
    from calib.pipeline import postprocess
    from calib.artifact import PostprocessConfig
    from calib.runner import DetectorRunner

    ref = DetectorRunner(read_model_info(YOLOX, num_classes=80), _pre(), (416, 416), batch_size=1)
    info = read_model_info(yolox_u8, num_classes=80)
    assert (info.input_dtype, info.input_layout, info.layout, info.input_size) == ("uint8", "NHWC", "yolox_raw", (416, 416))
    run = DetectorRunner(info, _pre(), (416, 416), batch_size=1)
    photos = _photos(6)
    exact = [(i, np.asarray(Image.fromarray(p).resize((416, 416)))) for i, p in enumerate(photos)]
    np.testing.assert_array_equal(np.concatenate([b.raw for b in run.run(exact)]),
                                  np.concatenate([b.raw for b in ref.run(exact)]))
    natural = list(enumerate(photos))
    cfg = PostprocessConfig()
    found = 0
    for a, b in zip(ref.run(natural), run.run(natural)):
        da = postprocess(a.raw, "yolox_raw", a.rows, None, 0.4, cfg)[0]
        db = postprocess(b.raw, "yolox_raw", b.rows, None, 0.4, cfg)[0]
        strong = da.scores > 0.5                              # away from the threshold
        for box, cls in zip(da.boxes_xyxy[strong], da.classes[strong]):
            same = db.boxes_xyxy[db.classes == cls]
            assert len(same) and _best_iou(box, same) > 0.9
            found += 1
    assert found >= 3, found


def _best_iou(box, boxes) -> float:
    from calib.boxes import box_iou
    return float(box_iou(box[None].astype(np.float64), boxes.astype(np.float64)).max())


def test_real_yolox_uint8_embed_preprocess_matches_the_numpy_route(yolox_u8):
    """--embed-preprocess in front of the uint8 NHWC model (Round, Clip, Cast(uint8)) on decoded
    photos: the detections of the same patched model fed by calib's preprocessing and the adapter."""
    from artifact_factory import make_artifact

    from calib.artifact import Artifact
    from calib.evaluate.patched import PatchedRunner, read_patched_info
    from calib.model_info import sha256_file
    from calib.preprocess import preprocess_image
    from calib.session import make_session
    from onnx_ops.patch import build_patched_model, patch_model

    d = make_artifact(80, calibrator="identity", thresholds=0.3, layout="yolox_raw", input_size=(416, 416),
                      sha256=sha256_file(yolox_u8)).to_dict()
    d["preprocess"] = _pre().to_artifact()
    d["model"].update(input_dtype="uint8", input_layout="NHWC")
    art = Artifact.from_dict(d)
    patched = patch_model(yolox_u8, art, yolox_u8.with_name("u8.detcal.onnx"))
    runner = PatchedRunner(read_patched_info(patched))
    emb = make_session(build_patched_model(yolox_u8, art, embed_preprocess=True, input_channel_order="RGB").model)
    total = 0
    for img in _photos(4):
        got = dict(zip([o.name for o in emb.get_outputs()], emb.run(None, {"image": img})))
        x, row = preprocess_image(img, (416, 416), art.preprocess)
        want = runner.run(x[None], row[None])
        k = int(want["num_dets"][0, 0])
        assert abs(int(got["num_dets"][0, 0]) - k) <= 1                # a .5 pixel tie may move one near 0.3
        strong = want["det_scores"][0, :k] > 0.4
        for box, cls in zip(want["det_boxes"][0, :k][strong], want["det_classes"][0, :k][strong]):
            same = got["det_boxes"][0][got["det_classes"][0] == cls]
            assert len(same) and _best_iou(box, same) > 0.95
            total += 1
    assert total >= 3, total
