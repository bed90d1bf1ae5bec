"""The patched model as `detcal eval` sees it: its interface (read through the contract's
metadata reader) and a runner that unpacks its fixed-size outputs into Detections."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import LETTERBOX_INPUT, PATCHED_OUTPUTS, PatchedMetadata, PostprocessConfig, Preprocess
from ..errors import DetcalError
from ..model_input import InputConvention, read_input_convention
from ..model_info import load_onnx, sha256_file, value_info_dims, value_info_dtype
from ..pipeline import Detections
from ..session import make_session, run_session


@dataclass
class PatchedModelInfo:
    """What `eval` needs to know about a detcal-patched model."""

    path: Path
    sha256: str
    image_input: str
    image_shape: tuple           # as declared, e.g. ('batch', 3, 640, 640) or ('batch', 640, 640, 3)
    image_dtype: str
    letterbox_input: str
    meta: PatchedMetadata        # the `detcal` metadata entry
    image_layout: str = "NCHW"   # 'NCHW' | 'NHWC' (calib.model_input; the source model's, kept by patch)

    @property
    def convention(self) -> InputConvention:
        return InputConvention(self.image_dtype, self.image_layout)

    @property
    def summary(self) -> dict:
        """The `detcal` metadata entry as read (JSON object)."""
        return self.meta.raw

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.image_shape[0], int)

    @property
    def input_size(self) -> tuple[int, int] | None:
        h, w = self.convention.hw(self.image_shape)
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
    """Check that `path` is a detcal-patched model and read its interface (the image input's layout
    from its dims, calib.model_input.read_input_convention; `eval` sets the source model's).

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
    if not images and any(value_info_dtype(i) == "uint8" and len(value_info_dims(i)) in (3, 4) for i in inputs):
        raise DetcalError(f"{p} was patched with --embed-preprocess (it takes decoded uint8 images); `detcal eval` "
                          "does not run such models yet: evaluate the same calibration patched without "
                          "--embed-preprocess (the post-processing is the same, and the embedded preprocessing "
                          "equals calib's letterbox, tested)")
    if not images or not boxes:
        listing = ", ".join(f"{i.name} {list(value_info_dims(i))}" for i in inputs)
        what = "4-D image input" if not images else f"'{LETTERBOX_INPUT}' [B, 6] input"
        raise DetcalError(f"{p}: no {what} (inputs: {listing}); is it a model written by `detcal patch`?")
    dims, dtype = value_info_dims(images[0]), value_info_dtype(images[0])
    conv = read_input_convention(dims, dtype, metadata=metadata, source=str(p), name=images[0].name)
    return PatchedModelInfo(p, sha256_file(p), images[0].name, dims, dtype, boxes[0].name, meta, conv.layout)


class PatchedRunner:
    """Runs a patched model on (input tensor, letterbox rows) and unpacks its fixed-size outputs."""

    def __init__(self, info: PatchedModelInfo, *, threads: int | None = None):
        self.info = info
        self.session = make_session(info.path, threads=threads)
        self.convention = info.convention

    def run(self, x: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, 3, H, W) float32, rows (B, 6) -> {num_dets (B, 1), det_boxes (B, K, 4), det_scores (B, K),
        det_classes (B, K)}; x is fed as the model declares it (InputConvention.feed)."""
        feeds = {self.info.image_input: self.convention.feed(x, str(self.info.path)),
                 self.info.letterbox_input: np.asarray(rows, np.float32)}
        return dict(zip(PATCHED_OUTPUTS, run_session(self.session, list(PATCHED_OUTPUTS), feeds, str(self.info.path))))

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
