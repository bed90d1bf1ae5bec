"""The quantization test pair, built in code: the project's own detector and an 8-bit copy of it.

float: examples/models/detector_xywh_cls.onnx (trained and exported at 320, float32).
int8:  the same network through `onnxruntime.quantization.quantize_static` (QDQ format, uint8
       activations, int8 per-channel weights, MinMax calibration) calibrated on generated
       deployment scenes, letterboxed to 320 exactly as doctor serves them.

Nothing is written into the repository: callers pass a temporary folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FLOAT_MODEL = REPO / "examples" / "models" / "detector_xywh_cls.onnx"
INPUT_SIZE = (320, 320)


def calibration_batches(n_images: int, seed: int = 7) -> list[np.ndarray]:
    """n_images generated scenes (3/4 positive, 1/4 negative) -> [(1, 3, 320, 320) float32], letterboxed RGB/255."""
    from calib.artifact import Preprocess
    from calib.preprocess import preprocess_image
    from examples.detector.scenes import negative_scene, positive_scene

    pre = Preprocess()
    out = []
    for i in range(n_images):
        img = negative_scene((seed, 9, i)) if i % 4 == 3 else positive_scene((seed, 9, i))[0]
        x, _ = preprocess_image(img, INPUT_SIZE, pre)
        out.append(x[None].astype(np.float32))
    return out


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over prepared batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def decode_nodes(model) -> list[str]:
    """Names of the nodes after the network proper: those from which no Conv is reachable (the box
    decode and the final Concat of boxes and scores), Conv nodes excluded."""
    producer = {o: n for n in model.graph.node for o in n.output}
    needed, stack = set(), [i for n in model.graph.node if n.op_type == "Conv" for i in n.input]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.input)
    return [n.name for n in model.graph.node if n.op_type != "Conv" and n.name not in needed]


def make_int8(dst: Path, *, n_calibration: int = 16, seed: int = 7, batches: list[np.ndarray] | None = None,
              quantize_decode: bool = False, src: Path = FLOAT_MODEL) -> Path:
    """Static QDQ int8 copy of `src` calibrated on generated scenes (or on `batches`); returns dst.

    By default the decode after the last convolutions stays float, as deployment guides advise:
    quantizing the output Concat(boxes, scores) with one scale (0..~320 px in 256 steps) turns
    every class score into 0 or ~1.24. `quantize_decode=True` makes exactly that broken model.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnx

    dst = Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    reader = _Reader(model.graph.input[0].name,
                     batches if batches is not None else calibration_batches(n_calibration, seed))
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=[] if quantize_decode else decode_nodes(model))
    return dst
