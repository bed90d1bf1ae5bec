"""Dynamically quantized models: an image's scores depend on the other images of its batch, so fit,
eval and doctor run them one image per call unless asked otherwise (calib.runner.resolve_batch_size)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))     # bench_real: the real files


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


def _with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A batch-1 export with a dynamic batch axis: the declared dims, and a leading 1 in the shape of every
    Reshape of a run-time tensor made 0 (copy the batch)."""
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    g.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    g.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    del g.value_info[:]
    const = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    for n in g.node:
        if n.input and all(i in const for i in n.input if i):
            const.update(n.output)
    shapes = {n.input[1] for n in g.node if n.op_type == "Reshape" and n.input[0] not in const}
    for i, t in enumerate(g.initializer):
        if t.name in shapes and numpy_helper.to_array(t)[0] == 1:
            a = numpy_helper.to_array(t).copy()
            a[0] = 0
            g.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    return m


def test_real_int8_model_at_batch_8_is_not_the_model_at_batch_1(tmp_path):
    """The real YOLOv8n int8 (dynamic quantization) with a dynamic batch axis: the same photos at batch 8
    score differently than one by one (up to 0.76 on 16 photos), so fit defaults to one image per call."""
    import bench_real

    if not (bench_real.REAL_MODEL.exists() and bench_real.REAL_IMAGES.is_dir()):
        pytest.skip(f"{bench_real.REAL_MODEL} or {bench_real.REAL_IMAGES} absent (../shared/real beside the repo)")
    path = tmp_path / "yolov8n_int8_dynamic_batch.onnx"
    onnx.save(_with_dynamic_batch(onnx.load(str(bench_real.REAL_MODEL))), str(path))
    info = read_model_info(path)
    assert info.dynamic_batch and info.batch_coupled and resolve_batch_size(info, None) == 1
    sess = make_session(path, threads=2)
    x, _ = bench_real.real_inputs(640, 8)
    alone = np.concatenate([sess.run(None, {"images": x[i:i + 1]})[0] for i in range(8)])
    np.testing.assert_array_equal(alone[:1], make_session(bench_real.REAL_MODEL, threads=2).run(None, {"images": x[:1]})[0])
    batched = sess.run(None, {"images": x})[0]
    assert np.abs(batched[:, 4:] - alone[:, 4:]).max() > 0.05


def test_doctor_measures_the_coupling_on_the_real_int8_model(tmp_path):
    """doctor's batch_coupling check on the real int8 model with a dynamic batch: 8 real photos run together
    move scores across 0.25 (a warning, with the numbers); a model without dynamic quantization has no such
    check."""
    import shutil

    import bench_real
    from calib.doctor import DoctorOptions, diagnose

    if not (bench_real.REAL_MODEL.exists() and bench_real.REAL_IMAGES.is_dir()):
        pytest.skip(f"{bench_real.REAL_MODEL} or {bench_real.REAL_IMAGES} absent (../shared/real beside the repo)")
    root = bench_real.REAL_IMAGES.parents[1]
    data = tmp_path / "ten"
    (data / "images" / "val").mkdir(parents=True)
    (data / "labels" / "val").mkdir(parents=True)
    for p in bench_real.real_images(10):
        shutil.copy(p, data / "images" / "val" / p.name)
        shutil.copy(root / "labels" / "val" / (p.stem + ".txt"), data / "labels" / "val" / (p.stem + ".txt"))
    (data / "data.yaml").write_text((root / "data.yaml").read_text())
    model = tmp_path / "yolov8n_int8_dynamic_batch.onnx"
    onnx.save(_with_dynamic_batch(onnx.load(str(bench_real.REAL_MODEL))), str(model))
    r = diagnose(model, data / "data.yaml", options=DoctorOptions(timing_images=2, bootstrap=20), progress=False)
    check = {c.name: c for c in r.checks}["batch_coupling"]
    assert check.status == "warn" and check.evidence["n_crossing_conf"] > 0, check
    assert check.evidence["n_images"] == 8 and check.evidence["run_batch_size"] == 1
    assert "one image per call" in check.fix
