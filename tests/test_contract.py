"""The contract: the patched model's metadata schema (one writer, one reader) and the variant choice."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.artifact import (METADATA_KEY, PATCHED_OUTPUTS, ROW_FIELDS, AffineLogitMap, PatchedMetadata,
                            PostprocessConfig, Preprocess, identity_map, is_patched_metadata)
from calib.artifact import ORIG_W, PAD_TOP
from onnx_ops.head import Head
from onnx_ops.variants import BOXES_FIRST_MIN_CLASSES, Variant, choose_calibration_variant

from artifact_factory import make_calibration


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 90), logit=st.booleans(), bound=st.one_of(st.none(), st.floats(0, 1)),
       thr=st.floats(0, 1, allow_nan=False))
def test_metadata_round_trip(c, logit, bound, thr):
    meta = PatchedMetadata(source_sha256="ab" * 32, layout="xywh_cls", num_classes=c, calibrator="platt_per_class",
                           calibration_in_logit_space=logit, thresholds=[thr] * c,
                           nms=PostprocessConfig(max_det=17).to_artifact(), preprocess=Preprocess().to_artifact(),
                           certified_bound=bound)
    props = meta.to_metadata_props()
    assert all(isinstance(v, str) for v in props.values())
    assert is_patched_metadata(props)
    back = PatchedMetadata.from_metadata_props(props, "m.onnx")
    assert back == meta
    summary = json.loads(props[METADATA_KEY])
    assert summary["outputs"]["det_boxes"] == "float32 [B, 17, 4] xyxy original px"
    assert set(summary["outputs"]) == set(PATCHED_OUTPUTS)
    assert props["detcal_source_sha256"] == meta.source_sha256


def test_metadata_reader_is_lenient_on_fields_strict_on_json():
    assert PatchedMetadata.from_metadata_props({METADATA_KEY: "{}"}, "m").num_classes is None
    odd = PatchedMetadata.from_metadata_props({METADATA_KEY: json.dumps({"num_classes": True, "thresholds": 3})}, "m")
    assert odd.num_classes is None and odd.thresholds is None
    with pytest.raises(KeyError):
        PatchedMetadata.from_metadata_props({"names": "{0: 'a'}"}, "m")
    for bad in ("not json", "[1, 2]"):
        with pytest.raises(ValueError, match="m.onnx: the 'detcal' metadata entry is not valid JSON"):
            PatchedMetadata.from_metadata_props({METADATA_KEY: bad}, "m.onnx")
    assert not is_patched_metadata({"names": "x"}) and is_patched_metadata({"detcal_version": "0.1.0"})


def test_letterbox_columns_have_one_definition():
    assert ROW_FIELDS[ORIG_W] == "orig_w" and ROW_FIELDS[PAD_TOP] == "pad_top" and len(ROW_FIELDS) == 6


def _head(layout="xywh_cls", sigmoid_front=False):
    extra = dict(boxes="b", probs="p", logits="z") if sigmoid_front else {}
    return Head(layout, "out", 1, 3, 100, "batch", **extra)


@pytest.mark.parametrize("head, cmap, cfg, thr, want", [
    (_head("end2end"), identity_map(3), PostprocessConfig(), [0.2] * 3, Variant.SPARSE),
    (_head(), identity_map(3), PostprocessConfig(), [0.2] * 3, Variant.UNIFORM_IDENTITY),
    (_head(sigmoid_front=True), identity_map(3), PostprocessConfig(), [0.2] * 3, Variant.UNIFORM_IDENTITY),
    (_head(), identity_map(3), PostprocessConfig(), [0.2, 0.3, 0.2], Variant.DENSE),
    (_head(), identity_map(3), PostprocessConfig(multi_label=True), [0.2] * 3, Variant.DENSE),
    (_head(), identity_map(3), PostprocessConfig(), [-np.inf] * 3, Variant.DENSE),
    (_head(sigmoid_front=True), AffineLogitMap("platt_per_class", [1.2, 0.9, 1], [0.1, 0, 0]), PostprocessConfig(),
     [0.2] * 3, Variant.LOGIT_SPACE),
    (_head(sigmoid_front=True), AffineLogitMap("platt_per_class", [1.2, 0.9, 1], [0.1, 0, 0]),
     PostprocessConfig(multi_label=True), [0.2] * 3, Variant.DENSE),
    (_head(), AffineLogitMap("platt_per_class", [1.2, 0.9, 1], [0.1, 0, 0]), PostprocessConfig(), [0.2] * 3,
     Variant.SURVIVORS_ONLY),
    (_head(), AffineLogitMap("platt_per_class", [1.2, 0.9, 1], [0.1, 0, 0]), PostprocessConfig(), [-np.inf] * 3,
     Variant.DENSE),
    (_head(sigmoid_front=True), make_calibration("isotonic_per_class", 3, np.random.default_rng(0)),
     PostprocessConfig(), [0.2] * 3, Variant.SURVIVORS_ONLY),
])
def test_choose_calibration_variant(head, cmap, cfg, thr, want):
    """`want` is the fixed-shape graph's variant where it has no data-dependent shape; the default
    graph takes the boxes-first route for every single-label dense head."""
    thr = np.asarray(thr, np.float32)
    single_dense = head.layout != "end2end" and not cfg.multi_label
    no_survivors_only = Variant.DENSE if want is Variant.SURVIVORS_ONLY else want
    # single-label never runs NonZero over N x C
    few = Variant.BOXES_FIRST if single_dense and head.num_classes >= BOXES_FIRST_MIN_CLASSES else no_survivors_only
    assert choose_calibration_variant(head, cmap, cfg, thr) is (few if single_dense else want)
    assert choose_calibration_variant(head, cmap, cfg, thr, static_shapes=True) is no_survivors_only
    many = dataclasses.replace(head, num_classes=BOXES_FIRST_MIN_CLASSES)
    thr_many = np.resize(thr, BOXES_FIRST_MIN_CLASSES)
    got = choose_calibration_variant(many, cmap, cfg, thr_many)
    assert got is (Variant.BOXES_FIRST if single_dense else want)


TWINS = ("threshold", "calibrate", "select_best_class", "pre_nms_top_k", "mask_letterbox", "class_aware_nms",
         "to_original_pixels", "pack_fixed")


def _definition_order(module) -> list[str]:
    import inspect

    lines = {name: inspect.getsourcelines(getattr(module, name))[1] for name in TWINS}
    return sorted(TWINS, key=lines.get)


def test_reference_and_graph_steps_are_twins_in_the_same_order():
    """calib.pipeline and onnx_ops.steps define the same steps, in the contract's order."""
    from calib import pipeline
    from onnx_ops import steps

    assert _definition_order(pipeline) == list(TWINS)
    assert _definition_order(steps) == list(TWINS)
    assert callable(pipeline.decode) and callable(steps.decode)
