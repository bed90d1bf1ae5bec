"""A tiny YOLO-style detector (torch), three levels at strides 8, 16 and 32.

Two heads, chosen by `layout`:

* `xywh_cls` (anchor-free, YOLOv8 style): one prediction per grid cell; the exported graph
  ends like Ultralytics, Concat(boxes, Sigmoid(class_logits)) on axis 1 -> [B, 4+C, N].
* `xywh_obj_cls` (anchor-based, YOLOv5 style): 3 anchors per level (k-means on training boxes);
  export -> [B, N, 5+C] = cx, cy, w, h, sigmoid(objectness), sigmoid(class logits).

Boxes are cx, cy, w, h in input pixels. Box decoding is shared: xy = (grid + 2*sigmoid(t) - 0.5)
* stride, wh = (2*sigmoid(t))**2 * anchor, where the anchor-free head uses one square anchor of
4*stride per level. The prediction order N is level by level (stride 8 first), then anchor, then
row-major cells.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STRIDES = (8, 16, 32)
LAYOUTS = ("xywh_cls", "xywh_obj_cls")


class ConvBNAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class TinyYolo(nn.Module):
    def __init__(self, num_classes: int, layout: str = "xywh_cls", anchors=None, width=(16, 32, 48, 64, 96)):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.nc = num_classes
        c1, c2, c3, c4, c5 = width
        self.stem = nn.Sequential(ConvBNAct(3, c1, 3, 2), ConvBNAct(c1, c2, 3, 2))          # /4
        self.s3 = nn.Sequential(ConvBNAct(c2, c3, 3, 2), ConvBNAct(c3, c3, 3, 1))           # /8
        self.s4 = nn.Sequential(ConvBNAct(c3, c4, 3, 2), ConvBNAct(c4, c4, 3, 1))           # /16
        self.s5 = nn.Sequential(ConvBNAct(c4, c5, 3, 2), ConvBNAct(c5, c5, 3, 1))           # /32
        self.n4 = ConvBNAct(c4 + c5, c4, 3, 1)
        self.n3 = ConvBNAct(c3 + c4, c3, 3, 1)
        if layout == "xywh_cls":
            self.na = 1
            anchors = [[[4.0 * s, 4.0 * s]] for s in STRIDES]
            self.no = 4 + num_classes
        else:
            if anchors is None:
                anchors = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                           [[116, 90], [156, 198], [373, 326]]]
            self.na = 3
            self.no = 5 + num_classes
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(3, self.na, 2))
        self.heads = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, c, 3, 1), nn.Conv2d(c, self.na * self.no, 1)) for c in (c3, c4, c5)
        )
        self.export = False
        self._init_biases()

    def _init_biases(self):
        # prior: few objects per cell (YOLOv5's trick), keeps early training stable
        import math

        for head, s in zip(self.heads, STRIDES):
            b = head[-1].bias.view(self.na, self.no)
            with torch.no_grad():
                b.zero_()
                if self.layout == "xywh_obj_cls":
                    b[:, 4] = math.log(8 / (320 / s) ** 2)
                    b[:, 5:] = math.log(0.6 / (self.nc - 0.99))
                else:
                    b[:, 4:] = math.log(5 / self.nc / (320 / s) ** 2)

    def raw(self, x):
        """Per level raw maps: list of [B, na, ny, nx, no]."""
        p3 = self.s3(self.stem(x))
        p4 = self.s4(p3)
        p5 = self.s5(p4)
        # upsample to the skip's size: sizes that are multiples of 16 but not 32 (208) work too
        f4 = self.n4(torch.cat([p4, F.interpolate(p5, size=p4.shape[2:], mode="nearest")], 1))
        f3 = self.n3(torch.cat([p3, F.interpolate(f4, size=p3.shape[2:], mode="nearest")], 1))
        outs = []
        for head, f in zip(self.heads, (f3, f4, p5)):
            y = head(f)
            ny, nx = y.shape[2], y.shape[3]
            outs.append(y.view(-1, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2))
        return outs

    def decode_level(self, y, i: int):
        """y [B, na, ny, nx, no] raw -> (xywh [B, na, ny, nx, 4] input pixels, logits [B, na, ny, nx, no-4])."""
        ny, nx = int(y.shape[2]), int(y.shape[3])
        gy, gx = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32),
                                indexing="ij")
        grid = torch.stack([gx, gy], -1).view(1, 1, ny, nx, 2)
        s = torch.sigmoid(y[..., :4])
        xy = (grid + s[..., :2] * 2 - 0.5) * STRIDES[i]
        wh = (s[..., 2:4] * 2) ** 2 * self.anchors[i].view(1, self.na, 1, 1, 2)
        return torch.cat([xy, wh], -1), y[..., 4:]

    def forward(self, x):
        outs = self.raw(x)
        if not self.export:
            return outs
        boxes, logits = [], []
        for i, y in enumerate(outs):
            b, l = self.decode_level(y, i)
            boxes.append(b.reshape(-1, b.shape[1] * b.shape[2] * b.shape[3], 4))
            logits.append(l.reshape(-1, l.shape[1] * l.shape[2] * l.shape[3], l.shape[4]))
        box = torch.cat(boxes, 1)      # [B, N, 4]
        logit = torch.cat(logits, 1)   # [B, N, C] or [B, N, 1+C]
        if self.layout == "xywh_cls":
            # Ultralytics ending: Concat(boxes, Sigmoid(class logits)) on axis 1 -> [B, 4+C, N]
            return torch.cat([box.transpose(1, 2), torch.sigmoid(logit.transpose(1, 2))], 1)
        return torch.cat([box, torch.sigmoid(logit)], 2)  # [B, N, 5+C]


def kmeans_anchors(wh, n: int = 9, seed: int = 0, iters: int = 100):
    """k-means on box sizes with 1 - IoU distance. wh (M, 2) pixels -> (n, 2) sorted by area."""
    import numpy as np

    wh = np.asarray(wh, np.float64)
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), n, replace=False)]
    for _ in range(iters):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
        iou = inter / (wh[:, None].prod(-1) + centres[None].prod(-1) - inter)
        assign = iou.argmax(1)
        new = np.array([np.median(wh[assign == k], 0) if (assign == k).any() else centres[k] for k in range(n)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model: TinyYolo, path, imgsz: int, names, metadata: dict | None = None) -> None:
    """Export to ONNX (opset 17, dynamic batch 'batch', input 'images' [B,3,imgsz,imgsz] RGB 0..1,
    output 'output0') with Ultralytics-style metadata_props. Written to a temp file, then renamed."""
    import os
    import warnings

    import onnx

    model = model.eval()
    model.export = True
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    tmp = str(path) + ".tmp"
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, dummy, tmp, opset_version=17, input_names=["images"], output_names=["output0"],
                dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, dynamo=False,
            )
    finally:
        model.export = False
    m = onnx.load(tmp)
    props = {
        "names": repr({i: n for i, n in enumerate(names)}),
        "stride": str(max(STRIDES)),
        "imgsz": repr([imgsz, imgsz]),
        "task": "detect",
        "layout": model.layout,
    }
    props.update({k: str(v) for k, v in (metadata or {}).items()})
    del m.metadata_props[:]
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    m.producer_name = "detcal-examples"
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, tmp)
    os.replace(tmp, path)
