"""Shared fixtures: the blob detector (both dense layouts) and a small dataset it can detect.

Everything is built in code by `tests/synthetic.py` once per test session, in a temporary folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import make_blob_detector, write_blob_dataset  # noqa: E402


@pytest.fixture(scope="session")
def blob_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("blob")


@pytest.fixture(scope="session")
def blob_model(blob_dir) -> Path:
    """A 2-class blob detector, layout xywh_cls, output [B, 6, N]."""
    return make_blob_detector(blob_dir / "blob_xywh_cls.onnx", layout="xywh_cls")


@pytest.fixture(scope="session")
def blob_model_obj(blob_dir) -> Path:
    """A 2-class blob detector, layout xywh_obj_cls, output [B, N, 7]."""
    return make_blob_detector(blob_dir / "blob_xywh_obj_cls.onnx", layout="xywh_obj_cls")


@pytest.fixture(scope="session", params=["xywh_cls", "xywh_obj_cls"])
def blob_models(request, blob_model, blob_model_obj) -> tuple[str, Path]:
    """(layout, model path), once per dense layout."""
    return request.param, {"xywh_cls": blob_model, "xywh_obj_cls": blob_model_obj}[request.param]


@pytest.fixture(scope="session")
def blob_data(blob_dir) -> Path:
    """data.yaml of a 2-class dataset: 24 positive and 16 negative images."""
    return write_blob_dataset(blob_dir / "data2")
