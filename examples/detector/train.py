"""Train the reference detector from scratch on generated scenes, export it to ONNX, measure it.

    python -m examples.detector.train --layout xywh_cls --out examples/models/detector_xywh_cls.onnx
    python examples/detector/train.py --layout xywh_obj_cls --out examples/models/detector_xywh_obj_cls.onnx

Deterministic from --seed: every training image is scenes.training_sample((seed, step, j)),
torch runs single-threaded with deterministic algorithms. Besides the model at the training
size (--imgsz, 320) it writes the same weights exported at --serve-imgsz (208) next to it as
`<out>_<serve>.onnx`, and prints detection quality and the negative-scene false positives at both
sizes. The decode + NMS here is a small stand-alone one for this report only; the project's
real pipeline lives in calib/.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python examples/detector/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.detector"

import numpy as np
import torch
import torch.nn.functional as F

from calib.boxes import cxcywh_to_xyxy
from calib.letterbox import input_to_original_xyxy, letterbox_image
from calib.nms import batched_nms_xyxy
from examples.detector import scenes
from examples.detector.model import STRIDES, TinyYolo, export_onnx, kmeans_anchors, num_params

EVAL_DATA_SEED = 1234  # eval scenes = the test split of scenes.write_dataset(..., seed=1234)


# ----------------------------------------------------------------------------- data

def make_batch(seed: int, step: int, batch: int, imgsz: int, pad_p: float = scenes.TILE_PAD_P,
               panel_p: float = scenes.TILE_PANEL_P):
    """-> images [B,3,S,S] float 0..1, targets [M, 6] (batch_index, cls, cx, cy, w, h) pixels."""
    imgs, targets = [], []
    for j in range(batch):
        img, boxes, classes = scenes.training_sample((seed, step, j), imgsz, pad_p=pad_p, panel_p=panel_p)
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        cxcywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                           boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) if len(boxes) else np.zeros((0, 4))
        t = np.concatenate([np.full((len(boxes), 1), j), classes[:, None], cxcywh], 1)
        targets.append(torch.from_numpy(t.astype(np.float32)))
    return torch.stack(imgs).float() / 255.0, torch.cat(targets, 0)


# ----------------------------------------------------------------------------- loss

def giou_cxcywh(a, b):
    """Elementwise GIoU of (M, 4) cxcywh boxes."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + 1e-7
    iou = inter / union
    hull = (torch.max(a2, b2) - torch.min(a1, b1)).clamp(min=0).prod(1) + 1e-7
    return iou - (hull - union) / hull


def build_targets(model: TinyYolo, outs, targets):
    """YOLOv5-style assignment: anchor match by size ratio < 4, the centre cell plus the two
    nearest neighbour cells. Returns per level (b, a, gy, gx, cls, gt cxcywh)."""
    res = []
    for i, y in enumerate(outs):
        s = STRIDES[i]
        ny, nx = y.shape[2], y.shape[3]
        anchors = model.anchors[i]  # (na, 2)
        if len(targets) == 0:
            res.append(None)
            continue
        wh = targets[:, 4:6]
        if model.layout == "xywh_cls":
            r = wh.max(1, keepdim=True)[0] / anchors[None, :, 0]
            match = (r > 0.25) & (r < 4.0)
        else:
            r = wh[:, None, :] / anchors[None]
            match = torch.max(r, 1 / r).max(2)[0] < 4.0
        gi, ai = match.nonzero(as_tuple=True)
        t = targets[gi]
        gxy = t[:, 2:4] / s
        frac = gxy % 1.0
        cand = [
            (torch.tensor([0.0, 0.0]), torch.ones(len(t), dtype=torch.bool)),
            (torch.tensor([-1.0, 0.0]), (frac[:, 0] < 0.5) & (gxy[:, 0] > 1)),
            (torch.tensor([1.0, 0.0]), (frac[:, 0] > 0.5) & (gxy[:, 0] < nx - 1)),
            (torch.tensor([0.0, -1.0]), (frac[:, 1] < 0.5) & (gxy[:, 1] > 1)),
            (torch.tensor([0.0, 1.0]), (frac[:, 1] > 0.5) & (gxy[:, 1] < ny - 1)),
        ]
        bs, as_, gys, gxs, cls, boxes = [], [], [], [], [], []
        for off, m in cand:
            cell = (gxy[m] + off).long()
            gx = cell[:, 0].clamp(0, nx - 1)
            gy = cell[:, 1].clamp(0, ny - 1)
            bs.append(t[m, 0].long()); as_.append(ai[m]); gys.append(gy); gxs.append(gx)
            cls.append(t[m, 1].long()); boxes.append(t[m, 2:6])
        res.append(tuple(torch.cat(v) for v in (bs, as_, gys, gxs, cls, boxes)))
    return res


def compute_loss(model: TinyYolo, outs, targets):
    assigned = build_targets(model, outs, targets)
    dev = outs[0].device
    lbox, lobj, lcls = torch.zeros((), device=dev), torch.zeros((), device=dev), torch.zeros((), device=dev)
    npos = 0
    balance = (4.0, 1.0, 0.4)
    for i, (y, a) in enumerate(zip(outs, assigned)):
        if model.layout == "xywh_cls":
            tcls = torch.zeros_like(y[..., 4:])
        else:
            tobj = torch.zeros_like(y[..., 4])
        if a is not None and len(a[0]):
            b, an, gy, gx, c, gt = a
            p = y[b, an, gy, gx]
            sg = torch.sigmoid(p[:, :4])
            xy = (torch.stack([gx, gy], 1).float() + sg[:, :2] * 2 - 0.5) * STRIDES[i]
            wh = (sg[:, 2:4] * 2) ** 2 * model.anchors[i][an]
            g = giou_cxcywh(torch.cat([xy, wh], 1), gt)
            lbox = lbox + (1 - g).sum()
            npos += len(g)
            if model.layout == "xywh_cls":
                tcls[b, an, gy, gx, c] = 1.0
            else:
                tobj[b, an, gy, gx] = g.detach().clamp(0).to(tobj.dtype)
                onehot = F.one_hot(c, model.nc).float()
                lcls = lcls + F.binary_cross_entropy_with_logits(p[:, 5:], onehot, reduction="sum") / model.nc
        if model.layout == "xywh_cls":
            lcls = lcls + F.binary_cross_entropy_with_logits(y[..., 4:], tcls, reduction="sum")
        else:
            lobj = lobj + balance[i] * F.binary_cross_entropy_with_logits(y[..., 4], tobj)
    npos = max(npos, 1)
    if model.layout == "xywh_cls":
        return 7.5 * lbox / npos + 0.5 * lcls / npos
    return 0.5 * lbox / npos + 2.5 * lobj + 0.3 * lcls / npos


# ----------------------------------------------------------------------------- eval helpers

def detect(model: TinyYolo, images, size: int, conf: float = 0.25, iou: float = 0.45):
    """images: list of (H, W, 3) uint8 -> list of (boxes xyxy original pixels, scores, classes)."""
    results = []
    model.eval()
    model.export = True
    try:
        for k in range(0, len(images), 16):
            chunk = images[k:k + 16]
            lb = [letterbox_image(im, (size, size)) for im in chunk]   # detcal's letterbox: (image, row)
            x = torch.from_numpy(np.stack([l[0] for l in lb])).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                out = model(x).numpy()
            for o, (_, row) in zip(out, lb):
                if model.layout == "xywh_cls":
                    o = o.T
                    xywh, sc = o[:, :4], o[:, 4:]
                else:
                    xywh, sc = o[:, :4], o[:, 5:] * o[:, 4:5]
                cls = sc.argmax(1)
                s = sc.max(1)
                m = s > conf
                xywh, s, cls = xywh[m], s[m], cls[m]
                xyxy = cxcywh_to_xyxy(xywh)
                keep = batched_nms_xyxy(xyxy, s, cls, iou, max_keep=300)
                xyxy = input_to_original_xyxy(xyxy[keep], row)
                results.append((xyxy, s[keep], cls[keep]))
    finally:
        model.export = False
    return results


def match_counts(dets, gts):
    """Greedy class-aware matching at IoU >= 0.5 -> (tp, n_det, n_gt)."""
    tp = nd = ng = 0
    for (db, ds, dc), (gb, gc) in zip(dets, gts):
        nd += len(db)
        ng += len(gb)
        used = np.zeros(len(gb), bool)
        for i in np.argsort(-ds):
            best, bj = 0.5, -1
            for j in range(len(gb)):
                if used[j] or gc[j] != dc[i]:
                    continue
                ix = max(0.0, min(db[i, 2], gb[j, 2]) - max(db[i, 0], gb[j, 0]))
                iy = max(0.0, min(db[i, 3], gb[j, 3]) - max(db[i, 1], gb[j, 1]))
                inter = ix * iy
                u = (db[i, 2] - db[i, 0]) * (db[i, 3] - db[i, 1]) + (gb[j, 2] - gb[j, 0]) * (gb[j, 3] - gb[j, 1]) - inter
                if inter / u >= best:
                    best, bj = inter / u, j
            if bj >= 0:
                used[bj] = True
                tp += 1
    return tp, nd, ng


def evaluate(model: TinyYolo, sizes=(320, 208), n_pos: int = 100, n_neg: int = 100, data_seed: int = EVAL_DATA_SEED):
    """Precision/recall at conf 0.25 on positive test scenes and false positives on negative test
    scenes, at each serving size (letterboxed, pad 114, RGB/255)."""
    pos = [scenes.positive_scene((data_seed, 2, 0, i)) for i in range(n_pos)]
    neg = [scenes.negative_scene((data_seed, 2, 1, i)) for i in range(n_neg)]
    report = {}
    for size in sizes:
        d = detect(model, [p[0] for p in pos], size)
        tp, nd, ng = match_counts(d, [(p[1], p[2]) for p in pos])
        dn = detect(model, neg, size)
        report[size] = {
            "precision@0.25": tp / max(nd, 1),
            "recall@0.25": tp / max(ng, 1),
            "fp_per_negative_image@0.25": sum(len(x[1]) for x in dn) / n_neg,
            "share_negative_images_with_det>0.8": float(np.mean([bool((x[1] > 0.8).any()) for x in dn])),
            "mean_max_score_on_negatives": float(np.mean([x[1].max() if len(x[1]) else 0.0 for x in dn])),
        }
    return report


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layout", choices=("xywh_cls", "xywh_obj_cls"), required=True)
    ap.add_argument("--out", required=True, help="ONNX path for the model at --imgsz")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--serve-imgsz", type=int, default=208, help="also export at this size (0: don't)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile-pad-p", type=float, default=scenes.TILE_PAD_P,
                    help="share of mosaic tiles left at pad grey 114")
    ap.add_argument("--tile-panel-p", type=float, default=scenes.TILE_PANEL_P,
                    help="share of mosaic tiles filled by one big panel")
    ap.add_argument("--eval-pos", type=int, default=100)
    ap.add_argument("--eval-neg", type=int, default=100)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    nc = len(scenes.CLASS_NAMES)
    anchors = None
    if args.layout == "xywh_obj_cls":
        wh = []
        for i in range(1000):
            _, b, _ = scenes.training_sample((args.seed, 10**9, i), args.imgsz, pad_p=args.tile_pad_p,
                                             panel_p=args.tile_panel_p)
            wh.append(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1))
        anchors = np.round(kmeans_anchors(np.concatenate(wh), 9, seed=args.seed), 1).reshape(3, 3, 2).tolist()
        print("k-means anchors:", anchors, flush=True)
    model = TinyYolo(nc, args.layout, anchors)
    print(f"params: {num_params(model)}", flush=True)
    ema = TinyYolo(nc, args.layout, anchors)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    decay_params = [p for n, p in model.named_parameters() if p.ndim > 1]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay_params, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999))
    warm = min(100, args.steps // 10)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        lr = args.lr * (step + 1) / warm if step < warm else \
            args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(args.steps - warm, 1))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, t = make_batch(args.seed, step, args.batch, args.imgsz, args.tile_pad_p, args.tile_panel_p)
        loss = compute_loss(model, model.raw(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        d = 0.999 * (1 - math.exp(-(step + 1) / 200))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.5f} {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0
    print(f"train time: {train_s:.0f}s", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"detcal_train_seed": args.seed, "detcal_train_steps": args.steps, "detcal_train_imgsz": args.imgsz,
            "detcal_train_recipe": f"tile_pad_p={args.tile_pad_p} tile_panel_p={args.tile_panel_p}"}
    ema.eval()
    export_onnx(ema, out, args.imgsz, scenes.CLASS_NAMES, meta)
    paths = [(out, args.imgsz)]
    if args.serve_imgsz:
        serve = out.with_name(f"{out.stem}_{args.serve_imgsz}{out.suffix}")
        export_onnx(ema, serve, args.serve_imgsz, scenes.CLASS_NAMES, meta)
        paths.append((serve, args.serve_imgsz))
    check_onnx(ema, paths)

    report = evaluate(ema, (args.imgsz, args.serve_imgsz) if args.serve_imgsz else (args.imgsz,),
                      args.eval_pos, args.eval_neg)
    report = {"layout": args.layout, "train_seconds": round(train_s, 1), "steps": args.steps, "batch": args.batch,
              "params": num_params(ema), "eval": report}
    print(json.dumps(report, indent=2), flush=True)
    out.with_suffix(".train.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def check_onnx(model: TinyYolo, paths) -> None:
    """The exported files load in onnxruntime and agree with torch."""
    import onnxruntime as ort

    for path, size in paths:
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        model.export = True
        with torch.no_grad():
            ref = model(x).numpy()
        model.export = False
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(["output0"], {"images": x.numpy()})[0]
        err = float(np.abs(got - ref).max())
        print(f"{path}: output {list(got.shape)}, max |onnx - torch| = {err:.2e}, "
              f"{Path(path).stat().st_size / 1e6:.2f} MB", flush=True)
        if err > 1e-2:
            raise SystemExit(f"ONNX export mismatch for {path}: {err}")


if __name__ == "__main__":
    sys.exit(main())
