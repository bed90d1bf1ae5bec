"""The one onnxruntime session factory of detcal (fitting side, graph side and tests).

Light to import: onnxruntime is loaded on the first call.
"""
from __future__ import annotations

from pathlib import Path

from .errors import DetcalError


def make_session(model, *, threads: int | None = None, providers: list[str] | None = None, name: str | None = None):
    """An onnxruntime.InferenceSession for `model` (a path, serialized bytes or an onnx.ModelProto).

    threads: intra-op threads (inter-op 1), None = onnxruntime's default; providers: default
    CPUExecutionProvider. A model onnxruntime rejects is a DetcalError naming the file (`name`
    for in-memory models).
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        data, label = model.SerializeToString(), name or "<in-memory model>"
    elif isinstance(model, (bytes, bytearray)):
        data, label = bytes(model), name or "<in-memory model>"
    else:
        data, label = str(Path(model)), name or str(model)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DetcalError(f"onnxruntime cannot load {label}: {first}") from None


def run_session(session, outputs: list[str] | None, feeds: dict, source: str, hint: str = "") -> list:
    """session.run(outputs, feeds); an onnxruntime failure (a shape the model cannot take, e.g. a wrong
    input layout or size) is a one-line DetcalError naming `source`, the fed inputs and `hint`."""
    try:
        return session.run(outputs, feeds)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        text = str(exc).strip()
        first = text.split("Status Message:")[-1].strip().splitlines()[0] if text else type(exc).__name__
        fed = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in feeds.items())
        raise DetcalError(f"{source}: onnxruntime cannot run the model on {fed}: {first[:240]}"
                          + (f"; {hint}" if hint else "")) from None
