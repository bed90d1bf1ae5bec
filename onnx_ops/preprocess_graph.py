"""The preprocessing subgraph: decoded image -> model input and letterbox row, in standard ONNX ops.

Twin of `calib.resize` (same steps, same order, same float32 arithmetic):

    image uint8 [H, W, 3] (H, W dynamic)          frames uint8 [B, H, W, 3] (H, W fixed at build)
      to_nchw_float       Cast(float), Unsqueeze, Transpose     -> [1, 3, H, W]  /  [B, 3, H, W]
      scaled_size         Shape, Gather, Cast, Div, Min, Mul, Round, Max, Cast  (frames: constants)
      resize_linear       Resize(mode=linear, half_pixel, sizes)   -> [., 3, new_h, new_w]
      pad_to_input        Sub, Div, Concat, Pad(constant pad_value)  -> [., 3, h, w]
      reorder_channels    Gather(axis 1, [2, 1, 0]) where the image's channel order is not the model's
      normalise           Mul(1/255) [, Sub(mean), Div(std)]; scale none (raw 0..255): [Sub(mean), Div(std)]
      letterbox_row       Cast, Concat, Unsqueeze -> [1, 6]  /  Expand of a constant -> [B, 6]

and, in front of a model (embed_preprocess), what its input declares (calib.model_input's twin):
      to NHWC             Transpose(0, 2, 3, 1) for a [B, h, w, 3] input
      to_uint8_pixels     Round, Clip(0, 255), Cast(uint8) for a uint8 input (raw pixels only)
      to the model dtype  Cast(float16) for a float16 input

Every op is on the TensorRT parser's list with an onnxruntime CUDA kernel (onnx_ops.ep_support);
every name starts with `detcal/`. Opset 11 and up (Resize with `sizes`, Pad with tensor pads,
Round).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from calib import resize as R
from calib.artifact import RESIZE_MODES

from calib.errors import DetcalError

from .graph_builder import FLOAT, INT64, GraphBuilder

IMAGE_INPUT = "image"        # [H, W, 3] uint8
FRAMES_INPUT = "frames"      # [B, H, W, 3] uint8, H and W fixed
MODEL_INPUT = "input"        # the standalone model's outputs
ROW_OUTPUT = "letterbox"


@dataclass(frozen=True)
class PreprocessGraphSpec:
    """What the subgraph bakes in. size_hw: the model input (H, W); orders: "RGB" | "BGR"."""

    size_hw: tuple[int, int]
    mode: str = "letterbox"                 # letterbox | stretch
    placement: str = "centre"               # centre | top_left | bottom_right
    pad_value: int = 114
    model_channel_order: str = "RGB"        # what the model was trained on (the artifact)
    image_channel_order: str = "RGB"        # what the caller passes
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)   # in `scale` units: 0..1 after /255, or 0..255
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: str = "div255"                   # div255 | none (raw 0..255 pixels: YOLOX, uint8 inputs)

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if self.placement not in R.PLACEMENTS:
            raise ValueError(f"placement must be one of {R.PLACEMENTS}, got {self.placement!r}")
        for order in (self.model_channel_order, self.image_channel_order):
            if order not in R.CHANNEL_ORDERS:
                raise ValueError(f"channel order must be one of {R.CHANNEL_ORDERS}, got {order!r}")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        if len(self.size_hw) != 2 or min(int(s) for s in self.size_hw) <= 0:
            raise ValueError(f"size_hw must be two positive ints, got {self.size_hw}")
        if self.scale not in ("div255", "none"):
            raise ValueError(f"scale must be div255 or none, got {self.scale!r}")

    @classmethod
    def from_preprocess(cls, pre, size_hw, image_channel_order: str | None = None) -> "PreprocessGraphSpec":
        """From calib's Preprocess (the artifact's block); the image defaults to the model's order."""
        order = pre.channel_order
        return cls((int(size_hw[0]), int(size_hw[1])), pre.resize, getattr(pre, "placement", "centre"),
                   int(pre.pad_value), order, image_channel_order or order,
                   tuple(map(float, pre.mean)), tuple(map(float, pre.std)), getattr(pre, "scale", "div255"))

    @property
    def scaled(self) -> bool:
        return tuple(self.mean) != (0.0, 0.0, 0.0) or tuple(self.std) != (1.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------------
# steps (twins of calib.resize)
# ------------------------------------------------------------------------------------------
def to_nchw_float(b: GraphBuilder, image: str, batched: bool) -> str:
    """uint8 [H, W, 3] -> float32 [1, 3, H, W]; batched: [B, H, W, 3] -> [B, 3, H, W]."""
    x = b.cast(image, FLOAT, name="pre/cast")       # first: TensorRT takes uint8 only into a Cast
    if not batched:
        x = b.unsqueeze(x, 0, name="pre/nhwc")       # the 4-D Transpose is the faster one on CPU
    return b.op("Transpose", x, name="pre/nchw", perm=[0, 3, 1, 2])


@dataclass
class ScaledSize:
    """Tensors of the letterbox geometry of one image (all shape [1])."""

    orig_w: str      # float32
    orig_h: str      # float32
    scale_x: str     # float32
    scale_y: str     # float32
    new_w: str       # int64
    new_h: str       # int64


def scaled_size(b: GraphBuilder, image: str, spec: PreprocessGraphSpec) -> ScaledSize:
    """Twin of calib.resize.scale_ratio / scaled_size (stretch: the input size) on image [H, W, 3]."""
    in_h, in_w = spec.size_hw
    h_i, w_i = b.dim(image, 0, name="pre/orig_h_i64"), b.dim(image, 1, name="pre/orig_w_i64")
    h, w = b.cast(h_i, FLOAT, name="pre/orig_h"), b.cast(w_i, FLOAT, name="pre/orig_w")
    sy = b.op("Div", b.f32("pre/in_h", [in_h]), h, name="pre/scale_h")
    sx = b.op("Div", b.f32("pre/in_w", [in_w]), w, name="pre/scale_w")
    if spec.mode == "stretch":
        return ScaledSize(w, h, sx, sy, b.i64("pre/new_w", [in_w]), b.i64("pre/new_h", [in_h]))
    r = b.op("Min", sy, sx, name="pre/scale")
    one = b.f32("pre/one_px", [1.0])

    def side(orig: str, what: str) -> str:
        px = b.op("Max", b.op("Round", b.op("Mul", orig, r, name=f"pre/{what}_f"), name=f"pre/{what}_round"),
                  one, name=f"pre/{what}_min1")
        return b.cast(px, INT64, name=f"pre/{what}")

    return ScaledSize(w, h, r, r, side(w, "new_w"), side(h, "new_h"))


def resize_linear(b: GraphBuilder, x: str, sizes: str) -> str:
    """ONNX Resize of x [N, 3, h, w] to `sizes` (int64 [4]): linear, half_pixel, no antialias."""
    if b.opset >= 13:
        roi, scales = "", ""
    else:  # opset 11-12: roi and scales are required inputs, empty when sizes is given
        roi = b.const("pre/resize_roi", np.zeros(0, np.float32))
        scales = b.const("pre/resize_scales", np.zeros(0, np.float32))
    return b.op("Resize", x, roi, scales, sizes, name="pre/resize", mode="linear",
                coordinate_transformation_mode=R.COORDINATE_TRANSFORMATION_MODE)


def placement_offsets(b: GraphBuilder, new_w: str, new_h: str, spec: PreprocessGraphSpec) -> tuple[str, str, str, str]:
    """Twin of calib.resize.placement_offsets: (left, top, right, bottom) int64 [1] each."""
    in_h, in_w = spec.size_hw
    dw = b.op("Sub", b.i64("pre/in_w_i64", [in_w]), new_w, name="pre/pad_w")
    dh = b.op("Sub", b.i64("pre/in_h_i64", [in_h]), new_h, name="pre/pad_h")
    if spec.placement == "centre":
        two = b.i64("pre/two", [2])
        left, top = b.op("Div", dw, two, name="pre/pad_left"), b.op("Div", dh, two, name="pre/pad_top")
        return left, top, b.op("Sub", dw, left, name="pre/pad_right"), b.op("Sub", dh, top, name="pre/pad_bottom")
    zero = b.i64("pre/pad_zero", [0])
    if spec.placement == "top_left":
        return zero, zero, dw, dh
    return dw, dh, zero, zero


def pad_to_input(b: GraphBuilder, x: str, left: str, top: str, right: str, bottom: str, pad_value: int) -> str:
    """Pad x [N, 3, new_h, new_w] with the constant pad_value (0..255 units) to [N, 3, H, W]."""
    z2 = b.i64("pre/pads_nc", [0, 0])
    pads = b.op("Concat", z2, top, left, z2, bottom, right, name="pre/pads", axis=0)
    return b.op("Pad", x, pads, b.f32("pre/pad_value", np.float32(pad_value)), name="pre/pad", mode="constant")


def reorder_channels(b: GraphBuilder, x: str, spec: PreprocessGraphSpec) -> str:
    """Reverse the channels of x [N, 3, H, W] where the image's order is not the model's."""
    if spec.image_channel_order == spec.model_channel_order:
        return x
    return b.op("Gather", x, b.i64("pre/reverse_channels", [2, 1, 0]), name="pre/channel_order", axis=1)


def normalise(b: GraphBuilder, x: str, spec: PreprocessGraphSpec) -> str:
    """x * float32(1/255) [, - mean, / std], per channel of x [N, 3, H, W]; scale none: x [- mean, / std]
    on the raw 0..255 values (calib.preprocess.to_input_tensor)."""
    y = x if spec.scale == "none" else b.op("Mul", x, b.f32("pre/inv255", np.float32(1 / 255)), name="pre/div255")
    if spec.scaled:
        y = b.op("Sub", y, b.f32("pre/mean", np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)), name="pre/sub_mean")
        y = b.op("Div", y, b.f32("pre/std", np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)), name="pre/div_std")
    return y


def to_uint8_pixels(b: GraphBuilder, x: str) -> str:
    """Raw float32 pixels -> uint8: Round (half to even, as numpy's rint), Clip to [0, 255], Cast;
    twin of calib.model_input.InputConvention.feed for a uint8 input."""
    r = b.op("Round", x, name="pre/round_pixels")
    c = b.op("Clip", r, b.f32("pre/pixel_min", np.float32(0)), b.f32("pre/pixel_max", np.float32(255)),
             name="pre/clip_pixels")
    return b.cast(c, TensorProto.UINT8, name="pre/to_uint8")


def letterbox_row(b: GraphBuilder, g: ScaledSize, left: str, top: str) -> str:
    """[1, 6] float32 (orig_w, orig_h, scale_x, scale_y, pad_left, pad_top)."""
    row = b.op("Concat", g.orig_w, g.orig_h, g.scale_x, g.scale_y, b.cast(left, FLOAT, name="pre/pad_left_f"),
               b.cast(top, FLOAT, name="pre/pad_top_f"), name="pre/row6", axis=0)
    return b.unsqueeze(row, 0, name="pre/row")


# ------------------------------------------------------------------------------------------
# composers
# ------------------------------------------------------------------------------------------
def add_image_preprocess(b: GraphBuilder, image: str, spec: PreprocessGraphSpec) -> tuple[str, str]:
    """image uint8 [H, W, 3] -> (model input float32 [1, 3, h, w], letterbox row float32 [1, 6])."""
    x = to_nchw_float(b, image, batched=False)
    g = scaled_size(b, image, spec)
    sizes = b.op("Concat", b.i64("pre/sizes_nc", [1, 3]), g.new_h, g.new_w, name="pre/sizes", axis=0)
    x = resize_linear(b, x, sizes)
    if spec.mode == "letterbox":
        left, top, right, bottom = placement_offsets(b, g.new_w, g.new_h, spec)
        x = pad_to_input(b, x, left, top, right, bottom, spec.pad_value)
    else:
        left = top = b.i64("pre/no_pad", [0])
    x = normalise(b, reorder_channels(b, x, spec), spec)
    return x, letterbox_row(b, g, left, top)


def add_frames_preprocess(b: GraphBuilder, frames: str, frame_hw: tuple[int, int],
                          spec: PreprocessGraphSpec) -> tuple[str, str]:
    """frames uint8 [B, H, W, 3] with (H, W) = frame_hw fixed -> ([B, 3, h, w] float32, rows [B, 6]).

    The geometry is computed at build time by calib.resize (the same function the numpy side uses).
    """
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    in_h, in_w = spec.size_hw
    row = R.resize_row(fw, fh, spec.size_hw, spec.mode, spec.placement)
    new_w, new_h = (in_w, in_h) if spec.mode == "stretch" else R.scaled_size(fw, fh, spec.size_hw)
    x = to_nchw_float(b, frames, batched=True)
    batch = b.dim(frames, 0, name="pre/batch")
    if (new_h, new_w) != (fh, fw):
        sizes = b.op("Concat", batch, b.i64("pre/sizes_chw", [3, new_h, new_w]), name="pre/sizes", axis=0)
        x = resize_linear(b, x, sizes)
    if spec.mode == "letterbox" and (new_h, new_w) != (in_h, in_w):
        left, top = int(row[4]), int(row[5])
        pads = b.i64("pre/pads", [0, 0, top, left, 0, 0, in_h - new_h - top, in_w - new_w - left])
        x = b.op("Pad", x, pads, b.f32("pre/pad_value", np.float32(spec.pad_value)), name="pre/pad", mode="constant")
    x = normalise(b, reorder_channels(b, x, spec), spec)
    shape = b.op("Concat", batch, b.i64("pre/row_width", [6]), name="pre/rows_shape", axis=0)
    rows = b.op("Expand", b.f32("pre/row_const", row.astype(np.float32).reshape(1, 6)), shape, name="pre/rows")
    return x, rows


@dataclass
class EmbeddedInput:
    """What embed_preprocess did: the new graph input, the row tensor [1|B, 6], the inserted nodes."""

    input_name: str
    row: str
    nodes: list
    consts: dict = field(default_factory=dict)    # the inserted constants, for ep_support checks
    description: str = ""                         # the new input, in words (the patched metadata)


def embed_preprocess(graph: onnx.GraphProto, b: GraphBuilder, input_name: str, spec: PreprocessGraphSpec, *,
                     frame_hw: tuple[int, int] | None = None, source: str = "model") -> EmbeddedInput:
    """Replace the graph input `input_name` (float [B, 3, h, w] NCHW or [B, h, w, 3] NHWC, float32,
    float16 or uint8: raw pixels, so `spec` must have scale none and no mean/std) by `image` uint8 [H, W, 3] (dynamic H, W), or by `frames` uint8 [B, H, W, 3] when
    frame_hw = (H, W) is given; the preprocessing nodes go in front of the graph's nodes.

    Returns the letterbox row tensor (float32 [1, 6] / [B, 6]) for the inserted post-processing.
    """
    vi = next((i for i in graph.input if i.name == input_name), None)
    if vi is None:
        raise DetcalError(f"{source}: no graph input named {input_name!r}")
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    h, w = spec.size_hw
    if len(dims) != 4 or (dims[1:] != [3, h, w] and dims[1:] != [h, w, 3]):
        raise DetcalError(f"{source}: input {input_name!r} has shape {dims}; --embed-preprocess needs "
                          f"[B, 3, {h}, {w}] or [B, {h}, {w}, 3] (the calibration's input size)")
    if tt.elem_type not in (FLOAT, TensorProto.FLOAT16, TensorProto.UINT8):
        raise DetcalError(f"{source}: input {input_name!r} is {TensorProto.DataType.Name(tt.elem_type)}; "
                          "--embed-preprocess supports float32, float16 and uint8 model inputs")
    if tt.elem_type == TensorProto.UINT8 and (spec.scale != "none" or spec.scaled):
        raise DetcalError(f"{source}: input {input_name!r} is uint8 (raw 0..255 pixels) but the preprocessing "
                          "scales the pixels (/255 or mean/std); a uint8 model needs scale none without mean/std")
    if frame_hw is None and dims[0] not in (None, 1):
        raise DetcalError(f"{source}: input {input_name!r} has a fixed batch of {dims[0]}; one image per run "
                          "needs batch 1 or a dynamic batch (use the frames variant for batches)")
    new_name = IMAGE_INPUT if frame_hw is None else FRAMES_INPUT
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer} \
        | {i.name for i in graph.input if i.name != input_name}
    if new_name in taken and new_name != input_name:   # the model's own `image` input is replaced, not kept
        raise DetcalError(f"{source}: the model already has a tensor named {new_name!r}; cannot add the detcal input")
    start = len(b.nodes)
    if frame_hw is None:
        x, row = add_image_preprocess(b, new_name, spec)
    else:
        x, row = add_frames_preprocess(b, new_name, frame_hw, spec)
    if dims[1:] == [h, w, 3] and dims[1] != 3:
        x = b.op("Transpose", x, name="pre/nhwc", perm=[0, 2, 3, 1])
    if tt.elem_type == TensorProto.UINT8:
        x = to_uint8_pixels(b, x)
    elif tt.elem_type != FLOAT:
        x = b.cast(x, tt.elem_type, name="pre/to_model_dtype")
    nodes = b.nodes[start:]
    del b.nodes[start:]
    _rename_input(graph, input_name, x)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    batch = tt.shape.dim[0]
    if frame_hw is None:
        shape = ["height", "width", 3]
    else:
        shape = [batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or "batch"),
                 int(frame_hw[0]), int(frame_hw[1]), 3]
    index = next(i for i, v in enumerate(graph.input) if v.name == input_name)
    graph.input.remove(vi)
    graph.input.insert(index, helper.make_tensor_value_info(new_name, TensorProto.UINT8, shape))
    return EmbeddedInput(new_name, row, nodes)


def embed_in_patched(model: onnx.ModelProto, input_name: str, spec: PreprocessGraphSpec, *,
                     frame_hw: tuple[int, int] | None = None, letterbox_input: str = ROW_OUTPUT,
                     source: str = "model") -> EmbeddedInput:
    """In a model patched by detcal (inputs: the source image input + `letterbox` [B, 6]): embed the
    preprocessing in front of `input_name` and feed the inserted post-processing with the row
    computed in the graph; the `letterbox` input goes away. Mutates `model`."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    b = GraphBuilder(opset)
    b.reserve({n.name for n in graph.node} | {o for n in graph.node for o in n.output}
              | {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output})
    e = embed_preprocess(graph, b, input_name, spec, frame_hw=frame_hw, source=source)
    lb = next((i for i in graph.input if i.name == letterbox_input), None)
    if lb is not None:
        _rename_input(graph, letterbox_input, e.row)
        graph.input.remove(lb)
    graph.initializer.extend(b.initializers)
    if frame_hw is None:     # one image per run: the outputs' batch axis is 1
        for out in graph.output:
            dims = out.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_value = 1
    e.consts = dict(b.const_values)
    return e


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every use of tensor `old` (subgraphs included) reads `new` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _rename_input(g, old, new)
    for o in graph.output:
        if o.name == old:
            raise DetcalError(f"the model input {old!r} is also a graph output; cannot embed the preprocessing")


def build_preprocess_model(spec: PreprocessGraphSpec, *, frame_hw: tuple[int, int] | None = None,
                           opset: int = 18) -> onnx.ModelProto:
    """A standalone model of just the subgraph (for tests and benchmarks).

    Inputs: `image` uint8 [H, W, 3] (dynamic), or `frames` uint8 [B, H, W, 3] when frame_hw is
    given. Outputs: `input` float32 [1|B, 3, h, w] and `letterbox` float32 [1|B, 6].
    """
    b = GraphBuilder(opset)
    in_h, in_w = spec.size_hw
    if frame_hw is None:
        name, shape, batch = IMAGE_INPUT, ["height", "width", 3], 1
    else:
        name, shape, batch = FRAMES_INPUT, ["batch", int(frame_hw[0]), int(frame_hw[1]), 3], "batch"
    b.reserve([name, MODEL_INPUT, ROW_OUTPUT])
    if frame_hw is None:
        x, row = add_image_preprocess(b, name, spec)
    else:
        x, row = add_frames_preprocess(b, name, frame_hw, spec)
    b.nodes.append(helper.make_node("Identity", [x], [MODEL_INPUT], name=b.name("output/input")))
    b.nodes.append(helper.make_node("Identity", [row], [ROW_OUTPUT], name=b.name("output/letterbox")))
    graph = helper.make_graph(
        b.nodes, "detcal_preprocess",
        [helper.make_tensor_value_info(name, TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info(MODEL_INPUT, FLOAT, [batch, 3, in_h, in_w]),
         helper.make_tensor_value_info(ROW_OUTPUT, FLOAT, [batch, 6])],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detcal")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return model
