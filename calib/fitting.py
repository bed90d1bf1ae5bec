"""`detcal fit`: run the raw model over a validation set, fit calibration and rejection thresholds.

Every "after" number is cross-validated: images are split into k folds; for each fold the
calibrator and thresholds are fitted on the other folds and measured on it, and the held-out
results are pooled. The artifact's calibrator and thresholds are then fitted on all images.

The calibrator is fitted and chosen where users look (calib.floor_selection): on the detections
of the positive images (the negative images certify the thresholds, calib.certify) above a fitting
floor, by default the per-class thresholds the operating-point rule picks on the raw scores before
the negative scenes raise them (Kuzucu et al., ECCV 2024), `--fit-floor` to set a raw score
instead. `auto` picks by held-out log-loss; the selection runs again inside every fold of the
"after" numbers (nested cross-validation), which must beat identity on held-out log-loss; D-ECE is
judged where it is defined: last, `auto` keeps its choice only if, at the operating point (the held-out detections that
survive each fold's certified thresholds), its held-out D-ECE is below identity's
(`operating_point_check`). Nothing at or below the floor survives (the calibrator is an
extrapolation there). Beside every D-ECE the report gives what a perfectly calibrated detector
would show with the same scores (`calib.metrics.dece_noise_floor`).

This module holds `fit` and its result; the parts are one module each: the options
(calib.fit_options), the steps (calib.fit_steps), the report folder and tables (calib.fit_report).
Their names stay importable from here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .artifact import Artifact
from .atomic import check_outside_image_folders, check_writable
from .collect import Collected, collect_detections
from .data import load_dataset
from .errors import DetcalError
from .floor_selection import input_boxes_of
from .jsonable import finite_or_none
from .matching import MatchedDetections
from .metrics import add_dece_noise_floor, summarize
from .model_info import classes_for_model, read_model_info
from .artifact import Preprocess
from .runner import resolve_input_size
from .bootstrap import intervals_to_dict, metric_intervals
from .certify import CertifiedThresholds
# the parts of the fit, one module each; their names stay importable from here
from .fit_options import OPERATING_POINTS, FitOptions, fold_options, postprocess_for_layout  # noqa: F401
from .fit_report import ROWS, check_report_dir, format_summary, format_table, report_dir_for, write_outputs  # noqa: F401
from .fit_steps import (_fit_calibrator, _fit_thresholds, _floored_scores, _operating_point,  # noqa: F401
                        _per_class_transform, _subset_images, after_metrics, cross_validate, fitting_floor,
                        match_collected, operating_point_check)


@dataclass
class FitResult:
    artifact: Artifact
    matched: MatchedDetections        # raw detections matched at match_iou
    before: dict                      # metrics of the raw model at baseline_conf
    after: dict                       # cross-validated metrics of calibrated + thresholded
    oof_scores: np.ndarray            # (K,) held-out calibrated scores
    oof_survive: np.ndarray           # (K,) bool, survived held-out thresholds
    thresholds: CertifiedThresholds
    calibrator: object
    selection: dict
    seconds: dict
    intervals: dict = field(default_factory=dict)   # {"before"|"after": {metric: Interval dict}}
    summary: str = ""


def fit(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    options: FitOptions = FitOptions(),
    layout: str | None = None,
    imgsz=None,
    batch_size: int | None = None,
    threads: int | None = None,
    names: list[str] | None = None,
    images_dir: str | Path | None = None,
    progress: bool = True,
    log=print,
    input_layout: str | None = None,
    collected: Collected | None = None,
) -> FitResult:
    """The whole fit as a library call. Writes `out` (and its report folder) when given.

    input_layout: 'NCHW' | 'NHWC' where the model's declared input dims leave it open (recorded).
    collected: the raw model's detections on `split`, already collected (collect_detections with
    the same preprocessing, size, base_conf and post-processing); None: run the model."""
    options.validate()
    t0 = time.perf_counter()
    if out is not None:
        check_writable(out, inputs=(model, data))
        check_report_dir(Path(out))
    dataset = load_dataset(data, split, names=names, images_dir=images_dir)
    if out is not None:         # nor one of the data set's own files, nor its report among the images
        check_writable(out, inputs=[p for s in dataset.samples for p in (s.image_path, s.label_path)])
        check_outside_image_folders(report_dir_for(Path(out)), [s.image_path for s in dataset.samples],
                                    what=f"the report of {out}")
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, input_layout=input_layout)
    dataset, num_classes = classes_for_model(info, dataset, str(data))
    if all(s.is_negative for s in dataset.samples):
        raise DetcalError(f"{data} ({split}): no image has a labelled object; calibration needs positive images")
    size = resolve_input_size(info, imgsz)
    options = replace(options, postprocess=postprocess_for_layout(info.layout, options))
    if collected is None:
        collected = collect_detections(
            dataset, info, preprocess, size, num_classes=num_classes, base_conf=options.base_conf,
            config=options.postprocess, batch_size=batch_size, threads=threads, progress=progress,
        )
    t_run = time.perf_counter()
    matched = match_collected(collected, num_classes, options.match_iou)
    if matched.n_detections == 0 or not matched.is_tp.any():
        raise DetcalError(
            f"{model}: no detection above {options.base_conf} matches any labelled object in {data}; "
            "check --layout, the preprocessing options and the class order")
    if matched.is_tp.all():
        raise DetcalError(f"{model}: every detection is a true positive; there is nothing to calibrate against")

    counted_mask = ~matched.ignored          # detections on crowd regions are neither TP nor FP
    counted = matched.without_ignored()
    boxes = input_boxes_of(collected.detections)
    try:
        calibrator, selection = _fit_calibrator(options.calibrator, counted, boxes[counted_mask], size, options)
    except ValueError as exc:
        raise DetcalError(f"cannot fit the calibrator: {exc}") from None
    floor = np.asarray(selection["fit_floor"])
    calibrated = _floored_scores(calibrator, counted.scores, counted.classes, boxes[counted_mask], floor)
    thresholds = _fit_thresholds(counted, calibrated, options, calibrator, floor)
    try:
        cv_kind = "identity" if selection.get("nested_fallback") else options.calibrator
        oof, keep = cross_validate(matched, cv_kind, options, boxes, size)
        if cv_kind == "auto" and calibrator.map_.kind != "identity":
            # never worse than identity where users look: at the operating point, out of sample
            oof_id, keep_id = cross_validate(matched, "identity", options, boxes, size)
            check = operating_point_check(matched, oof, keep, oof_id, keep_id)
            selection["operating_point_check"] = check
            if not check["kept"]:
                selection.update(winner="identity", selected=selection.get("winner"), note=check["note"])
                calibrator, sel_id = _fit_calibrator("identity", counted, boxes[counted_mask], size, options)
                floor = np.asarray(sel_id["fit_floor"])
                calibrated = _floored_scores(calibrator, counted.scores, counted.classes, boxes[counted_mask], floor)
                thresholds = _fit_thresholds(counted, calibrated, options, calibrator, floor)
                oof, keep = oof_id, keep_id
    except ValueError as exc:
        raise DetcalError(f"cannot cross-validate the calibration: {exc}") from None
    t_fit = time.perf_counter()

    before = add_dece_noise_floor(summarize(matched, options.baseline_conf, class_names=dataset.names), matched,
                                  options.baseline_conf)
    after = after_metrics(matched, oof, keep, dataset.names)
    for c, name in enumerate(dataset.names):      # the thresholds the artifact ships, not the 0.0 of the masked scores
        after["per_class"][name]["threshold"] = finite_or_none(thresholds.score_[c])
    counts = ~matched.ignored                 # the bootstrap sees only detections that are TP or FP
    intervals = {
        "before": intervals_to_dict(metric_intervals(counted, thresholds=options.baseline_conf, seed=options.seed)),
        "after": intervals_to_dict(metric_intervals(counted, scores=np.where(keep, oof, 0.0)[counts], thresholds=0.0,
                                                    seed=options.seed)),
    }
    model_block = {
        "file": Path(model).name,
        "sha256": info.sha256,
        "input_name": info.input_name,
        "input_size": [int(size[0]), int(size[1])],
        **info.input_convention.to_artifact(),      # input_dtype, input_layout (calib.model_input)
        "output_name": info.output_name,
        "layout": info.layout,
        "num_classes": num_classes,
        "class_names": list(dataset.names),
    }
    if info.head_params or len(info.outputs) > 1:
        # yolox_raw / gfl_multilevel / detr: every head output and the decode parameters, for the record
        # (patch recognises the head from the graph again and checks the layout)
        model_block["head"] = {"outputs": list(info.outputs), "recognition": info.recognition,
                               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in info.head_params.items()}}
    seconds = {"inference": round(t_run - t0, 3), "matching_and_fitting": round(t_fit - t_run, 3)}
    artifact = Artifact(
        model=model_block,
        preprocess=preprocess,
        calibration=calibrator.map_,
        thresholds=thresholds.to_artifact(),
        nms=options.postprocess,
        metrics={"before": before, "after": after, "negative_rate_target": options.max_negative_rate,
                 "after_fold_negative_rate_target": fold_options(
                     int(matched.n_negative_images * (1 - 1 / options.folds)), options).max_negative_rate,
                 "before_definition": f"raw scores, threshold {options.baseline_conf} (all images)",
                 "after_definition": f"{options.folds}-fold cross-validated by image: calibrator (chosen inside "
                                     "each fold for auto) and thresholds "
                                     "fitted on the other folds, measured on held-out images; a fold whose "
                                     "negative images are too few to certify the target is certified at the "
                                     "strictest rate they can (after_fold_negative_rate_target)"},
        selection=selection,
        extra={"source": str(dataset.source), "split": split, "n_images_used": len(collected),
               "labels": dataset.report.to_dict(), "seconds": seconds},
    )
    result = FitResult(artifact, matched, before, after, oof, keep, thresholds, calibrator, selection, seconds,
                       intervals)
    if out is not None:
        write_outputs(result, Path(out), dataset, options)
    return result
