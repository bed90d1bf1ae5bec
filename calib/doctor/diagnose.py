"""``diagnose``: plan the sizes, run the model, run the seven checks, write doctor.json."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_write_json, check_outside_image_folders
from ..data import load_dataset
from ..errors import DetcalError
from ..jsonable import to_jsonable
from ..model_info import check_class_count, classes_for_model, load_onnx, metadata_imgsz, read_model_info
from ..artifact import Preprocess
from .box_shape import check_box_shape
from .load_labels import check_labels, check_nms_load
from .quantization import check_quantization
from .report import DoctorOptions, DoctorReport, fmt_size
from .resolution import check_resolution
from .runs import run_model
from .scores import check_calibration, check_letterbox, check_uniform_fp


CHECK_NAMES = ("resolution", "box_shape", "letterbox", "calibration", "uniform_fp", "nms_load", "labels")


def diagnose(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    serve_size: int | tuple[int, int] | None = None,
    native_size: int | tuple[int, int] | None = None,
    native_model: str | Path | None = None,
    reference_model: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    options: DoctorOptions | None = None,
    layout: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    names: list[str] | None = None,
    images_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Run the seven checks on a model and a labelled split. Writes doctor.json and PNGs to out_dir when given.

    serve_size: the size the model is served at, N or (H, W) (default: its native size).
    native_size: the size it was trained/exported at, for dynamic-size models without `imgsz` metadata.
    native_model: the same detector exported at its training size (fixed-size exports): the
    resolution check runs it beside `model` for a real comparison.
    reference_model: the float export of the same network when `model` is quantized: adds the
    quantization check (recall by size and class, score shift, activation ranges).
    Raises DetcalError for bad input (missing files, class mismatch, dynamic model without any size).
    """
    opts = options or DoctorOptions()
    opts.validate()
    log = log or (lambda msg: print(msg, file=sys.stderr) if progress else None)
    t_start = time.perf_counter()
    as_hw = lambda s: None if s is None else ((int(s), int(s)) if isinstance(s, (int, np.integer)) else tuple(int(v) for v in s))
    serve, native_arg = as_hw(serve_size), as_hw(native_size)
    for label, s in (("--serve-size", serve), ("--native-size", native_arg)):
        if s is not None and (len(s) != 2 or min(s) < 1):
            raise DetcalError(f"{label} must be N or HxW with positive sizes, got {s}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise DetcalError(f"output path is a file, expected a folder: {out}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DetcalError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    dataset = load_dataset(data, split, names=names, images_dir=images_dir)
    if out is not None:
        check_outside_image_folders(out, [s.image_path for s in dataset.samples], what=f"the report {out}")
    proto = load_onnx(model)
    info = read_model_info(model, layout=layout, num_classes=dataset.num_classes, model=proto)
    dataset, num_classes = classes_for_model(info, dataset, str(data))
    if reference_model is not None:   # checked before the long runs
        ref_info = read_model_info(reference_model, layout=layout, num_classes=dataset.num_classes)
        if ref_info.layout != info.layout:
            raise DetcalError(f"{reference_model} has layout {ref_info.layout}, {model} has {info.layout}: "
                              "not the same detector")

    # sizes: what runs as the main (serving) run, and what is compared with it
    note = ""
    native_info = None
    if native_model is not None:
        native_info = read_model_info(native_model, layout=layout, num_classes=dataset.num_classes)
        check_class_count(native_info, dataset.names, str(data))
        if native_info.layout != info.layout:
            raise DetcalError(f"{native_model} has layout {native_info.layout}, {model} has {info.layout}: not the same detector")
        if native_info.input_size is None and native_arg is None:
            raise DetcalError(f"{native_model} has dynamic height/width; pass --native-size too")
    if native_info is not None:
        serve = tuple(info.input_size) if info.input_size is not None else serve
        if serve is None:
            raise DetcalError(f"{model} has dynamic height/width; pass --serve-size")
        native = tuple(native_info.input_size) if native_info.input_size is not None else native_arg
        main_size = serve
        compare = "native_model" if tuple(native) != tuple(serve) else None
        note = f"the native size ran on {Path(native_model).name}, the served size on {Path(model).name}"
    elif info.input_size is not None:
        native = tuple(info.input_size)
        serve = serve or native
        main_size = native
        if serve == native:
            compare = None
        elif serve[0] <= native[0] and serve[1] <= native[1]:
            compare = "emulate"
            note = (f"the model's input is fixed at {fmt_size(native)}, so serving at {fmt_size(serve)} is emulated by "
                    "letterboxing into it and padding to the input; the other checks ran at the real input")
        else:
            compare = None
            note = (f"the model's input is fixed at {fmt_size(native)}: it cannot run at {fmt_size(serve)} (larger), "
                    "only the dataset's image sizes are compared with the input")
    else:
        native = native_arg or metadata_imgsz(info.metadata)
        serve = serve or native
        if serve is None:
            raise DetcalError(f"{model} has dynamic height/width and no imgsz metadata; pass --serve-size (and --native-size)")
        main_size = serve
        if native is None:
            compare = None
            note = "native (training) size unknown for this dynamic model: pass --native-size to compare"
        else:
            compare = "real" if serve != native else None
    log(f"doctor: {dataset.source}: {len(dataset)} images; running {Path(model).name} at {fmt_size(main_size)}")
    main = run_model(dataset, info, preprocess, main_size, num_classes, opts, batch_size=batch_size, threads=threads,
                progress=progress, desc=f"running model at {fmt_size(main_size)}")
    other = None
    if compare == "emulate":
        log(f"doctor: emulating serving at {fmt_size(serve)} inside the {fmt_size(native)} input")
        other = run_model(dataset, info, preprocess, native, num_classes, opts, emulate_size=serve, batch_size=batch_size,
                     threads=threads, progress=progress, desc=f"emulating {fmt_size(serve)}", session=main.runner.session)
    elif compare == "native_model":
        log(f"doctor: running {Path(native_model).name} at its native size {fmt_size(native)} for comparison")
        other = run_model(dataset, native_info, preprocess, native, num_classes, opts, batch_size=batch_size,
                     threads=threads, progress=progress, desc=f"running native model at {fmt_size(native)}")
    elif compare == "real":
        log(f"doctor: running at the native size {fmt_size(native)} for comparison")
        other = run_model(dataset, info, preprocess, native, num_classes, opts, batch_size=batch_size, threads=threads,
                     progress=progress, desc=f"running model at {fmt_size(native)}", session=main.runner.session)

    checks = []
    checks.append(check_resolution(main, other, note, native, serve, opts))
    checks.append(check_box_shape(main, proto, info, opts))
    checks.append(check_letterbox(main, preprocess, opts))
    checks.append(check_calibration(main, opts, out))
    checks.append(check_uniform_fp(main, dataset, opts, out, dataset.names))
    checks.append(check_nms_load(main, dataset, info, opts, progress))
    checks.append(check_labels(dataset, main, opts))
    if info.batch_coupled and (info.dynamic_batch or int(info.input_shape[0] or 1) > 1):
        from .batch import check_batch_coupling

        log("doctor: running images one by one and together (the model is dynamically quantized)")
        checks.append(check_batch_coupling(main, dataset, info, opts))
    if reference_model is not None:
        log(f"doctor: comparing with the float reference {Path(reference_model).name}")
        checks.append(check_quantization(main, reference_model, dataset, info, preprocess, opts, batch_size=batch_size,
                                         threads=threads, progress=progress))
    for ch in checks:
        ch.evidence = to_jsonable(ch.evidence, 6)
    report = DoctorReport(str(model), str(data), split, tuple(serve), tuple(native) if native else None,
                          dataset.report.summary(), checks, str(out) if out is not None else None,
                          time.perf_counter() - t_start)
    if out is not None:
        atomic_write_json(out / "doctor.json", report.to_dict())
    return report
