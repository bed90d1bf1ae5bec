"""Running the raw exported detector with onnxruntime over images, batched where the model allows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .artifact import Preprocess
from .errors import DetcalError
from .model_info import ModelInfo, metadata_imgsz
from .preprocess import preprocess_image
from .session import make_session  # noqa: F401 (re-exported: the factory's old home)


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


@dataclass
class RawBatch:
    indices: list[int]          # positions in the caller's image sequence
    raw: np.ndarray             # (B, ...) raw head output, float32
    rows: np.ndarray            # (B, 6) letterbox rows


class DetectorRunner:
    """Preprocess + run the raw model. `run(images)` yields RawBatch in input order."""

    def __init__(self, info: ModelInfo, preprocess: Preprocess, input_size: tuple[int, int], *,
                 batch_size: int = 8, threads: int | None = None, session=None):
        self.info = info
        self.preprocess = preprocess
        self.input_size = tuple(input_size)
        self.session = session or make_session(info.path, threads=threads)
        self.batch_size = max(1, int(batch_size)) if info.dynamic_batch else int(info.input_shape[0] or 1)
        self.input_dtype = np.float16 if info.input_dtype == "float16" else np.float32

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """x (B, 3, H, W) float32 -> raw head output (B, ...) float32."""
        out = self.session.run([self.info.output_name], {self.info.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)

    def run(self, images: Iterable[tuple[int, np.ndarray]], label: str = "") -> Iterator[RawBatch]:
        """images: (index, (h, w, 3) uint8 RGB) pairs. NaN/inf in an output is a DetcalError naming the image."""
        buf_x, buf_rows, buf_idx = [], [], []
        for idx, img in images:
            x, row = preprocess_image(img, self.input_size, self.preprocess)
            buf_x.append(x)
            buf_rows.append(row)
            buf_idx.append(idx)
            if len(buf_x) == self.batch_size:
                yield self._flush(buf_x, buf_rows, buf_idx, label)
                buf_x, buf_rows, buf_idx = [], [], []
        if buf_x:
            if not self.info.dynamic_batch:   # a fixed batch axis: pad the last batch
                pad = self.batch_size - len(buf_x)
                batch = self._flush(buf_x + [buf_x[-1]] * pad, buf_rows + [buf_rows[-1]] * pad, buf_idx, label)
                batch.raw, batch.rows = batch.raw[: len(buf_idx)], batch.rows[: len(buf_idx)]
                yield batch
            else:
                yield self._flush(buf_x, buf_rows, buf_idx, label)

    def _flush(self, xs, rows, idx, label) -> RawBatch:
        raw = self.run_tensor(np.stack(xs))
        if not np.all(np.isfinite(raw)):
            bad = int(np.nonzero(~np.isfinite(raw.reshape(raw.shape[0], -1)).any(axis=1))[0][0])
            where = f" ({label} image #{idx[min(bad, len(idx) - 1)]})" if label else ""
            raise DetcalError(f"{self.info.path}: model output contains NaN or inf{where}; check the preprocessing options and the export")
        return RawBatch(list(idx), raw, np.stack(rows))
