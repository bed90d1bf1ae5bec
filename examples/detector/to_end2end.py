"""Turn an `xywh_cls` detector export into an `end2end` one, by ONNX graph surgery (no torch).

    python examples/detector/to_end2end.py IN.onnx OUT.onnx [--k 100]

IN: one output [B, 4+C, N] (cx, cy, w, h in input px; C class scores after sigmoid), the
YOLOv8-style head of the project's detector. OUT: the same graph with a head appended, like
the YOLOv10 export's TopK head: per candidate the best class score and its class, the top K
candidates by that score (sorted, highest first; no NMS, no score threshold), boxes turned
into corners:

    output0 [B, K, 6] = x1, y1, x2, y2 (input px), score, class (float)

The opset, the dynamic batch axis, the input and the metadata are kept (metadata `layout`
becomes `end2end`, plus `end2end` = True and `end2end_k`); every appended node uses
standard ops on TensorRT's parser list (Transpose, Slice, ReduceMax, ArgMax, TopK,
GatherND, GatherElements, Cast, Mul, Sub, Add, Unsqueeze, Concat). The output is
deterministic: same input file, same bytes.

The committed `examples/models/detector_end2end.onnx` and `detector_end2end_208.onnx` were
made with:

    python examples/detector/to_end2end.py examples/models/detector_xywh_cls.onnx examples/models/detector_end2end.onnx
    python examples/detector/to_end2end.py examples/models/detector_xywh_cls_208.onnx examples/models/detector_end2end_208.onnx
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

PREFIX = "/end2end/"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _probe_n(path: Path, model: onnx.ModelProto) -> int | None:
    """Candidate count N from one onnxruntime run on zeros, where the input's H and W are fixed."""
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] is None or dims[2] is None or dims[3] is None:
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    out = sess.run([model.graph.output[0].name], {inp.name: np.zeros([1] + dims[1:], dtype=dtype)})[0]
    if out.ndim != 3:
        raise SystemExit(f"to_end2end: {path}: output {model.graph.output[0].name} is {out.ndim}-D, expected [B, 4+C, N]")
    if out.shape[1] < 5 or out.shape[2] <= out.shape[1]:
        raise SystemExit(f"to_end2end: {path}: output shape {list(out.shape)} is not an xywh_cls head [B, 4+C, N]")
    return int(out.shape[2])


def convert(src: str | Path, dst: str | Path, k: int = 100) -> Path:
    """Write the end2end version of the xywh_cls model `src` to `dst` (atomically). Returns dst."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise SystemExit(f"to_end2end: model file not found: {src}")
    if src.resolve() == dst.resolve():
        raise SystemExit(f"to_end2end: refusing to overwrite the input {src}")
    if k < 1:
        raise SystemExit(f"to_end2end: --k must be >= 1, got {k}")
    model = onnx.load(str(src))
    g = model.graph
    if len(g.output) != 1:
        raise SystemExit(f"to_end2end: {src}: expected one output [B, 4+C, N], found {len(g.output)}")
    n = _probe_n(src, model)
    if n is not None and n < k:
        raise SystemExit(f"to_end2end: {src}: the head has only {n} candidates, --k {k} must be <= {n}")
    opset = _opset(model)
    out = g.output[0]
    out_name = out.name
    batch_dim = out.type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_param if not batch_dim.HasField("dim_value") else batch_dim.dim_value
    elem = out.type.tensor_type.elem_type

    # the old head output becomes an internal tensor
    raw = PREFIX + "raw_head"
    for node in g.node:
        node.output[:] = [raw if o == out_name else o for o in node.output]
        node.input[:] = [raw if i == out_name else i for i in node.input]
    del g.output[:]

    nodes, inits = [], []

    def const(name: str, values, dtype=np.int64) -> str:
        if PREFIX + name not in {i.name for i in inits}:
            inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), PREFIX + name))
        return PREFIX + name

    def node(op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str]:
        outs = [PREFIX + name] if n_out == 1 else [f"{PREFIX}{name}_{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=PREFIX + name, **attrs))
        return outs

    def slice_last(x: str, start: int, end: int, name: str) -> str:
        return node("Slice", [x, const(name + "_starts", [start]), const(name + "_ends", [end]),
                              const(name + "_axes", [2])], name)[0]

    big = np.iinfo(np.int64).max
    t = node("Transpose", [raw], "transpose", perm=[0, 2, 1])[0]                 # [B, N, 4+C]
    xy = slice_last(t, 0, 2, "xy")                                               # [B, N, 2]
    wh = slice_last(t, 2, 4, "wh")                                               # [B, N, 2]
    scores = slice_last(t, 4, big, "scores")                                     # [B, N, C]
    if opset >= 18:
        best = node("ReduceMax", [scores, const("reduce_axes", [2])], "best", keepdims=0)[0]
    else:
        best = node("ReduceMax", [scores], "best", axes=[2], keepdims=0)[0]      # [B, N]
    cls = node("ArgMax", [scores], "argmax", axis=2, keepdims=0)[0]              # [B, N] int64
    vals, idx = node("TopK", [best, const("k", [k])], "topk", n_out=2, axis=1, largest=1, sorted=1)  # [B, K]
    idx3 = node("Unsqueeze", [idx, const("unsq_axes", [2])], "idx3")[0]          # [B, K, 1]
    xy_k = node("GatherND", [xy, idx3], "xy_k", batch_dims=1)[0]                 # [B, K, 2]
    wh_k = node("GatherND", [wh, idx3], "wh_k", batch_dims=1)[0]                 # [B, K, 2]
    half = node("Mul", [wh_k, const("half", 0.5, helper.tensor_dtype_to_np_dtype(elem))], "half_wh")[0]
    x1y1 = node("Sub", [xy_k, half], "x1y1")[0]
    x2y2 = node("Add", [xy_k, half], "x2y2")[0]
    cls_k = node("GatherElements", [cls, idx], "cls_k", axis=1)[0]               # [B, K] int64
    cls_f = node("Cast", [cls_k], "cls_f", to=elem)[0]
    score3 = node("Unsqueeze", [vals, const("unsq_axes", [2])], "score3")[0]
    cls3 = node("Unsqueeze", [cls_f, const("unsq_axes", [2])], "cls3")[0]
    nodes.append(helper.make_node("Concat", [x1y1, x2y2, score3, cls3], [out_name], name=PREFIX + "concat", axis=2))

    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.output.append(helper.make_tensor_value_info(out_name, elem, [batch, k, 6]))

    meta = {m.key: m.value for m in model.metadata_props}
    meta.update({"layout": "end2end", "end2end": "True", "end2end_k": str(k)})
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)

    onnx.checker.check_model(model, full_check=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="xywh_cls model [B, 4+C, N]")
    ap.add_argument("dst", help="output end2end model [B, K, 6]")
    ap.add_argument("--k", type=int, default=100, help="detections kept per image (default: 100)")
    args = ap.parse_args(argv)
    out = convert(args.src, args.dst, args.k)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
