"""Checks 3 to 5 on the detections' scores: letterbox (detections in the bars), calibration (D-ECE), uniform_fp."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..data import Dataset
from ..errors import DetcalError
from ..images import read_image_rgb
from ..artifact import PAD_LEFT, PAD_TOP
from ..letterbox import centre_in_content
from ..metrics import dece
from ..artifact import Preprocess
from .report import Check, DoctorOptions, fmt_size, skipped, verdict
from .runs import Run


def check_letterbox(main: Run, pre: Preprocess, opts: DoctorOptions) -> Check:
    name = "letterbox"
    if pre.resize == "stretch":
        return skipped(name, "stretch resize: there is no padding")
    c = main.collected
    padded = (c.rows[:, PAD_LEFT] >= 1) | (c.rows[:, PAD_TOP] >= 1)
    in_pad_scores, n_kept, imgs = [], 0, 0
    for d, row in zip(c.detections, c.rows):
        keep = d.scores > opts.conf
        n_kept += int(keep.sum())
        if not keep.any():
            continue
        outside = ~centre_in_content(d.boxes_input_xyxy[keep], row)
        if outside.any():
            imgs += 1
            in_pad_scores.append(d.scores[keep][outside])
    s = np.concatenate(in_pad_scores) if in_pad_scores else np.zeros(0)
    share = len(s) / n_kept if n_kept else 0.0
    ev = {"n_images_with_padding": int(padded.sum()), "n_images": len(c), "n_detections": n_kept, "conf": opts.conf,
          "n_in_padding": len(s), "share_in_padding": share, "n_images_with_padding_detections": imgs,
          "padding_score_max": float(s.max()) if len(s) else None, "padding_score_mean": float(s.mean()) if len(s) else None,
          "padding_above_0.8": int((s > opts.high_score).sum())}
    if not padded.any() and not main.emulated:
        return Check(name, "ok", "none", f"no image of the split needs letterbox padding at {fmt_size(main.size)}", ev)
    status, sev = verdict(share >= opts.letterbox_fail, share >= opts.letterbox_warn)
    finding = (f"{len(s)} of {n_kept} detections > {opts.conf:g} ({share:.1%}) are centred in the letterbox padding, "
               f"in {imgs} images" + (f", scores up to {s.max():.2f}" if len(s) else ""))
    fix = ("detcal fit + detcal patch: the patched model drops boxes centred in the padding (letterbox input); "
           "or mask them in your post-processing") if status != "ok" else ""
    return Check(name, status, sev, finding, ev, fix)


def check_calibration(main: Run, opts: DoctorOptions, out_dir: Path | None) -> Check:
    name = "calibration"
    m = main.matched
    if int(m.n_gt_per_class.sum()) == 0:
        return skipped(name, "no labelled boxes in the split: calibration needs positives")
    keep = m.scores > opts.conf
    s, tp, img = m.scores[keep], m.is_tp[keep], m.image_index[keep]
    if len(s) == 0:
        return skipped(name, f"no detection above {opts.conf:g}")
    d = dece(s, tp)
    rng = np.random.default_rng(opts.seed)
    boot = []
    by_image = [np.flatnonzero(img == i) for i in np.unique(img)]
    for _ in range(opts.bootstrap):
        pick = rng.integers(0, len(by_image), len(by_image))
        idx = np.concatenate([by_image[i] for i in pick])
        boot.append(dece(s[idx], tp[idx]))
    lo, hi = np.percentile(boot, [5, 95]) if boot else (math.nan, math.nan)
    sat = float(np.mean(s >= opts.saturation_score))
    sat_prec = float(tp[s >= opts.saturation_score].mean()) if sat > 0 else None
    ev = {"dece": d, "dece_90ci": [lo, hi], "n_detections": len(s), "n_images": len(by_image), "precision": float(tp.mean()),
          "mean_score": float(s.mean()), "conf": opts.conf, "match_iou": opts.match_iou,
          "share_saturated": sat, "saturation_score": opts.saturation_score, "precision_of_saturated": sat_prec,
          "score_histogram_10bins": np.histogram(s, bins=10, range=(0, 1))[0]}
    files = []
    if out_dir is not None:
        from ..plots import save_reliability_diagrams
        p = save_reliability_diagrams(out_dir / "reliability.png", [(f"raw scores > {opts.conf:g} (D-ECE {d:.3f})", s, tp)])
        files.append(str(p))
    # saturation hides errors when the saturated scores are not that precise: thresholds cannot separate them
    saturated = sat > opts.saturation_share and sat_prec is not None and sat_prec < opts.saturation_precision
    status, sev = verdict(d > opts.dece_fail, d > opts.dece_warn or saturated)
    over = "over" if s.mean() > tp.mean() else "under"
    finding = (f"D-ECE {d:.3f} (90% CI {lo:.3f}-{hi:.3f}) over {len(s)} detections > {opts.conf:g}; "
               f"mean score {s.mean():.2f} vs precision {tp.mean():.2f} ({over}-confident)")
    if saturated:
        finding += f"; {sat:.0%} of scores are >= {opts.saturation_score:g} (saturated), precision there {sat_prec:.2f}"
    fix = ("detcal fit --model M.onnx --data DATA.yaml (calibrator auto) and detcal patch: calibrated scores in the graph"
           if status != "ok" else "")
    return Check(name, status, sev, finding, ev, fix, files)


def _texture(crop: np.ndarray) -> float:
    """Mean absolute gradient of the grey levels of an (h, w, 3) uint8 crop; 0 for a flat one."""
    g = crop.astype(np.float32).mean(axis=2)
    if g.shape[0] < 2 or g.shape[1] < 2:
        return 0.0
    return float((np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()) / 2)


def _contact_sheet(crops: list[tuple[np.ndarray, str]], path: Path, tile: int = 112, per_row: int = 6) -> Path:
    import io

    from PIL import Image, ImageDraw

    rows = (len(crops) + per_row - 1) // per_row
    cap = 14
    sheet = Image.new("RGB", (per_row * tile, rows * (tile + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (crop, caption) in enumerate(crops):
        r, c = divmod(k, per_row)
        im = Image.fromarray(crop)
        f = (tile - 4) / max(im.width, im.height)      # fit the tile, small crops enlarged (nearest: no smoothing)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                       Image.NEAREST if f > 1 else Image.BILINEAR)
        x, y = c * tile + (tile - im.width) // 2, r * (tile + cap) + (tile - im.height) // 2
        sheet.paste(im, (x, y))
        draw.text((c * tile + 2, r * (tile + cap) + tile), caption[:18], fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def check_uniform_fp(main: Run, dataset: Dataset, opts: DoctorOptions, out_dir: Path | None, names: list[str]) -> Check:
    name = "uniform_fp"
    m = main.matched
    n_neg = m.n_negative_images
    if n_neg == 0:
        return skipped(name, "no negative scenes (images without labels) in the split; add some (empty roads, walls, sky)")
    c = main.collected
    hits = []   # (image position, detection index, score, class)
    fired = set()
    fp_any = 0
    for pos, (d, gt) in enumerate(zip(c.detections, c.gt_boxes_xyxy)):
        if len(gt):
            continue
        fp_any += int((d.scores > opts.conf).sum())
        for j in np.flatnonzero(d.scores > opts.high_score):
            hits.append((pos, int(j), float(d.scores[j]), int(d.classes[j])))
            fired.add(pos)
    rate = len(fired) / n_neg
    ev = {"n_negative_images": n_neg, "n_detections_above_high": len(hits), "high_score": opts.high_score,
          "negative_images_firing_above_high": len(fired), "negative_image_rate_above_high": rate,
          "fp_per_negative_image_above_conf": fp_any / n_neg, "conf": opts.conf}
    files = []
    if hits and out_dir is not None:
        crops = []
        by_image: dict[int, list] = {}
        for h in hits:
            by_image.setdefault(h[0], []).append(h)
        for pos, hs in by_image.items():
            sample = dataset.samples[c.sample_indices[pos]]
            try:
                img = read_image_rgb(sample.image_path)
            except DetcalError:
                continue
            for _, j, score, cls in hs:
                x1, y1, x2, y2 = np.round(c.detections[pos].boxes_xyxy[j]).astype(int)
                crop = img[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
                if crop.size == 0:
                    continue
                label = names[cls] if cls < len(names) else str(cls)
                crops.append((_texture(crop), crop, f"{score:.2f} {label} {sample.image_path.stem}"))
        crops.sort(key=lambda t: t[0])
        crops = crops[: opts.max_crops]
        if crops:
            ev["crop_texture"] = [t for t, _, _ in crops]
            files.append(str(_contact_sheet([(cr, cap) for _, cr, cap in crops], out_dir / "uniform_fp_crops.png")))
    status, sev = verdict(rate > opts.negative_rate_fail, rate > opts.negative_rate_warn)
    finding = (f"{len(fired)} of {n_neg} negative scenes ({rate:.1%}) have a detection > {opts.high_score:g} "
               f"({len(hits)} detections); {fp_any / n_neg:.2f} false positives > {opts.conf:g} per negative image")
    fix = ("detcal fit fits per-class rejection thresholds on these negative scenes (--max-negative-rate 0.01) and "
           "detcal patch applies them; add more such scenes to training if recall allows") if status != "ok" else ""
    return Check(name, status, sev, finding, ev, fix, files)
