"""`detcal eval`: the raw model and the patched model side by side on held-out images.

    patched   the patched model's interface (read_patched_info) and its runner
    columns   the evaluated columns and their metrics (EvalResult)
    loop      evaluate(...): inputs, one pass over the images, the columns
    report    the table, the summary, eval.json and the PNGs
"""
from .columns import EVAL_FORMAT, EVAL_VERSION, Column, EvalResult, column_metrics
from .loop import AP_FLOOR, DEFAULT_CONF, evaluate
from .patched import PatchedModelInfo, PatchedRunner, read_patched_info
from .report import EVAL_ROWS, format_eval_summary, format_eval_table, write_eval_outputs

__all__ = [
    "EVAL_FORMAT", "EVAL_VERSION", "Column", "EvalResult", "column_metrics", "AP_FLOOR", "DEFAULT_CONF", "evaluate",
    "PatchedModelInfo", "PatchedRunner", "read_patched_info", "EVAL_ROWS", "format_eval_summary", "format_eval_table",
    "write_eval_outputs",
]
