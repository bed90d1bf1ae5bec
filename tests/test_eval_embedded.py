"""`detcal eval --patched` on models patched with --embed-preprocess: fed the decoded images
(`image` uint8 [H, W, 3] per run, or `frames` [B, H, W, 3]), boxes read in the image's own pixels,
compared with the reference as for plain patched models.

The embedded and the plain patched model of one artifact differ only in who letterboxes: the graph
(onnx_ops.preprocess_graph: Resize) or calib.resize (numpy). At the model's own size (no
resampling) the inputs are equal, so the metrics are equal; on resampled images the pixels differ
by the resize implementations' rounding (a few 1e-3 of x, tested in test_preprocess_graph), which
moves boxes by hundredths of a pixel and scores by ~1e-3: only a detection within that of a
threshold or of the IoU 0.5 match can flip. TOL bounds that on the 40 images here.
"""
from __future__ import annotations

import numpy as np
import pytest

from synthetic import write_blob_dataset

TOL = {"ap50": 0.02, "ap50_95": 0.02, "recall": 0.03, "fp_per_negative_image": 0.07, "n_kept": 2}
KEYS = tuple(TOL)


@pytest.fixture(scope="module")
def patched(blob_model, blob_data, blob_dir) -> dict:
    """kind -> patched model path, all from one calibration of the blob detector."""
    from calib.fitting import FitOptions, fit
    from onnx_ops.patch import patch_model

    cal = blob_dir / "cal_embedded.json"
    fit(blob_model, blob_data, out=cal, options=FitOptions(folds=3), progress=False, log=lambda *a, **k: None)
    d = blob_dir / "embedded"
    d.mkdir(exist_ok=True)
    return {
        "calibration": cal,
        "plain": patch_model(blob_model, cal, d / "plain.onnx"),
        "image": patch_model(blob_model, cal, d / "image.onnx", embed_preprocess=True),
        "image_bgr": patch_model(blob_model, cal, d / "image_bgr.onnx", embed_preprocess=True,
                                 input_channel_order="BGR"),
        "frames": patch_model(blob_model, cal, d / "frames.onnx", embed_preprocess=True, frame_size=(128, 128)),
    }


def _eval(model, data, patched_path, cal):
    from calib.evaluate import evaluate

    return evaluate(model, data, patched=patched_path, calibration=cal, split="val", progress=False)


def test_patched_info_reads_the_embedded_interface(patched):
    from calib.evaluate.patched import read_patched_info

    plain, image, bgr, frames = (read_patched_info(patched[k]) for k in ("plain", "image", "image_bgr", "frames"))
    assert plain.embedded is None and plain.input_size == (128, 128)
    assert (image.embedded, image.image_input, image.image_channel_order) == ("image", "image", "RGB")
    assert image.dynamic_batch and image.input_size is None and image.preprocess == plain.preprocess
    assert bgr.image_channel_order == "BGR"
    assert (frames.embedded, frames.image_input, frames.frame_size) == ("frames", "frames", (128, 128))


def test_embedded_eval_equals_plain_eval_on_resampled_images(patched, blob_model, blob_data):
    """Mixed sizes (128x128, 160x120, 96x128): every image but the first size is resampled."""
    cal = patched["calibration"]
    plain = _eval(blob_model, blob_data, patched["plain"], cal)
    emb = _eval(blob_model, blob_data, patched["image"], cal)
    p, e = plain.metrics("patched"), emb.metrics("patched")
    assert p["ap50"] > 0.3 and p["n_kept"] > 10, p          # the blob detector finds the blobs
    for key in KEYS:
        assert e[key] == pytest.approx(p[key], abs=TOL[key]), (key, e[key], p[key])
    # the reference columns are the same computation (raw model + numpy pipeline): equal
    assert {k: emb.metrics("reference")[k] for k in KEYS} == {k: plain.metrics("reference")[k] for k in KEYS}
    assert "preprocessing embedded" in emb.columns["patched"].definition
    # most images: the same detections, boxes in the same (original image) pixels
    same = 0
    for a, b in zip(plain.columns["patched"].detections, emb.columns["patched"].detections):
        if len(a.scores) == len(b.scores) and np.array_equal(a.classes, b.classes):
            np.testing.assert_allclose(b.boxes_xyxy, a.boxes_xyxy, atol=0.5)
            np.testing.assert_allclose(b.scores, a.scores, atol=5e-3)
            same += 1
    assert same >= 0.9 * len(plain.columns["patched"].detections)


def test_bgr_input_is_fed_reversed_channels(patched, blob_model, blob_data):
    """The BGR-input model reverses the channels in the graph; eval feeds it BGR: the same result."""
    cal = patched["calibration"]
    rgb = _eval(blob_model, blob_data, patched["image"], cal)
    bgr = _eval(blob_model, blob_data, patched["image_bgr"], cal)
    assert {k: bgr.metrics("patched")[k] for k in KEYS} == {k: rgb.metrics("patched")[k] for k in KEYS}
    for a, b in zip(rgb.columns["patched"].detections, bgr.columns["patched"].detections):
        np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)


def test_frames_at_the_model_size_equal_the_plain_model_exactly(patched, blob_model, blob_dir):
    """128x128 frames into a 128x128 model: no resampling, so the inputs and the metrics are equal."""
    data = write_blob_dataset(blob_dir / "data_128", n_pos=12, n_neg=8, sizes=((128, 128),), seed=3)
    cal = patched["calibration"]
    plain = _eval(blob_model, data, patched["plain"], cal).metrics("patched")
    for kind in ("frames", "image"):
        got = _eval(blob_model, data, patched[kind], cal).metrics("patched")
        for key in KEYS:
            assert got[key] == pytest.approx(plain[key], abs=1e-9), (kind, key)


def test_frames_of_another_size_are_one_line(patched, blob_model, blob_data):
    from calib.errors import DetcalError

    with pytest.raises(DetcalError) as e:
        _eval(blob_model, blob_data, patched["frames"], patched["calibration"])
    msg = str(e.value)
    assert "\n" not in msg and "takes 128x128 frames" in msg and "--frame-size" in msg, msg


def test_cli_eval_of_an_embedded_model(tmp_path, patched, blob_model, blob_data, capsys):
    from calib.cli import main

    argv = ["eval", "--model", str(blob_model), "--data", str(blob_data), "--split", "val", "--quiet",
            "--patched", str(patched["image"]), "--calibration", str(patched["calibration"]),
            "--out", str(tmp_path / "ev")]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "ev" / "eval.json").exists()
