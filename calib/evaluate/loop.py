"""`detcal eval`'s loop: the raw model and the patched model side by side on held-out images.

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
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ..artifact import Artifact, CalibrationMap, PostprocessConfig, Preprocess, is_patched_metadata, load_artifact
from ..atomic import check_outside_image_folders, check_writable
from ..data import iter_images, load_dataset
from ..errors import DetcalError
from ..model_info import classes_for_model, load_onnx, read_model_info
from ..pipeline import postprocess
from ..preprocess import preprocess_image
from ..progress import Progress
from ..runner import DetectorRunner, InputBatch, batch_inputs, resolve_input_size
from .columns import Column, EvalResult, add_ap_at_fitted_thresholds, add_intervals_and_baseline, column_metrics
from .patched import PatchedModelInfo, PatchedRunner, read_patched_info
from .report import format_eval_table, write_eval_outputs

DEFAULT_CONF = 0.25
AP_FLOOR = 0.001


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


def _open_inputs(model, data, patched, calibration, split: str, names, layout: str | None, warnings: list[str],
                 images_dir=None):
    """Read and cross-check the inputs: the patched model and the artifact first (cheap checks),
    then the data set and the raw model -> (pinfo, artifact, dataset, info, num_classes)."""
    pinfo = read_patched_info(patched) if patched is not None else None
    artifact = (calibration if isinstance(calibration, Artifact) else
                load_artifact(calibration) if calibration is not None else None)
    if not Path(model).exists():
        raise DetcalError(f"model file not found: {model}")
    dataset = load_dataset(data, split, names=names, images_dir=images_dir)
    if len(dataset) == 0:
        raise DetcalError(f"{data} ({split}): no images")
    layout = layout or (artifact.model.get("layout") if artifact is not None else None) or (
        pinfo.meta.layout if pinfo is not None else None)
    proto = load_onnx(model)
    if is_patched_metadata({m.key: m.value for m in proto.metadata_props}):
        raise DetcalError(f"{model} is a detcal-patched model; pass the raw export as --model "
                          "and the patched one as --patched")
    recorded = artifact.model.get("input_layout") if artifact is not None else None   # the fit's input layout
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, model=proto, input_layout=recorded)
    del proto
    if pinfo is not None and pinfo.embedded is None and pinfo.image_input == info.input_name:   # patch keeps the input
        pinfo = dataclasses.replace(pinfo, image_layout=info.input_layout)
    _check_same_source(info.sha256, model, artifact, calibration, pinfo, patched)
    dataset, num_classes = classes_for_model(info, dataset, str(data))
    if artifact is not None and artifact.num_classes != num_classes:
        raise DetcalError(f"class count mismatch: {calibration} was fitted for {artifact.num_classes} classes, "
                          f"{data} names {num_classes}")
    if pinfo is not None and pinfo.num_classes is not None and pinfo.num_classes != num_classes:
        raise DetcalError(f"class count mismatch: {patched} predicts {pinfo.num_classes} classes, "
                          f"{data} names {num_classes}")
    return pinfo, artifact, dataset, info, num_classes


def _check_same_source(sha256: str, model, artifact, calibration, pinfo, patched) -> None:
    """--calibration and --patched must come from --model: the sha256 each records (as `patch`
    checks it) equals the model's. DetcalError naming the files that disagree."""
    recorded = []
    if artifact is not None and artifact.model.get("sha256"):
        name = calibration if not isinstance(calibration, Artifact) else "the calibration artifact"
        recorded.append((f"--calibration {name}", "was fitted on", str(artifact.model["sha256"])))
    if pinfo is not None and pinfo.source_sha256:
        recorded.append((f"--patched {patched}", "was patched from", pinfo.source_sha256))
    wrong = [(f, verb, h) for f, verb, h in recorded if h != sha256]
    if not wrong:
        return
    what = "; ".join(f"{f} {verb} a model with sha256 {h[:12]}..." for f, verb, h in wrong)
    raise DetcalError(f"{what}, not --model {model} (sha256 {sha256[:12]}...): pass the files that belong together")


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
    batch_size: int | None = None,
    threads: int | None = None,
    names: list[str] | None = None,
    images_dir: str | Path | None = None,
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

    pinfo, artifact, dataset, info, num_classes = _open_inputs(model, data, patched, calibration, split, names, layout,
                                                               warnings, images_dir)

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
        check_outside_image_folders(out_dir, [s.image_path for s in dataset.samples], what=f"the report {out_dir}")
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
                                               "in the graph); everything over what it outputs"
                                    + ("; preprocessing embedded: fed the decoded images, its latency includes "
                                       "the letterbox" if prunner.embedded else ""))

    floor = np.full(num_classes, ap_floor)
    samples = dataset.samples
    pos = {id(s): i for i, s in enumerate(samples)}
    gt_boxes, gt_classes, rows_all = [], [], []
    crowd_boxes, crowd_classes = [], []
    label = str(dataset.source)

    def evaluate_batch(batch: InputBatch, first: bool) -> None:
        """Run every column on one batch (x (B, 3, H, W), rows (B, 6), the first n real)."""
        n, idx, x, r = batch.n, batch.indices, batch.x, batch.rows
        bsz = x.shape[0]
        images = [decoded.pop(i) for i in idx] if keep_images else None    # an embedded model takes these
        if first:                            # one untimed warm-up call per session
            raw_runner.run_tensor(x)
            if prunner is not None:
                prunner.run_batch(x, r, images)
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
            outs = prunner.run_batch(x, r, images)
            pc.model_seconds.append(time.perf_counter() - t5)
            pc.batch_sizes.append(bsz)
            pc.detections.extend(prunner.unpack(outs, n, num_classes, f"{label} image #{idx[0]}.."))
        for i, row in zip(idx, r_n):
            gt_boxes.append(samples[i].gt_boxes_xyxy_px(int(row[0]), int(row[1])))
            gt_classes.append(np.asarray(samples[i].gt_classes, dtype=np.int64))
            crowd_boxes.append(samples[i].crowd_boxes_xyxy_px(int(row[0]), int(row[1])))
            crowd_classes.append(np.asarray(samples[i].crowd_classes, dtype=np.int64))
            rows_all.append(row)

    keep_images = prunner is not None and prunner.embedded     # --embed-preprocess: it takes the decoded images
    decoded: dict[int, np.ndarray] = {}

    def transform(rgb):
        x, row = preprocess_image(rgb, size, pre)
        return x, row, (rgb if keep_images else None)

    def keep(i: int, rgb) -> int:
        if keep_images:
            decoded[i] = rgb
        return i

    t_start = time.perf_counter()
    items = ((keep(pos[id(sample)], rgb), x, row)
             for sample, (x, row, rgb) in iter_images(dataset, transform=transform, workers=2))
    with Progress(len(samples), "evaluating", enabled=progress) as bar:
        for k, inputs in enumerate(batch_inputs(items, batch, fixed=fixed_batch)):
            evaluate_batch(inputs, first=k == 0)
            bar.update(inputs.n)

    t_run = time.perf_counter() - t_start
    if not gt_boxes:
        raise DetcalError(f"{data} ({split}): no readable images")
    n_images = len(gt_boxes)
    n_neg = sum(1 for g, cr in zip(gt_classes, crowd_classes) if g.size == 0 and cr.size == 0)
    if n_neg == n_images:
        warnings.append("no image has a labelled object: AP, precision and recall are not defined")
    if n_neg == 0:
        warnings.append("no negative images (without labels): the negative-scene numbers are not defined")

    columns["raw"].thresholds = conf
    for col in columns.values():
        col.metrics = column_metrics(col, gt_boxes, gt_classes, list(dataset.names), match_iou,
                                     (crowd_boxes, crowd_classes))
    if "reference" in columns:
        thr = artifact.score_thresholds
        for c, name in enumerate(dataset.names):
            columns["reference"].metrics["per_class"][name]["threshold"] = float(thr[c])
    if "patched" in columns and pinfo.thresholds is not None and len(pinfo.thresholds) == num_classes:
        for c, name in enumerate(dataset.names):
            columns["patched"].metrics["per_class"][name]["threshold"] = float(pinfo.thresholds[c])

    others = [n for n in columns if n != "raw"]
    notes += add_intervals_and_baseline(columns)
    if artifact is not None:
        notes += add_ap_at_fitted_thresholds(columns, artifact.calibration, artifact.score_thresholds, gt_boxes,
                                             gt_classes, list(dataset.names), match_iou, (crowd_boxes, crowd_classes))
    elif "patched" in columns:
        notes.append("AP50 of the raw model at the patched model's raw thresholds: pass --calibration "
                     "(the artifact has the map that turns its thresholds into raw scores)")
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
