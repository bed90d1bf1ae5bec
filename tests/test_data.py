"""Dataset loading and label validation: YOLO YAML, YOLO folders, COCO JSON, image reading."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from calib.data import LabelReport, Sample, iter_images, label_path_for, load_dataset
from calib.errors import DetcalError
from calib.images import image_size, read_image_rgb


# ------------------------------------------------------------------------------------ builders

def write_image(path: Path, w: int = 16, h: int = 12, *, orientation: int | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, format=fmt, exif=exif)
    else:
        im.save(path, format=fmt)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def yolo_dataset(root: Path, labels: dict[str, str | None], split: str = "val") -> Path:
    """images/<split>/<stem>.jpg with labels/<split>/<stem>.txt (None: no label file)."""
    for i, (stem, text) in enumerate(labels.items()):
        write_image(root / "images" / split / f"{stem}.jpg", seed=i)
        if text is not None:
            write_text(root / "labels" / split / f"{stem}.txt", text)
    return root


# --------------------------------------------------------------------------------------- YAML

def test_yaml_list_names_and_label_validation(tmp_path):
    ds = yolo_dataset(tmp_path / "ds", {
        "a_pos": "0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n",
        "b_empty": "",
        "c_missing": None,
        "d_clip": "1 0.95 0.5 0.2 0.2\n",            # x2 = 1.05 -> clipped to 1
        "e_zero": "0 0.5 0.5 0 0.3\n0 1.2 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n",  # zero width; fully outside
        "f_dup": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        "g_poly": "1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n",
    })
    yaml_path = write_text(tmp_path / "data.yaml", "path: ds\ntrain: images/train\nval: images/val\nnames: [car, person]\n")
    d = load_dataset(yaml_path)
    assert d.names == ["car", "person"]
    assert [s.image_path.stem for s in d.samples] == ["a_pos", "b_empty", "c_missing", "d_clip", "e_zero", "f_dup", "g_poly"]
    by = {s.image_path.stem: s for s in d.samples}
    np.testing.assert_allclose(by["a_pos"].gt_boxes_xyxy_norm, [[0.4, 0.3, 0.6, 0.7], [0.2, 0.2, 0.3, 0.3]])
    assert by["a_pos"].gt_classes.tolist() == [0, 1] and by["a_pos"].gt_classes.dtype == np.int64
    assert by["a_pos"].label_path == ds / "labels" / "val" / "a_pos.txt"
    assert by["b_empty"].is_negative and by["c_missing"].is_negative and not by["a_pos"].is_negative
    assert by["c_missing"].label_path is None
    np.testing.assert_allclose(by["d_clip"].gt_boxes_xyxy_norm, [[0.85, 0.4, 1.0, 0.6]])
    np.testing.assert_allclose(by["e_zero"].gt_boxes_xyxy_norm, [[0.4, 0.4, 0.6, 0.6]])
    assert by["f_dup"].gt_classes.tolist() == [0, 1]
    np.testing.assert_allclose(by["g_poly"].gt_boxes_xyxy_norm, [[0.1, 0.2, 0.3, 0.6]])

    r = d.report
    assert (r.n_images, r.n_negative, r.n_missing_label_files) == (7, 2, 1)
    assert r.n_boxes == 2 + 1 + 1 + 2 + 1
    assert r.n_clipped_boxes == 2            # d_clip, and the fully-outside box of e_zero
    assert r.n_dropped_zero_size == 2        # zero width, fully outside
    assert r.n_duplicate_boxes == 1
    assert r.n_polygon_boxes == 1
    assert r.n_unreadable_images == 0
    text = "\n".join(r.details)
    assert "d_clip.txt:1" in text and "e_zero.txt:1" in text and "e_zero.txt:2" in text
    assert "f_dup.txt:2" in text and "c_missing.jpg" in text
    as_dict = r.to_dict()
    assert as_dict["n_clipped_boxes"] == 2 and isinstance(as_dict["details"], list)
    json.dumps(as_dict)
    assert "7 images (2 negative, 1 without a label file), 7 boxes" in r.summary()
    assert "split val" in d.source


def test_yaml_dict_names_list_of_folders_and_txt_list(tmp_path):
    yolo_dataset(tmp_path / "ds", {"a": "2 0.5 0.5 0.5 0.5\n"}, split="val")
    yolo_dataset(tmp_path / "ds", {"b": ""}, split="extra")
    write_text(tmp_path / "ds" / "test.txt", "./images/val/a.jpg\nimages/extra/b.jpg\n\n")
    write_text(tmp_path / "cfg" / "d.yaml",
               "path: ../ds\nval: [images/val, images/extra]\ntest: test.txt\nnames:\n  0: a\n  1: b\n  2: c\n")
    d = load_dataset(tmp_path / "cfg" / "d.yaml", "val")
    assert d.names == ["a", "b", "c"]
    assert [s.image_path.name for s in d.samples] == ["b.jpg", "a.jpg"]   # sorted by full path: extra < val
    assert d.samples[1].gt_classes.tolist() == [2]
    t = load_dataset(tmp_path / "cfg" / "d.yaml", "test")
    assert sorted(s.image_path.name for s in t.samples) == ["a.jpg", "b.jpg"]
    assert t.report.n_negative == 1


def test_yaml_without_path_key_is_relative_to_its_folder(tmp_path):
    yolo_dataset(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"})
    d = load_dataset(write_text(tmp_path / "data.yml", "val: images/val\nnames: [x]\n"))
    assert len(d) == 1 and d.report.n_boxes == 1


def test_yaml_errors(tmp_path):
    yolo_dataset(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"})
    with pytest.raises(DetcalError, match=r"no split 'test' \(splits present: train, val\)"):
        load_dataset(write_text(tmp_path / "s.yaml", "train: images/val\nval: images/val\nnames: [x]\n"), "test")
    with pytest.raises(DetcalError, match=r"bad\.yaml:3: invalid YAML"):
        load_dataset(write_text(tmp_path / "bad.yaml", "val: images/val\nnames: [x\n  y: ]\n"))
    with pytest.raises(DetcalError, match=r"dataset not found: .*nope\.yaml"):
        load_dataset(tmp_path / "nope.yaml")
    with pytest.raises(DetcalError, match=r"ids must be 0\.\.1"):
        load_dataset(write_text(tmp_path / "gap.yaml", "val: images/val\nnames: {0: a, 2: b}\n"))
    with pytest.raises(DetcalError, match=r"'nc' is 3 but 'names' lists 1"):
        load_dataset(write_text(tmp_path / "nc.yaml", "val: images/val\nnc: 3\nnames: [a]\n"))
    with pytest.raises(DetcalError, match=r"list\.yaml: expected a YAML mapping"):
        load_dataset(write_text(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(DetcalError, match=r"images/missing does not exist"):
        load_dataset(write_text(tmp_path / "m.yaml", "val: images/missing\nnames: [x]\n"))


@pytest.mark.parametrize("line, pattern", [
    ("3 0.5 0.5 0.1 0.1", r"a\.txt:2: class id 3 out of range, the dataset has 2 classes"),
    ("-1 0.5 0.5 0.1 0.1", r"a\.txt:2: class id -1 out of range"),
    ("0 0.5 0.5 0.1", r"a\.txt:2: expected 5 fields .* found 4"),
    ("0 0.5 0.5 0.1 0.1 0.9", r"a\.txt:2: expected 5 fields .* found 6"),
    ("0 0.5 abc 0.1 0.1", r"a\.txt:2: not a number"),
    ("0 0.5 nan 0.1 0.1", r"a\.txt:2: NaN or infinite"),
    ("0.5 0.5 0.5 0.1 0.1", r"a\.txt:2: class id 0.5 is not an integer"),
    ("0 0.5 0.5 -0.1 0.1", r"a\.txt:2: negative box width"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, line, pattern):
    yolo_dataset(tmp_path, {"a": f"1 0.5 0.5 0.1 0.1\n{line}\n"})
    with pytest.raises(DetcalError, match=pattern):
        load_dataset(write_text(tmp_path / "d.yaml", "val: images/val\nnames: [x, y]\n"))


# ------------------------------------------------------------------------------------- folders

def test_folder_with_labels_beside_images_and_classes_txt(tmp_path):
    write_image(tmp_path / "b.JPG")
    write_text(tmp_path / "b.txt", "1 0.5 0.5 0.2 0.2\n")
    write_image(tmp_path / "sub" / "a.png")                     # found recursively, no label: negative
    write_image(tmp_path / ".hidden.jpg")                       # hidden: ignored
    write_text(tmp_path / "notes.gif", "not listed")            # unsupported extension: ignored
    write_text(tmp_path / "classes.txt", "cat\ndog\n")
    d = load_dataset(tmp_path)
    assert d.names == ["cat", "dog"]
    assert [s.image_path.name for s in d.samples] == ["b.JPG", "a.png"]
    assert d.samples[0].gt_classes.tolist() == [1] and d.samples[1].is_negative
    assert d.report.n_missing_label_files == 1
    assert "classes.txt" in d.source


def test_folder_names_required_or_passed(tmp_path):
    yolo_dataset(tmp_path / "ds", {"a": "4 0.5 0.5 0.1 0.1\n"})
    with pytest.raises(DetcalError, match=r"no class names for .*ds"):
        load_dataset(tmp_path / "ds")
    d = load_dataset(tmp_path / "ds", names=[f"c{i}" for i in range(5)])
    assert d.num_classes == 5 and d.samples[0].gt_classes.tolist() == [4]
    with pytest.raises(DetcalError, match=r"class id 4 out of range"):
        load_dataset(tmp_path / "ds", names=["a", "b"])


def test_folder_picks_split_subfolder_and_data_yaml_names(tmp_path):
    yolo_dataset(tmp_path, {"v": "0 0.5 0.5 0.1 0.1\n"}, split="val")
    yolo_dataset(tmp_path, {"t1": "", "t2": ""}, split="train")
    write_text(tmp_path / "data.yaml", "names: {0: only}\n")
    d = load_dataset(tmp_path)               # split="val" -> images/val only
    assert [s.image_path.stem for s in d.samples] == ["v"] and d.names == ["only"]
    assert len(load_dataset(tmp_path, "train")) == 2
    with pytest.raises(DetcalError, match=r"data\.yaml defines 1 classes but 2 names were given"):
        load_dataset(tmp_path, names=["a", "b"])


def test_empty_folder_and_unsupported_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetcalError, match=r"no images found in .*empty"):
        load_dataset(tmp_path / "empty", names=["a"])
    with pytest.raises(DetcalError, match=r"unsupported dataset .*x\.csv"):
        load_dataset(write_text(tmp_path / "x.csv", "a,b\n"))


def test_label_path_rule():
    assert label_path_for(Path("/d/images/train/images/x.jpg")) == Path("/d/images/train/labels/x.txt")
    assert label_path_for(Path("/d/images/x.PNG")) == Path("/d/labels/x.txt")
    assert label_path_for(Path("/d/frames/x.jpg")) == Path("/d/frames/x.txt")


# ------------------------------------------------------------------------------------------ COCO

def coco_json(tmp_path: Path) -> Path:
    write_image(tmp_path / "images" / "p.jpg", 100, 50)
    write_image(tmp_path / "images" / "n.jpg", 100, 50)
    data = {
        "images": [{"id": 7, "file_name": "p.jpg", "width": 100, "height": 50},
                   {"id": 8, "file_name": "n.jpg", "width": 100, "height": 50}],
        "categories": [{"id": 9, "name": "truck"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [90, 40, 20, 20], "iscrowd": 0},   # clipped
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},    # ignored
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [30, 30, 0, 5]},                  # zero size
        ],
    }
    return write_text(tmp_path / "instances_val.json", json.dumps(data))


def test_coco_remaps_categories_and_normalises(tmp_path):
    d = load_dataset(coco_json(tmp_path))
    assert d.names == ["person", "car", "truck"]                   # sorted by category id 1, 3, 9
    assert [s.image_path.name for s in d.samples] == ["n.jpg", "p.jpg"]
    neg, pos = d.samples
    assert neg.is_negative and neg.image_path == tmp_path / "images" / "n.jpg"
    assert pos.gt_classes.tolist() == [1, 2]
    np.testing.assert_allclose(pos.gt_boxes_xyxy_norm, [[0.1, 0.1, 0.3, 0.3], [0.9, 0.8, 1.0, 1.0]])
    np.testing.assert_allclose(pos.gt_boxes_xyxy_px(100, 50), [[10, 5, 30, 15], [90, 40, 100, 50]])
    r = d.report
    assert (r.n_clipped_boxes, r.n_dropped_zero_size, r.n_crowd_ignored, r.n_boxes, r.n_negative) == (1, 1, 1, 2, 1)
    assert any("annotation 2" in x for x in r.details)


def test_coco_images_dir_and_errors(tmp_path):
    path = coco_json(tmp_path)
    (tmp_path / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(DetcalError, match=r"instances_val\.json: none of the first images"):
        load_dataset(path)
    d = load_dataset(path, images_dir=tmp_path / "elsewhere")
    assert d.samples[0].image_path.parent == tmp_path / "elsewhere"

    bad = write_text(tmp_path / "bad.json", '{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DetcalError, match=r"bad\.json:2: invalid JSON"):
        load_dataset(bad)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 42
    with pytest.raises(DetcalError, match=r"annotation 1: category_id 42 is not in 'categories'"):
        load_dataset(write_text(tmp_path / "c.json", json.dumps(data)), images_dir=tmp_path / "elsewhere")
    with pytest.raises(DetcalError, match=r"not a COCO instances JSON, 'annotations'"):
        load_dataset(write_text(tmp_path / "d.json", json.dumps({"images": [], "categories": []})))


# --------------------------------------------------------------------------------------- images

def test_exif_orientation_swaps_width_and_height(tmp_path):
    p = write_image(tmp_path / "rot.jpg", 40, 20, orientation=6)
    assert Image.open(p).size == (40, 20)
    assert image_size(p) == (20, 40)
    rgb = read_image_rgb(p)
    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    np.testing.assert_array_equal(rgb, ref)
    p3 = write_image(tmp_path / "flip.jpg", 40, 20, orientation=3)
    assert image_size(p3) == (40, 20)
    np.testing.assert_array_equal(read_image_rgb(p3), np.asarray(ImageOps.exif_transpose(Image.open(p3)).convert("RGB")))


def test_image_modes_are_rgb(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 0)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 5), 0x1234, dtype=np.uint16)).save(tmp_path / "d.png")
    assert read_image_rgb(tmp_path / "g.png")[0, 0].tolist() == [77, 77, 77]
    assert read_image_rgb(tmp_path / "a.png")[0, 0].tolist() == [1, 2, 3]
    assert read_image_rgb(tmp_path / "d.png").shape == (4, 5, 3)
    assert read_image_rgb(tmp_path / "d.png")[0, 0].tolist() == [0x12] * 3


def test_unreadable_image_errors_name_the_file(tmp_path):
    bad = write_text(tmp_path / "bad.jpg", "this is not a jpeg")
    with pytest.raises(DetcalError, match=r"cannot read image .*bad\.jpg"):
        read_image_rgb(bad)
    with pytest.raises(DetcalError, match=r"cannot read image .*bad\.jpg"):
        image_size(bad)
    good = write_image(tmp_path / "t.jpg", 64, 64)
    (tmp_path / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DetcalError, match=r"trunc\.jpg"):
        read_image_rgb(tmp_path / "trunc.jpg")
    with pytest.raises(DetcalError, match=r"missing\.jpg: file not found"):
        read_image_rgb(tmp_path / "missing.jpg")


def _with_corrupt(tmp_path: Path, n_good: int, n_bad: int):
    labels = {f"g{i:02d}": "" for i in range(n_good)}
    yolo_dataset(tmp_path, labels)
    for i in range(n_bad):
        write_text(tmp_path / "images" / "val" / f"z_bad{i}.jpg", "corrupt")
    return load_dataset(tmp_path, names=["x"])


@pytest.mark.parametrize("workers", [0, 2])
def test_iter_images_skips_and_counts_unreadable(tmp_path, workers):
    d = _with_corrupt(tmp_path, 19, 1)                       # 1 of 20 = 5%: allowed
    seen = [(s.image_path.name, img.shape) for s, img in iter_images(d, workers=workers)]
    assert [n for n, _ in seen] == [f"g{i:02d}.jpg" for i in range(19)]
    assert all(shape == (12, 16, 3) for _, shape in seen)
    assert d.report.n_unreadable_images == 1
    assert any("z_bad0.jpg" in x for x in d.report.details)
    list(iter_images(d, workers=workers))                    # a second pass does not double-count
    assert d.report.n_unreadable_images == 1


def test_iter_images_stops_over_five_percent(tmp_path):
    d = _with_corrupt(tmp_path, 18, 2)                       # 2 of 20 = 10%, found at the very end
    with pytest.raises(DetcalError, match=r"^2 of 20 images \(10%\) could not be read, e\.g\. .*z_bad0\.jpg: "):
        list(iter_images(d))
    d2 = LabelReport()
    assert d2.n_unreadable_images == 0
    bad_first = load_dataset(tmp_path, names=["x"])
    bad_first.samples.sort(key=lambda s: not s.image_path.name.startswith("z_"))   # failures first
    with pytest.raises(DetcalError, match=r"^at least 2 of 20 images \(10%\) could not be read \(more than the 5% allowed\)"):
        for _ in iter_images(bad_first, workers=2):
            pass


def test_iter_images_transform_runs_per_image(tmp_path):
    d = _with_corrupt(tmp_path, 3, 0)
    out = list(iter_images(d, transform=lambda rgb: rgb.shape[:2], workers=2))
    assert [x for _, x in out] == [(12, 16)] * 3


def test_sample_is_immutable_and_validated():
    s = Sample(Path("a.jpg"), np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([2]))
    assert not s.gt_boxes_xyxy_norm.flags.writeable and s.gt_boxes_xyxy_norm.dtype == np.float64
    with pytest.raises(ValueError):
        s.gt_boxes_xyxy_norm[0, 0] = 1
    np.testing.assert_allclose(s.gt_boxes_xyxy_px(10, 100), [[1, 20, 3, 40]])
    empty = Sample(Path("b.jpg"), np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert empty.is_negative and empty.gt_boxes_xyxy_px(5, 5).shape == (0, 4)
    with pytest.raises(ValueError):
        Sample(Path("c.jpg"), np.zeros((2, 4)), np.zeros(1, dtype=np.int64))


def test_folder_with_split_folders_refuses_a_split_it_lacks(tmp_path):
    """images/ holding only split folders and no folder for the asked split: an error naming the
    splits present, never every split's images mixed (the fitting images in an evaluation)."""
    yolo_dataset(tmp_path, {"v": "0 0.5 0.5 0.1 0.1\n"}, split="val")
    yolo_dataset(tmp_path, {"t1": "", "t2": ""}, split="train")
    write_text(tmp_path / "classes.txt", "a\n")
    for split in ("test", "tset"):
        with pytest.raises(DetcalError, match=rf"no split '{split}' under images/ \(splits present: train, val\)"):
            load_dataset(tmp_path, split)
    assert len(load_dataset(tmp_path, "valid")) == 1               # an alias of val still finds it
    flat = tmp_path / "flat"
    yolo_dataset(flat, {"a": "0 0.5 0.5 0.1 0.1\n", "b": ""}, split="")
    write_text(flat / "classes.txt", "a\n")
    assert len(load_dataset(flat, "test")) == 2                    # no split folders: the folder is the set


@pytest.mark.parametrize("line", ["0 64 40 20 18", "0 0.5 0.5 2.5 0.1", "1 10 20 30 20 30 60 10 60"])
def test_labels_in_pixels_are_refused_naming_the_line(tmp_path, line):
    """YOLO labels written in pixels would be clipped to nothing, the image then taken for a negative
    scene: refused, naming the file and line. Slips just past the edge (x2 = 1.05) stay clipped."""
    yolo_dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.2 0.2\n", "b": f"0 0.95 0.5 0.2 0.2\n{line}\n"})
    with pytest.raises(DetcalError, match=r"b\.txt:2: coordinate .* look like pixels"):
        load_dataset(tmp_path / "ds", names=["x", "y"])


def test_coco_size_that_differs_from_the_image_skips_it_with_the_reason(tmp_path):
    """COCO boxes are normalised by the JSON's width/height: an image of another size (a resized
    copy, an EXIF rotation the JSON did not follow) would get misplaced boxes, so iter_images skips
    it as unreadable, naming both sizes; the 5% rule then stops a run where many disagree."""
    path = coco_json(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["width"] = 200                  # p.jpg (with boxes) is 100x50
    path.write_text(json.dumps(data))
    d = load_dataset(path)
    pos = next(s for s in d.samples if s.image_path.name == "p.jpg")
    assert pos.labelled_size == (200, 50)
    read = [s.image_path.name for s, _ in iter_images(d, max_unreadable_frac=0.5)]
    assert read == ["n.jpg"] and d.report.n_unreadable_images == 1
    assert any("labelled as 200x50 (COCO width/height) but the image is 100x50" in x for x in d.report.details)
    with pytest.raises(DetcalError, match=r"labelled as 200x50"):
        list(iter_images(load_dataset(path)))
    data["images"][0]["width"] = 100                  # agreeing sizes: read as before
    path.write_text(json.dumps(data))
    assert len(list(iter_images(load_dataset(path)))) == 2


def test_classes_are_renumbered_to_the_models_names_when_the_same_names_come_in_another_order(tmp_path):
    """A COCO JSON whose category ids sort otherwise than the model's classes (or a classes.txt in
    another order): with the model's `names` metadata holding the same names, ids follow the model;
    other names, or the same order, leave the data set as it is."""
    from types import SimpleNamespace

    from calib.model_info import reorder_to_model_names

    d = load_dataset(coco_json(tmp_path))                   # names person, car, truck; p.jpg: car, truck
    pos = next(s for s in d.samples if s.image_path.name == "p.jpg")
    assert pos.gt_classes.tolist() == [1, 2]
    r = reorder_to_model_names(d, SimpleNamespace(class_names=["truck", "person", "car"]))
    assert r.names == ["truck", "person", "car"]
    rpos = next(s for s in r.samples if s.image_path.name == "p.jpg")
    assert rpos.gt_classes.tolist() == [2, 0] and [r.names[c] for c in rpos.gt_classes] == ["car", "truck"]
    assert rpos.crowd_classes.tolist() == [1]               # the crowd region of class person
    np.testing.assert_array_equal(rpos.gt_boxes_xyxy_norm, pos.gt_boxes_xyxy_norm)
    assert "renumbered to the model's names order" in r.report.summary() and not d.report.class_order
    for names in (["person", "car", "truck"], ["a", "b", "c"], None, ["person", "car"]):
        assert reorder_to_model_names(d, SimpleNamespace(class_names=names)) is d
