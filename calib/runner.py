"""Running the raw exported detector with onnxruntime over images, batched where the model allows."""
from __future__ import annotations

import warnings

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .artifact import HEAD_LAYOUTS, Preprocess
from .errors import DetcalError
from .head_decoders import decoded_batch
from .mask_coeffs import mask_count, strip_mask_coeffs
from .model_info import ModelInfo, metadata_imgsz
from .preprocess import preprocess_image
from .session import make_session, run_session  # make_session re-exported: the factory's old home


def resolve_input_size(info: ModelInfo, imgsz: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) to serve at: the model's fixed size, or `imgsz` for dynamic inputs (metadata imgsz as a fallback)."""
    fixed = info.input_size
    if imgsz is not None:
        size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)
        if fixed is not None and tuple(size) != tuple(fixed):
            raise DetcalError(f"{info.path} has a fixed input size {fixed[0]}x{fixed[1]}; --imgsz {size[0]}x{size[1]} cannot be used")
        return size
    if fixed is not None:
        return fixed
    meta = metadata_imgsz(info.metadata)
    if meta:
        return meta
    raise DetcalError(f"{info.path} has dynamic height/width; pass --imgsz to choose the serving size")


_RUN_HINT = "check --imgsz and, where the input's dims leave it open, --input-layout"


@dataclass
class RawBatch:
    indices: list[int]          # positions in the caller's image sequence
    raw: np.ndarray             # (B, ...) raw head output, float32
    rows: np.ndarray            # (B, 6) letterbox rows


@dataclass
class InputBatch:
    """One batch of preprocessed inputs, padded to `batch_size` for a fixed batch axis."""

    indices: list[int]          # (n,) positions in the caller's sequence; n real images
    x: np.ndarray               # (B, 3, H, W) float32, B = n or the fixed batch (last image repeated)
    rows: np.ndarray            # (B, 6) letterbox rows, padded likewise

    @property
    def n(self) -> int:
        return len(self.indices)


def batch_inputs(items: Iterable[tuple[int, np.ndarray, np.ndarray]], batch_size: int, *,
                 fixed: bool) -> Iterator[InputBatch]:
    """(index, x (3, H, W), row (6,)) items -> InputBatch of batch_size, in order; with `fixed`
    the last, short batch is padded by repeating its last image (callers keep the first n)."""
    xs, rows, idx = [], [], []
    for i, x, row in items:
        xs.append(x)
        rows.append(row)
        idx.append(i)
        if len(xs) == batch_size:
            yield InputBatch(idx, np.stack(xs), np.stack(rows))
            xs, rows, idx = [], [], []
    if xs:
        if fixed and len(xs) < batch_size:
            pad = batch_size - len(xs)
            xs, rows = xs + [xs[-1]] * pad, rows + [rows[-1]] * pad
        yield InputBatch(idx, np.stack(xs), np.stack(rows))


DEFAULT_BATCH = 8


def resolve_batch_size(info: ModelInfo, requested: int | None) -> int:
    """Images per model call: a fixed batch axis decides; else `requested`, by default DEFAULT_BATCH, or 1
    for a model whose per-image outputs depend on the rest of its batch (info.batch_coupled: dynamic
    quantization scales each activation over the whole batch), so that fit and eval see what one image
    served alone gives. An explicit batch > 1 on such a model is kept, with a warning."""
    if not info.dynamic_batch:
        return int(info.input_shape[0] or 1)
    if requested is None:
        return 1 if info.batch_coupled else DEFAULT_BATCH
    n = max(1, int(requested))
    if n > 1 and info.batch_coupled:
        warnings.warn(f"{info.path}: dynamically quantized (DynamicQuantizeLinear): each image's scores depend on "
                      f"the other images of its batch; at batch {n} they are those of a batch of {n}, not of one "
                      "image served alone (the default here is batch 1)", stacklevel=3)
    return n


class DetectorRunner:
    """Preprocess + run the raw model. `run(images)` yields RawBatch in input order."""

    def __init__(self, info: ModelInfo, preprocess: Preprocess, input_size: tuple[int, int], *,
                 batch_size: int | None = None, threads: int | None = None, session=None):
        self.info = info
        self.preprocess = preprocess
        self.input_size = tuple(input_size)
        self.session = session or make_session(info.path, threads=threads)
        self.batch_size = resolve_batch_size(info, batch_size)
        self.convention = info.input_convention          # the model's dtype and layout (calib.model_input)
        self.convention.check_preprocess(preprocess, str(info.path))

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """x (B, 3, H, W) float32 -> raw head output (B, ...) float32 (HEAD_LAYOUTS: decoded, [B, N, 4+C]).
        x is fed as the model declares it (InputConvention.feed: float16/uint8, NHWC)."""
        feeds = {self.info.input_name: self.convention.feed(x, str(self.info.path))}
        names = self.info.outputs if self.info.layout in HEAD_LAYOUTS else [self.info.output_name]
        outs = run_session(self.session, names, feeds, str(self.info.path), _RUN_HINT)
        if self.info.layout in HEAD_LAYOUTS:
            outs = [np.asarray(o, dtype=np.float32) for o in outs]
            return decoded_batch(self.info.layout, outs, self.input_size, **self.info.head_params)
        # a seg head: only rows 4..4+C score; the mask coefficient rows are cut off here
        return strip_mask_coeffs(np.asarray(outs[0], dtype=np.float32), mask_count(self.info.head_params))

    def check_finite(self, raw: np.ndarray, indices: list[int], label: str) -> None:
        """NaN/inf in a raw output (B, ...) is a DetcalError naming the (first) image."""
        if not np.all(np.isfinite(raw)):
            bad = int(np.nonzero(~np.isfinite(raw.reshape(raw.shape[0], -1)).any(axis=1))[0][0])
            where = f" ({label} image #{indices[min(bad, len(indices) - 1)]})" if label else ""
            raise DetcalError(f"{self.info.path}: model output contains NaN or inf{where}; check the preprocessing options and the export")

    def run(self, images: Iterable[tuple[int, np.ndarray]], label: str = "") -> Iterator[RawBatch]:
        """images: (index, (h, w, 3) uint8 RGB) pairs. NaN/inf in an output is a DetcalError naming the image."""
        def items():
            for idx, img in images:
                x, row = preprocess_image(img, self.input_size, self.preprocess)
                yield idx, x, row

        for batch in batch_inputs(items(), self.batch_size, fixed=not self.info.dynamic_batch):
            raw = self.run_tensor(batch.x)
            self.check_finite(raw, batch.indices, label)
            yield RawBatch(list(batch.indices), raw[: batch.n], batch.rows[: batch.n])
