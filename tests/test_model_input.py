"""Model input conventions (calib.model_input): uint8 and NHWC image inputs, fed as the model declares.

The models are the blob detector (tests/synthetic.py) behind a new input: uint8 NCHW, float NHWC
and uint8 NHWC, each converted in the graph to the blob's own float NCHW x = pixel / 255. So the
"equivalent float NCHW model" is the blob detector itself, fed with the /255 preprocessing.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper

from calib.artifact import Artifact, Preprocess
from calib.errors import DetcalError
from calib.model_input import InputConvention, read_input_convention

RAW = Preprocess(scale="none")              # raw 0..255 pixels: what a uint8 model takes
VARIANTS = {                                # name -> (input dtype, layout)
    "uint8_nchw": ("uint8", "NCHW"),
    "float_nhwc": ("float32", "NHWC"),
    "uint8_nhwc": ("uint8", "NHWC"),
}


def with_input(base: onnx.ModelProto, dtype: str, layout: str, dims=None, metadata: dict | None = None,
               scale: float | None = 1 / 255) -> onnx.ModelProto:
    """`base` (float NCHW input) behind a new input `images` of `dtype` and `layout`: uint8 -> Cast
    [, Mul(scale): base takes x in 0..1]; NHWC -> Transpose to NCHW. dims: the declared dims (default: base's)."""
    m = onnx.ModelProto()
    m.CopyFrom(base)
    old = m.graph.input[0]
    b, c, h, w = [d.dim_value or d.dim_param for d in old.type.tensor_type.shape.dim]
    inner = "blob/x"
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name == old.name:
                n.input[i] = inner
    nodes, x = [], "images"
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", [x], ["in/f"], to=TensorProto.FLOAT))
        x = "in/f"
        if scale is not None:
            nodes.append(helper.make_node("Mul", [x, "in/scale"], ["in/scaled"]))
            m.graph.initializer.append(numpy_helper.from_array(np.float32(scale), "in/scale"))
            x = "in/scaled"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["in/nchw"], perm=[0, 3, 1, 2]))
        x = "in/nchw"
    nodes.append(helper.make_node("Identity", [x], [inner]))
    for n in reversed(nodes):
        m.graph.node.insert(0, n)
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    dims = dims or ([b, c, h, w] if layout == "NCHW" else [b, h, w, c])
    m.graph.input.remove(old)
    m.graph.input.insert(0, helper.make_tensor_value_info("images", elem, dims))
    for k, v in (metadata or {}).items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.fixture(scope="module")
def variant_models(blob_dir, blob_model) -> dict:
    """name -> path of the blob detector behind each input convention (VARIANTS)."""
    base = onnx.load(str(blob_model))
    out = {}
    for name, (dtype, layout) in VARIANTS.items():
        path = blob_dir / f"blob_{name}.onnx"
        onnx.save(with_input(base, dtype, layout), str(path))
        out[name] = path
    return out


def preprocess_for(name: str) -> Preprocess:
    return RAW if VARIANTS[name][0] == "uint8" else Preprocess()


# ------------------------------------------------------------------------------------------
# the declared convention
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims,metadata,override,want", [
    ((1, 3, 64, 96), {}, None, "NCHW"),
    ((1, 64, 96, 3), {}, None, "NHWC"),
    (("batch", 3, "h", "w"), {}, None, "NCHW"),
    (("batch", "h", "w", 3), {}, None, "NHWC"),
    (("batch", "c", "h", "w"), {}, None, "NCHW"),                            # ambiguous: NCHW
    (("batch", "c", "h", "w"), {"input_layout": "NHWC"}, None, "NHWC"),      # ... unless the metadata says
    (("batch", "c", "h", "w"), {"data_format": "channels_last"}, None, "NHWC"),
    (("batch", "c", "h", "w"), {"input_layout": "NHWC"}, "NCHW", "NCHW"),    # the override wins
    ((1, 3, 64, 3), {}, None, "NCHW"),                                       # 3 at axis 1 first
    ((1, "c", 64, 96), {}, None, "NCHW"),
    ((1, 64, 96, "c"), {}, None, "NHWC"),
])
def test_layout_is_read_from_the_declared_dims(dims, metadata, override, want):
    conv = read_input_convention(dims, "float32", metadata=metadata, layout=override)
    assert conv.layout == want
    assert conv.hw(dims) == ((dims[2], dims[3]) if want == "NCHW" else (dims[1], dims[2]))


@pytest.mark.parametrize("dims,dtype,override,words", [
    ((1, 1, 64, 64), "float32", None, ["1 channels", "3 channels"]),
    ((1, 3, 64, 64), "int8", None, ["int8", "float32, float16 or uint8"]),
    ((1, 3, 64, 64), "float64", None, ["float64"]),
    ((1, 3, 64, 64), "float32", "NHWC", ["NHWC needs 3 channels at axis 3, found 64"]),
    ((1, 3, 64, 64), "float32", "NHCW", ["unknown input layout"]),
])
def test_inputs_detcal_cannot_feed_are_one_line(dims, dtype, override, words):
    with pytest.raises(DetcalError) as e:
        read_input_convention(dims, dtype, layout=override, source="m.onnx")
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_model_info_records_the_convention(variant_models, blob_model):
    from calib.model_info import read_model_info

    for name, path in variant_models.items():
        info = read_model_info(path, num_classes=2)
        assert (info.input_dtype, info.input_layout) == VARIANTS[name]
        assert info.input_size == (128, 128) and info.layout == "xywh_cls" and info.dynamic_batch
    info = read_model_info(blob_model, num_classes=2)
    assert (info.input_dtype, info.input_layout) == ("float32", "NCHW")


# ------------------------------------------------------------------------------------------
# the adapter
# ------------------------------------------------------------------------------------------
pixels = arrays(np.float32, st.tuples(st.integers(1, 2), st.just(3), st.integers(1, 5), st.integers(1, 5)),
                elements=st.integers(0, 255).map(float))


@settings(max_examples=60, deadline=None)
@given(x=pixels, layout=st.sampled_from(["NCHW", "NHWC"]))
def test_uint8_feed_is_exact_on_pixels_and_nhwc_is_a_transpose(x, layout):
    y = InputConvention("uint8", layout).feed(x)
    assert y.dtype == np.uint8
    back = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(back.astype(np.float32), x)
    f = InputConvention("float32", layout).feed(x / 255)
    assert f.dtype == np.float32 and f.shape == (x.shape if layout == "NCHW" else y.shape)
    np.testing.assert_array_equal(f if layout == "NCHW" else f.transpose(0, 3, 1, 2), x / 255)


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float32, (1, 3, 4, 4), elements=st.floats(-0.25, 255.25, width=32)))
def test_uint8_feed_rounds_to_the_nearest_pixel(x):
    y = InputConvention("uint8", "NCHW").feed(x).astype(np.float32)
    assert np.all(np.abs(y - x) <= 0.5) and y.min() >= 0 and y.max() <= 255
    np.testing.assert_array_equal(y, np.rint(x))        # half to even, as the graph's Round


@pytest.mark.parametrize("bad", [1e-3 * np.ones((1, 3, 2, 2)) - 1, np.full((1, 3, 2, 2), 256.0),
                                 np.full((1, 3, 2, 2), np.nan)])
def test_uint8_feed_of_values_that_are_not_pixels_is_an_error(bad):
    with pytest.raises(DetcalError, match="m.onnx: the model takes uint8 pixels"):
        InputConvention("uint8", "NCHW").feed(bad.astype(np.float32), "m.onnx")


@pytest.mark.parametrize("pre,words", [
    (Preprocess(), "the /255 scaling"),
    (Preprocess(scale="none", mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4)), "mean/std scaling"),
    (Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), "mean/std scaling"),
])
def test_a_uint8_model_with_scaling_is_one_clear_line(pre, words):
    with pytest.raises(DetcalError) as e:
        InputConvention("uint8", "NHWC").check_preprocess(pre, "m.onnx")
    msg = str(e.value)
    assert msg.startswith("m.onnx: the model input is uint8") and words in msg and "--scale none" in msg
    InputConvention("uint8", "NHWC").check_preprocess(RAW)                # raw pixels: fine
    InputConvention("float16", "NHWC").check_preprocess(pre)              # float models take any scaling


def _images(seed=0, n=5, size=(128, 128)):
    rng = np.random.default_rng(seed)
    return [(i, rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_raw_outputs_through_the_adapter_equal_the_float_nchw_model(name, variant_models, blob_model):
    """At the model's size (no resampling) the pixels are integers: every variant computes exactly
    what the blob detector computes on x = pixel / 255."""
    from calib.model_info import read_model_info
    from calib.runner import DetectorRunner

    ref = DetectorRunner(read_model_info(blob_model, num_classes=2), Preprocess(), (128, 128), batch_size=2)
    run = DetectorRunner(read_model_info(variant_models[name], num_classes=2), preprocess_for(name), (128, 128),
                         batch_size=2)
    for size in ((128, 128), (128, 64)):
        images = _images(n=5, size=size)
        want = np.concatenate([b.raw for b in ref.run(images)])
        got = np.concatenate([b.raw for b in run.run(images)])
        if VARIANTS[name][0] == "uint8" and size != (128, 128):
            # resampled: the uint8 input holds the rounded pixels (at most 0.5 / 255 apart in x)
            assert np.abs(got - want).max() < 0.2
            continue
        np.testing.assert_array_equal(got, want)


def test_ambiguous_dynamic_dims_follow_the_override_and_the_metadata(blob_dir, blob_model):
    from calib.model_info import read_model_info

    base = onnx.load(str(blob_model))
    dims = ["batch", "h", "w", "c"]
    path = blob_dir / "blob_nhwc_dynamic.onnx"
    onnx.save(with_input(base, "float32", "NHWC", dims=dims), str(path))
    assert read_model_info(path, num_classes=2).input_layout == "NCHW"      # nothing says otherwise
    assert read_model_info(path, num_classes=2, input_layout="NHWC").input_layout == "NHWC"
    tagged = blob_dir / "blob_nhwc_tagged.onnx"
    onnx.save(with_input(base, "float32", "NHWC", dims=dims, metadata={"input_layout": "NHWC"}), str(tagged))
    assert read_model_info(tagged, num_classes=2).input_layout == "NHWC"


# ------------------------------------------------------------------------------------------
# the artifact
# ------------------------------------------------------------------------------------------
def test_artifact_records_the_convention_and_old_files_still_load():
    from artifact_factory import make_artifact

    d = make_artifact(2, input_size=(128, 128)).to_dict()
    d["model"].pop("input_layout", None)
    d["model"]["input_dtype"] = "float32"
    assert "input_layout" not in Artifact.from_dict(d).model          # an older file: no input_layout, loads
    d["model"].update(input_dtype="uint8", input_layout="NHWC")
    assert Artifact.from_dict(d).to_dict()["model"]["input_layout"] == "NHWC"
    for key, value in (("input_layout", "NCWH"), ("input_dtype", "int8")):
        bad = {**d, "model": {**d["model"], key: value}}
        with pytest.raises(DetcalError, match=f"c.json: model.{key} = '{value}'"):
            Artifact.from_dict(bad, source="c.json")


# ------------------------------------------------------------------------------------------
# end to end: fit -> patch -> eval, and the embedded preprocessing
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(variant_models, blob_data, blob_dir) -> dict:
    """name -> (calibration path, patched path) for each variant, by the library calls."""
    from calib.fitting import FitOptions, fit
    from onnx_ops.patch import patch_model

    out = {}
    for name, path in variant_models.items():
        cal = blob_dir / f"cal_{name}.json"
        fit(path, blob_data, out=cal, preprocess=preprocess_for(name), options=FitOptions(folds=3),
            progress=False, log=lambda *a, **k: None)
        out[name] = cal, patch_model(path, cal, blob_dir / f"blob_{name}.detcal.onnx")
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fit_patch_eval_end_to_end(name, fitted, variant_models, blob_data):
    import json

    from calib.evaluate import evaluate
    from calib.model_info import value_info_dims, value_info_dtype

    cal, patched = fitted[name]
    block = json.loads(cal.read_text())
    dtype, layout = VARIANTS[name]
    assert (block["model"]["input_dtype"], block["model"]["input_layout"]) == (dtype, layout)
    assert block["preprocess"]["scaling"]["kind"] == ("none" if dtype == "uint8" else "div255")
    src = {i.name: i for i in onnx.load(str(variant_models[name])).graph.input}["images"]
    got = {i.name: i for i in onnx.load(str(patched)).graph.input}["images"]       # the input is kept as it was
    assert (value_info_dtype(got), value_info_dims(got)) == (value_info_dtype(src), value_info_dims(src))
    r = evaluate(variant_models[name], blob_data, patched=patched, calibration=cal, split="val", progress=False)
    ref, pat = r.metrics("reference"), r.metrics("patched")
    assert ref["ap50"] > 0.3, ref["ap50"]       # the detector finds the blobs through the adapter (float blob: ~0.5)
    for key in ("ap50", "ap50_95", "recall", "fp_per_negative_image", "n_kept"):
        assert pat[key] == pytest.approx(ref[key], abs=1e-3), key
    for a, b in zip(r.columns["reference"].detections, r.columns["patched"].detections):
        assert len(a.scores) == len(b.scores)
        np.testing.assert_allclose(b.boxes_xyxy, a.boxes_xyxy, atol=1e-2)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)


def test_uint8_nhwc_eval_equals_the_float_model_at_the_same_calibration(fitted, variant_models, blob_model,
                                                                         blob_data):
    """The uint8 NHWC variant evaluated with its calibration finds what the blob detector finds
    with the same calibration (the inputs differ only by the rounding of resampled pixels)."""
    from calib.artifact import load_artifact
    from calib.evaluate import evaluate
    from calib.model_info import sha256_file

    art = load_artifact(fitted["uint8_nhwc"][0])
    float_art = Artifact.from_dict({**art.to_dict(), "preprocess": Preprocess().to_artifact(),
                                    "model": {**art.model, "input_dtype": "float32", "input_layout": "NCHW",
                                              "sha256": sha256_file(blob_model)}})
    a = evaluate(blob_model, blob_data, calibration=float_art, split="val", progress=False).metrics("reference")
    b = evaluate(variant_models["uint8_nhwc"], blob_data, calibration=art, split="val",
                 progress=False).metrics("reference")
    assert b["ap50"] == pytest.approx(a["ap50"], abs=0.02) and b["recall"] == pytest.approx(a["recall"], abs=0.05)


def test_cli_fit_of_a_uint8_model_needs_scale_none_and_then_runs(tmp_path, variant_models, blob_data, capsys):
    from calib.cli import main

    argv = ["fit", "--model", str(variant_models["uint8_nchw"]), "--data", str(blob_data), "--quiet", "--folds", "3"]
    assert main(argv + ["--out", str(tmp_path / "a" / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detcal: error: ") and "\n" not in err and "--scale none" in err, err
    assert not (tmp_path / "a").exists()
    assert main(argv + ["--scale", "none", "--out", str(tmp_path / "c.json")]) == 0
    assert (tmp_path / "c.json").exists()


def test_cli_input_layout_override_is_recorded_and_honoured_by_eval(tmp_path, blob_model, blob_data, capsys):
    """An NHWC model whose dims are all dynamic: --input-layout NHWC at fit, recorded, read again by eval."""
    from calib.cli import main

    path = tmp_path / "dyn.onnx"
    onnx.save(with_input(onnx.load(str(blob_model)), "float32", "NHWC", dims=["batch", "h", "w", "c"]), str(path))
    cal = tmp_path / "c.json"
    base = ["--model", str(path), "--data", str(blob_data), "--quiet", "--imgsz", "128"]
    assert main(["fit", *base, "--folds", "3", "--input-layout", "NHWC", "--out", str(cal)]) == 0
    import json
    assert json.loads(cal.read_text())["model"]["input_layout"] == "NHWC"
    assert main(["eval", *base, "--split", "val", "--calibration", str(cal), "--out", str(tmp_path / "ev")]) == 0
    capsys.readouterr()
    assert main(["fit", *base, "--folds", "3", "--out", str(tmp_path / "n.json")]) == 2     # fed as NCHW: ort fails
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err


def _embedded_session(path, art):
    from calib.session import make_session
    from onnx_ops.patch import build_patched_model

    res = build_patched_model(path, art, embed_preprocess=True)
    onnx.checker.check_model(res.model, full_check=True)
    return make_session(res.model)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_embed_preprocess_matches_the_numpy_preprocessing(name, fitted, variant_models):
    """The embedded model on decoded images == the patched model fed by calib's preprocessing and
    the adapter (uint8: the rounded pixels; a pixel on a .5 boundary may round the other way)."""
    from calib.artifact import load_artifact
    from calib.evaluate.patched import PatchedRunner, read_patched_info
    from calib.preprocess import preprocess_image

    cal, patched = fitted[name]
    art = load_artifact(cal)
    emb = _embedded_session(variant_models[name], art)
    assert emb.get_inputs()[0].name == "image" and emb.get_inputs()[0].type == "tensor(uint8)"
    runner = PatchedRunner(read_patched_info(patched))
    rng = np.random.default_rng(5)
    for h, w in ((128, 128), (100, 140), (77, 128)):
        img = np.full((h, w, 3), 120, np.uint8)
        img[20:50, 30:60] = (230, 40, 40)
        img[60:90, 70:100] = (40, 200, 40)
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        got = dict(zip([o.name for o in emb.get_outputs()], emb.run(None, {"image": img})))
        x, row = preprocess_image(img, (128, 128), art.preprocess)
        want = runner.run(x[None], row[None])
        assert int(got["num_dets"][0, 0]) == int(want["num_dets"][0, 0]) > 0
        k = int(want["num_dets"][0, 0])
        np.testing.assert_allclose(got["det_boxes"][0, :k], want["det_boxes"][0, :k], atol=0.05)
        np.testing.assert_allclose(got["det_scores"][0, :k], want["det_scores"][0, :k], atol=2e-3)


def test_embedded_uint8_input_equals_the_adapter_feed():
    """The embedded preprocessing in front of a uint8 NHWC identity model hands the model the pixels
    InputConvention.feed makes from calib's preprocessing: equal but for .5 ties of the resampling."""
    from calib.preprocess import preprocess_image
    from calib.session import make_session
    from onnx_ops.graph_builder import GraphBuilder
    from onnx_ops.preprocess_graph import PreprocessGraphSpec, embed_preprocess

    for layout in ("NCHW", "NHWC"):
        dims = [1, 3, 48, 64] if layout == "NCHW" else [1, 48, 64, 3]
        graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "id",
                                  [helper.make_tensor_value_info("images", TensorProto.UINT8, dims)],
                                  [helper.make_tensor_value_info("out", TensorProto.UINT8, dims)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        pre = Preprocess(scale="none", channel_order="BGR", placement="top_left", pad_value=0)
        spec = PreprocessGraphSpec.from_preprocess(pre, (48, 64), image_channel_order="RGB")
        b = GraphBuilder(17)
        embed_preprocess(model.graph, b, "images", spec)
        model.graph.initializer.extend(b.initializers)
        onnx.checker.check_model(model, full_check=True)
        sess = make_session(model)
        rng = np.random.default_rng(1)
        for h, w in ((48, 64), (30, 100), (97, 61)):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            got = sess.run(None, {"image": img})[0]
            x, _ = preprocess_image(img, (48, 64), pre)
            want = InputConvention("uint8", layout).feed(x[None])
            diff = np.abs(got.astype(int) - want.astype(int))
            assert got.dtype == np.uint8 and got.shape == want.shape and diff.max() <= 1
            assert (diff > 0).mean() < 0.01, (diff > 0).mean()
            if (h, w) == (48, 64):
                np.testing.assert_array_equal(got, want)           # no resampling: exact


def test_embed_preprocess_refuses_a_uint8_model_with_scaling(variant_models, fitted):
    from calib.artifact import load_artifact
    from onnx_ops.patch import build_patched_model

    art = load_artifact(fitted["uint8_nhwc"][0])
    scaled = Artifact.from_dict({**art.to_dict(), "preprocess": Preprocess().to_artifact()})
    with pytest.raises(DetcalError, match="is uint8 .raw 0..255 pixels. but the preprocessing scales"):
        build_patched_model(variant_models["uint8_nhwc"], scaled, embed_preprocess=True)


def test_doctor_runs_a_uint8_nhwc_model_as_the_float_one(tmp_path, variant_models, blob_model, blob_data, capsys):
    """`detcal doctor` feeds the uint8 NHWC variant through the adapter: its findings are those of
    the blob detector (the same network), and without --scale none it stops with one line."""
    import json

    from calib.cli import main

    runs = {}
    for key, model, extra in (("u8", variant_models["uint8_nhwc"], ["--scale", "none"]), ("f32", blob_model, [])):
        out = tmp_path / key
        rc = main(["doctor", "--model", str(model), "--data", str(blob_data), "--quiet", "--json", "--out", str(out),
                   *extra])
        capsys.readouterr()
        doc = json.loads((out / "doctor.json").read_text())
        assert rc == doc["exit_code"] in (0, 1)                 # 1: something was flagged
        runs[key] = {c["name"]: c["status"] for c in doc["checks"]}
    assert runs["u8"] == runs["f32"] and len(runs["u8"]) == 7
    assert main(["doctor", "--model", str(variant_models["uint8_nhwc"]), "--data", str(blob_data), "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "uint8 (raw 0..255 pixels)" in err, err
