"""The production debug checklist (``detcal doctor``) for a deployed detector, run and measured.

``diagnose(model, data)`` runs the raw model over the user's validation split through the
reference pipeline (letterbox masking off, so that detections in the bars stay visible) and
returns a ``DoctorReport``: seven checks, each with a status (``ok`` | ``warn`` | ``fail`` |
``skipped``), a severity, a one-line finding, the numbers behind it and a concrete fix.

Checks and their defaults (``DoctorOptions``):

1. resolution   serving size vs native size. Dynamic-size models are run at both sizes for
                real. A fixed-size model cannot take another input size; for a serving size
                smaller than its input, serving is *emulated*: the image is letterboxed into
                the serving size and that canvas is centred in the native input, padded with
                the letterbox grey (``embed_at_serve_size``). Objects then have the pixel size
                they would have in a re-export at the serving size, and a convolutional
                backbone sees the same pixels, apart from its receptive field reaching into
                the extra padding. What it does not emulate: frames downscaled to the serving
                size and then upscaled back into the fixed input (blur without shrinking).
                A serving size larger than a fixed input cannot be run at all: said so, and
                only the dataset's image sizes are compared with the input. With two runs,
                every gap is a paired difference on the same images with a 95% interval by
                image bootstrap, and is flagged only when the interval excludes 0: recall at
                the threshold (0.25), overall and per COCO size bucket (small < 32^2, medium
                < 96^2, large; >= 0.05 warns, >= 0.15 fails), D-ECE (>= 0.03 / >= 0.08) and
                false positives per negative image (>= max(0.1, 50%) / >= max(0.5, 100%)).
                Without a second size: median letterbox scale > 2 (images upscaled) or
                < 0.25 (objects shrunk 4x+) is a low warn; recall by size bucket is reported.
2. box_shape    predicted vs labelled size (sqrt area) and aspect w/h of the SAME object, never
                all predictions against all labels (a model that misses small objects predicts
                larger boxes on average while sizing each one right): matched pairs (IoU >=
                0.5, same class; a bias beyond 1.15x warns) and located pairs (the same-class
                detection centred in the label that overlaps it most, any IoU; beyond 1.5x
                warns, 2x fails); median log-ratio with a 95% image-bootstrap interval, flagged
                only when the interval excludes 1x (and with >= 10 pairs). Anchors: read from
                the graph where an anchor_grid-like constant (1, na, ny, nx, 2) or (1, na, 1, 1, 2)
                exists (YOLOv5/v7 exports); k-means with the 1 - IoU distance on the ground-truth
                sizes and YOLOv5's best possible recall (a size ratio within 4x): model BPR
                < 0.98 warns, < 0.90 fails. Anchor-free heads and unrecognised graphs: said so.
3. letterbox    share of detections > 0.25 whose centre lies in the padding: >= 1% warns,
                >= 5% fails.
4. calibration  D-ECE (10 bins, detections > 0.25, matched at IoU 0.5) with a 90% bootstrap
                interval by image, and a reliability diagram; > 0.08 warns, > 0.15 fails.
                Saturation: more than half of those detections at >= 0.98 while their
                precision is below 0.95 warns (thresholds cannot separate their errors).
5. uniform_fp   detections > 0.8 on negative scenes (images without labels): share of
                negative images firing > 1% warns, > 5% fails; the lowest-texture crops are
                saved as a contact sheet.
6. nms_load     candidates above 0.25 per image before NMS (mean, p99) over the whole split,
                the share of time the numpy reference post-processing (decode, threshold,
                NMS) takes next to the model on a timed subsample, and a suggested pre-NMS
                cap (2 x p99, rounded up, within [100, 3000]). p99 > 1000 or mean > 300
                candidates, or post-processing > 50% of the time and >= 2 ms per image, warns.
                Preprocessing is not timed; the numpy NMS is slower than a deployed one, so
                the share is an upper bound.
7. labels       boxes touching the image edge (within 1 px) > 2% warns (truncated objects);
                coordinates outside the image (clipped on load) or zero-size boxes warn;
                class imbalance (most / least frequent class > 10) or a class without any box
                warns (low).
8. quantization only with ``reference_model`` (the float export of the same network): the
                served (quantized) model against it on the same images, see
                ``calib.doctor.quantization``: paired recall drop by size bucket and class
                (> 0.03 with a 95% image-bootstrap interval excluding 0 warns, > 0.10 fails),
                AP50 by bucket and class, the score shift of detection pairs at IoU >= 0.9
                (> 0.05 warns, > 0.15 fails), per-layer activation ranges of the float model on
                the deployment images (min, max, 0.1/99.9th percentiles, the share of an 8-bit
                min/max range spent on outliers) and, for QDQ models, the layers whose
                calibrated range clips deployment activations.
9. batch_coupling only for a dynamically quantized model (DynamicQuantizeLinear) that can run
                several images per call: up to 8 images one by one and together; a score
                crossing 0.25 warns (high from 1% of those above it), a move > 0.01 warns (low).
                fit, eval and doctor run such a model one image per call by default.

Modules: ``report`` (Check, DoctorReport, DoctorOptions), ``runs`` (running the model,
serving emulated), ``anchors``, ``stats`` (the like-with-like statistics and their image bootstrap),
one module per group of checks (``resolution``, ``box_shape``, ``scores``, ``load_labels``,
``quantization``, ``batch``) and ``diagnose`` composing them. The command is ``calib.cli.doctor``.
"""
from .anchors import best_possible_recall, kmeans_anchors, read_anchors, wh_iou
from .diagnose import CHECK_NAMES, diagnose
from .report import SEVERITIES, STATUSES, Check, DoctorOptions, DoctorReport
from .runs import embed_at_serve_size

__all__ = ["Check", "DoctorOptions", "DoctorReport", "diagnose", "embed_at_serve_size", "read_anchors",
           "kmeans_anchors", "best_possible_recall", "wh_iou", "CHECK_NAMES", "STATUSES", "SEVERITIES"]
