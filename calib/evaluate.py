"""`detcal eval`: the raw model and the patched model side by side on held-out images.

    evaluate(model, data, *, patched=None, calibration=None, split="test", conf=None, ...) -> EvalResult

Every image is read and letterboxed once; the same input tensor and letterbox row go to the
raw model and to the patched model. Columns:

- ``raw``: the raw model through the numpy reference pipeline at identity calibration (what
  users run today). AP integrates over its detections above the AP floor (0.001, as
  Ultralytics' val and COCO evaluations do); precision, recall, D-ECE, LaECE_0 and the
  negative-scene numbers are over the detections with score > ``conf`` (default 0.25).
- ``reference``: only with a calibration artifact: the reference pipeline with the
  artifact's calibration, thresholds and NMS settings, i.e. what the patched model computes.
- ``patched``: the patched model's own outputs (num_dets, det_boxes, det_scores,
  det_classes). It only outputs detections above its thresholds, so its AP is over what it
  outputs, and the operating point is "everything it outputs". The raw column also reports
  AP over its detections above ``conf`` (``ap50_at_op``), the like-for-like comparison.

Latency per image: the wall time of each ``session.run`` (perf_counter around the call,
after one untimed warm-up call per session), divided by the batch size; median and p90
over batches. For the raw and reference columns the numpy post-processing is timed
separately (at the operating threshold, as deployed) and added for the total.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifact import (LETTERBOX_INPUT, PATCHED_OUTPUTS, Artifact, CalibrationMap, PatchedMetadata, PostprocessConfig,
                       Preprocess, is_patched_metadata, load_artifact)
from .jsonable import finite_or_none, to_jsonable as _jsonable
from .atomic import atomic_write_json, atomic_write_text, check_writable
from .data import iter_images, load_dataset
from .errors import DetcalError
from .fit import ROWS, format_table
from .matching import MatchedDetections, match_detections
from .metrics import mean_ap, summarize, survives
from .model_info import check_class_count, value_info_dims, value_info_dtype, load_onnx, read_model_info, sha256_file
from .pipeline import Detections, postprocess
from .plots import operating_curves, save_operating_curves, save_reliability_diagrams
from .preprocess import preprocess_image
from .progress import Progress
from .runner import DetectorRunner, resolve_input_size
from .session import make_session

DEFAULT_CONF = 0.25
AP_FLOOR = 0.001
EVAL_FORMAT = "detcal.eval"
EVAL_VERSION = 1


# ----------------------------------------------------------------------------- the patched model


@dataclass
class PatchedModelInfo:
    """What `eval` needs to know about a detcal-patched model."""

    path: Path
    sha256: str
    image_input: str
    image_shape: tuple           # e.g. ('batch', 3, 640, 640)
    image_dtype: str
    letterbox_input: str
    meta: PatchedMetadata        # the `detcal` metadata entry

    @property
    def summary(self) -> dict:
        """The `detcal` metadata entry as read (JSON object)."""
        return self.meta.raw

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.image_shape[0], int)

    @property
    def input_size(self) -> tuple[int, int] | None:
        h, w = self.image_shape[2], self.image_shape[3]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    @property
    def source_sha256(self) -> str | None:
        return self.meta.source_sha256

    @property
    def num_classes(self) -> int | None:
        return self.meta.num_classes

    @property
    def thresholds(self) -> list | None:
        return self.meta.thresholds

    @property
    def preprocess(self) -> Preprocess | None:
        block = self.meta.preprocess
        if block is None:
            return None
        try:
            return Preprocess.from_artifact(block)
        except (ValueError, TypeError) as exc:
            raise DetcalError(f"{self.path}: invalid preprocess block in the detcal metadata: {exc}") from None

    @property
    def nms(self) -> PostprocessConfig | None:
        block = self.meta.nms
        if block is None:
            return None
        try:
            return PostprocessConfig.from_artifact(block)
        except (ValueError, TypeError):
            return None


def read_patched_info(path: str | Path) -> PatchedModelInfo:
    """Check that `path` is a detcal-patched model and read its interface.

    Raises DetcalError (one line) for: a missing or unreadable file, no `detcal` metadata
    (not a patched model), outputs other than num_dets/det_boxes/det_scores/det_classes,
    no 4-D image input or no letterbox [B, 6] input.
    """
    p = Path(path)
    model = load_onnx(p)
    metadata = {m.key: m.value for m in model.metadata_props}
    try:
        meta = PatchedMetadata.from_metadata_props(metadata, str(p))
    except KeyError:
        raise DetcalError(f"{p} is not a detcal-patched model (no 'detcal' metadata entry); "
                          "pass the output of `detcal patch` as --patched and the raw export as --model") from None
    except ValueError as exc:
        raise DetcalError(str(exc)) from None
    outputs = {o.name: value_info_dims(o) for o in model.graph.output}
    missing = [n for n in PATCHED_OUTPUTS if n not in outputs]
    if missing:
        found = ", ".join(f"{n} {list(s)}" for n, s in outputs.items()) or "none"
        raise DetcalError(f"{p}: outputs lack {', '.join(missing)} (found: {found}); a patched model outputs "
                          "num_dets [B,1], det_boxes [B,K,4], det_scores [B,K], det_classes [B,K]")
    init = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    images = [i for i in inputs if len(value_info_dims(i)) == 4]
    boxes = [i for i in inputs if i.name == LETTERBOX_INPUT] or [
        i for i in inputs if len(value_info_dims(i)) == 2 and value_info_dims(i)[1] == 6]
    if not images or not boxes:
        listing = ", ".join(f"{i.name} {list(value_info_dims(i))}" for i in inputs)
        what = "a 4-D image input" if not images else f"a '{LETTERBOX_INPUT}' [B, 6] input"
        raise DetcalError(f"{p}: no {what} (inputs: {listing}); is it a model written by `detcal patch`?")
    return PatchedModelInfo(p, sha256_file(p), images[0].name, value_info_dims(images[0]), value_info_dtype(images[0]), boxes[0].name, meta)


class PatchedRunner:
    """Runs a patched model on (input tensor, letterbox rows) and unpacks its fixed-size outputs."""

    def __init__(self, info: PatchedModelInfo, *, threads: int | None = None):
        self.info = info
        self.session = make_session(info.path, threads=threads)
        self.dtype = np.float16 if info.image_dtype == "float16" else np.float32

    def run(self, x: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, 3, H, W), rows (B, 6) -> {num_dets (B, 1), det_boxes (B, K, 4), det_scores (B, K), det_classes (B, K)}."""
        feeds = {self.info.image_input: x.astype(self.dtype, copy=False),
                 self.info.letterbox_input: np.asarray(rows, np.float32)}
        return dict(zip(PATCHED_OUTPUTS, self.session.run(list(PATCHED_OUTPUTS), feeds)))

    def unpack(self, out: dict[str, np.ndarray], n: int, num_classes: int, label: str) -> list[Detections]:
        """The first n images' detections (rows before num_dets), validated."""
        path = self.info.path
        num = np.asarray(out["num_dets"]).reshape(-1)
        boxes = np.asarray(out["det_boxes"], np.float32)
        scores = np.asarray(out["det_scores"], np.float32)
        classes = np.asarray(out["det_classes"])
        if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] or classes.shape != boxes.shape[:2]:
            raise DetcalError(f"{path}: unexpected output shapes det_boxes {list(boxes.shape)}, det_scores "
                              f"{list(scores.shape)}, det_classes {list(classes.shape)}")
        dets = []
        for b in range(n):
            k = int(num[b])
            if not 0 <= k <= boxes.shape[1]:
                raise DetcalError(f"{path}: num_dets {k} outside [0, {boxes.shape[1]}] ({label} image #{b})")
            bx, sc, cl = boxes[b, :k], scores[b, :k], classes[b, :k].astype(np.int64)
            if not (np.all(np.isfinite(bx)) and np.all(np.isfinite(sc))):
                raise DetcalError(f"{path}: output contains NaN or inf ({label})")
            if k and (sc.min() < 0 or sc.max() > 1):
                raise DetcalError(f"{path}: det_scores outside [0, 1] ({label}); is it a detcal-patched model?")
            if k and (cl.min() < 0 or cl.max() >= num_classes):
                raise DetcalError(f"{path}: det_classes outside 0..{num_classes - 1} ({label})")
            dets.append(Detections(bx, sc, cl))
        return dets


# ----------------------------------------------------------------------------- result


@dataclass
class Column:
    """One evaluated pipeline: its detections, matched, and where its operating point is."""

    name: str
    definition: str
    detections: list[Detections] = field(default_factory=list)
    thresholds: np.ndarray | float = -1.0   # operating point on its scores; -1 = everything it outputs
    model_seconds: list[float] = field(default_factory=list)   # per batch, the session.run call(s)
    post_seconds: list[float] = field(default_factory=list)    # per batch, numpy post-processing
    batch_sizes: list[int] = field(default_factory=list)
    matched: MatchedDetections | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    columns: dict[str, Column]
    settings: dict
    data: dict
    notes: list[str]
    warnings: list[str]
    gt_boxes_xyxy: list[np.ndarray] = field(default_factory=list, repr=False)   # per image (M, 4) original px
    gt_classes: list[np.ndarray] = field(default_factory=list, repr=False)      # per image (M,) int64
    table: str = ""
    out: Path | None = None

    def metrics(self, name: str) -> dict:
        return self.columns[name].metrics

    def to_dict(self) -> dict:
        return _jsonable({
            "format": EVAL_FORMAT,
            "version": EVAL_VERSION,
            "settings": self.settings,
            "data": self.data,
            "columns": {n: {"definition": c.definition, "metrics": c.metrics} for n, c in self.columns.items()},
            "notes": self.notes,
            "warnings": self.warnings,
        })


# ----------------------------------------------------------------------------- evaluation


def _percentiles_ms(seconds: list[float], batch_sizes: list[int]) -> tuple[float | None, float | None]:
    if not seconds:
        return None, None
    per_image = np.asarray(seconds) / np.maximum(np.asarray(batch_sizes, np.float64), 1) * 1e3
    return float(np.median(per_image)), float(np.percentile(per_image, 90))


def _match(dets: list[Detections], gt_boxes, gt_classes, num_classes: int, iou: float) -> MatchedDetections:
    return match_detections(dets, gt_boxes, gt_classes, iou, num_classes)


def _column_metrics(col: Column, gt_boxes, gt_classes, names: list[str], iou: float) -> dict:
    c = len(names)
    col.matched = m = _match(col.detections, gt_boxes, gt_classes, c, iou)
    out = summarize(m, col.thresholds, class_names=names)
    keep = survives(m.scores, m.classes, col.thresholds)
    if np.ndim(col.thresholds) == 0 and float(col.thresholds) < 0:   # everything it outputs
        out["ap50_at_op"], out["ap50_95_at_op"] = out["ap50"], out["ap50_95"]
    else:
        kept = [Detections(d.boxes_xyxy[s], d.scores[s], d.classes[s])
                for d, s in zip(col.detections, _split(keep, col.detections))]
        mk = _match(kept, gt_boxes, gt_classes, c, iou)
        out["ap50_at_op"], out["ap50_95_at_op"] = finite_or_none(mean_ap(mk, [0.5])), finite_or_none(mean_ap(mk))
    model_med, model_p90 = _percentiles_ms(col.model_seconds, col.batch_sizes)
    out["latency_model_ms_median"], out["latency_model_ms_p90"] = model_med, model_p90
    if col.post_seconds:
        post_med, post_p90 = _percentiles_ms(col.post_seconds, col.batch_sizes)
        total = [a + b for a, b in zip(col.model_seconds, col.post_seconds)]
        tot_med, tot_p90 = _percentiles_ms(total, col.batch_sizes)
    else:
        post_med = post_p90 = None
        tot_med, tot_p90 = model_med, model_p90
    out["latency_post_ms_median"], out["latency_post_ms_p90"] = post_med, post_p90
    out["latency_total_ms_median"], out["latency_total_ms_p90"] = tot_med, tot_p90
    return out


def _split(mask: np.ndarray, dets: list[Detections]) -> list[np.ndarray]:
    bounds = np.cumsum([len(d) for d in dets])[:-1]
    return np.split(mask, bounds)



def _resolve_preprocess(explicit: dict | None, patched: PatchedModelInfo | None, artifact: Artifact | None,
                        warnings: list[str]) -> tuple[Preprocess, str]:
    """Explicit options over the patched model's metadata over the artifact over the defaults."""
    base, source = Preprocess(), "defaults"
    from_artifact = artifact.preprocess if artifact is not None else None
    from_patched = patched.preprocess if patched is not None else None
    if from_artifact is not None:
        base, source = from_artifact, "calibration artifact"
    if from_patched is not None:
        if from_artifact is not None and from_patched != from_artifact:
            warnings.append(f"the patched model's preprocessing {from_patched.to_artifact()} differs from the "
                            f"calibration artifact's {from_artifact.to_artifact()}; using the patched model's")
        base, source = from_patched, "patched model metadata"
    given = {k: v for k, v in (explicit or {}).items() if v is not None}
    if given:
        try:
            pre = dataclasses.replace(base, **{k: (tuple(v) if k in ("mean", "std") else v) for k, v in given.items()})
        except ValueError as exc:
            raise DetcalError(str(exc)) from None
        if from_patched is not None and pre != from_patched:
            warnings.append(f"the preprocessing options given differ from the patched model's "
                            f"{from_patched.to_artifact()}; its scores may not mean what they should")
        return pre, "command line" if source == "defaults" else f"command line over {source}"
    return base, source


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    patched: str | Path | None = None,
    calibration: str | Path | Artifact | None = None,
    split: str = "test",
    conf: float | None = None,
    out: str | Path | None = None,
    preprocess: Preprocess | dict | None = None,
    layout: str | None = None,
    imgsz=None,
    batch_size: int = 8,
    threads: int | None = None,
    names: list[str] | None = None,
    match_iou: float = 0.5,
    ap_floor: float = AP_FLOOR,
    progress: bool = True,
) -> EvalResult:
    """Evaluate the raw model (and the patched model, and/or the reference pipeline with a
    calibration artifact) on a labelled dataset. Writes eval.json and PNGs into `out` when given.

    conf: the raw model's operating threshold (default 0.25). preprocess: a Preprocess, or a
    dict of explicitly chosen fields (None = not chosen) that override what the patched
    model's metadata or the artifact record.
    """
    conf = DEFAULT_CONF if conf is None else float(conf)
    if not 0 <= conf < 1:
        raise DetcalError(f"--conf must be in [0, 1), got {conf}")
    if not 0 < match_iou <= 1:
        raise DetcalError(f"--match-iou must be in (0, 1], got {match_iou}")
    if not 0 <= ap_floor <= conf:
        raise DetcalError(f"the AP floor must be in [0, conf], got {ap_floor}")
    warnings: list[str] = []
    notes: list[str] = []
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise DetcalError(f"output path is a file, expected a folder: {out_dir}")

    # inputs: the patched model and the artifact first (cheap checks), then data and the raw model
    pinfo = read_patched_info(patched) if patched is not None else None
    artifact = (calibration if isinstance(calibration, Artifact) else
                load_artifact(calibration) if calibration is not None else None)
    if not Path(model).exists():
        raise DetcalError(f"model file not found: {model}")
    dataset = load_dataset(data, split, names=names)
    if len(dataset) == 0:
        raise DetcalError(f"{data} ({split}): no images")
    layout = layout or (artifact.model.get("layout") if artifact is not None else None) or (
        pinfo.meta.layout if pinfo is not None else None)
    proto = load_onnx(model)
    if is_patched_metadata({m.key: m.value for m in proto.metadata_props}):
        raise DetcalError(f"{model} is a detcal-patched model; pass the raw export as --model "
                          "and the patched one as --patched")
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, model=proto)
    del proto
    num_classes = check_class_count(info, dataset.names, str(data))
    if artifact is not None and artifact.num_classes != num_classes:
        raise DetcalError(f"class count mismatch: {calibration} was fitted for {artifact.num_classes} classes, "
                          f"{data} names {num_classes}")
    if pinfo is not None and pinfo.num_classes is not None and pinfo.num_classes != num_classes:
        raise DetcalError(f"class count mismatch: {patched} predicts {pinfo.num_classes} classes, "
                          f"{data} names {num_classes}")
    if artifact is not None and artifact.model.get("sha256") not in (None, info.sha256):
        warnings.append(f"{calibration} was fitted on another model (sha256 {str(artifact.model['sha256'])[:12]}...) "
                        f"than {model} ({info.sha256[:12]}...)")
    if pinfo is not None and pinfo.source_sha256 not in (None, info.sha256):
        warnings.append(f"{patched} was patched from another model (sha256 {pinfo.source_sha256[:12]}...) "
                        f"than {model} ({info.sha256[:12]}...)")

    if isinstance(preprocess, Preprocess):
        pre, pre_source = preprocess, "given"
    else:
        pre, pre_source = _resolve_preprocess(preprocess, pinfo, artifact, warnings)
    size = resolve_input_size(info, imgsz)
    if pinfo is not None and pinfo.input_size is not None and tuple(pinfo.input_size) != tuple(size):
        raise DetcalError(f"{patched} takes {pinfo.input_size[0]}x{pinfo.input_size[1]} inputs, "
                          f"{model} is evaluated at {size[0]}x{size[1]}")
    nms = (artifact.nms if artifact is not None else
           pinfo.nms if pinfo is not None and pinfo.nms is not None else PostprocessConfig())

    if out_dir is not None:   # before the long part, after the inputs are known to be good
        check_writable(out_dir / "eval.json", inputs=(model, patched, data,
                                                        calibration if not isinstance(calibration, Artifact) else None))
    raw_runner = DetectorRunner(info, pre, size, batch_size=batch_size, threads=threads)
    batch = raw_runner.batch_size
    fixed_batch = not info.dynamic_batch
    prunner = None
    if pinfo is not None:
        if not pinfo.dynamic_batch:
            if fixed_batch and pinfo.image_shape[0] != batch:
                raise DetcalError(f"{patched} has a fixed batch of {pinfo.image_shape[0]}, {model} of {batch}")
            batch, fixed_batch = int(pinfo.image_shape[0]), True
            raw_runner.batch_size = batch
        prunner = PatchedRunner(pinfo, threads=threads)

    columns: dict[str, Column] = {
        "raw": Column("raw", f"raw model + numpy reference post-processing, identity calibration; AP over its "
                             f"detections with score > {ap_floor:g}, the rest at score > {conf:g}"),
    }
    ref_map: CalibrationMap | None = None
    if artifact is not None:
        ref_map = artifact.calibration
        ref_thr = artifact.score_thresholds
        columns["reference"] = Column(
            "reference", f"raw model + numpy reference post-processing with {calibration if not isinstance(calibration, Artifact) else 'the artifact'}"
                         f" ({ref_map.kind}, its per-class thresholds): what the patched model computes; "
                         "everything over what it outputs")
    if prunner is not None:
        columns["patched"] = Column("patched", f"{Path(patched).name}: its own outputs (calibrated, thresholded "
                                               "in the graph); everything over what it outputs")

    floor = np.full(num_classes, ap_floor)
    samples = dataset.samples
    pos = {id(s): i for i, s in enumerate(samples)}
    gt_boxes, gt_classes, rows_all = [], [], []
    label = str(dataset.source)

    def flush(xs, rows, idx, first):
        n = len(xs)
        if fixed_batch and n < batch:       # pad the last batch of a fixed-batch model
            xs = xs + [xs[-1]] * (batch - n)
            rows = rows + [rows[-1]] * (batch - n)
        x = np.stack(xs)
        r = np.stack(rows)
        bsz = x.shape[0]
        if first:                            # one untimed warm-up call per session
            raw_runner.run_tensor(x)
            if prunner is not None:
                prunner.run(x, r)
        t0 = time.perf_counter()
        raw = raw_runner.run_tensor(x)
        t1 = time.perf_counter()
        if not np.all(np.isfinite(raw)):
            raise DetcalError(f"{info.path}: model output contains NaN or inf ({label}); "
                              "check the preprocessing options and the export")
        raw, r_n = raw[:n], r[:n]
        col = columns["raw"]
        col.model_seconds.append(t1 - t0)
        t2 = time.perf_counter()
        postprocess(raw, info.layout, r_n, None, conf, nms)      # timed as deployed: at the operating threshold
        t3 = time.perf_counter()
        col.post_seconds.append(t3 - t2)
        col.batch_sizes.append(bsz)
        col.detections.extend(postprocess(raw, info.layout, r_n, None, floor, nms))
        if ref_map is not None:
            ref = columns["reference"]
            t4 = time.perf_counter()
            ref.detections.extend(postprocess(raw, info.layout, r_n, ref_map, ref_thr, artifact.nms))
            ref.post_seconds.append(time.perf_counter() - t4)
            ref.model_seconds.append(t1 - t0)
            ref.batch_sizes.append(bsz)
        if prunner is not None:
            pc = columns["patched"]
            t5 = time.perf_counter()
            outs = prunner.run(x, r)
            pc.model_seconds.append(time.perf_counter() - t5)
            pc.batch_sizes.append(bsz)
            pc.detections.extend(prunner.unpack(outs, n, num_classes, f"{label} image #{idx[0]}.."))
        for i, row in zip(idx, r_n):
            gt_boxes.append(samples[i].gt_boxes_xyxy_px(int(row[0]), int(row[1])))
            gt_classes.append(np.asarray(samples[i].gt_classes, dtype=np.int64))
            rows_all.append(row)

    def transform(rgb):
        return preprocess_image(rgb, size, pre)

    t_start = time.perf_counter()
    with Progress(len(samples), "evaluating", enabled=progress) as bar:
        xs, rows, idx, first = [], [], [], True
        for sample, (x, row) in iter_images(dataset, transform=transform, workers=2):
            xs.append(x)
            rows.append(row)
            idx.append(pos[id(sample)])
            if len(xs) == batch:
                flush(xs, rows, idx, first)
                bar.update(len(xs))
                xs, rows, idx, first = [], [], [], False
        if xs:
            flush(xs, rows, idx, first)
            bar.update(len(xs))
    t_run = time.perf_counter() - t_start
    if not gt_boxes:
        raise DetcalError(f"{data} ({split}): no readable images")
    n_images = len(gt_boxes)
    n_neg = sum(1 for g in gt_classes if g.size == 0)
    if n_neg == n_images:
        warnings.append("no image has a labelled object: AP, precision and recall are not defined")
    if n_neg == 0:
        warnings.append("no negative images (without labels): the negative-scene numbers are not defined")

    columns["raw"].thresholds = conf
    for col in columns.values():
        col.metrics = _column_metrics(col, gt_boxes, gt_classes, list(dataset.names), match_iou)
    if "reference" in columns:
        thr = artifact.score_thresholds
        for c, name in enumerate(dataset.names):
            columns["reference"].metrics["per_class"][name]["threshold"] = float(thr[c])
    if "patched" in columns and pinfo.thresholds is not None and len(pinfo.thresholds) == num_classes:
        for c, name in enumerate(dataset.names):
            columns["patched"].metrics["per_class"][name]["threshold"] = float(pinfo.thresholds[c])

    others = [n for n in columns if n != "raw"]
    ap_note = f"AP: raw over its detections with score > {ap_floor:g}"
    if others:
        ap_note += (f"; {' and '.join(others)} over what {'they output' if len(others) > 1 else 'it outputs'} "
                    "(only detections above the fitted thresholds): compare with the raw model's AP at its "
                    "operating point (ap50_at_op)")
    notes.append(ap_note)
    notes.append(f"latency: wall time of each model call / batch size ({batch}), median and p90 over "
                 f"{len(columns['raw'].model_seconds)} batches, after one warm-up call, "
                 f"{threads or 'all'} onnxruntime threads, CPUExecutionProvider; raw post = numpy reference at conf {conf:g}")
    data_block = {
        "source": str(dataset.source), "split": split, "n_images": n_images, "n_negative_images": n_neg,
        "n_labelled_objects": int(sum(g.size for g in gt_classes)), "class_names": list(dataset.names),
        "labels": dataset.report.to_dict(),
    }
    settings = {
        "model": {"file": str(model), "sha256": info.sha256, "layout": info.layout},
        "patched": ({"file": str(patched), "sha256": pinfo.sha256, "source_sha256": pinfo.source_sha256,
                     "thresholds": pinfo.thresholds} if pinfo is not None else None),
        "calibration": (str(calibration) if calibration is not None and not isinstance(calibration, Artifact)
                        else ("given" if artifact is not None else None)),
        "conf": conf, "ap_floor": ap_floor, "match_iou": match_iou,
        "input_size": [int(size[0]), int(size[1])], "batch_size": batch, "threads": threads,
        "preprocess": pre.to_artifact(), "preprocess_source": pre_source, "nms": nms.to_artifact(),
        "seconds": round(t_run, 3),
    }
    result = EvalResult(columns, settings, data_block, notes, warnings, gt_boxes, gt_classes)
    result.table = format_eval_table(result)
    if out_dir is not None:
        write_eval_outputs(result, out_dir)
    return result


# ----------------------------------------------------------------------------- output

EVAL_ROWS = [
    ("AP50 (all it outputs)", "ap50", "{:.3f}"),
    ("AP50:95 (all it outputs)", "ap50_95", "{:.3f}"),
    ("AP50 (at operating point)", "ap50_at_op", "{:.3f}"),
    ("AP50:95 (at operating point)", "ap50_95_at_op", "{:.3f}"),
    *[r for r in ROWS if r[1] not in ("ap50", "ap50_95")],
    ("detections kept", "n_kept", "{:d}"),
    ("latency model ms/img median", "latency_model_ms_median", "{:.3f}"),
    ("latency model ms/img p90", "latency_model_ms_p90", "{:.3f}"),
    ("latency numpy post ms/img med", "latency_post_ms_median", "{:.3f}"),
    ("latency total ms/img median", "latency_total_ms_median", "{:.3f}"),
    ("latency total ms/img p90", "latency_total_ms_p90", "{:.3f}"),
]

TITLES = {"raw": "raw (> {conf:g})", "reference": "reference (calibrated)", "patched": "patched"}
CURVE_NAMES = {"raw": "raw", "reference": "reference (calibrated)", "patched": "patched"}


def format_eval_table(result: EvalResult) -> str:
    conf = result.settings["conf"]
    cols = [(TITLES[n].format(conf=conf), c.metrics) for n, c in result.columns.items()]
    return format_table(cols, rows=EVAL_ROWS)


def format_eval_summary(result: EvalResult) -> str:
    d, s = result.data, result.settings
    lines = [f"detcal eval: {Path(s['model']['file']).name} on {d['source']}: {d['n_images']} images "
             f"({d['n_negative_images']} negative), {d['n_labelled_objects']} labelled objects; "
             f"input {s['input_size'][0]}x{s['input_size'][1]}, preprocessing from {s['preprocess_source']}",
             "", result.table, ""]
    lines += [f"note: {n}" for n in result.notes]
    if result.out is not None:
        lines.append(f"wrote {result.out / 'eval.json'}, reliability.png and operating_curves.png in {result.out}/")
    return "\n".join(lines)


def write_eval_outputs(result: EvalResult, out_dir: Path) -> None:
    """eval.json, reliability.png (side by side), operating_curves.png (recall vs FP per negative image)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = result.settings["conf"]
    panels, curves = [], {}
    grid = np.linspace(0, 1, 201)
    for name, col in result.columns.items():
        m = col.matched
        keep = survives(m.scores, m.classes, col.thresholds)
        title = TITLES[name].format(conf=conf)
        panels.append((f"{title}: D-ECE {_fmt(col.metrics.get('dece'))}", m.scores[keep], m.is_tp[keep]))
        curves[CURVE_NAMES[name]] = operating_curves(m.scores, m.is_tp, m.image_index, np.nonzero(m.negative_image_mask)[0],
                                         int(m.n_gt_per_class.sum()), grid)
    save_reliability_diagrams(out_dir / "reliability.png", panels)
    save_operating_curves(out_dir / "operating_curves.png", curves, markers={f"raw conf {conf:g}": conf})
    result.out = out_dir
    payload = result.to_dict()
    payload["plots"] = ["reliability.png", "operating_curves.png"]
    atomic_write_json(out_dir / "eval.json", payload)
    atomic_write_text(out_dir / "summary.txt", format_eval_summary(result) + "\n")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
