"""The example's scene generator is deterministic and writes a valid Ultralytics data set;
the reference detector builds and exports to ONNX in both raw layouts."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.detector import scenes  # noqa: E402


def _write(root: Path, seed: int = 7) -> Path:
    return scenes.write_dataset(root, n_val_pos=3, n_val_neg=2, n_test_pos=2, n_test_neg=2, seed=seed)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "data.yaml"}


def test_same_seed_same_bytes(tmp_path):
    a, b = _tree(_write(tmp_path / "a").parent), _tree(_write(tmp_path / "b").parent)
    assert a.keys() == b.keys() and len(a) == 2 * (3 + 2 + 2 + 2)
    assert all(a[k] == b[k] for k in a)
    c = _tree(_write(tmp_path / "c", seed=8).parent)
    assert any(a[k] != c[k] for k in a if k.endswith(".jpg"))


def test_data_yaml_and_labels(tmp_path):
    data = yaml.safe_load(_write(tmp_path).read_text())
    assert data["names"] == list(scenes.CLASS_NAMES)
    assert Path(data["path"]) == tmp_path.resolve()
    sizes = set()
    for split in ("val", "test"):
        assert data[split] == f"images/{split}"
        for img in sorted((tmp_path / "images" / split).glob("*.jpg")):
            label = tmp_path / "labels" / split / (img.stem + ".txt")
            text = label.read_text()
            from PIL import Image

            sizes.add(Image.open(img).size)
            if img.stem.startswith("neg_"):
                assert text == ""
                continue
            rows = np.array([line.split() for line in text.splitlines()], dtype=float)
            assert len(rows) >= 1 and rows.shape[1] == 5
            assert set(rows[:, 0].astype(int)) <= set(range(len(scenes.CLASS_NAMES)))
            assert (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all() and (rows[:, 3:] > 0).all()
            x0, x1 = rows[:, 1] - rows[:, 3] / 2, rows[:, 1] + rows[:, 3] / 2
            assert (x0 >= -1e-5).all() and (x1 <= 1 + 1e-5).all()
    assert len(sizes) > 1  # deployment images come in several sizes


def test_training_sample_deterministic_and_boxes_inside():
    a = scenes.training_sample((0, 5, 1))
    b = scenes.training_sample((0, 5, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    img, boxes, classes = a
    assert img.shape == (320, 320, 3) and img.dtype == np.uint8
    assert len(boxes) == len(classes) >= 1
    assert (boxes >= 0).all() and (boxes <= 320).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_negative_scene_deterministic():
    assert np.array_equal(scenes.negative_scene(3), scenes.negative_scene(3))


@pytest.mark.parametrize("layout", ["xywh_cls", "xywh_obj_cls"])
def test_untrained_model_exports_both_layouts(tmp_path, layout):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from examples.detector.model import TinyYolo, export_onnx

    torch.manual_seed(0)
    nc = len(scenes.CLASS_NAMES)
    model = TinyYolo(nc, layout)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, 64, scenes.CLASS_NAMES, {"detcal_train_seed": 0})
    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["imgsz"] == "[64, 64]" and props["detcal_train_seed"] == "0"
    assert props["names"] == repr(dict(enumerate(scenes.CLASS_NAMES)))
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["output0"], {"images": x})[0]
    n = (8 * 8 + 4 * 4 + 2 * 2) * model.na
    if layout == "xywh_cls":
        assert out.shape == (2, 4 + nc, n)
        last = m.graph.node[-1]
        assert last.op_type == "Concat" and last.output[0] == "output0"
        producers = {o: nd.op_type for nd in m.graph.node for o in nd.output}
        assert producers[last.input[1]] == "Sigmoid"
        assert ((out[:, 4:] >= 0) & (out[:, 4:] <= 1)).all()
    else:
        assert out.shape == (2, n, 5 + nc)
        assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()
