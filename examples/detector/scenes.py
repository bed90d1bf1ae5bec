"""Deterministic synthetic scenes for the reference detector (numpy + Pillow only).

Everything here is a pure function of a seed. Three products:

* positive deployment scenes: objects of `CLASS_NAMES` on textured, cluttered backgrounds;
* negative deployment scenes: uniform surfaces (asphalt, painted wall, sky, flat colour)
  with sensor noise, blur and lighting changes, and no objects at all;
* training samples (`training_sample`): 4-tile mosaics drawn directly at the training size.

Deployment scenes are rendered at a base resolution whose long side is `BASE` (320, the
training size, so a scene seen at 320 looks like the training data) and then resized to the
deployment size (several aspect ratios, landscape and portrait) with a little extra fine
sensor noise. `write_dataset` writes them in the Ultralytics layout.

Boxes returned by the scene functions are `xyxy` in pixels of the returned image; label files
are YOLO `cls cx cy w h`, normalised to [0, 1].
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from calib.boxes import box_iou

CLASS_NAMES: tuple[str, ...] = ("circle", "bar", "triangle", "cross", "panel")
BASE = 320  # long side of the base rendering = training resolution

# deployment sizes (width, height): 4:3, 16:9, portrait 3:4 and 9:16, 3:2, square
DEPLOY_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480), (640, 360), (480, 640), (360, 640), (600, 400), (512, 512), (560, 420), (704, 396),
)

# colours of uniform surfaces (RGB); panels and "surface" backgrounds reuse them
_SURFACE_PALETTE = np.array(
    [
        [92, 92, 96], [70, 72, 75], [118, 116, 112],          # asphalt greys
        [214, 206, 190], [190, 180, 160], [160, 175, 150],    # wall paints
        [200, 120, 90], [230, 230, 225], [120, 150, 190],
        [135, 180, 230], [170, 200, 235],                      # sky blues
        [60, 60, 60], [150, 150, 150], [200, 200, 200],
    ],
    dtype=np.float32,
)


# ----------------------------------------------------------------------------- textures

def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], shape (h, w), feature size about `cell` pixels."""
    cell = max(float(cell), 1.0)
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    up = Image.fromarray(grid, mode="F").resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32)[:h, :w]


def _grain(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Sensor grain (h, w, 3): mostly luminance noise plus a little chroma noise."""
    lum = rng.standard_normal((h, w, 1), dtype=np.float32) * sigma
    chroma = rng.standard_normal((h, w, 3), dtype=np.float32) * (0.35 * sigma)
    return lum + chroma


def _rand_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured background (h, w, 3) float32 0..255, always with visible grain."""
    kind = rng.integers(0, 5)
    base = _rand_colour(rng)
    if kind == 0:  # multi-octave texture
        img = np.zeros((h, w, 3), np.float32) + base
        for cell, amp in ((rng.uniform(24, 64), rng.uniform(20, 60)), (rng.uniform(4, 12), rng.uniform(8, 30))):
            n = _value_noise(rng, h, w, cell) - 0.5
            tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            img += n[..., None] * amp * tint
    elif kind == 1:  # gradient between two colours
        c2 = _rand_colour(rng)
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * np.cos(ang) + yy * np.sin(ang))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = base + (c2 - base) * t[..., None]
        img += (_value_noise(rng, h, w, rng.uniform(6, 20)) - 0.5)[..., None] * rng.uniform(10, 30)
    elif kind == 2:  # clutter: lines, arcs and blotches, low contrast
        img = np.zeros((h, w, 3), np.float32) + base
        img += (_value_noise(rng, h, w, rng.uniform(10, 40)) - 0.5)[..., None] * 30
        layer = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(6, 20))):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            x1, y1 = x0 + rng.normal(0, w / 4), y0 + rng.normal(0, h / 4)
            if rng.random() < 0.6:
                d.line([x0, y0, x1, y1], fill=int(rng.integers(60, 255)), width=int(rng.integers(1, 4)))
            else:
                bb = [min(x0, x1), min(y0, y1), max(x0, x1) + 2, max(y0, y1) + 2]
                d.arc(bb, float(rng.uniform(0, 360)), float(rng.uniform(0, 360)),
                      fill=int(rng.integers(60, 255)), width=int(rng.integers(1, 3)))
        m = np.asarray(layer, np.float32)[..., None] / 255.0
        img = img * (1 - 0.5 * m) + _rand_colour(rng) * (0.5 * m)
    elif kind == 3:  # stripes / checker
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(6, 30)
        ang = rng.uniform(0, np.pi)
        s = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
        if rng.random() < 0.4:
            s = s * np.sin((-xx * np.sin(ang) + yy * np.cos(ang)) * 2 * np.pi / period)
        img = base + s[..., None] * rng.uniform(10, 40)
    else:  # surface-like (asphalt / wall / sky colours), but in training always with objects on it
        img = np.zeros((h, w, 3), np.float32) + _SURFACE_PALETTE[rng.integers(len(_SURFACE_PALETTE))]
        img += (_value_noise(rng, h, w, rng.uniform(2, 6)) - 0.5)[..., None] * rng.uniform(10, 30)
        img += (_value_noise(rng, h, w, rng.uniform(40, 120)) - 0.5)[..., None] * rng.uniform(5, 25)
    img += _grain(rng, h, w, rng.uniform(6.0, 20.0))
    return img


# ----------------------------------------------------------------------------- objects

def _object_mask(rng: np.random.Generator, cls: int, cx: float, cy: float, size: float, w: int, h: int):
    """Draw one object's mask. Returns (mask (h, w) float32 0..1, box xyxy) or None if out of frame."""
    layer = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(layer)
    name = CLASS_NAMES[cls]
    if name == "circle":
        a = size / 2
        b = a * rng.uniform(0.8, 1.25)
        box = [cx - a, cy - b, cx + a, cy + b]
        d.ellipse(box, fill=255)
    elif name == "bar":  # tall and thin
        bw = max(size * rng.uniform(0.14, 0.3), 3.0)
        bh = size
        box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        d.rectangle(box, fill=255)
    elif name == "triangle":
        a = size / 2
        hh = a * rng.uniform(0.8, 1.2)
        pts = [(cx, cy - hh), (cx + a, cy + hh), (cx - a, cy + hh)]
        if rng.random() < 0.5:  # pointing down
            pts = [(cx, cy + hh), (cx + a, cy - hh), (cx - a, cy - hh)]
        d.polygon(pts, fill=255)
        box = [cx - a, cy - hh, cx + a, cy + hh]
    elif name == "cross":
        a = size / 2
        t = size * rng.uniform(0.12, 0.2)
        d.rectangle([cx - a, cy - t, cx + a, cy + t], fill=255)
        d.rectangle([cx - t, cy - a, cx + t, cy + a], fill=255)
        box = [cx - a, cy - a, cx + a, cy + a]
    else:  # panel: a large flat rectangle
        pw = size * rng.uniform(0.7, 1.3)
        ph = size * rng.uniform(0.6, 1.2)
        box = [cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2]
        d.rectangle(box, fill=255)
    box = np.array(box, np.float32)
    if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
        return None
    return np.asarray(layer, np.float32) / 255.0, box


# object size ranges in pixels at the training resolution (longest side of the object)
_SIZE_RANGE = {"circle": (8, 80), "bar": (20, 90), "triangle": (14, 80), "cross": (14, 70), "panel": (70, 190)}


def _paint_object(rng, img: np.ndarray, mask: np.ndarray, box: np.ndarray) -> None:
    """Composite a flat-coloured object (little or no grain) into img in place."""
    x0, y0, x1, y1 = [int(v) for v in (np.floor(box[0]), np.floor(box[1]), np.ceil(box[2]), np.ceil(box[3]))]
    x1, y1 = min(x1 + 1, img.shape[1]), min(y1 + 1, img.shape[0])
    region = img[y0:y1, x0:x1]
    m = mask[y0:y1, x0:x1, None]
    bg_mean = region.reshape(-1, 3).mean(0)
    for _ in range(8):  # colour that stands out from the local background
        col = _rand_colour(rng) if rng.random() < 0.6 else _SURFACE_PALETTE[rng.integers(len(_SURFACE_PALETTE))].copy()
        if np.abs(col - bg_mean).max() > 50:
            break
    hh, ww = region.shape[:2]
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    shade = (xx / max(ww, 1) - 0.5) * rng.uniform(-15, 15) + (yy / max(hh, 1) - 0.5) * rng.uniform(-15, 15)
    fill = col + shade[..., None] + _grain(rng, hh, ww, rng.uniform(0.0, 1.5))
    region[...] = region * (1 - m) + fill * m


def _place_objects(rng, img: np.ndarray, n: int, scale: float, area=None):
    """Place up to n non-overlapping objects into img (in place) inside area (x0, y0, x1, y1).

    Returns boxes (K, 4) xyxy pixels and classes (K,) int.
    """
    h, w = img.shape[:2]
    ax0, ay0, ax1, ay1 = area if area is not None else (0, 0, w, h)
    boxes, classes = [], []
    for _ in range(n):
        for _try in range(6):
            cls = int(rng.integers(len(CLASS_NAMES)))
            lo, hi = _SIZE_RANGE[CLASS_NAMES[cls]]
            size = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * scale
            if size > 0.95 * min(ax1 - ax0, ay1 - ay0):
                continue
            cx, cy = rng.uniform(ax0 + size / 2, ax1 - size / 2), rng.uniform(ay0 + size / 2, ay1 - size / 2)
            out = _object_mask(rng, cls, cx, cy, size, w, h)
            if out is None:
                continue
            mask, box = out
            if box[0] < ax0 or box[1] < ay0 or box[2] > ax1 or box[3] > ay1:
                continue
            if boxes and box_iou(box[None], np.array(boxes)).max() > 0.0:
                continue
            if max(box[2] - box[0], box[3] - box[1]) < 8:
                continue
            _paint_object(rng, img, mask, box)
            boxes.append(box)
            classes.append(cls)
            break
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


# ----------------------------------------------------------------------------- negatives

NEGATIVE_KINDS: tuple[str, ...] = ("asphalt", "wall", "sky", "flat")


def _negative_base(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uniform surface with no objects, (h, w, 3) float32 0..255."""
    kind = NEGATIVE_KINDS[int(rng.integers(len(NEGATIVE_KINDS)))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "asphalt":
        g = rng.uniform(60, 125)
        img = np.zeros((h, w, 3), np.float32) + np.array([g, g, g * rng.uniform(0.98, 1.06)], np.float32)
        img += (_value_noise(rng, h, w, rng.uniform(1.5, 3.0)) - 0.5)[..., None] * rng.uniform(6, 16)
        img += (_value_noise(rng, h, w, rng.uniform(60, 160)) - 0.5)[..., None] * rng.uniform(4, 16)
    elif kind == "wall":
        col = _SURFACE_PALETTE[3 + int(rng.integers(6))] + rng.normal(0, 10, 3).astype(np.float32)
        img = np.zeros((h, w, 3), np.float32) + col
        img += (_value_noise(rng, h, w, rng.uniform(2, 4)) - 0.5)[..., None] * rng.uniform(2, 8)
    elif kind == "sky":
        top = np.array([rng.uniform(60, 130), rng.uniform(110, 170), rng.uniform(190, 245)], np.float32)
        bottom = np.array([rng.uniform(170, 225), rng.uniform(195, 235), rng.uniform(225, 252)], np.float32)
        t = (yy / max(h - 1, 1))[..., None]
        img = top + (bottom - top) * t
    else:
        img = np.zeros((h, w, 3), np.float32) + _rand_colour(rng)
    # lighting: a soft gradient or vignette and a global gain
    ang = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(ang) + yy * np.sin(ang)) / max(h, w)
    gain = rng.uniform(0.7, 1.25) * (1 + rng.uniform(-0.15, 0.15) * t)
    img = img * gain[..., None]
    img += _grain(rng, h, w, rng.uniform(*NEGATIVE_GRAIN))
    if rng.random() < 0.3:  # a little defocus blur
        img = np.asarray(Image.fromarray(_to_uint8(img)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8))),
                         np.float32)
    return img


# grain sigma of negative surfaces at the base (training) resolution
NEGATIVE_GRAIN: tuple[float, float] = (4.0, 12.0)


# ----------------------------------------------------------------------------- scenes

def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _finish(rng, base: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize the base rendering to the deployment size and add fine sensor noise -> uint8."""
    up = Image.fromarray(_to_uint8(base)).resize(size_wh, Image.BICUBIC)
    out = np.asarray(up, np.float32) + _grain(rng, size_wh[1], size_wh[0], rng.uniform(1.0, 3.0))
    return _to_uint8(out)


def _base_shape(size_wh: tuple[int, int]) -> tuple[int, int]:
    w, h = size_wh
    s = BASE / max(w, h)
    return max(int(round(h * s)), 1), max(int(round(w * s)), 1)


def positive_scene(seed, sizes=DEPLOY_SIZES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deployment scene with objects; its size (width, height) is drawn from `sizes`.

    Returns image (H, W, 3) uint8 RGB, boxes (K, 4) xyxy pixels of that image, classes (K,) int64.
    """
    rng = np.random.default_rng(seed)
    size_wh = sizes[int(rng.integers(len(sizes)))]
    bh, bw = _base_shape(size_wh)
    img = _background(rng, bh, bw)
    boxes, classes = _place_objects(rng, img, int(rng.integers(1, 7)), rng.uniform(0.6, 1.2))
    if len(boxes) == 0:  # always at least one object
        boxes, classes = _place_objects(rng, img, 1, 0.5)
    scale = np.array([size_wh[0] / bw, size_wh[1] / bh] * 2, np.float32)
    return _finish(rng, img, size_wh), boxes * scale, classes


def negative_scene(seed, sizes=DEPLOY_SIZES) -> np.ndarray:
    """A deployment scene of a uniform surface with no objects: (H, W, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    size_wh = sizes[int(rng.integers(len(sizes)))]
    bh, bw = _base_shape(size_wh)
    return _finish(rng, _negative_base(rng, bh, bw), size_wh)


# mosaic recipe: share of tiles left at pad grey, share of tiles filled by one big panel
TILE_PAD_P = 0.12
TILE_PANEL_P = 0.25


def training_sample(seed, imgsz: int = BASE, *, pad_p: float = TILE_PAD_P, panel_p: float = TILE_PANEL_P
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training image: a 4-tile mosaic (sometimes a single scene) at imgsz x imgsz.

    Every tile has its own background and at least one object where one fits, or is one
    big flat panel filling most of the tile, or (as in Ultralytics' mosaic) is left at the
    pad grey 114; there are no negative (object-free) scenes in training. `pad_p` and
    `panel_p` are the shares of mosaic tiles of the last two kinds (0, 0 = the first recipe). Returns image (imgsz, imgsz, 3) uint8 RGB,
    boxes (K, 4) xyxy pixels, classes (K,) int64.
    """
    rng = np.random.default_rng(seed)
    img = np.zeros((imgsz, imgsz, 3), np.float32)
    all_boxes, all_classes = [np.zeros((0, 4), np.float32)], [np.zeros((0,), np.int64)]
    if rng.random() < 0.25:
        tiles = [(0, 0, imgsz, imgsz)]
    else:
        xc = int(rng.uniform(0.3, 0.7) * imgsz)
        yc = int(rng.uniform(0.3, 0.7) * imgsz)
        tiles = [(0, 0, xc, yc), (xc, 0, imgsz, yc), (0, yc, xc, imgsz), (xc, yc, imgsz, imgsz)]
    for x0, y0, x1, y1 in tiles:
        img[y0:y1, x0:x1] = _background(rng, y1 - y0, x1 - x0)
    for x0, y0, x1, y1 in tiles:
        # no extra draw when both are 0: the first recipe's samples stay bit-identical
        u = rng.random() if (pad_p > 0 or panel_p > 0) else 1.0
        if len(tiles) > 1 and u < pad_p:
            # Ultralytics-style mosaic: part of the canvas left at the pad grey 114
            img[y0:y1, x0:x1] = 114.0
            continue
        if len(tiles) > 1 and u < pad_p + panel_p:
            # a panel that fills most of its tile (flat colour, shading, almost no grain)
            tw, th = x1 - x0, y1 - y0
            pw, ph = tw * rng.uniform(0.8, 1.0), th * rng.uniform(0.8, 1.0)
            px0 = x0 + rng.uniform(0, tw - pw)
            py0 = y0 + rng.uniform(0, th - ph)
            box = np.array([px0, py0, px0 + pw, py0 + ph], np.float32)
            layer = Image.new("L", (imgsz, imgsz), 0)
            ImageDraw.Draw(layer).rectangle(box.tolist(), fill=255)
            _paint_object(rng, img, np.asarray(layer, np.float32) / 255.0, box)
            all_boxes.append(box[None])
            all_classes.append(np.array([CLASS_NAMES.index("panel")], np.int64))
            continue
        scale = float(np.exp(rng.uniform(np.log(0.5), np.log(1.4))))
        n = int(rng.integers(1, 5))
        b, c = _place_objects(rng, img, n, scale, area=(x0, y0, x1, y1))
        all_boxes.append(b)
        all_classes.append(c)
    # photometric jitter on the whole image
    img = img * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    boxes = np.concatenate(all_boxes, 0)
    classes = np.concatenate(all_classes, 0)
    if rng.random() < 0.5:  # horizontal flip
        img = img[:, ::-1]
        boxes = np.stack([imgsz - boxes[:, 2], boxes[:, 1], imgsz - boxes[:, 0], boxes[:, 3]], 1)
    return _to_uint8(img), boxes.astype(np.float32), classes


# ----------------------------------------------------------------------------- dataset

def _yolo_lines(boxes: np.ndarray, classes: np.ndarray, w: int, h: int) -> str:
    lines = []
    for (x0, y0, x1, y1), c in zip(boxes, classes):
        x0, x1 = max(0.0, float(x0)), min(float(w), float(x1))
        y0, y1 = max(0.0, float(y0)), min(float(h), float(y1))
        lines.append(f"{int(c)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_dataset(
    root,
    *,
    n_val_pos: int,
    n_val_neg: int,
    n_test_pos: int,
    n_test_neg: int,
    seed: int,
    image_size_range=None,
) -> Path:
    """Write a deployment data set in the Ultralytics layout and return the data.yaml path.

    root/data.yaml (path, val, test, names), root/images/{val,test}/*.jpg,
    root/labels/{val,test}/*.txt (YOLO `cls cx cy w h` normalised; negatives get an empty file).
    File names: pos_00000.jpg / neg_00000.jpg. The same arguments write identical bytes.
    `image_size_range`: optional (min_long_side, max_long_side) filter on DEPLOY_SIZES; by
    default every size is used.
    """
    import yaml

    root = Path(root)
    sizes = DEPLOY_SIZES
    if image_size_range is not None:
        lo, hi = image_size_range
        sizes = tuple(s for s in DEPLOY_SIZES if lo <= max(s) <= hi)
        if not sizes:
            raise ValueError(f"image_size_range {image_size_range} matches no deployment size {DEPLOY_SIZES}")
    for split, n_pos, n_neg, tag in (("val", n_val_pos, n_val_neg, 1), ("test", n_test_pos, n_test_neg, 2)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n_pos):
            img, boxes, classes = positive_scene((seed, tag, 0, i), sizes)
            h, w = img.shape[:2]
            _save(root / "images" / split / f"pos_{i:05d}.jpg", img)
            _write_text(root / "labels" / split / f"pos_{i:05d}.txt", _yolo_lines(boxes, classes, w, h))
        for i in range(n_neg):
            img = negative_scene((seed, tag, 1, i), sizes)
            _save(root / "images" / split / f"neg_{i:05d}.jpg", img)
            _write_text(root / "labels" / split / f"neg_{i:05d}.txt", "")
    data = {"path": str(root.resolve()), "val": "images/val", "test": "images/test", "names": list(CLASS_NAMES)}
    _write_text(root / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def _save(path: Path, img: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(img).save(tmp, format="JPEG", quality=92)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
