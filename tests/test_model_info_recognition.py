"""read_model_info has one recognition path (calib.head_recognition) for every layout; what it adds
for dense heads is the recorded output shape, and a patched model is refused in one line."""
from __future__ import annotations

import onnx
import pytest

from artifact_factory import make_artifact, synthetic_detector
from calib.errors import DetcalError
from calib.model_info import _dense_output_shape, read_model_info, sha256_file
from synthetic import write_blob_dataset


@pytest.mark.parametrize("declared,probed,layout,dynamic_hw,want", [
    ((1, 84, 8400), (1, 84, 8400), "xywh_cls", False, (1, 84, 8400)),            # all fixed: as declared
    (("batch", 84, 8400), (1, 84, 8400), "xywh_cls", False, ("batch", 84, 8400)),  # batch stays symbolic
    (("batch", "c", "n"), (1, 84, 8400), "xywh_cls", False, ("batch", 84, 8400)),  # probed dims filled in
    (("batch", "c", "n"), (1, 84, 8400), "xywh_cls", True, ("batch", 84, "n")),    # N follows the size fed
    (("b", "n", "d"), (1, 6300, 85), "xywh_obj_cls", True, ("b", "n", 85)),
    (("b", "k", "d"), (1, 300, 6), "end2end", True, ("b", 300, 6)),                # K does not follow the size
    (("b", "c", "n"), ("b", "c", "n"), "xywh_cls", False, ("b", "c", "n")),        # no probe: as declared
])
def test_dense_output_shape(declared, probed, layout, dynamic_hw, want):
    assert _dense_output_shape(declared, probed, layout, dynamic_hw=dynamic_hw) == want


def test_a_patched_model_is_refused_in_one_line(tmp_path, capsys):
    from calib.cli import main
    from onnx_ops.patch import patch_model

    src = tmp_path / "m.onnx"
    onnx.save(synthetic_detector("xywh_cls", num_classes=3, size=32), str(src))
    out = patch_model(src, make_artifact(3, sha256=sha256_file(src), input_size=(32, 32), max_det=20))
    for kw in ({}, {"layout": "end2end"}, {"num_classes": 3}):
        with pytest.raises(DetcalError) as e:
            read_model_info(out, **kw)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{out} is already patched by detcal") and "num_dets" in msg, msg
    data = write_blob_dataset(tmp_path / "d", n_pos=2, n_neg=1, num_classes=3)
    rc = main(["fit", "--model", str(out), "--data", str(data), "--quiet",
               "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already patched by detcal" in err and "\n" not in err, err


@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("num_classes", [2, 80])
def test_a_fixed_batch_is_probed_with_its_own_batch(tmp_path, batch, num_classes):
    """The recognition probe feeds as many images as a fixed batch asks (onnxruntime refuses any
    other count): a DETR head with raw logits reads as logits, and a 2-class one ([B, Q, 6], the
    end2end shape too) as detr, at every batch size."""
    from heads_factory import detr_model

    path = tmp_path / f"detr_b{batch}.onnx"
    onnx.save(detr_model(queries=50, num_classes=num_classes, batch=batch), str(path))
    info = read_model_info(path, num_classes=num_classes)
    assert info.layout == "detr" and info.head_params.get("scores_are_logits") is True, (info.layout, info.head_params)
    assert info.input_shape[0] == batch and not info.dynamic_batch


@pytest.mark.parametrize("dim", [0, -1])
def test_a_batch_dim_of_zero_or_minus_one_counts_as_dynamic(tmp_path, dim):
    """Some exporters write dim_value 0 or -1 for an unknown batch: it reads as dynamic, not as a size."""
    m = synthetic_detector("xywh_cls", num_classes=3, size=32)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = dim
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    info = read_model_info(path)
    assert info.layout == "xywh_cls" and info.dynamic_batch and info.input_shape[0] is None, info.input_shape
    import numpy as np
    import onnxruntime as ort
    from onnx_ops.patch import patch_model

    out = patch_model(path, make_artifact(3, sha256=sha256_file(path), input_size=(32, 32), max_det=20))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rows = np.array([[0, 0, 1, 1, 32, 32]] * 3, np.float32)
    num = sess.run(["num_dets"], {"images": np.zeros((3, 3, 32, 32), np.float32), "letterbox": rows})[0]
    assert num.shape == (3, 1)
