"""pycocotools' COCOeval on detcal's per-image lists: the reference the AP tests compare with.

dets: per image (boxes (K, 4) xyxy, scores (K,), classes (K,)); gts and crowds: per image
(boxes (M, 4) xyxy, classes (M,)); classes are 0-based. Returns COCOeval.stats (AP50:95, AP50, ...).
"""
from __future__ import annotations

import contextlib
import io


def cocoeval_stats(dets, gts, c: int, crowds=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    crowds = crowds if crowds is not None else [((), ())] * len(gts)
    images = [{"id": i + 1, "width": 400, "height": 400} for i in range(len(gts))]
    anns = []
    for i, ((gb, gc), (cb, cc)) in enumerate(zip(gts, crowds)):
        for boxes, classes, crowd in ((gb, gc, 0), (cb, cc, 1)):
            for b, k in zip(boxes, classes):
                w, h = b[2] - b[0], b[3] - b[1]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(k) + 1,
                             "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": crowd})
    res = [{"image_id": i + 1, "category_id": int(k) + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s)} for i, (db, ds, dc) in enumerate(dets) for b, s, k in zip(db, ds, dc)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 1, "name": str(k)} for k in range(c)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
