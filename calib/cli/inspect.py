"""`detcal inspect MODEL`: per execution provider, are the model's ops covered?

Prints `onnx_ops.inspect.format_inspection(inspect_model(path))`; exit code 0 when every EP
is covered, else 1.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("inspect", help="show a model's inputs/outputs and op coverage per execution provider")
    p.add_argument("model", help="an .onnx file")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from onnx_ops.inspect import format_inspection, inspect_model

    d = inspect_model(args.model)
    print(format_inspection(d))
    return 0 if all(e["covered"] for e in d["eps"].values()) else 1
