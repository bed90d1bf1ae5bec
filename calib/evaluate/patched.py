"""The patched model as `detcal eval` sees it: its interface (read through the contract's
metadata reader) and a runner that unpacks its fixed-size outputs into Detections.

Two interfaces (onnx_ops.patch):
    plain      the source image input (x as the source model declares it) + `letterbox` [B, 6];
               fed calib's preprocessed x and rows (`PatchedRunner.run`)
    embedded   (`patch --embed-preprocess`) `image` uint8 [H, W, 3], one image per run, or `frames`
               uint8 [B, H, W, 3] of one fixed size; the graph letterboxes itself. Fed the decoded
               images (`PatchedRunner.run_images`), in the channel order the metadata records for
               the input. Both return boxes in the original image's pixels.
"""
from __future__ import annotations

import re
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
    embedded: str | None = None  # None (plain) | 'image' ([H, W, 3]) | 'frames' ([B, H, W, 3]): --embed-preprocess
    image_channel_order: str = "RGB"   # embedded: the channel order the input takes

    @property
    def convention(self) -> InputConvention:
        return InputConvention(self.image_dtype, self.image_layout)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """Embedded `frames`: the fixed (H, W) of the frames it takes; else None."""
        return tuple(self.image_shape[1:3]) if self.embedded == "frames" else None

    @property
    def summary(self) -> dict:
        """The `detcal` metadata entry as read (JSON object)."""
        return self.meta.raw

    @property
    def dynamic_batch(self) -> bool:
        return self.embedded == "image" or not isinstance(self.image_shape[0], int)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The (H, W) of the x it takes where fixed; None where dynamic or embedded (it takes images)."""
        if self.embedded is not None:
            return None
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
    if not boxes:       # no letterbox input: the preprocessing is embedded (the graph computes the row)
        embedded = _embedded_input(p, inputs, meta)
        if embedded is not None:
            return embedded
    if not images or not boxes:
        listing = ", ".join(f"{i.name} {list(value_info_dims(i))}" for i in inputs)
        what = "4-D image input" if not images else f"'{LETTERBOX_INPUT}' [B, 6] input"
        raise DetcalError(f"{p}: no {what} (inputs: {listing}); is it a model written by `detcal patch`?")
    dims, dtype = value_info_dims(images[0]), value_info_dtype(images[0])
    conv = read_input_convention(dims, dtype, metadata=metadata, source=str(p), name=images[0].name)
    return PatchedModelInfo(p, sha256_file(p), images[0].name, dims, dtype, boxes[0].name, meta, conv.layout)


def _embedded_input(p: Path, inputs: list, meta: PatchedMetadata) -> PatchedModelInfo | None:
    """The info of a model patched with --embed-preprocess: one uint8 input, `image` [H, W, 3] or
    `frames` [B, H, W, 3] with H, W fixed; None where the inputs are not of that form."""
    if len(inputs) != 1 or value_info_dtype(inputs[0]) != "uint8":
        return None
    vi = inputs[0]
    dims = value_info_dims(vi)
    if len(dims) == 3 and dims[2] == 3:
        kind = "image"
    elif len(dims) == 4 and dims[3] == 3 and all(isinstance(d, int) for d in dims[1:3]):
        kind = "frames"
    else:
        return None
    described = (meta.inputs or meta.raw.get("inputs") or {}).get(vi.name, "")     # the description patch wrote
    order = re.search(r"\b(RGB|BGR)\b", str(described))
    return PatchedModelInfo(p, sha256_file(p), vi.name, dims, "uint8", "", meta, "NHWC", kind,
                            order.group(1) if order else "RGB")


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

    @property
    def embedded(self) -> bool:
        return self.info.embedded is not None

    def run_batch(self, x: np.ndarray, rows: np.ndarray, images: list | None = None) -> dict[str, np.ndarray]:
        """The call `eval` makes: a plain patched model gets x and rows (`run`), an embedded one the
        decoded images (`run_images`; x and rows unused)."""
        if not self.embedded:
            return self.run(x, rows)
        if images is None:
            raise ValueError("an embedded-preprocessing model takes the decoded images")
        return self.run_images(images)

    def run_images(self, images: list) -> dict[str, np.ndarray]:
        """images: (H, W, 3) uint8 RGB arrays (as calib.data decodes them) -> the outputs stacked over
        the images (num_dets (n, 1), det_boxes (n, K, 4) in each image's own pixels, ...).

        `image` models run once per image; `frames` models in batches of their fixed batch (the last
        one padded by repeating its last frame, then trimmed), every image of the fixed frame size
        (DetcalError naming the image index otherwise). BGR inputs get the channels reversed."""
        path, name = str(self.info.path), self.info.image_input
        imgs = [np.ascontiguousarray(np.asarray(im, np.uint8)[..., ::-1] if self.info.image_channel_order == "BGR"
                                     else np.asarray(im, np.uint8)) for im in images]
        if self.info.embedded == "image":
            calls = [[im] for im in imgs]
        else:
            fh, fw = self.info.frame_size
            for i, im in enumerate(imgs):
                if im.shape[:2] != (fh, fw):
                    raise DetcalError(f"{path} takes {fh}x{fw} frames (patched with --frame-size), image #{i} of "
                                      f"the batch is {im.shape[0]}x{im.shape[1]}; evaluate a model patched without "
                                      "--frame-size, or data of that size")
            fixed = self.info.image_shape[0]
            step = fixed if isinstance(fixed, int) else max(1, len(imgs))
            calls = [imgs[i:i + step] for i in range(0, len(imgs), step)]
            calls = [c + [c[-1]] * (step - len(c)) if isinstance(fixed, int) else c for c in calls]
        parts = []
        for c in calls:
            feed = c[0] if self.info.embedded == "image" else np.stack(c)
            parts.append(run_session(self.session, list(PATCHED_OUTPUTS), {name: feed}, path))
        outs = {k: np.concatenate([p[j] for p in parts]) if parts else np.zeros((0,))
                for j, k in enumerate(PATCHED_OUTPUTS)}
        return {k: v[:len(imgs)] for k, v in outs.items()}

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
