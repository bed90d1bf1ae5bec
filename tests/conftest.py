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


# ------------------------------------------------------------------------------------------
# graph variants: the equivalence tests run against both the default inserted graph and the
# fixed-shape one (`static_shapes=True`, for TensorRT)
# ------------------------------------------------------------------------------------------
GRAPH_VARIANT_MODULES = {"test_patch_equivalence", "test_patch_edges", "test_patch_slots", "test_patch_models"}
GRAPH_BUILDERS = ("build_postprocess_graph", "build_patched_model", "patch_model")


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in GRAPH_VARIANT_MODULES and "graph_variant" not in metafunc.fixturenames:
        metafunc.fixturenames.append("graph_variant")
        metafunc.parametrize("graph_variant", ["default", "static"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def graph_variant(request):
    """'default' or 'static': the test module's graph builders get static_shapes=True.
    Module-scoped (Hypothesis refuses function-scoped fixtures)."""
    import functools

    variant = getattr(request, "param", "default")
    with pytest.MonkeyPatch.context() as mp:
        if variant == "static":
            for name in GRAPH_BUILDERS:
                fn = getattr(request.module, name, None)
                if fn is not None:
                    mp.setattr(request.module, name, functools.partial(fn, static_shapes=True))
        yield variant
