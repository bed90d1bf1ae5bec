"""Dynamically quantized models: an image's scores depend on the other images of its batch, so fit,
eval and doctor run them one image per call unless asked otherwise (calib.runner.resolve_batch_size)."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

from calib.collect import collect_detections
from calib.data import load_dataset
from calib.model_info import read_model_info
from calib.runner import DEFAULT_BATCH, resolve_batch_size
from calib.session import make_session
from synthetic import make_blob_detector


def dynamically_quantized(src, dst):
    """The blob detector with its input through DynamicQuantizeLinear -> DequantizeLinear, as onnxruntime's
    dynamic quantization puts before every ConvInteger / MatMulInteger: one uint8 scale for the whole
    input tensor, batch included."""
    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.input[:] = ["images_dq" if i == "images" else i for i in n.input]
    g.node.insert(0, helper.make_node("DequantizeLinear", ["images_q", "images_scale", "images_zp"], ["images_dq"]))
    g.node.insert(0, helper.make_node("DynamicQuantizeLinear", ["images"], ["images_q", "images_scale", "images_zp"]))
    onnx.save(m, str(dst))
    return dst


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("dq")
    plain = make_blob_detector(d / "blob.onnx")
    return plain, dynamically_quantized(plain, d / "blob_dq.onnx")


def test_the_coupling_is_real(quantized):
    """The same image scores differently beside a brighter one: the batch's range sets its scale."""
    _, dq = quantized
    sess = make_session(dq, threads=1)
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.4, (1, 3, 128, 128)).astype(np.float32)
    a[:, 0, 30:60, 30:60] = 0.9
    bright = np.full_like(a, 40.0)                     # out of the image's range: a coarser uint8 step
    alone = sess.run(None, {"images": a})[0]
    paired = sess.run(None, {"images": np.concatenate([a, bright])})[0][:1]
    assert np.abs(alone - paired).max() > 1e-3


def test_batch_one_by_default_and_an_explicit_batch_kept_with_a_warning(quantized):
    plain, dq = quantized
    info_dq, info_plain = read_model_info(dq), read_model_info(plain)
    assert info_dq.batch_coupled and not info_plain.batch_coupled
    assert resolve_batch_size(info_plain, None) == DEFAULT_BATCH
    assert resolve_batch_size(info_dq, None) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_batch_size(info_plain, 4) == 4
        assert resolve_batch_size(info_dq, 1) == 1
    with pytest.warns(UserWarning, match="depend on the other images of its batch"):
        assert resolve_batch_size(info_dq, 4) == 4


def test_fit_collects_one_image_per_call(quantized, blob_data):
    from calib.artifact import Preprocess

    _, dq = quantized
    info = read_model_info(dq)
    ds = load_dataset(str(blob_data), "val")
    got = collect_detections(ds, info, Preprocess(), (128, 128), num_classes=2, progress=False)
    assert got.batch_sizes and set(got.batch_sizes) == {1}
    assert len(got.batch_sizes) == len(got.image_sizes)
