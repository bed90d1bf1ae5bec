"""The label and dataset readers on generated garbage: one clear DetcalError naming the file,
or a loaded dataset (what could be kept, with the rest counted); never a traceback."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from calib.data import Dataset, load_dataset
from calib.errors import DetcalError

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TOKENS = ["0", "1", "2", "7", "-1", "0.5", "0.25", "1.5", "-0.5", "1e308", "-1e308", "1e999", "1e-320", "nan", "NaN",
          "inf", "-inf", "0x10", "1_000", "١", "½", "", "abc", "0,5", "3.0", "99999999999999999999", "+0.1", "."]
SEPARATORS = [" ", "  ", "\t", ",", "\u00a0", "\x0c"]
LINE_ENDS = ["\n", "\r\n", "\r", "\n\n"]


def _check(result_or_exc, must_name: str):
    if isinstance(result_or_exc, Dataset):
        report = result_or_exc.report
        assert report.n_images == len(result_or_exc.samples) >= 1
        for s in result_or_exc.samples:
            assert np.all(np.isfinite(s.gt_boxes_xyxy_norm))
            assert np.all((s.gt_boxes_xyxy_norm >= 0) & (s.gt_boxes_xyxy_norm <= 1))
            assert np.all(s.gt_boxes_xyxy_norm[:, 2:] > s.gt_boxes_xyxy_norm[:, :2])
        return
    msg = str(result_or_exc)
    assert "\n" not in msg and must_name in msg, msg


def _load(*args, **kw):
    try:
        return load_dataset(*args, **kw)
    except DetcalError as exc:
        return exc


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    Image.fromarray(np.full((24, 32, 3), 100, np.uint8)).save(root / "images" / "a.png")
    return root


line = st.lists(st.sampled_from(TOKENS), min_size=0, max_size=9).flatmap(
    lambda toks: st.sampled_from(SEPARATORS).map(lambda sep: sep.join(toks)))
label_text = st.tuples(st.lists(line, max_size=6), st.sampled_from(LINE_ENDS), st.booleans()).map(
    lambda t: ("\ufeff" if t[2] else "") + t[1].join(t[0]))


@FAST
@given(text=label_text)
def test_yolo_labels_text_garbage(folder, text):
    label = folder / "labels" / "a.txt"
    label.write_bytes(text.encode("utf-8"))
    _check(_load(folder, names=["a", "b", "c"]), "a.txt")


@FAST
@given(data=st.binary(max_size=200), bom=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
def test_yolo_labels_random_bytes(folder, data, bom):
    label = folder / "labels" / "a.txt"
    label.write_bytes(bom + data)
    _check(_load(folder, names=["a", "b", "c"]), "a.txt")


# ----------------------------------------------------------------------------- COCO JSON

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


def _valid_coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                   {"id": 2, "file_name": "a.png", "width": 32, "height": 24}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 32, 24], "iscrowd": 1}],
    }


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,), node, k
        yield from _paths(v, prefix + (k,))


@FAST
@given(data=st.data())
def test_coco_json_mutations(folder, data):
    doc = copy.deepcopy(_valid_coco())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        spots = list(_paths(doc))
        _, node, k = spots[data.draw(st.integers(0, len(spots) - 1), label="where")]
        if data.draw(st.booleans(), label="drop"):
            del node[k]
        else:
            node[k] = data.draw(JSON_VALUES, label="value")
    path = folder / "images" / "instances.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    _check(_load(path), "instances.json")


@FAST
@given(text=st.one_of(st.text(max_size=80), st.sampled_from(["[" * 5000, '{"images": [' * 3000, "1" * 5000,
                                                          '{"images": [], "annotations": 1e999}'])))
def test_coco_json_text_garbage(folder, text):
    path = folder / "images" / "instances.json"
    path.write_text(text, encoding="utf-8")
    _check(_load(path), "instances.json")


# ----------------------------------------------------------------------------- data.yaml


YAML_SNIPPETS = ["path: .", "val: images", "val: [images, images]", "val: 3", "val: null", "names: [a, b]",
                 "names: {0: a, 1: b}", "names: 3", "names: {x: a}", "names: [[a]]", "nc: 2", "nc: -1", "nc: x",
                 "train: images", "val: images/a.png", "val: nowhere", "- a", "&a [*a]", "!!python/object:os.system",
                 ": :", "\t\tnames: [a", "names: {0: a, 0: b}", "names: {-1: a}", "names: {1e9: a}"]


@FAST
@given(lines=st.lists(st.sampled_from(YAML_SNIPPETS), max_size=5), ending=st.sampled_from(LINE_ENDS),
       bom=st.booleans())
def test_data_yaml_garbage(folder, lines, ending, bom):
    (folder / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = folder / "data.yaml"
    path.write_text(("\ufeff" if bom else "") + ending.join(lines), encoding="utf-8")
    _check(_load(path, "val"), "data.yaml")


@FAST
@given(data=st.binary(max_size=120))
def test_data_yaml_random_bytes(folder, data):
    (folder / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = folder / "data.yaml"
    path.write_bytes(data)
    _check(_load(path, "val"), "data.yaml")
