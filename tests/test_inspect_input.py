"""`detcal inspect` prints the image input convention: dtype, NCHW/NHWC and how that was decided,
and for uint8 inputs that the scaling must be none."""
from __future__ import annotations

import onnx
import pytest

from artifact_factory import synthetic_detector
from calib.model_info import read_model_info
from onnx_ops.inspect import format_inspection, inspect_model
from test_model_input import with_input

CASES = [   # (dtype, layout, dims, metadata) -> words in the "layout:" line
    (("float32", "NCHW", None, None), "3 channels at axis 1"),
    (("uint8", "NCHW", None, None), "3 channels at axis 1"),
    (("float32", "NHWC", None, None), "3 channels at axis 3"),
    (("uint8", "NHWC", None, None), "3 channels at axis 3"),
    (("float32", "NHWC", ("batch", 32, 32, "c"), None), "axis 1 is 32, so the dynamic axis 3 holds the channels"),
    (("float32", "NHWC", ("batch", "h", "w", "c"), None), "NCHW by default"),
    (("float32", "NHWC", ("batch", "h", "w", "c"), {"data_format": "channels_last"}),
     "the metadata data_format = 'channels_last'"),
]


@pytest.mark.parametrize("case,why", CASES)
def test_inspect_prints_the_input_convention_and_why(tmp_path, capsys, case, why):
    from calib.cli import main

    dtype, layout, dims, metadata = case
    base = synthetic_detector("xywh_cls", num_classes=3, opset=13, size=32)
    path = tmp_path / "m.onnx"
    onnx.save(base if case[:3] == ("float32", "NCHW", None) else
              with_input(base, dtype, layout, dims=dims, metadata=metadata), str(path))
    d = inspect_model(str(path))["input"]
    info = read_model_info(path, num_classes=3)          # what fit / eval / patch decide
    assert (d["dtype"], d["layout"]) == (info.input_dtype, info.input_layout)
    assert why in d["why"], d
    assert ("none" in d["scaling"] and "--scale none" in d["scaling"]) == (dtype == "uint8"), d
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"image input: images {info.input_dtype} {info.input_layout}" in out and f"  layout: {d['why']}" in out
    assert out.count("scaling:") == 1


def test_an_input_detcal_cannot_feed_is_reported_not_raised(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])])
    path = tmp_path / "gray.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    d = inspect_model(str(path))
    assert "3 channels" in d["input"]["error"]
    assert "image input: not fed by detcal: " in format_inspection(d)
