"""`detcal patch`: rewrite an exported detector so that its outputs are final detections.

    patch_model(model_path, artifact, out_path=None, *, iou=None, max_det=None, conf=None, force=False,
                static_shapes=None, embed_preprocess=False, input_channel_order=None, frame_size=None) -> Path

The patched model takes the source image input unchanged plus `letterbox` float32 [B, 6]
(orig_w, orig_h, scale_x, scale_y, pad_left, pad_top) and returns the EfficientNMS layout:
num_dets int32 [B, 1], det_boxes float32 [B, K, 4] (x1, y1, x2, y2 in original px, clipped),
det_scores float32 [B, K] (calibrated), det_classes int32 [B, K]; rows at and after num_dets
are zero with class -1; K = max_det. A segmentation head (Ultralytics -seg, [B, 4+C+M, N] plus
prototypes) also outputs det_masks_coeffs float32 [B, K, M], the kept boxes' mask coefficients
gathered with det_boxes' indices (zero after num_dets; onnx_ops.masks), and keeps its prototypes
output unchanged under its own name.

With embed_preprocess the inputs are instead `image` uint8 [H, W, 3] (any H, W; or `frames`
uint8 [B, H, W, 3] with frame_size = (H, W) fixed): the artifact's preprocessing runs in the
graph in front of the source model (`onnx_ops.preprocess_graph`, twin of `calib.resize`) and
the letterbox row it computes feeds the inserted post-processing; boxes come out in the image's
own pixels.

`build_postprocess_graph` builds the same inserted part over a bare head-output input (the
graph "cut at the head"), which the equivalence tests run against `calib.pipeline`.

The inserted graph, step by step (B batch, N anchors, C classes, K1 = max(pre_nms_top_k, max_det), capped
at N when N is static; M <= K1 the slots in use after top-k):

    Default graph, single-label dense heads (xywh_cls, xywh_obj_cls; yolox_raw / gfl_multilevel / detr
    after their decode; Variant.BOXES_FIRST, onnx_ops.box_select):
    box margin        the ONE read of all N x C scores: MatMul of the scores with 1 / t_c per class
                      (a raw xywh_cls head as it is, its box rows weighted 0; xywh_obj_cls: (weighted
                      sum of cls, obj), Split, Mul) -> [B, N], Greater than 1 - 2^-8: a superset of the
                      survivors (probabilities are >= 0), narrowed per class below.
    compact boxes     static N: TopK of mask * (L - position) over rows of L < 3840 boxes, K = most
                      survivors of any row (box_select.compact_boxes_topk); dynamic N: CumSum (float32)
                      over the mask, ScatterElements of the box indices into their slots, Slice to M =
                      most candidates of any image -> [B, M] in ascending box index (nothing capped:
                      exact for any number of survivors), with a mask of the filled slots.
    gather, decode    GatherElements / GatherND of the M boxes' rows of the head (or of the cut
                      Sigmoid front's boxes, probabilities, logits, or of the decoded head), decode on
                      [B, 4+C, M].
    per slot          calibration as below but on [B, M, C] only, the threshold as Greater + Where
                      and the best class as ReduceMax + ArgMax (few boxes: fewer nodes, same keys);
                      unfilled slots get NEG. Static N <= pre_nms_top_k (slots_in_box_order: the
                      pre-NMS cap can never bind, e.g. 320 px models, N = 2100): the M slots (the
                      most survivors of any image) go on in box order: no pre-NMS TopK, no gathers
                      by it; boxes, mask, class offsets and NMS on the [B, M] slots, then one TopK
                      over them and a descending tail of max_det non-candidates sorts and compacts
                      NMS's survivors by score (steps.kept_by_score).
                      Otherwise pre-NMS top-k: TopK over the slots and a descending
                      tail of max_det non-candidates with K = min(max(M, max_det), K1) (sorts the slots
                      in use, not K1; no trim_slots), onwards as below. Either way the slots are in box
                      order, so TopK's ties (lower position) are the reference's (lower box index), and
                      NMS sees tied boxes in the same relative order. No NonZero.
    Otherwise (end2end, multi_label, and the fixed-shape variant static_shapes=True for TensorRT:
    no NonZero, no data-dependent Slice - SURVIVORS_ONLY becomes DENSE and trim_slots is skipped):
    decode            Slice (+ Mul obj*cls); end2end: Slice, Squeeze, Round, Cast. float16 heads: Cast.
                      yolox_raw / gfl_multilevel / detr (several model outputs): onnx_ops.decode_graph,
                      grid and stride constants built from the input size here (Exp, Softmax, MatMul ...);
                      dynamic height/width: the grid from the image's run-time shape (Shape, Range, Expand).
                      Sigmoid-front heads (Concat(boxes, Sigmoid(logits))): read boxes, Sigmoid output
                      and logits directly; the head Concat is pruned.
    threshold         raw score <= raw threshold -> penalty: LessOrEqual, Cast, Mul, Sub  (N x C)
    calibrate         logit-affine: Mul, Add on the logits (Sigmoid-front); identity: nothing.
                      Probability heads (no Sigmoid front) with logit-affine or isotonic maps: survivors
                      only - Greater (raw threshold), NonZero, GatherND, then on the M survivors Clip,
                      Sub, Div, Log, Mul, Add, Sigmoid (a, b gathered by class) or a log2(knots)-step
                      binary search (Gather, LessOrEqual, Cast, Mul, Add), ScatterND back into a
                      NEG-filled key.
    best class        ArgMax + GatherElements over C (ties: lowest class); Sigmoid per box [B, N]
                      when the class was chosen on calibrated logits. multi_label: Transpose to
                      box-major, Reshape [B, N*C] (flat index = box*C + class, the reference's tie key).
    pre-NMS top-k     a descending tail of K1 non-candidates (only when N is dynamic: Expand, Concat),
                      TopK(K1, constant) -> sorted, ties by index.
    trim slots        the valid slots are a prefix of every image's TopK output: ReduceSum, ReduceMax,
                      Slice to M = min(max(most valid slots in the batch, min(max_det, K1)), K1) (boxes
                      first: box_select's survivor count as the bound, no count of its own), so
                      everything below runs on [B, M] (tens to hundreds) rather than [B, K1] (3,000).
    gather boxes      GatherND(batch_dims=1) rows ([B, N, 4]; [B, 4, N] transposed first), its [B, K1, 1]
                      index shared with the class gather; GatherElements before opset 12 (+ cxcywh ->
                      xyxy with Split, the reference's float32 arithmetic).
    letterbox mask    centre in [pad, pad + orig*scale] on both axes, as four columns (cx, cy, cx, cy):
                      Gather, Add, Div, Mul, GreaterOrEqual, LessOrEqual, And, Cast, ReduceMin; the
                      letterbox columns ([B, 1, 4], one Gather each) are shared with the output mapping.
    class offset      boxes - lo + class * (hi - lo + 1), lo/hi over the kept boxes per image
                      (ReduceMin/ReduceMax of Where(kept, boxes, +/- BIG), the condition expanded to
                      [B, M, 4]), as calib.nms does it.
    NMS               ONE NonMaxSuppression over [B, K1, 4] boxes and [B, 1, K1] scores, not-kept
                      candidates scored NEG below score_threshold; max_output = max_det.
    outputs           ScatterND writes the selected positions into a K1-filled [B, M, 1], the smallest
                      TopK(min(max_det, K1)) over axis 1 compacts them in ascending position (= score
                      order) and its [B, K', 1] indices feed GatherND as they are (slots in box order:
                      ScatterND keeps the selected slots' scores in a [B, M] sunk below NEG / 2, the
                      largest TopK(K') sorts and compacts them), (box - pad) / scale, Max(0),
                      Min(orig size), Where for the padding rows, Cast int32 (Pad to max_det where K1 <
                      max_det).

Semantics are those of `calib.pipeline.postprocess` + `pack_fixed`. One documented difference
on whole models: where the head ends in Concat(boxes, Sigmoid(logits)), logit-affine
calibration is computed as sigmoid(a * logits + b) on the model's own logits, i.e. exactly,
whereas the reference (which only sees probabilities) computes sigmoid(a * logit(clip(p)) + b):
the two differ only by float32 rounding of p and in the clipped tails p < 1e-6 or p > 1 - 1e-6.
There the best class is chosen on the calibrated logit (the Sigmoid then runs per box, not per
box and class): when two surviving classes of a box have different calibrated logits that round
to the same float32 probability, the graph picks the truly higher one, the reference the lower
class index. And where the reference sees two equal float32 probabilities from different logits
(a tie, broken by index), the graph sees two different scores. The survival test (raw score >
raw threshold) uses the model's own probabilities in both, so the set of survivors is the same.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from calib.artifact import (DET_MASKS_COEFFS, HEAD_LAYOUTS, LETTERBOX_INPUT, PATCHED_OUTPUTS, Artifact, BoxPlattMap, CalibrationMap,
                            IsotonicMap, PatchedMetadata,
                            PostprocessConfig, identity_map, is_patched_metadata, load_artifact)
from calib.atomic import atomic_write_bytes, check_writable
from calib.errors import DetcalError
from calib.model_info import load_onnx, model_opset, read_model_info, sha256_file, value_info_dims

from . import box_select, masks, steps
from .box_calibration import box_calibrated_score
from .decode_graph import decode_for_patch
from .graph_builder import FLOAT, INT32, MIN_OPSET, NEG, GraphBuilder
from .head import Head, find_head
from .variants import BOX_AWARE_VARIANTS, BOXES_FIRST_VARIANTS, candidate_key, choose_calibration_variant

OUTPUTS = PATCHED_OUTPUTS
NMS_MIN_OPSET = 10


@dataclass
class PostprocessSpec:
    """Everything the inserted part bakes in."""

    layout: str
    num_classes: int
    calibration: CalibrationMap
    thresholds: np.ndarray           # (C,) calibrated score thresholds
    config: PostprocessConfig

    @property
    def raw_thresholds(self) -> np.ndarray:
        """(C,) float32, exactly as calib.pipeline.threshold casts them; box-aware maps: the raw
        prefilter (a necessary condition only: their threshold is per candidate)."""
        if isinstance(self.calibration, BoxPlattMap):
            return self.calibration.prefilter_thresholds(self.thresholds)
        return self.calibration.raw_thresholds(self.thresholds).astype(np.float32)

    @classmethod
    def from_artifact(cls, artifact: Artifact, *, iou=None, max_det=None, conf=None) -> "PostprocessSpec":
        c = artifact.num_classes
        thr = artifact.score_thresholds if conf is None else np.full(c, float(conf))
        cfg = artifact.nms
        changes = {}
        if iou is not None:
            changes["iou_threshold"] = float(iou)
        if max_det is not None:
            changes["max_det"] = int(max_det)
        if changes:
            try:
                cfg = PostprocessConfig(**{**cfg.to_artifact(), **changes})
            except ValueError as exc:
                raise DetcalError(f"invalid override: {exc}") from None
        if conf is not None and not 0.0 <= float(conf) <= 1.0:
            raise DetcalError(f"--conf must be in [0, 1], got {conf}")
        return cls(artifact.model["layout"], c, artifact.calibration, np.asarray(thr, np.float64), cfg)


@dataclass
class PatchResult:
    model: onnx.ModelProto
    head: Head
    spec: PostprocessSpec
    inserted: list = field(default_factory=list)      # inserted NodeProtos
    findings: list = field(default_factory=list)      # onnx_ops.ep_support findings for them


# ------------------------------------------------------------------------------------------
# the inserted part
# ------------------------------------------------------------------------------------------
def _sigmoid_front(b: GraphBuilder, head: Head) -> "steps.Dense":
    """A Concat(boxes, Sigmoid(logits)) head read before its Concat: boxes [B, 4, N], probabilities
    and logits [B, C, N], float32 (calibration then works on the model's own logits)."""
    return steps.Dense(
        steps.to_float32(b, head.boxes, head.elem_type, "decode/boxes_f32"),
        steps.to_float32(b, head.probs, head.elem_type, "decode/probs_f32"),
        class_axis=1,
        logits=steps.to_float32(b, head.logits, head.elem_type, "decode/logits_f32"),
    )


def add_postprocess(b: GraphBuilder, head: Head, letterbox: str, spec: PostprocessSpec,
                    static_shapes: bool = False) -> dict[str, str]:
    """Insert the steps of `calib.pipeline` (builders in `onnx_ops.steps`, in the same order):
    decode -> threshold/calibrate/select_best_class (the variant: `choose_calibration_variant`)
    -> pre_nms_top_k -> mask_letterbox -> class_aware_nms (max_det) -> to_original_pixels -> pack_fixed.
    static_shapes: the fixed-shape variant (no NonZero, no data-dependent Slice: no trim_slots).

    Returns {output name: tensor name} for num_dets, det_boxes, det_scores, det_classes (and
    det_masks_coeffs for a seg head, onnx_ops.masks).
    """
    cfg, C = spec.config, spec.num_classes
    rthr = spec.raw_thresholds
    variant = choose_calibration_variant(head, spec.calibration, cfg, rthr, static_shapes)
    multi = cfg.multi_label and head.layout != "end2end"
    raw = steps.to_float32(b, head.output, head.elem_type, "decode/raw_f32")
    batch = head.batch_dim if isinstance(head.batch_dim, int) and head.batch_dim > 0 else None   # fixed B: constants
    coeffs = bound = None       # bound: boxes first's survivor count ([1] float32)
    # boxes first with a static N <= pre_nms_top_k: the pre-NMS cap cannot bind, so the slots stay in
    # box order (no pre-NMS TopK, no gathers by it) and the NMS survivors are sorted by score after
    in_box_order = slots_in_box_order(variant, head.n_static, cfg)
    if head.seg is not None:        # seg head: rows 4..4+C score; the M mask coefficients ride along
        tapped = None if head.seg.coeffs is None else steps.to_float32(b, head.seg.coeffs, head.elem_type,
                                                                         "masks/coeffs_f32")
        raw, coeffs = masks.split_seg_head(b, raw, head.seg, tapped)
    if head.layout in HEAD_LAYOUTS:
        decoded = decode_for_patch(b, head)        # yolox_raw / gfl_multilevel / detr: several outputs
        if variant in BOXES_FIRST_VARIANTS:        # then the classes of the surviving boxes only
            key, cls, decoded, bound = box_select.boxes_first_candidates(b, None, decoded, head.layout, spec.calibration,
                                                                  rthr, head.n_static, batch=batch,
                                                                  thresholds=spec.thresholds)
            n_cand = None
    elif variant in BOXES_FIRST_VARIANTS:
        # decode only the surviving boxes (box_select reads the raw head or the Sigmoid front itself)
        front = _sigmoid_front(b, head) if head.sigmoid_front else None
        key, cls, survivors, bound = box_select.boxes_first_candidates(b, raw, front, head.layout, spec.calibration, rthr,
                                                                head.n_static, coeffs, head.seg.m if head.seg else 0,
                                                                batch=batch, thresholds=spec.thresholds)
        decoded, n_cand = survivors, None
    elif head.sigmoid_front:
        decoded = _sigmoid_front(b, head)
    else:
        decoded = steps.decode(b, raw, head.layout)
    if isinstance(decoded, steps.Sparse):
        boxes_src, fmt, box_axis = decoded.boxes, "xyxy", 1
    else:
        boxes_src, fmt, box_axis = decoded.boxes, decoded.box_format, (2 if decoded.class_axis == 1 else 1)
    if variant not in BOXES_FIRST_VARIANTS:
        key, cls = candidate_key(b, variant, decoded, spec.calibration, rthr, multi, spec.thresholds)
        n_cand = head.n_static if not multi or head.n_static is None else head.n_static * C

    if in_box_order:        # every slot a candidate position; valid where a class survives
        # pad: the output compaction's tail of min(max_det, N) non-candidates (steps.kept_by_score)
        tk = steps.TopK(key, None, b.op("Greater", key, b.f32("slots/neg_half", NEG / 2), name="slots/valid"),
                        head.n_static, min(cfg.max_det, head.n_static))
        box_index, cls_sel = None, cls
    else:
        # boxes first: its survivor count is the key's length, so TopK sorts only those (K from it, no trim_slots)
        tk = steps.pre_nms_top_k(b, key, n_cand, cfg.pre_nms_top_k, cfg.max_det, bound=bound, batch=batch)
        if not static_shapes and bound is None:
            tk = steps.trim_slots(b, tk, cfg.max_det)
        if multi:
            c_t = b.i64("topk/num_classes", C)
            box_index = b.op("Div", tk.index, c_t, name="topk/box")
            cls_sel = b.as_float(b.op("Mod", tk.index, c_t, name="topk/class"), name="topk/class_f")
        else:
            box_index = tk.index
            # as float32 (onnxruntime's CUDA Pad has no integer kernels): NMS's class offset and the
            # output's Cast take it so
            cls_pad = steps.pad_last(b, b.as_float(cls, name="topk/class_f"), 2, tk.pad, np.float32(0),
                                     name="topk/pad_class")
            cls_sel = steps.gather_rows(b, cls_pad, tk.index, "topk/class")
    boxes = steps.gather_boxes_xyxy(b, boxes_src, box_index, fmt, box_axis, tk.pad)
    keep = steps.mask_letterbox(b, boxes, letterbox, tk.valid) if cfg.mask_padding else tk.valid
    kept = steps.class_aware_nms(b, boxes, cls_sel, keep, tk, cfg.iou_threshold, cfg.class_aware, cfg.max_det,
                                 in_box_order=in_box_order, batch=batch)
    if variant in BOX_AWARE_VARIANTS:       # ranked by the calibrated logit; the score is its Sigmoid
        kept = dataclasses.replace(kept, score=box_calibrated_score(b, kept.score), sort_scores=True)
    outs = steps.pack_fixed(b, kept, letterbox, cfg.max_det)
    if coeffs is not None:          # the kept boxes' mask coefficients, same indices as det_boxes
        src = decoded.coeffs if variant in BOXES_FIRST_VARIANTS else coeffs
        kept_coeffs = masks.kept_mask_coeffs(b, src, box_index, tk.pad, kept, head.seg.m)
        outs[DET_MASKS_COEFFS] = masks.pack_mask_coeffs(b, kept, kept_coeffs, cfg.max_det)
    return outs


def slots_in_box_order(variant, n_static: int | None, cfg: PostprocessConfig) -> bool:
    """Boxes first over a static N <= pre_nms_top_k: there are never more candidates than the
    reference's pre-NMS cap, so the top-k's only job would be the order, which NMS does not need
    (its result does not depend on the order of its input: ties go the same way, the slots being
    in box order either way); the survivors are sorted once after NMS (steps.kept_by_score).
    Saves the pre-NMS TopK and its gathers (~12 nodes)."""
    return variant in BOXES_FIRST_VARIANTS and n_static is not None and 1 <= n_static <= cfg.pre_nms_top_k


def _output_infos(batch, max_det: int, mask_coeffs: int = 0) -> list:
    return [
        helper.make_tensor_value_info("num_dets", INT32, [batch, 1]),
        helper.make_tensor_value_info("det_boxes", FLOAT, [batch, max_det, 4]),
        helper.make_tensor_value_info("det_scores", FLOAT, [batch, max_det]),
        helper.make_tensor_value_info("det_classes", INT32, [batch, max_det]),
    ] + ([masks.mask_output_info(batch, max_det, mask_coeffs)] if mask_coeffs else [])


def _finish_outputs(b: GraphBuilder, outs: dict[str, str]) -> None:
    """The last nodes already write the output names; anything else gets an Identity."""
    for name in outs:
        if outs[name] != name:
            b.nodes.append(helper.make_node("Identity", [outs[name]], [name], name=b.name(f"output/{name}")))


# ------------------------------------------------------------------------------------------
# the cut graph (head output as the input)
# ------------------------------------------------------------------------------------------
def build_postprocess_graph(
    layout: str,
    num_classes: int,
    calibration: CalibrationMap | None = None,
    thresholds=0.25,
    config: PostprocessConfig = PostprocessConfig(),
    *,
    num_candidates: int | None = None,
    batch: int | str | None = "batch",
    opset: int = 18,
    head_dtype: int = FLOAT,
    input_name: str = "head",
    static_shapes: bool = False,
    mask_coeffs: int = 0,
) -> onnx.ModelProto:
    """A model whose input is a raw head output and whose outputs are the patched model's.

    Inputs: `head` ([B, 4+C, N] xywh_cls, [B, N, 5+C] xywh_obj_cls, [B, K, 6] end2end; N fixed
    when `num_candidates` is given, else dynamic) and `letterbox` float32 [B, 6].
    mask_coeffs: M > 0 for a seg head [B, 4+C+M, N] (xywh_cls): also outputs det_masks_coeffs [B, K, M].
    """
    calibration = calibration if calibration is not None else identity_map(num_classes)
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (num_classes,)).copy()
    spec = PostprocessSpec(layout, num_classes, calibration, thr, config)
    n = num_candidates if num_candidates is not None else "candidates"
    shape = {"xywh_cls": [batch, 4 + num_classes + mask_coeffs, n], "xywh_obj_cls": [batch, n, 5 + num_classes],
             "end2end": [batch, n, 6]}[layout]
    head = Head(layout, input_name, head_dtype, num_classes, num_candidates, batch,
                seg=masks.SegTaps(mask_coeffs) if mask_coeffs else None)
    b = GraphBuilder(opset)
    b.reserve([input_name, LETTERBOX_INPUT, *OUTPUTS, DET_MASKS_COEFFS])
    outs = add_postprocess(b, head, LETTERBOX_INPUT, spec, static_shapes)
    _finish_outputs(b, outs)
    graph = helper.make_graph(
        b.nodes, "detcal_postprocess",
        [helper.make_tensor_value_info(input_name, head_dtype, shape),
         helper.make_tensor_value_info(LETTERBOX_INPUT, FLOAT, [batch, 6])],
        _output_infos(batch, config.max_det, mask_coeffs), initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="detcal")
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return model


# ------------------------------------------------------------------------------------------
# whole models
# ------------------------------------------------------------------------------------------
def _upgrade_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    old = model_opset(model)
    try:
        from onnx import version_converter
        up = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(up)
    except Exception as exc:
        raise DetcalError(
            f"{source}: opset {old} is too old (NonMaxSuppression needs opset >= {NMS_MIN_OPSET}, the inserted graph "
            f">= {MIN_OPSET}) and onnx's version converter could not upgrade it ({type(exc).__name__}); "
            f"re-export the model with opset >= {MIN_OPSET}") from None
    return up


def _unknown_dims_symbolic(graph: onnx.GraphProto) -> None:
    """Dims declared 0 or -1 (some exporters' "unknown", read as dynamic by calib.model_info) become
    symbolic: `batch` on the first axis, unnamed elsewhere; shape inference would otherwise carry a
    batch of 0 through the whole patched graph."""
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not vi.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                if axis == 0:
                    d.dim_param = "batch"
                else:
                    d.Clear()


def _with_shapes(model: onnx.ModelProto, outputs: list, src: str) -> list:
    """Graph outputs kept from the source, each with a shape (the patched model must pass the full
    checker): a declared one as it is, else the one shape inference gives; an output neither has is
    left out with a warning naming it."""
    missing = {o.name for o in outputs if not o.type.tensor_type.HasField("shape")}
    if not missing:
        return outputs
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
        inferred = {vi.name: vi for vi in list(g.value_info) + list(g.output)}
    except Exception:   # a model shape inference cannot handle: nothing inferred
        inferred = {}
    kept = []
    for o in outputs:
        if o.name in missing:
            if o.name not in inferred or not inferred[o.name].type.tensor_type.HasField("shape"):
                warnings.warn(f"{src}: output {o.name!r} declares no shape and shape inference gives none; "
                              "it is left out of the patched model (declare its shape to keep it)")
                continue
            o = copy.deepcopy(o)
            o.type.CopyFrom(inferred[o.name].type)
        kept.append(o)
    return kept


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes, initializers (with their graph-input entries) and value_info that no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for a in node.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    needed.update(_outer_inputs(g))
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    backed = {i.name for i in graph.initializer}
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    # an initializer also listed as a graph input (older exporters, e.g. Paddle's) and no longer
    # used goes with its input entry: left behind, it would become a required input
    ins = [i for i in graph.input if i.name in needed or i.name not in backed]
    del graph.input[:]
    graph.input.extend(ins)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)


def _outer_inputs(g: onnx.GraphProto) -> set:
    names = set()
    for n in g.node:
        names.update(i for i in n.input if i)
        for a in n.attribute:
            for sg in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names.update(_outer_inputs(sg))
    return names


def _metadata(artifact: Artifact, spec: PostprocessSpec, head: Head, source_sha: str,
              inputs: dict | None = None) -> PatchedMetadata:
    return PatchedMetadata(
        inputs=inputs,
        source_sha256=source_sha,
        layout=spec.layout,
        num_classes=spec.num_classes,
        calibrator=spec.calibration.kind,
        calibration_in_logit_space=bool(head.sigmoid_front
                                        and not isinstance(spec.calibration, (IsotonicMap, BoxPlattMap))),
        thresholds=[float(t) for t in spec.thresholds],
        nms=spec.config.to_artifact(),
        preprocess=artifact.preprocess.to_artifact(),
        certified_bound=artifact.thresholds.get("certified_bound"),
        masks=None if head.seg is None else {"mask_coeffs": head.seg.m, "prototypes": head.seg.prototypes},
    )


def build_patched_model(
    model_path: str | Path, artifact: Artifact, *, iou=None, max_det=None, conf=None, force=False,
    model: onnx.ModelProto | None = None, static_shapes: bool | None = None, embed_preprocess: bool = False,
    input_channel_order: str | None = None, frame_size: tuple[int, int] | None = None,
) -> PatchResult:
    """Patch in memory (nothing written). Raises DetcalError with a one-line message on bad input.

    static_shapes: True builds the fixed-shape variant (no NonZero, no data-dependent Slice: for
    TensorRT), False the default, None the default unless TensorRT would run some of its nodes
    outside the engine (build_inserted).
    embed_preprocess: the model takes `image` uint8 [H, W, 3] in `input_channel_order` (default:
    the artifact's) and preprocesses in the graph; with frame_size (H, W), `frames` [B, H, W, 3].
    """
    if (input_channel_order is not None or frame_size is not None) and not embed_preprocess:
        raise DetcalError("--input-channel-order and --frame-size go with --embed-preprocess")
    path = Path(model_path)
    model = model if model is not None else load_onnx(path)
    src = str(path)
    if is_patched_metadata({m.key: m.value for m in model.metadata_props}):
        raise DetcalError(f"{src}: the model is already patched by detcal (metadata key 'detcal'); patch the original export")
    source_sha = sha256_file(path)
    want_sha = artifact.model.get("sha256")
    if want_sha and want_sha != source_sha and not force:
        raise DetcalError(f"{src}: sha256 {source_sha[:12]}... differs from the model the calibration was fitted on "
                          f"({str(want_sha)[:12]}...); use --force to patch anyway")
    info = _check_input_convention(read_model_info(path, num_classes=artifact.num_classes, model=model),
                                   artifact, model, src)
    if info.layout != artifact.model["layout"]:
        raise DetcalError(f"{src}: the head is recognised as {info.layout}, the calibration was fitted for "
                          f"{artifact.model['layout']}")
    spec = PostprocessSpec.from_artifact(artifact, iou=iou, max_det=max_det, conf=conf)
    if model_opset(model) < MIN_OPSET:
        model = _upgrade_opset(model, src)
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())   # never mutate the caller's model
    _unknown_dims_symbolic(model.graph)
    opset = model_opset(model)
    head = find_head(model, info, spec.num_classes, source=src)
    graph = model.graph
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer} \
        | {i.name for i in graph.input}
    for name in (LETTERBOX_INPUT, *OUTPUTS, *([DET_MASKS_COEFFS] if head.seg is not None else [])):
        if name in taken:
            raise DetcalError(f"{src}: the model already has a tensor named {name!r}; cannot add the detcal {name}")
    b, static = build_inserted(head, spec, opset, taken, static_shapes)

    image = next(i for i in graph.input if i.name == info.input_name)
    batch = value_info_dims(image)[0]
    batch = "batch" if batch is None else batch
    graph.input.append(helper.make_tensor_value_info(LETTERBOX_INPUT, FLOAT, [batch, 6]))
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    # every output but the head's stays, unchanged: a seg head's prototypes, an embedding or
    # feature output (re-ID, tracking, multi-task exports), per-level raw maps
    kept_outputs = _with_shapes(model, [o for o in graph.output if o.name not in info.outputs], src)
    del graph.output[:]
    graph.output.extend(_output_infos(batch, spec.config.max_det, head.seg.m if head.seg is not None else 0))
    graph.output.extend(kept_outputs)
    _prune(graph)
    embedded = _embed_preprocess(model, info, artifact, input_channel_order, frame_size, src) if embed_preprocess else None

    inputs = None if embedded is None else {embedded.input_name: embedded.description}
    meta = dataclasses.replace(_metadata(artifact, spec, head, source_sha, inputs), static_shapes=static)
    for key, value in meta.to_metadata_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    findings = _validate(model, b, src)
    inserted = list(b.nodes)
    if embedded is not None:
        from . import ep_support
        findings += ep_support.check_nodes(embedded.nodes, model_opset(model), consts=embedded.consts,
                                           forbid=ep_support.DETCAL_FORBIDDEN)
        inserted = list(embedded.nodes) + inserted
    return PatchResult(model, head, spec, inserted, findings)


def _check_input_convention(info, artifact: Artifact, model: onnx.ModelProto, src: str):
    """The model's image input must take what the artifact was fitted with: its input_dtype and
    input_layout (calib.model_input; absent in older artifacts: NCHW, the dtype unchecked). Fed
    otherwise, the graph would compute on wrong values, so this holds even under --force. Where the
    declared dims leave the layout open, the recorded one decides (as eval does) -> ModelInfo.
    DetcalError, one line naming both conventions, on a mismatch."""
    want_dtype = artifact.model.get("input_dtype") or info.input_dtype
    want_layout = artifact.model.get("input_layout") or "NCHW"
    if want_layout != info.input_layout:
        try:        # dims that allow the recorded layout too (dynamic channel axes): read it that way
            info = read_model_info(info.path, num_classes=artifact.num_classes, model=model, input_layout=want_layout)
        except DetcalError:
            pass
    if (info.input_dtype, info.input_layout) != (want_dtype, want_layout):
        dims = list(value_info_dims(next(i for i in model.graph.input if i.name == info.input_name)))
        raise DetcalError(f"{src}: the image input '{info.input_name}' {dims} takes {info.input_dtype} "
                          f"{info.input_layout}, the calibration was fitted on a model taking {want_dtype} "
                          f"{want_layout}; refit on this model (--force does not cover this: it would feed wrong values)")
    return info


def _embed_preprocess(model, info, artifact: Artifact, input_channel_order, frame_size, src: str):
    """The artifact's preprocessing in front of the source model (onnx_ops.preprocess_graph)."""
    from .preprocess_graph import PreprocessGraphSpec, embed_in_patched

    size = tuple(artifact.model.get("input_size") or info.input_size or ())
    if len(size) != 2:
        raise DetcalError(f"{src}: --embed-preprocess needs the input size (the calibration records none)")
    try:
        spec = PreprocessGraphSpec.from_preprocess(artifact.preprocess, size, input_channel_order)
    except ValueError as exc:
        raise DetcalError(f"{src}: --embed-preprocess: {exc}") from None
    embedded = embed_in_patched(model, info.input_name, spec, frame_hw=frame_size, source=src)
    shape = "[H, W, 3]" if frame_size is None else f"[B, {frame_size[0]}, {frame_size[1]}, 3]"
    embedded.description = f"uint8 {shape} {spec.image_channel_order}, preprocessed in the graph"
    return embedded


def build_inserted(head: Head, spec: PostprocessSpec, opset: int, taken, static_shapes: bool | None
                   ) -> tuple[GraphBuilder, bool]:
    """The inserted nodes -> (GraphBuilder holding them, whether they are the fixed-shape variant).

    static_shapes None: the default variant, unless the TensorRT table says some of its nodes would
    run outside a TensorRT engine (ep_support.leaves_tensorrt: e.g. NonZero where multi-label
    isotonic calibrates survivors only); then the fixed-shape one. Box-aware maps keep the default
    (their prefilter's NonZero) unless static_shapes is True: their fixed-shape variant computes every
    (box, class) pair."""
    def build(static: bool) -> GraphBuilder:
        b = GraphBuilder(opset)
        b.reserve(taken)
        _finish_outputs(b, add_postprocess(b, head, LETTERBOX_INPUT, spec, static))
        return b

    if static_shapes is not None:
        return build(bool(static_shapes)), bool(static_shapes)
    from . import ep_support

    def leaves(g: GraphBuilder) -> bool:
        return ep_support.leaves_tensorrt(ep_support.check_nodes(g.nodes, opset, consts=dict(g.const_values),
                                                                 forbid=ep_support.DETCAL_FORBIDDEN))

    b = build(False)
    # box-aware maps: their fixed-shape variant calibrates every (box, class) pair (BOX_AWARE_ALL_PAIRS),
    # many times the default's cost on CPU, so only on request (--static-shapes)
    if leaves(b) and not isinstance(spec.calibration, BoxPlattMap):
        return build(True), True
    return b, False


def _validate(model: onnx.ModelProto, b: GraphBuilder, src: str) -> list:
    """checker (full) + shape inference on the result; the inserted nodes against ep_support."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # a bug of ours, not the user's: keep the cause visible
        raise RuntimeError(f"detcal produced an invalid graph for {src}: {exc}") from exc
    from . import ep_support  # the gate is not optional: a broken table must fail loudly

    consts = dict(b.const_values)
    findings = ep_support.check_nodes(b.nodes, model_opset(model), consts=consts, forbid=ep_support.DETCAL_FORBIDDEN,
                                      types=ep_support.tensor_types(inferred, inferred=True))
    return findings


def default_out_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".detcal.onnx")


def patch_model(
    model_path: str | Path, artifact: Artifact | str | Path, out_path: str | Path | None = None, *,
    iou: float | None = None, max_det: int | None = None, conf: float | None = None, force: bool = False,
    static_shapes: bool | None = None, embed_preprocess: bool = False, input_channel_order: str | None = None,
    frame_size: tuple[int, int] | None = None,
) -> Path:
    """Patch `model_path` with `artifact` (an Artifact or the path of a calibration.json), write
    `out_path` (default `<stem>.detcal.onnx` beside it).

    iou / max_det / conf override the artifact's NMS IoU, K and (every class's) score threshold.
    force: patch even when the artifact was fitted on a model with another sha256.
    static_shapes: True: the fixed-shape graph for TensorRT (no NonZero, no data-dependent Slice,
    TopK with constant K); False: the default; None: the default unless the TensorRT table says
    some of its nodes would leave the engine.
    embed_preprocess / input_channel_order / frame_size: see build_patched_model.
    Raises DetcalError (one line) for: missing/corrupt model, already patched model, sha256
    mismatch without force, unrecognised head or layout mismatch, an image input convention (dtype,
    NCHW/NHWC) other than the artifact's (even with force), opset too old to upgrade,
    output path equal to the input. Nothing is written unless everything succeeded (atomic).
    """
    calibration_path = None if isinstance(artifact, Artifact) else Path(artifact)
    if calibration_path is not None:
        artifact = load_artifact(calibration_path)
    src = Path(model_path)
    out = Path(out_path) if out_path is not None else default_out_path(src)
    check_writable(out, inputs=(src, calibration_path))    # refuses out == an input, before any work
    result = build_patched_model(src, artifact, iou=iou, max_det=max_det, conf=conf, force=force,
                                 static_shapes=static_shapes, embed_preprocess=embed_preprocess,
                                 input_channel_order=input_channel_order, frame_size=frame_size)
    errors = [f for f in result.findings if f.level == "error" and f.ep in ("cpu", "cuda")]
    if errors:
        raise DetcalError(f"{src}: inserted nodes unsupported on onnxruntime: " + "; ".join(f"{f.node} {f.op}: {f.reason}" for f in errors))
    for f in result.findings:
        if f.level == "error":
            warnings.warn(f"detcal patch: {f.ep}: {f.op} ({f.node}): {f.reason}", stacklevel=2)
    atomic_write_bytes(out, result.model.SerializeToString())
    return out
