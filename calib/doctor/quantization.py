"""The quantization check's engine: a quantized detector against its float reference, on deployment images.

``compare_quantization(reference, quantized, dataset)`` runs both models through calib's
reference pipeline (same letterbox, same post-processing, same score floor) and compares, on the
same images and labels:

1. recall at the deployed threshold by object-size bucket (COCO small < 32^2, medium < 96^2,
   large; box area in original-image px) and per class: the paired difference
   recall(float) - recall(quantized) with an image-bootstrap interval. A group is flagged when
   the drop exceeds ``recall_drop_warn`` (a few points) AND its interval excludes 0; a drop
   over ``recall_drop_fail`` with the same support fails.
2. AP50 by size bucket and per class (point values; AP in a bucket counts the bucket's labelled
   boxes, unmatched detections whose area is in the bucket as false positives, and ignores
   detections matched to boxes of other buckets, in the spirit of COCO's area ranges).
3. score shift of matched detections: float detections above the threshold paired with
   quantized detections of the same class at IoU >= ``pair_iou`` (greedy by float score),
   median of score(quantized) - score(float) with an image-bootstrap interval.
4. activation ranges of the FLOAT model on deployment images: intermediate tensors (outputs
   of Conv/Add/Mul/Concat/... nodes, float, rank >= 3, at most ``max_layers`` spread over the
   graph) are exposed as extra outputs and recorded on a sample of images: min, max, the
   0.1th and 99.9th percentiles, and the share of an 8-bit min/max range spent on the outliers
   beyond them (1 - (p99.9 - p0.1) / (max - min), zero included in the range as onnxruntime
   does). Layers whose outliers take more than ``outlier_share_warn`` of the range are flagged
   "wastes range". When the quantized model is QDQ, the range each QuantizeLinear can represent
   (scale and zero point of the same tensor name) is compared with the deployment values: when
   they reach beyond it by more than ``clip_excess_warn`` of its width, for more than
   ``clip_share_warn`` of the values (more than one step out), the layer is flagged "clips"
   (calibrated on other data than deployment). Clipping flags the check on its own when a
   layer clips more than ``clip_share_alone`` of its values; rarer clipping is listed beside a
   measured problem (and always in the summary and the evidence).
   "wastes range" alone does not flag the check: it predicts damage that 1-3 measure directly
   (healthy real exports have such layers); it is listed beside a measured problem, as the
   layers to look at, and is always in the summary and the evidence.
5. score shift: a median shift beyond ``score_shift_warn`` with an interval excluding 0 warns
   (beyond ``score_shift_fail`` fails); most float detections without a quantized partner warns.

The result says what was compared (models, images, labelled boxes, threshold, matching) and
how sure each number is (intervals, counts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..artifact import PostprocessConfig, Preprocess
from ..boxes import box_iou
from ..collect import Collected, collect_detections
from ..data import Dataset
from ..errors import DetcalError
from ..fitting import match_collected
from ..images import read_image_rgb
from ..matching import MatchedDetections
from ..metrics import _ap_sorted, ap_per_class
from ..model_info import load_onnx, read_model_info
from ..preprocess import preprocess_image
from ..runner import resolve_input_size
from .report import Check, DoctorOptions
from .runs import Run
from .stats import (SIZE_BUCKETS, SIZE_EDGES, Estimate, gt_buckets, gt_hits, median_shift, paired_recall_difference,
                    recall_by_group, size_bucket)

__all__ = ["QuantizationOptions", "QuantizationResult", "GroupComparison", "LayerRange", "compare_quantization",
           "activation_ranges", "qdq_ranges", "pair_detections", "ACTIVATION_OPS", "check_quantization"]

MAX_LISTED = 3   # flagged groups of one kind named in the findings; the rest are counted

ACTIVATION_OPS = ("Conv", "Add", "Mul", "Concat", "Sigmoid", "Relu", "LeakyRelu", "HardSwish", "Clip", "MaxPool",
                  "Resize", "Sub", "BatchNormalization", "ConvTranspose", "MatMul", "Gemm")


@dataclass
class QuantizationOptions:
    conf: float = 0.25                 # the deployed confidence threshold
    base_conf: float = 0.001           # score floor of the collected detections (for AP)
    match_iou: float = 0.5             # detection <-> label
    pair_iou: float = 0.9              # float detection <-> quantized detection
    recall_drop_warn: float = 0.03     # "a few points"
    recall_drop_fail: float = 0.10
    min_gt: int = 10                   # groups with fewer labelled boxes are reported, never flagged
    bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0
    max_layers: int = 48
    activation_images: int = 16
    values_per_image: int = 50_000     # values sampled per tensor and image for the percentiles
    outlier_share_warn: float = 0.75   # outliers take 3/4 of the 8-bit range: the bulk gets <= 64 levels
    score_shift_warn: float = 0.05     # |median score change| of paired detections that warns
    clip_excess_warn: float = 0.25     # deployment max/min beyond the QDQ range by > 1/4 of that range...
    clip_share_warn: float = 1e-5      # ...for more than this share of the values: the layer clips
    clip_share_alone: float = 1e-3     # clipping layers flag the check on their own above this share
    score_shift_fail: float = 0.15
    postprocess: PostprocessConfig = field(default_factory=lambda: PostprocessConfig(mask_padding=False))

    def validate(self) -> None:
        if not 0 < self.conf < 1 or not 0 <= self.base_conf < self.conf:
            raise DetcalError(f"quantization check: need 0 <= base_conf < conf < 1, got {self.base_conf}, {self.conf}")
        if not 0 < self.pair_iou <= 1 or not 0 < self.level < 1 or self.bootstrap < 10:
            raise DetcalError("quantization check: pair_iou in (0, 1], level in (0, 1), bootstrap >= 10")
        if self.max_layers < 1 or self.activation_images < 1:
            raise DetcalError("quantization check: max_layers and activation_images must be >= 1")


@dataclass
class GroupComparison:
    """One size bucket or class: float vs quantized on the same labelled boxes."""

    group: str
    n_gt: int
    recall_reference: Estimate
    recall_quantized: Estimate
    recall_drop: Estimate           # reference - quantized, paired
    ap50_reference: float
    ap50_quantized: float
    flagged: bool = False

    def to_dict(self) -> dict:
        f = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)   # noqa: E731
        return {"group": self.group, "n_gt": self.n_gt, "recall_reference": self.recall_reference.to_dict(),
                "recall_quantized": self.recall_quantized.to_dict(), "recall_drop": self.recall_drop.to_dict(),
                "ap50_reference": f(self.ap50_reference), "ap50_quantized": f(self.ap50_quantized),
                "ap50_drop": f(self.ap50_reference - self.ap50_quantized), "flagged": self.flagged}


@dataclass
class LayerRange:
    """Activation range of one float tensor on deployment images."""

    tensor: str
    op: str
    n_values: int
    min: float
    max: float
    p001: float                      # 0.1th percentile
    p999: float                      # 99.9th percentile
    outlier_share: float             # share of an 8-bit min/max range spent beyond [p0.1, p99.9]
    qdq_range: tuple[float, float] | None = None   # what the quantized model can represent
    clipped_share: float | None = None             # share of deployment values outside qdq_range (> 1 step)
    clip_excess: float | None = None               # how far beyond qdq_range they reach, in its widths
    flags: list[str] = field(default_factory=list)

    @property
    def bits_lost(self) -> float:
        """log2 of the range over the bulk: 8-bit levels the bulk of the values does not get."""
        return float(-math.log2(max(1.0 - self.outlier_share, 1e-9)))

    def to_dict(self) -> dict:
        r = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)   # noqa: E731
        return {"tensor": self.tensor, "op": self.op, "n_values": self.n_values, "min": r(self.min), "max": r(self.max),
                "p0.1": r(self.p001), "p99.9": r(self.p999), "outlier_share": r(self.outlier_share),
                "bits_lost": r(self.bits_lost),
                "qdq_range": [r(v) for v in self.qdq_range] if self.qdq_range else None,
                "clipped_share": r(self.clipped_share) if self.clipped_share is not None else None,
                "clip_excess": r(self.clip_excess) if self.clip_excess is not None else None,
                "flags": list(self.flags)}


@dataclass
class QuantizationResult:
    status: str                       # ok | warn | fail
    findings: list[str]               # one line per flagged thing, most serious first
    compared: dict                    # what ran against what, on which images
    by_size: list[GroupComparison]
    by_class: list[GroupComparison]
    score_shift: Estimate             # median score(quantized) - score(float) on paired detections
    n_unpaired: int                   # float detections above conf without a quantized partner
    layers: list[LayerRange]
    summary: str = ""
    scores_shifted: bool = False      # a supported score shift beyond the tolerance
    boxes_moved: bool = False         # most float detections have no quantized partner
    reference_collected: Collected | None = field(default=None, repr=False)   # for reuse, not serialised
    quantized_collected: Collected | None = field(default=None, repr=False)

    @property
    def flagged_groups(self) -> list[GroupComparison]:
        return [g for g in self.by_size + self.by_class if g.flagged]

    @property
    def flagged_layers(self) -> list[LayerRange]:
        return [lr for lr in self.layers if lr.flags]

    def to_dict(self) -> dict:
        return {"status": self.status, "summary": self.summary, "findings": list(self.findings),
                "compared": self.compared, "by_size": [g.to_dict() for g in self.by_size],
                "by_class": [g.to_dict() for g in self.by_class], "score_shift": self.score_shift.to_dict(),
                "n_unpaired": self.n_unpaired, "scores_shifted": self.scores_shifted,
                "boxes_moved": self.boxes_moved, "layers": [lr.to_dict() for lr in self.layers]}


# ----------------------------------------------------------------------------------- pairing

def pair_detections(ref: Collected, other: Collected, *, conf: float, iou: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pair each image's reference detections above conf with the other model's detections.

    Same class, IoU >= iou, greedy by reference score (each other detection used once).
    Returns (image_index (P,), reference score (P,), other score (P,), number of unpaired
    reference detections above conf). Both Collected must cover the same images in the same order.
    """
    imgs, s_ref, s_oth, unpaired = [], [], [], 0
    for i, (a, b) in enumerate(zip(ref.detections, other.detections)):
        keep = np.flatnonzero(a.scores > conf)
        if keep.size == 0:
            continue
        if len(b) == 0:
            unpaired += keep.size
            continue
        ious = box_iou(np.asarray(a.boxes_xyxy[keep], np.float64), np.asarray(b.boxes_xyxy, np.float64))
        ious[a.classes[keep][:, None] != b.classes[None, :]] = 0.0
        used = np.zeros(len(b), bool)
        for r in np.argsort(-a.scores[keep], kind="stable"):
            cand = np.where(~used & (ious[r] >= iou), ious[r], -1.0)
            j = int(np.argmax(cand))
            if cand[j] < 0:
                unpaired += 1
                continue
            used[j] = True
            imgs.append(i)
            s_ref.append(float(a.scores[keep[r]]))
            s_oth.append(float(b.scores[j]))
    return (np.asarray(imgs, np.int64), np.asarray(s_ref, np.float64), np.asarray(s_oth, np.float64), unpaired)


# --------------------------------------------------------------------------------------- AP

def _ap50_in_bucket(matched: MatchedDetections, det_area: np.ndarray, gt_bucket: np.ndarray, bucket: int) -> float:
    """AP50 over classes with labelled boxes in the bucket (see the module docstring for the rule)."""
    in_gt = gt_bucket == bucket
    matched_gt_bucket = np.where(matched.is_tp, gt_bucket[np.maximum(matched.gt_index, 0)], -1)
    keep = (matched.is_tp & (matched_gt_bucket == bucket)) | (~matched.is_tp & (size_bucket(det_area) == bucket))
    aps = []
    for c in range(matched.num_classes):
        n_gt = int((in_gt & (matched.gt_classes == c)).sum())
        if n_gt == 0:
            continue
        sel = keep & (matched.classes == c)
        order = np.argsort(-matched.scores[sel], kind="stable")
        aps.append(_ap_sorted(matched.is_tp[sel][order], n_gt))
    return float(np.mean(aps)) if aps else math.nan


def _det_areas(c: Collected) -> np.ndarray:
    parts = [np.asarray(d.boxes_xyxy, np.float64).reshape(-1, 4) for d in c.detections]
    b = np.concatenate(parts) if parts else np.zeros((0, 4))
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


# ------------------------------------------------------------------------------- activations

def _candidate_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, op type) of float activation tensors of rank >= 3, in graph order."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # noqa: BLE001 - shape inference is a best effort here
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        types[vi.name] = (t.elem_type, len(t.shape.dim) if t.HasField("shape") else -1)
    outputs = {o.name for o in model.graph.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in ACTIVATION_OPS:
            continue
        for name in node.output[:1]:
            elem, rank = types.get(name, (0, -1))
            if name and name not in outputs and elem == onnx.TensorProto.FLOAT and rank >= 3:
                out.append((name, node.op_type))
    return out


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))]


def qdq_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float, float]]:
    """Tensor name -> (low, high, step) float range its QuantizeLinear can represent (per-tensor scales only).

    (q_min - zero_point) * scale .. (q_max - zero_point) * scale, with q_min/q_max of the zero
    point's type (uint8 0..255, int8 -128..127). Dynamic quantization (DynamicQuantizeLinear)
    computes its range per input at run time and has no entry.
    """
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    out = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        scale = consts.get(node.input[1])
        zp = consts.get(node.input[2]) if len(node.input) > 2 else np.array(0, np.uint8)
        if scale is None or zp is None or scale.size != 1 or zp.size != 1:
            continue
        info = np.iinfo(zp.dtype) if zp.dtype.kind in "iu" else None
        if info is None:
            continue
        s, z = float(scale.reshape(())), float(zp.reshape(()))
        out[node.input[0]] = ((info.min - z) * s, (info.max - z) * s, s)
    return out


def activation_ranges(model_path: str | Path, images: list[np.ndarray], *, max_layers: int = 48,
                      values_per_image: int = 50_000, qdq: dict[str, tuple[float, float, float]] | None = None,
                      outlier_share_warn: float = 0.75, clip_excess_warn: float = 0.25,
                      clip_share_warn: float = 1e-5, seed: int = 0,
                      threads: int | None = None) -> list[LayerRange]:
    """Per-layer ranges of a float model on prepared inputs.

    images: model inputs, each (1, 3, H, W) float32 (or what the model takes). min and max are
    exact; the percentiles come from up to `values_per_image` values per tensor and image,
    sampled uniformly. qdq: tensor -> representable range and step of the quantized model
    (qdq_ranges); a value counts as clipped when it lies more than one step outside the range
    (closer than that it is a rounding error, e.g. SiLU's minimum -0.278 against a calibrated -0.26).
    """
    proto = load_onnx(model_path)
    chosen = _spread(_candidate_tensors(proto), max_layers)
    if not chosen or not images:
        return []
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for name, _ in chosen:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:   # noqa: BLE001
        raise DetcalError(f"onnxruntime cannot run {model_path} with its activations exposed: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    names = [n for n, _ in chosen]
    input_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    lo = {n: math.inf for n in names}
    hi = {n: -math.inf for n in names}
    count = {n: 0 for n in names}
    samples = {n: [] for n in names}
    clipped = {n: 0 for n in names}
    qdq = qdq or {}
    for x in images:
        outs = sess.run(names, {input_name: x})
        for n, v in zip(names, outs):
            v = np.asarray(v, np.float32).reshape(-1)
            if v.size == 0:
                continue
            lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
            count[n] += v.size
            samples[n].append(v if v.size <= values_per_image else v[rng.integers(0, v.size, values_per_image)])
            if n in qdq:
                a, b, step = qdq[n]
                clipped[n] += int(((v < a - step) | (v > b + step)).sum())
    op_of = dict(chosen)
    out = []
    for n in names:
        if count[n] == 0:
            continue
        s = np.concatenate(samples[n])
        p001, p999 = (float(v) for v in np.quantile(s, [0.001, 0.999]))
        full = max(hi[n], 0.0) - min(lo[n], 0.0)
        bulk = max(p999, 0.0) - min(p001, 0.0)
        share = 1.0 - bulk / full if full > 0 else 0.0
        lr = LayerRange(n, op_of[n], count[n], lo[n], hi[n], p001, p999, float(share))
        if n in qdq:
            lr.qdq_range = (float(qdq[n][0]), float(qdq[n][1]))
            a, b, _ = qdq[n]
            lr.clipped_share = clipped[n] / count[n]
            lr.clip_excess = max(hi[n] - b, a - lo[n], 0.0) / (b - a) if b > a else 0.0
            if lr.clipped_share > clip_share_warn and lr.clip_excess > clip_excess_warn:
                lr.flags.append("clips")
        if share > outlier_share_warn:
            lr.flags.append("wastes range")
        out.append(lr)
    return out


def _activation_inputs(dataset: Dataset, pre: Preprocess, size, n: int) -> list[np.ndarray]:
    """Up to n deployment images, spread over the split (positives and negatives as they come), as model inputs."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))
    xs = []
    for i in picks:
        try:
            img = read_image_rgb(dataset.samples[i].image_path)
        except DetcalError:
            continue
        x, _ = preprocess_image(img, size, pre)
        xs.append(x[None].astype(np.float32))
    return xs


# ------------------------------------------------------------------------------------ engine

def _groups(ref: MatchedDetections, qua: MatchedDetections, hits_r, hits_q, groups, labels, areas_r, areas_q,
            gt_bucket, kind: str, opts: QuantizationOptions) -> list[GroupComparison]:
    n_groups, n_img = len(labels), ref.n_images
    kw = dict(n_boot=opts.bootstrap, level=opts.level, seed=opts.seed)
    rr = recall_by_group(hits_r, ref.gt_image_index, groups, n_groups, n_img, **kw)
    rq = recall_by_group(hits_q, ref.gt_image_index, groups, n_groups, n_img, **kw)
    dd = paired_recall_difference(hits_r, hits_q, ref.gt_image_index, groups, n_groups, n_img, **kw)
    if kind == "size":
        ap_r = [_ap50_in_bucket(ref, areas_r, gt_bucket, b) for b in range(n_groups)]
        ap_q = [_ap50_in_bucket(qua, areas_q, gt_bucket, b) for b in range(n_groups)]
    else:
        ap_r, ap_q = list(ap_per_class(ref)), list(ap_per_class(qua))
    out = []
    for k, label in enumerate(labels):
        d = dd[k]
        flagged = d.n >= opts.min_gt and d.value > opts.recall_drop_warn and d.excludes(0.0) and d.low > 0
        out.append(GroupComparison(label, d.n, rr[k], rq[k], d, float(ap_r[k]), float(ap_q[k]), bool(flagged)))
    return out


def compare_quantization(
    reference: str | Path,
    quantized: str | Path,
    dataset: Dataset,
    *,
    preprocess: Preprocess = Preprocess(),
    input_size: tuple[int, int] | None = None,
    layout: str | None = None,
    options: QuantizationOptions | None = None,
    quantized_collected: Collected | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> QuantizationResult:
    """Compare a quantized detector with its float reference on a labelled deployment split.

    reference: the float export of the same network; quantized: the model served. Both must have
    the same layout and take the same input size (`input_size`, default: the quantized model's).
    quantized_collected: the quantized model's detections when the caller already collected them
    (same dataset, preprocessing, size, floor and post-processing).
    Raises DetcalError for models that are not comparable.
    """
    opts = options or QuantizationOptions()
    opts.validate()
    nc = dataset.num_classes
    info_q = read_model_info(quantized, layout=layout, num_classes=nc)
    info_r = read_model_info(reference, layout=layout, num_classes=nc)
    if info_r.layout != info_q.layout:
        raise DetcalError(f"{reference} has layout {info_r.layout}, {quantized} has {info_q.layout}: "
                          "not the same detector")
    size = tuple(input_size) if input_size is not None else resolve_input_size(info_q, None)
    if info_r.input_size is not None and tuple(info_r.input_size) != size:
        raise DetcalError(f"{reference} takes {info_r.input_size[0]}x{info_r.input_size[1]} but the quantized model "
                          f"runs at {size[0]}x{size[1]}: export the float reference at the same size")
    kw = dict(num_classes=nc, base_conf=opts.base_conf, config=opts.postprocess, batch_size=batch_size,
              threads=threads, progress=progress)
    col_q = quantized_collected or collect_detections(dataset, info_q, preprocess, size, desc="running quantized model", **kw)
    same_file = Path(reference).resolve() == Path(quantized).resolve()
    if same_file and quantized_collected is not None:   # a model against itself: one run is enough
        col_r = col_q
    else:
        col_r = collect_detections(dataset, info_r, preprocess, size, desc="running float reference", **kw)
    if list(col_r.sample_indices) != list(col_q.sample_indices):
        raise DetcalError(f"{dataset.source}: the two runs read different images; cannot pair them")
    if len(col_r) == 0:
        raise DetcalError(f"{dataset.source}: no readable image")
    m_r = match_collected(col_r, nc, opts.match_iou)
    m_q = match_collected(col_q, nc, opts.match_iou)
    hits_r, hits_q = gt_hits(m_r, opts.conf), gt_hits(m_q, opts.conf)
    bucket = gt_buckets(col_r.gt_boxes_xyxy)
    areas_r, areas_q = _det_areas(col_r), _det_areas(col_q)
    by_size = _groups(m_r, m_q, hits_r, hits_q, bucket, SIZE_BUCKETS, areas_r, areas_q, bucket, "size", opts)
    by_class = _groups(m_r, m_q, hits_r, hits_q, m_r.gt_classes, list(dataset.names), areas_r, areas_q, bucket,
                       "class", opts)
    img, s_r, s_q, unpaired = pair_detections(col_r, col_q, conf=opts.conf, iou=opts.pair_iou)
    shift = median_shift(s_q - s_r, img, m_r.n_images, n_boot=opts.bootstrap, level=opts.level, seed=opts.seed)
    qdq = qdq_ranges(load_onnx(quantized))
    xs = [info_r.input_convention.feed(x, str(reference))            # as the reference declares (uint8, NHWC)
          for x in _activation_inputs(dataset, preprocess, size, opts.activation_images)]
    layers = activation_ranges(reference, xs, max_layers=opts.max_layers, values_per_image=opts.values_per_image,
                               qdq=qdq, outlier_share_warn=opts.outlier_share_warn,
                               clip_excess_warn=opts.clip_excess_warn, clip_share_warn=opts.clip_share_warn, seed=opts.seed, threads=threads)

    findings, fail = [], False
    pct = lambda e: f"{100 * e.value:+.1f} pts [{100 * e.low:+.1f}, {100 * e.high:+.1f}]"   # noqa: E731
    for kind, groups in (("size", by_size), ("class", by_class)):
        hit = sorted((g for g in groups if g.flagged), key=lambda g: -g.recall_drop.value)
        fail |= any(g.recall_drop.value > opts.recall_drop_fail for g in hit)
        for g in hit[:MAX_LISTED]:
            findings.append(f"{kind} {g.group}: recall drops {pct(g.recall_drop)} ({g.recall_reference.value:.3f} -> "
                            f"{g.recall_quantized.value:.3f} on {g.n_gt} labelled boxes)")
        if len(hit) > MAX_LISTED:
            findings.append(f"{len(hit) - MAX_LISTED} more {kind} group(s) with a supported recall drop (evidence.by_{kind})")
    n_ref = shift.n + unpaired
    scores_shifted = bool(shift.n and abs(shift.value) > opts.score_shift_warn and shift.excludes(0.0))
    boxes_moved = bool(n_ref >= opts.min_gt and unpaired / n_ref > 0.5)
    if scores_shifted:
        fail |= abs(shift.value) > opts.score_shift_fail
        findings.append(f"scores of {shift.n} paired detections (IoU >= {opts.pair_iou:g}, same class) shift by "
                        f"{shift.text('{:+.3f}')} (quantized - float, median): the float model's calibration and "
                        "thresholds do not carry over")
    if boxes_moved:
        findings.append(f"{unpaired} of {n_ref} float detections above {opts.conf:g} have no quantized partner at "
                        f"IoU >= {opts.pair_iou:g}: the quantized boxes or classes moved")
    clips = [lr for lr in layers if "clips" in lr.flags]
    wastes = [lr for lr in layers if "wastes range" in lr.flags]
    measured = bool(findings)
    if clips and (measured or max(lr.clipped_share for lr in clips) > opts.clip_share_alone):
        worst = max(clips, key=lambda lr: lr.clip_excess)
        findings.append(f"{len(clips)} layer(s) clip deployment activations, worst {worst.tensor} "
                        f"({worst.clipped_share:.3%} of values outside the quantized range "
                        f"[{worst.qdq_range[0]:.3g}, {worst.qdq_range[1]:.3g}], deployment range "
                        f"[{worst.min:.3g}, {worst.max:.3g}])")
    status = "fail" if fail else ("warn" if findings else "ok")
    waste_text = ""
    if wastes:
        worst = max(wastes, key=lambda lr: lr.outlier_share)
        waste_text = (f"{len(wastes)} of {len(layers)} layer(s) spend > {opts.outlier_share_warn:.0%} of an 8-bit "
                      f"min/max range on outliers beyond the 0.1-99.9th percentiles, worst {worst.tensor} "
                      f"({worst.outlier_share:.0%}, {worst.bits_lost:.1f} bits lost)")
        if measured:
            findings.append(waste_text)
    n_gt = int(m_r.gt_classes.shape[0])
    compared = {
        "reference_model": str(reference), "quantized_model": str(quantized), "dataset": dataset.source,
        "n_images": m_r.n_images, "n_negative_images": m_r.n_negative_images, "n_gt": n_gt,
        "input_size": list(size), "conf": opts.conf, "match_iou": opts.match_iou, "pair_iou": opts.pair_iou,
        "size_buckets": {"small": f"area < {SIZE_EDGES[0]:.0f}", "medium": f"area < {SIZE_EDGES[1]:.0f}",
                         "large": f"area >= {SIZE_EDGES[1]:.0f}", "units": "original-image px^2"},
        "interval": f"{opts.level:.0%} percentile, image bootstrap x{opts.bootstrap}",
        "recall_drop_warn": opts.recall_drop_warn, "recall_drop_fail": opts.recall_drop_fail, "min_gt": opts.min_gt,
        "n_activation_images": len(xs), "n_layers": len(layers), "n_qdq_tensors": len(qdq),
        "quantization": "static QDQ" if qdq else "no per-tensor QuantizeLinear (dynamic or other)",
    }
    overall = [g for g in by_size if g.n_gt]
    rec_r = float(hits_r.mean()) if n_gt else math.nan
    rec_q = float(hits_q.mean()) if n_gt else math.nan
    summary = (f"float vs quantized on {m_r.n_images} images ({n_gt} labelled boxes) at {size[0]}x{size[1]}, "
               f"scores > {opts.conf:g}: recall {rec_r:.3f} vs {rec_q:.3f}; size buckets "
               + ", ".join(f"{g.group} {g.recall_drop.text('{:+.3f}')}" for g in overall)
               + f"; score shift of {shift.n} paired detections {shift.text('{:+.4f}')}; "
               f"{len(layers)} layers measured on {len(xs)} images"
               + (f" ({len(clips)} clip deployment values, at most {max(lr.clipped_share for lr in clips):.3%} of a "
                  "layer's)" if clips else "") + (f"; {waste_text}" if waste_text and not measured else ""))
    return QuantizationResult(status, findings, compared, by_size, by_class, shift, unpaired, layers, summary,
                              scores_shifted, boxes_moved, col_r, col_q)


# ----------------------------------------------------------------------- the doctor check

def check_quantization(main: Run, reference_model: str | Path, dataset: Dataset, info, preprocess: Preprocess,
                       opts: DoctorOptions, *, batch_size: int | None = None, threads: int | None = None,
                       progress: bool = False) -> Check:
    """Doctor check 8, quantization: `main` (the served, quantized model's run) against its float reference.

    Reuses main's detections; runs the reference at the same input size and the activation pass.
    Status and findings are the engine's (see the module docstring); the evidence is its result.
    """
    name = "quantization"
    qopts = QuantizationOptions(conf=opts.conf, base_conf=opts.base_conf, match_iou=opts.match_iou,
                                bootstrap=max(opts.bootstrap, 10), level=opts.interval_level, seed=opts.seed,
                                postprocess=opts.postprocess)
    collected = None if main.emulated else main.collected
    r = compare_quantization(reference_model, info.path, dataset, preprocess=preprocess,
                             input_size=main.runner.input_size, layout=info.layout, options=qopts,
                             quantized_collected=collected, batch_size=batch_size, threads=threads, progress=progress)
    sev = {"fail": "high", "warn": "medium", "ok": "none"}[r.status]
    finding = ("; ".join(r.findings) + f" ({r.summary})") if r.findings else r.summary
    fixes = []
    clipping = r.status != "ok" and any("clips" in lr.flags for lr in r.layers)
    if r.flagged_groups or clipping:
        fixes.append("re-run the post-training quantization calibrated on deployment images (a CalibrationDataReader "
                     "over this split; percentile or entropy calibration instead of min/max), and keep the layers "
                     "flagged in evidence.layers in float (quantize_static nodes_to_exclude)")
    if r.scores_shifted or r.boxes_moved:
        fixes.append("fit detcal on the quantized model itself (detcal fit --model QUANTIZED.onnx): the float model's "
                     "calibration and thresholds do not carry over; keep the box decode and the output Concat in float")
    return Check(name, r.status, sev, finding, r.to_dict(), "; ".join(fixes))
