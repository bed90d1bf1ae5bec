"""Which head layout an exported detector has, decided from the graph, its metadata and a probe run.

    recognise_head(model, source, *, layout=None, num_classes=None, probe=True) -> HeadRecognition

Signals, in order:

1. output count and shapes: several [B, N_l, C] / [B, N_l, 4 (R+1)] maps whose N_l are the grid
   sizes of strides 8..128 at the input size -> `gfl_multilevel`; [B, Q, 4] + [B, Q, C] -> `detr`;
   [B, 4+C, N] -> `xywh_cls`; [B, N, D] -> one of `xywh_obj_cls`, `yolox_raw`, `end2end`, `detr`,
   or `gfl_multilevel` as one output (NanoDet-Plus: N the ceil grids of strides 8..64, or 8..32 for
   the legacy NanoDet head, and D = C + 4 (R+1) with R in GFL_REG_MAX_CHOICES; the probe's first C
   columns are probabilities, the bins are not).
2. the graph: TopK / NonMaxSuppression present (an end-to-end head selects its candidates),
   Exp between the last Conv and the output (the box decode is inside the graph),
   a Sigmoid on the class columns (probabilities, not logits).
3. metadata: Ultralytics `names` / `imgsz` / `stride` / `description` (e.g. "rtdetr"),
   Paddle's producer name and `save_infer_model/...` output names.
4. a probe on a grey image: the raw values (pixel boxes spread over the image, or offsets of a
   grid cell; normalised boxes in [0, 1]; x1 <= x2 rows with integer classes), and a final check
   that the chosen decode gives finite boxes within a few input sizes of the image and scores
   in [0, 1]. When nothing fits, one DetcalError line says what was found and which
   `--layout` values fit the shapes.

A model with dynamic height/width is recognised at the size the probe feeds it (the metadata's
`imgsz`, else 640x640): strides, reg_max and the level order do not depend on the size, and the
decoders take the size the model is run at.

`HeadRecognition.reason` says, in words, what decided (printed by `detcal inspect`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from .errors import DetcalError
from .head_decoders import (GFL_CELL_OFFSET, GFL_REG_MAX_CHOICES, HEAD_LAYOUTS, NANODET_PLUS_CELL_OFFSET, YOLOX_STRIDES,
                            decode_head, infer_gfl_strides, level_counts)
from .artifact.interface import LAYOUTS
from .layouts import decode
from .mask_coeffs import MASK_COEFFS, PROTOTYPES, mask_count, strip_mask_coeffs
from .model_info import parse_names, value_info_dims

ALL_LAYOUTS = LAYOUTS
SELECTING_OPS = {"TopK", "NonMaxSuppression"}
PROBE_MARGIN = 3.0     # decoded boxes must lie within this many input sizes around the image
LAYOUT_SHAPES = {
    "xywh_cls": "[B, 4+C, N]",
    "xywh_obj_cls": "[B, N, 5+C]",
    "end2end": "[B, K, 6]",
    "yolox_raw": "[B, N, 5+C] raw",
    "gfl_multilevel": "[B, N_l, C] + [B, N_l, 4(R+1)] per level, or [B, N, C+4(R+1)]",
    "detr": "[B, Q, 4+C] or [B, Q, 4] + [B, Q, C]",
}


@dataclass
class HeadRecognition:
    """A recognised head. outputs: the head's output names in decode order (gfl: class levels, then
    box levels); params: decode parameters (strides, reg_max, counts, batch_axis, scores_are_logits)."""

    layout: str
    outputs: list[str]
    output_shapes: list[tuple]
    num_classes: int | None
    input_hw: tuple[int, int] | None
    reason: str
    params: dict = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)

    @property
    def strides(self) -> tuple[int, ...] | None:
        return self.params.get("strides")


# ------------------------------------------------------------------------------------------
# graph facts
# ------------------------------------------------------------------------------------------
def image_input(model: onnx.ModelProto, source: str):
    """The first 4-D graph input (not an initializer), or a DetcalError."""
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in inits and len(value_info_dims(vi)) == 4:
            return vi
    raise DetcalError(f"{source}: no 4-D image input [B, 3, H, W] found")


def _input_hw(dims: tuple, metadata: dict) -> tuple[int, int] | None:
    channels_last = dims[3] == 3 and dims[1] != 3
    h, w = (dims[1], dims[2]) if channels_last else (dims[2], dims[3])
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return (h, w)
    text = metadata.get("imgsz", "")
    vals = [int(v) for v in str(text).strip("[]() ").split(",") if v.strip().isdigit()]
    return (vals[0], vals[-1]) if vals else None


def _dynamic_hw(inp) -> bool:
    """The image input's height or width is symbolic (NCHW, or NHWC where the last axis is 3)."""
    dims = value_info_dims(inp)
    axes = (1, 2) if dims[3] == 3 and dims[1] != 3 else (2, 3)
    return not all(isinstance(dims[a], int) for a in axes)


def _ops_before(model: onnx.ModelProto, output: str, stop: str = "Conv", limit: int = 60) -> set[str]:
    """Op types between `output` and the nearest `stop` nodes (walking producers, at most `limit` nodes)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    seen, ops, todo = set(), set(), [output]
    while todo and len(seen) < limit:
        t = todo.pop()
        n = producers.get(t)
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        ops.add(n.op_type)
        if n.op_type != stop:
            todo.extend(n.input)
    return ops


PROBE_SIZE = (640, 640)       # the probe's size for a dynamic input without `imgsz` metadata


def _probe_hw(model: onnx.ModelProto, inp) -> tuple[int, int]:
    """(H, W) the probe feeds: the fixed size, the metadata's imgsz, else PROBE_SIZE."""
    return _input_hw(tuple(value_info_dims(inp)), {m.key: m.value for m in model.metadata_props}) or PROBE_SIZE


def _probe(model: onnx.ModelProto, inp) -> dict[str, np.ndarray]:
    """Output name -> value for one run on a grey image; {} when the model cannot run. An input with
    a fixed batch B > 1 gets B copies of the image (onnxruntime refuses any other batch) and each
    output whose first axis is B is cut to the first image's: the values are those of batch 1."""
    import onnxruntime as ort

    dims = list(value_info_dims(inp))
    channels_last = dims[3] == 3 and dims[1] != 3
    hw = _probe_hw(model, inp)
    batch = dims[0] if isinstance(dims[0], int) else 1
    shape = [batch, hw[0], hw[1], 3] if channels_last else [batch, 3, hw[0], hw[1]]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    x = np.full(shape, 114 if np.issubdtype(dtype, np.integer) else 0.5, dtype=dtype)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {inp.name: x})
    except Exception:
        return {}
    values = {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), outs)}
    return {k: v[:1] if batch > 1 and v.ndim and v.shape[0] == batch else v for k, v in values.items()}


# ------------------------------------------------------------------------------------------
# shape candidates
# ------------------------------------------------------------------------------------------
def _gfl_split(shapes: dict[str, tuple], input_hw, hint: int | None):
    """(cls names, box names, counts, strides, reg_max, batch_axis) when the outputs are GFL level maps, else None."""
    if input_hw is None:
        return None
    maps = {n: s for n, s in shapes.items() if len(s) in (2, 3) and all(isinstance(d, int) for d in s)}
    if len(maps) < 2:
        return None
    batch_axis = all(len(s) == 3 for s in maps.values())
    if not batch_axis and any(len(s) != 2 for s in maps.values()):
        return None
    rows = lambda s: s[-2]  # noqa: E731
    by_n: dict[int, list[str]] = {}
    for n, s in maps.items():
        by_n.setdefault(rows(s), []).append(n)
    if any(len(v) != 2 for v in by_n.values()):
        return None
    strides = infer_gfl_strides(list(by_n), input_hw)
    if strides is None:
        return None
    order = sorted(by_n, key=lambda n: -n)             # stride 8 first
    dims = {maps[n][-1] for v in by_n.values() for n in v}
    if len(dims) == 2:
        a, b = sorted(dims)
        box_ok = [d for d in (a, b) if d % 4 == 0 and d // 4 - 1 >= 1]
        if hint in (a, b):
            c_dim = hint
        elif len(box_ok) == 1:
            c_dim = a if box_ok[0] == b else b
        else:
            c_dim = None
    elif len(dims) == 1 and next(iter(dims)) % 4 == 0:
        c_dim = next(iter(dims))                       # C == 4 (R+1): take the listed order
    else:
        return None
    names = list(maps)
    cls, box = [], []
    for n_l in order:
        pair = sorted(by_n[n_l], key=names.index)
        if c_dim is not None and len(dims) == 2:
            pair.sort(key=lambda n: maps[n][-1] != c_dim)
        cls.append(pair[0])
        box.append(pair[1])
    d_box = maps[box[0]][-1]
    if d_box % 4 or d_box // 4 - 1 < 1 or any(maps[n][-1] != d_box for n in box):
        return None
    strides = tuple(infer_gfl_strides([rows(maps[n]) for n in cls], input_hw))
    return cls, box, [rows(maps[n]) for n in cls], strides, d_box // 4 - 1, batch_axis


def _grid_counts(input_hw) -> dict[int, str]:
    """Anchor counts of anchor-free / 3-anchor grids at this input size -> description."""
    if input_hw is None:
        return {}
    out = {}
    for ceil in (True, False):      # floor last: where both differ, floor is the usual one
        n3 = sum(level_counts(input_hw, YOLOX_STRIDES, ceil))
        n4 = sum(level_counts(input_hw, (8, 16, 32, 64), ceil))
        out.update({n3: "one anchor point per cell, strides 8/16/32", 3 * n3: "3 anchors per cell, strides 8/16/32",
                    n4: "one anchor point per cell, strides 8..64", 3 * n4: "3 anchors per cell, strides 8..64"})
    return out


GFL_SINGLE_STRIDES = ((8, 16, 32, 64), (8, 16, 32))     # NanoDet-Plus, legacy NanoDet


def gfl_single_strides(n: int | None, input_hw) -> tuple[int, ...] | None:
    """The strides whose ceil grids at `input_hw` add up to N (a NanoDet single output), else None."""
    if n is None or input_hw is None:
        return None
    return next((s for s in GFL_SINGLE_STRIDES if sum(level_counts(input_hw, s, True)) == n), None)


def gfl_single_splits(d: int | None, hint: int | None) -> list[tuple[int, int]]:
    """(C, R) with D = C + 4 (R+1): C = hint (any R >= 1) where given, else R in GFL_REG_MAX_CHOICES."""
    if d is None:
        return []
    if hint is not None:
        rest = d - hint
        return [(hint, rest // 4 - 1)] if hint >= 1 and rest % 4 == 0 and rest // 4 - 1 >= 1 else []
    return [(d - 4 * (r + 1), r) for r in GFL_REG_MAX_CHOICES if d - 4 * (r + 1) >= 1]


def shape_candidates(shape: tuple, input_hw, hint: int | None = None) -> list[str]:
    """Layouts a single output shape can be (the probe and the graph then choose)."""
    if len(shape) != 3:
        return []
    _, d1, d2 = shape
    i1 = d1 if isinstance(d1, int) and d1 > 0 else None
    i2 = d2 if isinstance(d2, int) and d2 > 0 else None
    out = []
    if i1 is not None and i1 >= 5 and (i2 is None or i2 > i1) and (hint is None or i1 == 4 + hint):
        out.append("xywh_cls")
    if i2 is not None and (i1 is None or i1 > i2):
        if i2 >= 6 and (hint is None or i2 == 5 + hint):
            out.append("xywh_obj_cls")
            if input_hw is not None and i1 in (sum(level_counts(input_hw, YOLOX_STRIDES, c)) for c in (False, True)):
                out.append("yolox_raw")
        if i2 == 6:
            out.append("end2end")
    if i2 is not None and i2 >= 5 and i1 is not None and i1 <= 1000 and i2 <= 2004 and (hint is None or i2 == 4 + hint):
        out.append("detr")          # [B, Q, 4+C]: Q queries (hundreds), C classes (up to ~2000)
    if gfl_single_strides(i1, input_hw) and gfl_single_splits(i2, hint):
        out.append("gfl_multilevel")   # NanoDet(-Plus) [B, N, C + 4 (R+1)]
    return out


# ------------------------------------------------------------------------------------------
# recognition
# ------------------------------------------------------------------------------------------
def recognise_head(
    model: onnx.ModelProto,
    source: str,
    *,
    layout: str | None = None,
    num_classes: int | None = None,
    probe: bool = True,
) -> HeadRecognition:
    """Recognise the head of `model` (read from `source`, named in errors). layout: the user's
    `--layout` (checked against the shapes, not second-guessed); num_classes: a hint (the dataset's)."""
    if layout is not None and layout not in ALL_LAYOUTS:
        raise DetcalError(f"unknown layout {layout!r}; supported: {', '.join(ALL_LAYOUTS)}")
    graph = model.graph
    inp = image_input(model, source)
    metadata = {m.key: m.value for m in model.metadata_props}
    input_hw = _input_hw(value_info_dims(inp), metadata)
    has_select = any(n.op_type in SELECTING_OPS for n in graph.node)
    names = parse_names(metadata.get("names"))
    hint = num_classes if num_classes is not None else (len(names) if names else None)
    values = _probe(model, inp) if probe else {}
    dynamic_hw = _dynamic_hw(inp)
    if dynamic_hw and values:
        input_hw = _probe_hw(model, inp)       # the output shapes below are those of this size
    shapes = {}
    for o in graph.output:
        s = value_info_dims(o)
        # dynamic dims, or no shape declared at all (some exporters and graph editors): the probe's
        if o.name in values and (not s or not all(isinstance(d, int) for d in s)):
            s = tuple(values[o.name].shape)
        shapes[o.name] = s
    found = "; ".join(f"{n} {list(s)}" for n, s in shapes.items())
    facts = _Facts(model, metadata, has_select, input_hw, hint, values, shapes)

    rec = _decide(facts, layout)
    if rec is not None and dynamic_hw and rec.layout in HEAD_LAYOUTS:
        rec.params.pop("counts", None)          # N_l of the probe's size only; the grid follows the size fed
        rec.reason += (f"; dynamic height/width: recognised at the probe's {input_hw[0]}x{input_hw[1]}, the grid "
                       "follows the size the model is run at" if input_hw else "; dynamic height/width")
    if rec is None:
        fits = sorted({c for s in shapes.values() for c in shape_candidates(s, input_hw)} |
                      ({"gfl_multilevel"} if _gfl_split(shapes, input_hw, hint) else set()),
                      key=ALL_LAYOUTS.index)
        if layout is not None:
            raise DetcalError(f"{source}: --layout {layout} needs an output {LAYOUT_SHAPES[layout]}, but found {found}; "
                              + (f"--layout values that fit these shapes: {', '.join(fits)}" if fits else
                                 "leave --layout out to recognise the layout"))
        raise DetcalError(f"{source}: no output fits a supported layout (found: {found}); "
                          + (f"--layout values that fit these shapes: {', '.join(fits)}" if fits else
                             "supported: " + ", ".join(f"{k} {v}" for k, v in LAYOUT_SHAPES.items())))
    if probe and values and not all(np.isfinite(values[n]).all() for n in rec.outputs if n in values):
        # NaN/inf from the model itself is not a layout question: the runner reports it with the image
        rec.reason += "; probe: the model outputs NaN/inf on a grey image (not checked)"
    elif probe and values:
        problem = probe_problem(rec, values)
        if problem is not None:
            if layout is not None:
                rec.reason += f"; probe: {problem} (kept: --layout {layout} was asked for)"
            else:
                alts = [c for c in rec.candidates if c != rec.layout]
                raise DetcalError(
                    f"{source}: outputs {found} read as {rec.layout} give {problem} on a grey image; "
                    f"the head may be undecoded or of another family: try --layout "
                    f"{' or '.join(alts) if alts else 'with one of ' + ', '.join(ALL_LAYOUTS)}")
        else:
            rec.reason += "; probe on a grey image: boxes within the image's reach, scores in [0, 1]"
    return rec


@dataclass
class _Facts:
    model: onnx.ModelProto
    metadata: dict
    has_select: bool
    input_hw: tuple | None
    hint: int | None
    values: dict
    shapes: dict


def _decide(f: _Facts, layout: str | None) -> HeadRecognition | None:
    if layout in (None, "gfl_multilevel"):
        split = _gfl_split(f.shapes, f.input_hw, f.hint)
        if split is not None:
            cls, box, counts, strides, reg_max, batch_axis = split
            c = f.shapes[cls[0]][-1]
            paddle = f.model.producer_name == "PaddlePaddle" or any(n.startswith("save_infer_model") for n in f.shapes)
            reason = (f"{len(cls) + len(box)} outputs: {len(cls)} class maps [., N_l, {c}] and {len(box)} DFL maps "
                      f"[., N_l, {4 * (reg_max + 1)}] (reg_max {reg_max}), N_l = {counts} = grids of strides "
                      f"{list(strides)} at {f.input_hw[0]}x{f.input_hw[1]}"
                      + ("" if batch_axis else ", no batch axis") + ("; a PaddlePaddle export (producer / output names)" if paddle else ""))
            return HeadRecognition("gfl_multilevel", cls + box, [f.shapes[n] for n in cls + box], c, f.input_hw,
                                   reason, {"strides": strides, "reg_max": reg_max, "counts": counts,
                                            "batch_axis": batch_axis, "cell_offset": 0.5}, ["gfl_multilevel"])
    three = {n: s for n, s in f.shapes.items() if len(s) == 3}
    if layout in (None, "xywh_cls"):
        seg = _seg_head(f, three)
        if seg is not None:
            return seg
    if layout in (None, "detr"):
        pair = _detr_pair(three, f.hint)
        if pair is not None:
            bn, ln = pair
            logits = _are_logits(f, ln, slice(None))
            reason = (f"two outputs {bn} {list(three[bn])} (boxes) and {ln} {list(three[ln])} (class "
                      f"{'logits' if logits else 'probabilities'}) over the same queries")
            return HeadRecognition("detr", [bn, ln], [three[bn], three[ln]], three[ln][2], f.input_hw, reason,
                                   {"scores_are_logits": logits}, ["detr"])
    for name, shape in three.items():
        cands = shape_candidates(shape, f.input_hw, f.hint) or (shape_candidates(shape, f.input_hw) if f.hint else [])
        if layout is not None:
            if layout not in cands:
                continue
            chosen, why = layout, f"--layout {layout}"
        else:
            if not cands:
                continue
            chosen, why = _choose(f, name, shape, cands)
        params = {}
        if chosen == "detr":
            params["scores_are_logits"] = _are_logits(f, name, slice(4, None))
            why += f"; class columns are {'logits' if params['scores_are_logits'] else 'probabilities'}"
        if chosen == "yolox_raw":
            params["strides"] = YOLOX_STRIDES
        nc = _num_classes(chosen, shape, f.hint)
        if chosen == "gfl_multilevel":
            c, r, more = _gfl_single_split(f, name, shape)
            strides = gfl_single_strides(shape[1], f.input_hw)
            plus = len(strides) == 4
            params = {"strides": strides, "reg_max": r, "counts": level_counts(f.input_hw, strides, True),
                      "batch_axis": True, "single_output": True, "num_classes": c,
                      "cell_offset": NANODET_PLUS_CELL_OFFSET if plus else GFL_CELL_OFFSET}
            why += (f"; one output [B, N, C + 4(R+1)] with C = {c}, reg_max {r}: N = {shape[1]} = ceil grids of "
                    f"strides {list(strides)} at {f.input_hw[0]}x{f.input_hw[1]} ({more}); "
                    + ("NanoDet-Plus: anchor centres (x * s, y * s)" if plus else
                       "legacy NanoDet head (3 levels): anchor centres ((x + 0.5) s, (y + 0.5) s)"))
            nc = c
        return HeadRecognition(chosen, [name], [shape], nc, f.input_hw, f"{name} {list(shape)}: {why}", params, cands)
    return None


def _seg_head(f: _Facts, three: dict) -> HeadRecognition | None:
    """An Ultralytics seg head: one [B, 4+C+M, N] output beside one 4-D prototypes output
    [B, M, H/4, W/4]; M from the prototypes' channels, C = rows - 4 - M (checked against the
    metadata's / dataset's class count where there is one). None when the outputs are not that."""
    protos = {n: s for n, s in f.shapes.items() if len(s) == 4 and isinstance(s[1], int) and s[1] >= 1}
    if len(protos) != 1 or len(three) != 1:
        return None
    (pname, pshape), (name, shape) = next(iter(protos.items())), next(iter(three.items()))
    m, rows, n = pshape[1], shape[1], shape[2]
    if not isinstance(rows, int) or rows - 4 - m < 1 or (isinstance(n, int) and n <= rows):
        return None
    c = rows - 4 - m
    if f.hint is not None and f.hint != c:
        return None
    task = str(f.metadata.get("task", "")).lower()
    why = (f"{name} {list(shape)}: channels first [B, 4+C+M, N] with M = {m} mask coefficients after C = {c} class "
           f"scores (M from the prototypes output {pname} {list(pshape)}"
           + (", C from the metadata's names" if f.hint is not None else "")
           + ("; metadata task: segment" if task == "segment" else "")
           + "): a segmentation head (Ultralytics -seg), its coefficients kept as det_masks_coeffs")
    return HeadRecognition("xywh_cls", [name], [shape], c, f.input_hw, why, {MASK_COEFFS: m, PROTOTYPES: pname},
                           ["xywh_cls"])


def _num_classes(layout: str, shape: tuple, hint: int | None) -> int | None:
    if layout == "xywh_cls":
        return shape[1] - 4 if isinstance(shape[1], int) else None
    if layout in ("xywh_obj_cls", "yolox_raw"):
        return shape[2] - 5 if isinstance(shape[2], int) else None
    if layout == "detr":
        return shape[2] - 4 if isinstance(shape[2], int) else None
    return hint


def _detr_pair(three: dict, hint: int | None):
    boxes = [n for n, s in three.items() if s[2] == 4]
    for bn in boxes:
        for ln, s in three.items():
            if ln != bn and s[1] == three[bn][1] and isinstance(s[2], int) and s[2] >= 1 and (hint is None or s[2] == hint):
                return bn, ln
    return None


def _are_logits(f: _Facts, name: str, cols: slice) -> bool:
    """Class columns of `name` are logits (no Sigmoid/Softmax before the output; probe values outside [0, 1])."""
    if name in f.values:
        v = f.values[name][..., cols]
        if v.size:
            return bool(v.min() < 0 or v.max() > 1)
    return not ({"Sigmoid", "Softmax"} & _ops_before(f.model, name, stop="MatMul"))


BIN_COLUMNS_IN_01 = 0.25     # at most this share of a DFL map's columns may look like probabilities


def _probe_split(f: _Facts, name: str, d: int) -> tuple[int, int] | None:
    """(C, R) read from the probe: the class columns (C = the hint, else the leading run of columns
    whose values all lie in [0, 1]) are probabilities and the 4 (R+1) bins after them are not (at
    most BIN_COLUMNS_IN_01 of them stay within [0, 1]: a YOLOX row, offsets then objectness and
    class probabilities, has most of its columns there)."""
    v = f.values.get(name)
    if v is None or v.ndim != 3 or v.shape[2] != d:
        return None
    in01 = np.all((v >= 0) & (v <= 1), axis=(0, 1))
    if in01.all():
        return None
    c = f.hint if f.hint is not None else int(np.argmin(in01))
    rest = d - c
    if (c >= 1 and in01[:c].all() and rest % 4 == 0 and rest // 4 - 1 >= 1
            and in01[c:].mean() <= BIN_COLUMNS_IN_01):
        return c, rest // 4 - 1
    return None


def _gfl_single_split(f: _Facts, name: str, shape: tuple) -> tuple[int, int, str]:
    """(C, R, why) of a NanoDet single output [B, N, C + 4(R+1)]: from the probe (`_probe_split`),
    else the first of gfl_single_splits (the hint's C, else R = 7)."""
    split = _probe_split(f, name, shape[2])
    if split is not None:
        c, r = split
        return c, r, f"the probe's first {c} columns lie in [0, 1], the {shape[2] - c} bins do not"
    c, r = (gfl_single_splits(shape[2], f.hint) or gfl_single_splits(shape[2], None))[0]
    return c, r, ("C from the class count given" if f.hint is not None else
                  f"reg_max {r} assumed (the probe does not separate the columns)")


def _gfl_single_fits(f: _Facts, name: str, shape: tuple) -> bool:
    """The probe says this [B, N, D] output is a NanoDet single output (class columns first)."""
    return _probe_split(f, name, shape[2]) is not None


def _choose(f: _Facts, name: str, shape: tuple, cands: list[str]) -> tuple[str, str]:
    """Pick one of several layouts that fit one [B, N, D] / [B, D, N] output; returns (layout, reason)."""
    if len(cands) == 1 and cands[0] != "detr":
        return cands[0], f"only {cands[0]} {LAYOUT_SHAPES[cands[0]]} fits"
    if "gfl_multilevel" in cands and _gfl_single_fits(f, name, shape):
        return "gfl_multilevel", "class scores then DFL bins (NanoDet single output)"
    v = f.values.get(name)
    grids = _grid_counts(f.input_hw)
    n = shape[1]
    meta_text = " ".join(str(f.metadata.get(k, "")) for k in ("description", "model", "task")).lower()
    if "end2end" in cands and shape[2] == 6:
        if f.has_select:
            return "end2end", "the graph selects candidates itself (TopK/NonMaxSuppression present)"
        # a one-class YOLOX grid is decoded or raw: the probe's spread decides below (yolox_raw)
        if n in grids and "xywh_obj_cls" in cands and not ("yolox_raw" in cands and v is not None):
            return "xywh_obj_cls", (f"no TopK/NonMaxSuppression in the graph and N = {n} is the anchor count "
                                    f"of the input ({grids[n]}): a decoded one-class head, not end-to-end")
        if v is not None and _rows_look_xyxy(v):
            return "end2end", "no TopK/NonMaxSuppression, but the probe's rows are x1<=x2, y1<=y2 with integer classes"
    if "xywh_cls" in cands:
        return "xywh_cls", f"channels first [B, 4+C, N] (C = {shape[1] - 4})"
    if "detr" in cands and ("detr" in meta_text or (n not in grids and v is not None and _normalised_boxes(v))):
        return "detr", ("metadata names a DETR model" if "detr" in meta_text else
                        f"N = {n} is no anchor grid of the input and the probe's boxes are normalised (all in [0, 1])")
    if "yolox_raw" in cands:
        exp_inside = "Exp" in _ops_before(f.model, name)
        if v is not None:
            spread = float(np.percentile(np.abs(v[..., 0:2]), 99))
            raw = spread < 0.05 * min(f.input_hw)
            why = (f"N = {n} is the YOLOX grid at {f.input_hw[0]}x{f.input_hw[1]}; the probe's x/y columns "
                   f"{'stay within ' if raw else 'reach '}{spread:.3g} px (99th pct.), "
                   f"{'grid-cell offsets, not pixels' if raw else 'pixel centres'}"
                   f"; Exp {'in' if exp_inside else 'not in'} the graph after the last Conv")
            return ("yolox_raw" if raw else "xywh_obj_cls"), why
        return ("xywh_obj_cls" if exp_inside else "yolox_raw"), (
            f"N = {n} is the YOLOX grid; Exp {'in' if exp_inside else 'not in'} the graph after the last Conv "
            f"(box decode {'inside' if exp_inside else 'left out'})")
    if "xywh_obj_cls" in cands:
        return "xywh_obj_cls", f"[B, N, 5+C] with C = {shape[2] - 5}" + (f"; N = {n}: {grids[n]}" if n in grids else "")
    return cands[0], f"{cands[0]} {LAYOUT_SHAPES[cands[0]]} fits"


def _rows_look_xyxy(v: np.ndarray) -> bool:
    r = v.reshape(-1, v.shape[-1])
    return bool(np.all(r[:, 2] >= r[:, 0]) and np.all(r[:, 3] >= r[:, 1]) and np.all(r[:, 5] == np.rint(r[:, 5])))


def _normalised_boxes(v: np.ndarray) -> bool:
    b = v[..., 0:4]
    return bool(b.size and b.min() >= 0.0 and b.max() <= 1.0)


def probe_problem(rec: HeadRecognition, values: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the probe's decode under `rec` (None when boxes and scores look sane)."""
    try:
        raws = [values[n] for n in rec.outputs]
    except KeyError:
        return None
    if mask_count(rec.params):        # a seg head: the coefficient rows are no scores
        raws = [strip_mask_coeffs(raws[0], mask_count(rec.params))]
    hw = rec.input_hw or (640, 640)
    try:
        if rec.layout in HEAD_LAYOUTS:
            dec = decode_head(rec.layout, raws, hw, **rec.params)
        else:
            dec = decode(raws[0], rec.layout)
    except ValueError as exc:
        return f"no valid decode ({exc})"
    boxes, scores = dec.boxes_xyxy, dec.scores
    if boxes.size and not np.isfinite(boxes).all():
        return "non-finite boxes"
    h, w = hw
    lo = np.array([-PROBE_MARGIN * w, -PROBE_MARGIN * h] * 2)
    hi = np.array([(1 + PROBE_MARGIN) * w, (1 + PROBE_MARGIN) * h] * 2)
    if boxes.size and ((boxes < lo).any() or (boxes > hi).any()):
        return f"boxes beyond {PROBE_MARGIN:g} input sizes of the image (range {boxes.min():.3g}..{boxes.max():.3g} px)"
    if scores.size and (not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1):
        return f"scores outside [0, 1] (range {np.nanmin(scores):.3g}..{np.nanmax(scores):.3g})"
    return None


def applicable_layouts(shapes: Sequence[tuple], input_hw) -> list[str]:
    """Layouts whose output shape any of `shapes` fits (for error messages)."""
    return sorted({c for s in shapes for c in shape_candidates(s, input_hw)}, key=ALL_LAYOUTS.index)


# ------------------------------------------------------------------------------------------
# for `detcal inspect`
# ------------------------------------------------------------------------------------------
def metadata_hints(metadata: dict) -> dict:
    """Preprocessing and identity hints found in the model's metadata (Ultralytics: imgsz, stride,
    names, task, description; anything else is not guessed)."""
    hints = {}
    if metadata.get("imgsz"):
        hints["imgsz"] = metadata["imgsz"]
    if metadata.get("stride"):
        hints["stride"] = metadata["stride"]
    names = parse_names(metadata.get("names"))
    if names:
        hints["names"] = f"{len(names)} classes ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    for key in ("task", "description", "author"):
        if metadata.get(key):
            hints[key] = metadata[key]
    if "imgsz" in hints or "stride" in hints:
        hints["preprocessing"] = "Ultralytics export: centred letterbox, pad 114, RGB, /255"
    return hints


def producer_hints(model: onnx.ModelProto) -> dict:
    """What the exporter's identity suggests about preprocessing (stated as a hint, never applied)."""
    if model.producer_name == "PaddlePaddle":
        return {"producer": "PaddlePaddle", "preprocessing": "PaddleDetection exports usually take RGB with "
                "ImageNet mean/std (--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225); check the model's infer_cfg.yml"}
    return {"producer": f"{model.producer_name} {model.producer_version}".strip()} if model.producer_name else {}


def describe_head(model: onnx.ModelProto, source: str) -> dict:
    """Plain data for `detcal inspect`: {"layout", "reason", "outputs", "num_classes", "strides",
    "reg_max", "mask_coeffs", "prototypes" (seg heads), "input_hw", "hints"} or {"error", "hints"} when no
    layout fits (never raises DetcalError)."""
    metadata = {m.key: m.value for m in model.metadata_props}
    hints = {**producer_hints(model), **metadata_hints(metadata)}
    from .artifact.interface import is_patched_metadata

    if is_patched_metadata(metadata):     # its outputs are final detections, no head to read
        outs = ", ".join(o.name for o in model.graph.output)
        return {"error": f"{source}: already patched by detcal; its outputs are final detections ({outs})",
                "hints": hints}
    try:
        rec = recognise_head(model, source)
    except DetcalError as exc:
        return {"error": str(exc), "hints": hints}
    strides = rec.params.get("strides")
    if strides is None and metadata.get("stride"):
        strides = f"up to {metadata['stride']} (metadata)"
    return {
        "layout": rec.layout,
        "reason": rec.reason,
        "outputs": rec.outputs,
        "num_classes": rec.num_classes,
        "strides": list(strides) if isinstance(strides, (list, tuple)) else strides,
        "reg_max": rec.params.get("reg_max"),
        "mask_coeffs": rec.params.get(MASK_COEFFS),
        "prototypes": rec.params.get(PROTOTYPES),
        "input_hw": list(rec.input_hw) if rec.input_hw and not _dynamic_hw(image_input(model, source)) else None,
        "hints": hints,
    }
