"""Small random-weight ONNX detectors of each head family, built in code (onnx.helper), no binaries.

    yolox_raw_model(size, C)        YOLOX official export: per stride Conv -> [reg | Sigmoid(obj, cls)] ->
                                    Concat over levels -> Transpose -> [1, N, 5+C] (no box decode)
    gfl_model(size, C, R, ...)      PicoDet/NanoDet: per level Sigmoid(Conv) class map [1, N_l, C] and
                                    DFL map [1, N_l, 4 (R+1)]; outputs: class levels, then box levels
    nanodet_plus_model(size, C, R)  NanoDet-Plus `_forward_onnx`: per level Concat(Sigmoid(cls), bins) on
                                    channels, flattened, levels concatenated -> [1, N, C + 4 (R+1)]
    detr_model(Q, C, two_outputs)   [1, Q, 4+C] (Sigmoid boxes, raw logits) or boxes + logits outputs
    yolov5_one_class_model(size)    decoded [1, 3 N_cells, 6] (pixels, obj, p), no TopK (anchors=1: [1, N_cells, 6])
    end2end_model(size, K)          [1, K, 6] x1,y1,x2,y2,score,class from TopK

`dynamic=True` gives the image input symbolic height/width ([1, 3, "height", "width"]); the convolutions
(kernel = stride) then give floor grids (YOLOX) or, padded SAME_UPPER, ceil grids (GFL, NanoDet) at
any size, as the real backbones do.

Weights come from a seeded numpy Generator; scales keep raw offsets small, as in trained models.
`random_*_raws` draw random head outputs directly (for the decode equivalence tests).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calib.head_decoders import level_counts

OPSET = 13


class _Net:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], [], 0

    def t(self, base: str) -> str:
        self.k += 1
        return f"{base}_{self.k}"

    def const(self, arr, base="c") -> str:
        name = self.t(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs) -> str:
        o = out or self.t(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [o], name=self.t("n_" + op_type), **attrs))
        return o

    def conv(self, x, cin, cout, stride, scale=0.05, bias=0.0, ceil=False) -> str:
        w = self.const((self.rng.standard_normal((cout, cin, stride, stride)) * scale).astype(np.float32), "w")
        b = self.const((np.full(cout, bias) + self.rng.standard_normal(cout) * scale).astype(np.float32), "b")
        pad = {"auto_pad": "SAME_UPPER"} if ceil else {}
        return self.op("Conv", x, w, b, kernel_shape=[stride, stride], strides=[stride, stride], **pad)

    def model(self, inp_shape, outputs: list[tuple[str, list]], metadata=None) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "heads_factory",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, inp_shape)],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        for k, v in (metadata or {}).items():
            m.metadata_props.add(key=k, value=str(v))
        onnx.checker.check_model(m)
        return m


def _input_shape(size, dynamic, batch=1):
    return [batch, 3, "height", "width"] if dynamic else [batch, 3, *size]


def yolox_raw_model(size=(64, 96), num_classes=3, seed=0, dynamic=False, ceil=None) -> onnx.ModelProto:
    """ceil (default: with `dynamic`): SAME_UPPER convolutions, ceil grids as YOLOX's stride-2 backbone
    gives at sizes that are no multiple of 32; else floor grids (kernel = stride, no padding)."""
    ceil = dynamic if ceil is None else ceil
    net = _Net(seed)
    levels = []
    for s in (8, 16, 32):
        f = net.conv("images", 3, 5 + num_classes, s, ceil=ceil)
        levels.append(net.op("Reshape", f, net.const(np.array([1, 5 + num_classes, -1], np.int64))))
    cat = net.op("Concat", *levels, axis=2)
    reg = net.op("Slice", cat, net.const(np.array([0], np.int64)), net.const(np.array([4], np.int64)),
                 net.const(np.array([1], np.int64)))
    rest = net.op("Slice", cat, net.const(np.array([4], np.int64)), net.const(np.array([5 + num_classes], np.int64)),
                  net.const(np.array([1], np.int64)))
    out = net.op("Concat", reg, net.op("Sigmoid", rest), axis=1)
    net.op("Transpose", out, out="output", perm=[0, 2, 1])
    n = "anchors" if dynamic else sum(level_counts(size, (8, 16, 32), ceil))
    return net.model(_input_shape(size, dynamic), [("output", [1, n, 5 + num_classes])])


def gfl_model(size=(192, 192), num_classes=3, reg_max=7, strides=(8, 16, 32, 64), batch_axis=True, seed=0,
              dynamic=False):
    net = _Net(seed)
    cls_outs, box_outs = [], []
    counts = [f"n{s}" for s in strides] if dynamic else level_counts(size, strides, True)
    for i, (s, n) in enumerate(zip(strides, counts)):
        c = net.op("Sigmoid", net.conv("images", 3, num_classes, s, bias=-2.0, ceil=True))
        x = net.conv("images", 3, 4 * (reg_max + 1), s, scale=0.5, ceil=True)
        for f, d, outs, tag in ((c, num_classes, cls_outs, "cls"), (x, 4 * (reg_max + 1), box_outs, "box")):
            r = net.op("Reshape", f, net.const(np.array([1, d, -1], np.int64)))
            t = net.op("Transpose", r, perm=[0, 2, 1])
            name = f"{tag}_{s}"
            if batch_axis:
                net.op("Identity", t, out=name)
            else:
                net.op("Reshape", t, net.const(np.array([-1, d], np.int64)), out=name)
            outs.append((name, ([1, n, d] if batch_axis else [n, d])))
    return net.model(_input_shape(size, dynamic), cls_outs + box_outs)


def nanodet_plus_model(size=(192, 160), num_classes=3, reg_max=7, strides=(8, 16, 32, 64), seed=0, dynamic=False,
                       metadata=None):
    """NanoDet-Plus export: [1, N, C + 4 (R+1)], per level Concat(Sigmoid(cls), bins) on channels."""
    net = _Net(seed)
    d = num_classes + 4 * (reg_max + 1)
    levels = []
    for s in strides:
        c = net.op("Sigmoid", net.conv("images", 3, num_classes, s, bias=-2.0, ceil=True))
        x = net.conv("images", 3, 4 * (reg_max + 1), s, scale=0.5, ceil=True)
        levels.append(net.op("Reshape", net.op("Concat", c, x, axis=1), net.const(np.array([1, d, -1], np.int64))))
    net.op("Transpose", net.op("Concat", *levels, axis=2), out="output", perm=[0, 2, 1])
    n = "anchors" if dynamic else sum(level_counts(size, strides, True))
    return net.model(_input_shape(size, dynamic), [("output", [1, n, d])], metadata)


def detr_model(size=(64, 64), queries=300, num_classes=3, two_outputs=False, sigmoid_scores=False, seed=0,
               metadata=None, dynamic=False, batch=1):
    """batch: the input's and outputs' fixed batch size."""
    net = _Net(seed)
    pooled = net.op("Flatten", net.op("GlobalAveragePool", "images"))            # [1, 3]
    wq = net.const((net.rng.standard_normal((3, queries * (4 + num_classes))) * 2).astype(np.float32), "wq")
    bq = net.const((net.rng.standard_normal(queries * (4 + num_classes)) * 2).astype(np.float32), "bq")
    q = net.op("Reshape", net.op("Add", net.op("MatMul", pooled, wq), bq),
               net.const(np.array([batch, queries, 4 + num_classes], np.int64)))
    sl = lambda a, b: net.op("Slice", q, net.const(np.array([a], np.int64)), net.const(np.array([b], np.int64)),  # noqa: E731
                             net.const(np.array([2], np.int64)))
    boxes = net.op("Sigmoid", sl(0, 4))
    logits = sl(4, 4 + num_classes)
    if sigmoid_scores:
        logits = net.op("Sigmoid", logits)
    if two_outputs:
        net.op("Identity", boxes, out="pred_boxes")
        net.op("Identity", logits, out="pred_logits")
        return net.model(_input_shape(size, dynamic, batch), [("pred_boxes", [batch, queries, 4]),
                                                              ("pred_logits", [batch, queries, num_classes])], metadata)
    net.op("Concat", boxes, logits, out="output", axis=2)
    return net.model(_input_shape(size, dynamic, batch), [("output", [batch, queries, 4 + num_classes])], metadata)


def _dense_one_class(net: _Net, size, strides=(8, 16, 32), anchors=3):
    """Decoded one-class YOLOv5-style rows [1, anchors N_cells, 6] (cx, cy, w, h px, obj, p) and their
    count (anchors 1: a decoded one-class YOLOX grid)."""
    h, w = size
    parts, centres, scales = [], [], []
    for s in strides:
        f = net.op("Sigmoid", net.conv("images", 3, 6 * anchors, s, scale=0.5))
        r = net.op("Reshape", f, net.const(np.array([1, anchors, 6, -1], np.int64)))
        parts.append(net.op("Reshape", net.op("Transpose", r, perm=[0, 1, 3, 2]),
                            net.const(np.array([1, -1, 6], np.int64))))
        rows, cols = h // s, w // s
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cell = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32) * s
        c = np.zeros((anchors, rows * cols, 6), np.float32)
        c[:, :, 0:2] = cell[None]
        centres.append(c.reshape(-1, 6))
        scales.append(np.tile(np.array([2 * s, 2 * s, 4 * s, 4 * s, 1, 1], np.float32), (anchors * rows * cols, 1)))
    dense = net.op("Concat", *parts, axis=1)
    dec = net.op("Add", net.op("Mul", dense, net.const(np.concatenate(scales)[None])),
                 net.const(np.concatenate(centres)[None]))
    return dec, sum(x.shape[0] for x in centres)


def yolov5_one_class_model(size=(64, 64), seed=0, anchors=3) -> onnx.ModelProto:
    net = _Net(seed)
    dec, n = _dense_one_class(net, size, anchors=anchors)
    net.op("Identity", dec, out="output")
    return net.model([1, 3, *size], [("output", [1, n, 6])])


def end2end_model(size=(64, 64), k=None, seed=0) -> onnx.ModelProto:
    """[1, K, 6] from TopK over one-class decoded rows (x1, y1, x2, y2, score, class 0); K defaults to
    the anchor count, so the shape equals yolov5_one_class_model's."""
    net = _Net(seed)
    dec, n = _dense_one_class(net, size)
    k = n if k is None else k
    sl = lambda a, b: net.op("Slice", dec, net.const(np.array([a], np.int64)), net.const(np.array([b], np.int64)),  # noqa: E731
                             net.const(np.array([2], np.int64)))
    cxcy, wh = sl(0, 2), sl(2, 4)
    half = net.op("Div", wh, net.const(np.array(2.0, np.float32)))
    score = net.op("Mul", sl(4, 5), sl(5, 6))
    rows = net.op("Concat", net.op("Sub", cxcy, half), net.op("Add", cxcy, half), score,
                  net.op("Mul", score, net.const(np.array(0.0, np.float32))), axis=2)
    flat = net.op("Reshape", score, net.const(np.array([1, -1], np.int64)))
    _ = net.t("topk")
    vals, idx = "topk_vals", "topk_idx"
    net.nodes.append(helper.make_node("TopK", [flat, net.const(np.array([k], np.int64))], [vals, idx], axis=1))
    g = net.op("Gather", rows, net.op("Squeeze", idx, net.const(np.array([0], np.int64))), axis=1)
    net.op("Identity", g, out="output")
    return net.model([1, 3, *size], [("output", [1, k, 6])])


# ------------------------------------------------------------------------------------------
# random head outputs (decode equivalence)
# ------------------------------------------------------------------------------------------
def random_yolox_raws(rng, size, batch, num_classes, ceil=False) -> list[np.ndarray]:
    n = sum(level_counts(size, (8, 16, 32), ceil))
    raw = rng.standard_normal((batch, n, 5 + num_classes)).astype(np.float32)
    raw[:, :, 2:4] *= 2
    raw[:, :, 4:] = 1 / (1 + np.exp(-raw[:, :, 4:] * 3))
    return [raw.astype(np.float32)]


def random_nanodet_raw(rng, size, batch, num_classes, reg_max, strides=(8, 16, 32, 64)) -> list[np.ndarray]:
    """[B, N, C + 4 (R+1)]: class probabilities, then DFL bin logits (levels concatenated)."""
    raws = random_gfl_raws(rng, size, batch, num_classes, reg_max, strides)
    k = len(strides)
    return [np.concatenate([np.concatenate(raws[:k], axis=1), np.concatenate(raws[k:], axis=1)], axis=2)]


def random_gfl_raws(rng, size, batch, num_classes, reg_max, strides) -> list[np.ndarray]:
    counts = level_counts(size, strides, True)
    cls = [rng.uniform(0, 1, (batch, n, num_classes)).astype(np.float32) for n in counts]
    box = [(rng.standard_normal((batch, n, 4 * (reg_max + 1))) * 4).astype(np.float32) for n in counts]
    return cls + box


def random_detr_raws(rng, batch, queries, num_classes, two_outputs) -> list[np.ndarray]:
    boxes = rng.uniform(0, 1, (batch, queries, 4)).astype(np.float32)
    logits = (rng.standard_normal((batch, queries, num_classes)) * 4).astype(np.float32)
    return [boxes, logits] if two_outputs else [np.concatenate([boxes, logits], axis=2)]


# ------------------------------------------------------------------------------------------
# blob detectors of the head families (they find tests/synthetic.py's coloured squares)
# ------------------------------------------------------------------------------------------
BLOB_WINDOW, BLOB_STRIDE = 32, 16


def _blob_logits(net: _Net, pooled: str, num_classes: int, gain: float) -> str:
    """pooled [B, 3, h, w] window means -> class logits [B, C, h, w]: gain * (channel c - grey - 0.25)."""
    mean = net.op("ReduceMean", pooled, axes=[1], keepdims=1)
    dom = net.op("Gather", net.op("Sub", pooled, mean), net.const(np.arange(num_classes, dtype=np.int64)), axis=1)
    return net.op("Mul", net.op("Sub", dom, net.const(np.float32(0.25))), net.const(np.float32(gain)))


def blob_detr_model(size=128, num_classes=3, two_outputs=False, gain=12.0) -> onnx.ModelProto:
    """A DETR-style blob detector: one query per 32 x 32 window (stride 16), boxes normalised
    cx, cy, w, h (fixed per query), class logits from the window's colour dominance.
    Outputs [1, Q, 4 + C], or pred_boxes [1, Q, 4] + pred_logits [1, Q, C]."""
    net = _Net(0)
    cells = (size - BLOB_WINDOW) // BLOB_STRIDE + 1
    q = cells * cells
    pooled = net.op("AveragePool", "images", kernel_shape=[BLOB_WINDOW] * 2, strides=[BLOB_STRIDE] * 2)
    logits = net.op("Transpose", net.op("Reshape", _blob_logits(net, pooled, num_classes, gain),
                                        net.const(np.array([1, num_classes, q], np.int64))), perm=[0, 2, 1])
    centres = (np.arange(cells) * BLOB_STRIDE + BLOB_WINDOW / 2) / size
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(q, BLOB_WINDOW / size), np.full(q, BLOB_WINDOW / size)], 1)
    # boxes follow the input (0 * logits keeps them a function of the image, as in a real decoder)
    zero = net.op("ReduceMean", net.op("Mul", logits, net.const(np.float32(0.0))), axes=[2], keepdims=1)
    box_t = net.op("Add", net.const(boxes[None].astype(np.float32)), zero)
    meta = {"names": str({c: f"blob{c}" for c in range(num_classes)})}
    if two_outputs:
        net.op("Identity", box_t, out="pred_boxes")
        net.op("Identity", logits, out="pred_logits")
        return net.model([1, 3, size, size], [("pred_boxes", [1, q, 4]), ("pred_logits", [1, q, num_classes])], meta)
    net.op("Concat", box_t, logits, out="output", axis=2)
    return net.model([1, 3, size, size], [("output", [1, q, 4 + num_classes])], meta)


def blob_nanodet_model(num_classes=2, reg_max=7, gain=12.0) -> onnx.ModelProto:
    """A NanoDet-Plus blob detector with dynamic batch, height and width: output [B, N, C + 4 (R+1)],
    strides 8, 16, 32, 64 (ceil grids), anchor centres (x * s, y * s). The stride-16 level scores the
    32 x 32 window centred on its anchor point and predicts 16 px to every side (DFL bin 1 of
    16 px); the other levels score sigmoid(-10)."""
    net = _Net(0)
    d = num_classes + 4 * (reg_max + 1)
    levels = []
    one_hot = np.zeros((1, 4 * (reg_max + 1), 1, 1), np.float32)
    for s in (8, 16, 32, 64):
        if s == BLOB_STRIDE:
            half = BLOB_WINDOW // 2
            pooled = net.op("AveragePool", "images", kernel_shape=[BLOB_WINDOW] * 2, strides=[s, s],
                            pads=[half, half, half - 1, half - 1], count_include_pad=0)
            cls = net.op("Sigmoid", _blob_logits(net, pooled, num_classes, gain))
            bins = one_hot.copy()
            bins[0, 1::reg_max + 1] = 30.0                  # distance 1 stride = 16 px per side
        else:
            pooled = net.op("AveragePool", "images", kernel_shape=[s, s], strides=[s, s], auto_pad="SAME_UPPER")
            flat0 = net.op("Mul", net.op("ReduceMean", pooled, axes=[1], keepdims=1), net.const(np.float32(0.0)))
            cls = net.op("Sigmoid", net.op("Add", flat0, net.const(np.full((1, num_classes, 1, 1), -10.0, np.float32))))
            bins = one_hot
        chan0 = net.op("ReduceMean", pooled, axes=[1], keepdims=1)
        box = net.op("Add", net.op("Mul", chan0, net.const(np.float32(0.0))), net.const(bins))
        levels.append(net.op("Reshape", net.op("Concat", cls, box, axis=1), net.const(np.array([0, d, -1], np.int64))))
    net.op("Transpose", net.op("Concat", *levels, axis=2), out="output", perm=[0, 2, 1])
    meta = {"names": str({c: f"blob{c}" for c in range(num_classes)})}
    return net.model(["batch", 3, "height", "width"], [("output", ["batch", "anchors", d])], meta)
