"""Match detections to ground truth, COCO style, for a single image or a whole dataset.

Rules (those of pycocotools' ``COCOeval.evaluateImg`` for boxes, crowd regions included):

- matching is per class: a detection only ever matches a ground-truth box of its own class;
- within an image and class, detections are processed by score, highest first, ties in
  their original order (a stable sort);
- each detection takes the still-unmatched ground-truth box with the highest IoU, provided
  that IoU >= ``iou_threshold`` (ties between boxes: the later ground-truth box, as
  pycocotools does); each ground-truth box is used at most once;
- a pair with IoU 0 never matches, so ``iou_threshold=0`` means "any overlap" (the IoU > 0
  matching that LaECE_0 uses);
- crowd regions (COCO ``iscrowd=1``) are ignore regions, never ground truth to find: a
  detection left unmatched by the boxes above whose overlap with a crowd region of its class
  in its image, measured as intersection over the *detection's* area (COCO's rule for crowd),
  is >= ``iou_threshold`` (and > 0) is *ignored*: neither a true nor a false positive
  (``MatchedDetections.ignored``); metrics and fits leave it out. An image with crowd
  regions is not a negative scene, even when it has no other box.

Unlike COCOeval there is no per-image ``maxDets`` cap: the detections given are the
detections evaluated (the reference pipeline already applies ``max_det``).

How it is fast: all same-image same-class pairs with IoU > 0 are found once (a join on
(image, class) and one vectorised IoU over the joined pairs), then the greedy is run
on the sparse pairs for the whole dataset at once, in rounds: a detection is decided in a
round when it has the highest priority among the undecided detections competing for each
of its candidate boxes, which is exactly when the sequential greedy would decide it the
same way. Rounds are as many as the longest chain of competing detections (a handful in
practice), each one a few vectorised numpy operations over the remaining pairs. Matching at
another IoU threshold reuses the pairs (``MatchedDetections.rematch``), which is what makes
AP50:95 cheap.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from .boxes import box_area, box_intersection_pairs, box_iou_pairs
from . import match_checks
from .errors import DetcalError

__all__ = [
    "MatchResult",
    "MatchedDetections",
    "match_image",
    "match_dataset",
    "match_detections",
    "match_flat",
]


@dataclass(frozen=True)
class MatchResult:
    """Matching of one image's detections, in the detections' original order.

    is_tp:    (K,) bool, matched to a ground-truth box of its class.
    iou:      (K,) float64, IoU with the matched ground-truth box; 0.0 when not matched
              (so it is directly the LaECE "accuracy": IoU if TP else 0).
    gt_index: (K,) int64, index into the image's ground-truth arrays, -1 when not matched.
    """

    is_tp: np.ndarray
    iou: np.ndarray
    gt_index: np.ndarray


@dataclass(frozen=True)
class MatchedDetections:
    """Detections of a whole dataset matched to its ground truth, as flat arrays.

    Detections are in input order: image 0's detections first, each image's in the order given.

    image_index:         (K,) int64, the image each detection belongs to.
    scores:              (K,) float64.
    classes:             (K,) int64.
    is_tp:               (K,) bool, matched at ``iou_threshold``.
    iou:                 (K,) float64, IoU with the matched ground-truth box, 0.0 if unmatched.
    gt_index:            (K,) int64, index into the flat ground truth (``gt_image_index``,
                         ``gt_classes``), -1 if unmatched.
    gt_image_index:      (G,) int64, image of each ground-truth box.
    gt_classes:          (G,) int64.
    n_gt_per_class:      (C,) int64, ground-truth boxes per class.
    n_images:            number of images, negative ones included.
    negative_image_mask: (n_images,) bool, True for images without any ground-truth box
                         and without crowd regions.
    crowd_ioa:           (K,) float64, the detection's largest intersection-over-its-area with
                         a crowd region of its class in its image (0.0 without one); see
                         ``ignored``.
    num_classes:         C.
    iou_threshold:       the threshold ``is_tp`` was matched at.

    Because per-class thresholds keep, in every image and class, a prefix of the detections
    in score order, and the greedy's decisions for a prefix do not depend on what comes
    after it, ``is_tp`` stays valid for any subset kept by score thresholds: filter, do not
    re-match.
    """

    image_index: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    is_tp: np.ndarray
    iou: np.ndarray
    gt_index: np.ndarray
    gt_image_index: np.ndarray
    gt_classes: np.ndarray
    n_gt_per_class: np.ndarray
    n_images: int
    negative_image_mask: np.ndarray
    num_classes: int
    iou_threshold: float
    # candidate pairs (same image, same class, IoU > 0) kept for re-matching at other thresholds
    pair_det: np.ndarray = field(repr=False, default=None)
    pair_gt: np.ndarray = field(repr=False, default=None)
    pair_iou: np.ndarray = field(repr=False, default=None)
    crowd_ioa: np.ndarray = field(repr=False, default=None)

    @property
    def ignored(self) -> np.ndarray:
        """(K,) bool: unmatched detections covering a crowd region of their class (intersection
        over the detection's area >= iou_threshold, and > 0): neither TP nor FP."""
        if self.crowd_ioa is None:
            return np.zeros(self.scores.shape[0], bool)
        return ~self.is_tp & (self.crowd_ioa > 0) & (self.crowd_ioa >= self.iou_threshold)

    def without_ignored(self) -> "MatchedDetections":
        """The detections that count (TP or FP), as a ``subset`` (no re-matching)."""
        return self.subset(~self.ignored)

    @property
    def n_detections(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_negative_images(self) -> int:
        return int(self.negative_image_mask.sum())

    def rematch(self, iou_threshold: float) -> "MatchedDetections":
        """The same detections matched at another IoU threshold (reuses the IoU pairs)."""
        match_checks.check_threshold(iou_threshold)
        gt_index, iou = _greedy(self.scores, self.pair_det, self.pair_gt, self.pair_iou, iou_threshold)
        return replace(self, is_tp=gt_index >= 0, iou=iou, gt_index=gt_index, iou_threshold=float(iou_threshold))

    def subset(self, keep: np.ndarray) -> "MatchedDetections":
        """Only the detections selected by ``keep`` ((K,) bool or indices); matches unchanged.

        The candidate pairs are dropped (``rematch`` is not available on a subset, because a
        re-match of an arbitrary subset would differ from the full matching).
        """
        keep = np.asarray(keep)
        return replace(
            self,
            image_index=self.image_index[keep],
            scores=self.scores[keep],
            classes=self.classes[keep],
            is_tp=self.is_tp[keep],
            iou=self.iou[keep],
            gt_index=self.gt_index[keep],
            crowd_ioa=None if self.crowd_ioa is None else self.crowd_ioa[keep],
            pair_det=None,
            pair_gt=None,
            pair_iou=None,
        )


# ----------------------------------------------------------------------------- public API


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou_threshold: float = 0.5,
) -> MatchResult:
    """Match one image's detections to its ground truth (rules in the module docstring).

    det_boxes (K, 4) xyxy, det_scores (K,), det_classes (K,) int; gt_boxes (M, 4) xyxy in the
    same units, gt_classes (M,) int. Returns a ``MatchResult`` in the detections' order.
    """
    det_boxes, det_scores, det_classes = match_checks.check_dets(det_boxes, det_scores, det_classes, "detections")
    gt_boxes, gt_classes = match_checks.check_gts(gt_boxes, gt_classes, "ground truth")
    match_checks.check_threshold(iou_threshold)
    k = det_scores.shape[0]
    pd, pg, piou = _candidate_pairs(
        np.zeros(k, np.int64), det_boxes, det_classes,
        np.zeros(gt_classes.shape[0], np.int64), gt_boxes, gt_classes, 1,
    )
    pd, pg, piou = _sort_pairs(det_scores, pd, pg, piou)
    gt_index, iou = _greedy(det_scores, pd, pg, piou, iou_threshold)
    return MatchResult(is_tp=gt_index >= 0, iou=iou, gt_index=gt_index)


def match_dataset(
    per_image_dets: Sequence,
    per_image_gts: Sequence,
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
    per_image_crowd: Sequence | None = None,
) -> MatchedDetections:
    """Match a dataset's detections, given per image, to its ground truth.

    per_image_dets: one entry per image, either a tuple ``(boxes_xyxy (K,4), scores (K,),
        classes (K,))`` or a mapping with keys ``boxes_xyxy`` (or ``boxes``), ``scores``,
        ``classes``.
    per_image_gts: one entry per image, a tuple ``(gt_boxes_xyxy (M,4), gt_classes (M,))`` or
        a mapping with keys ``gt_boxes_xyxy``/``boxes_xyxy``/``boxes`` and
        ``gt_classes``/``classes``. An image without ground truth is a negative scene.
    num_classes: C; defaults to 1 + the largest class seen.
    per_image_crowd: optional, one ``(crowd_boxes_xyxy (R, 4), crowd_classes (R,))`` per image:
        the crowd (ignore) regions, in the same units.
    """
    if per_image_crowd is not None and len(per_image_crowd) != len(per_image_dets):
        raise ValueError(f"match_dataset: {len(per_image_dets)} images of detections but "
                         f"{len(per_image_crowd)} of crowd regions")
    if len(per_image_dets) != len(per_image_gts):
        raise ValueError(
            f"match_dataset: {len(per_image_dets)} images of detections but {len(per_image_gts)} of ground truth"
        )
    n_images = len(per_image_dets)
    det_parts = [match_checks.unpack_dets(d, i) for i, d in enumerate(per_image_dets)]
    gt_parts = [match_checks.unpack_gts(g, i) for i, g in enumerate(per_image_gts)]
    det_counts = np.array([p[1].shape[0] for p in det_parts], np.int64)
    gt_counts = np.array([p[1].shape[0] for p in gt_parts], np.int64)
    crowd_parts = [match_checks.unpack_gts(g, i) for i, g in enumerate(per_image_crowd)] if per_image_crowd is not None else []
    crowd_counts = np.array([p[1].shape[0] for p in crowd_parts], np.int64)
    cat = lambda parts, j, shape, dtype: (  # noqa: E731
        np.concatenate([p[j] for p in parts]).astype(dtype, copy=False) if parts else np.zeros(shape, dtype)
    )
    return match_flat(
        det_image_index=np.repeat(np.arange(n_images, dtype=np.int64), det_counts),
        det_boxes=cat(det_parts, 0, (0, 4), np.float64),
        det_scores=cat(det_parts, 1, (0,), np.float64),
        det_classes=cat(det_parts, 2, (0,), np.int64),
        gt_image_index=np.repeat(np.arange(n_images, dtype=np.int64), gt_counts),
        gt_boxes=cat(gt_parts, 0, (0, 4), np.float64),
        gt_classes=cat(gt_parts, 1, (0,), np.int64),
        n_images=n_images,
        iou_threshold=iou_threshold,
        num_classes=num_classes,
        crowd_image_index=np.repeat(np.arange(len(crowd_parts), dtype=np.int64), crowd_counts) if crowd_parts else None,
        crowd_boxes=cat(crowd_parts, 0, (0, 4), np.float64) if crowd_parts else None,
        crowd_classes=cat(crowd_parts, 1, (0,), np.int64) if crowd_parts else None,
    )


def match_detections(detections: Sequence, gt_boxes_xyxy: Sequence, gt_classes: Sequence,
                     iou_threshold: float = 0.5, num_classes: int | None = None,
                     crowd_boxes_xyxy: Sequence | None = None, crowd_classes: Sequence | None = None) -> MatchedDetections:
    """Per-image detection objects (with .boxes_xyxy, .scores, .classes, e.g. calib.pipeline.Detections)
    and per-image ground truth (and, optionally, per-image crowd regions) -> MatchedDetections."""
    dets = [(d.boxes_xyxy, d.scores, d.classes) for d in detections]
    crowd = list(zip(crowd_boxes_xyxy, crowd_classes)) if crowd_boxes_xyxy is not None else None
    return match_dataset(dets, list(zip(gt_boxes_xyxy, gt_classes)), iou_threshold, num_classes, crowd)


def match_flat(
    det_image_index: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_classes: np.ndarray,
    gt_image_index: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    n_images: int,
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
    crowd_image_index: np.ndarray | None = None,
    crowd_boxes: np.ndarray | None = None,
    crowd_classes: np.ndarray | None = None,
) -> MatchedDetections:
    """``match_dataset`` on flat arrays (the fast path; no per-image Python objects).

    det_image_index (K,) int in [0, n_images), det_boxes (K, 4) xyxy, det_scores (K,),
    det_classes (K,) int; gt_image_index (G,), gt_boxes (G, 4) xyxy, gt_classes (G,);
    optional crowd regions crowd_image_index (R,), crowd_boxes (R, 4) xyxy, crowd_classes (R,).
    Detections within an image keep their given relative order (it breaks score ties).
    """
    det_boxes, det_scores, det_classes = match_checks.check_dets(det_boxes, det_scores, det_classes, "detections")
    gt_boxes, gt_classes = match_checks.check_gts(gt_boxes, gt_classes, "ground truth")
    match_checks.check_threshold(iou_threshold)
    det_image_index = match_checks.check_index(det_image_index, det_scores.shape[0], n_images, "det_image_index")
    gt_image_index = match_checks.check_index(gt_image_index, gt_classes.shape[0], n_images, "gt_image_index")
    if crowd_boxes is None:
        crowd_image_index, crowd_boxes, crowd_classes = np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)
    crowd_boxes, crowd_classes = match_checks.check_gts(crowd_boxes, crowd_classes, "crowd regions")
    crowd_image_index = match_checks.check_index(crowd_image_index, crowd_classes.shape[0], n_images, "crowd_image_index")
    seen = max(int(det_classes.max(initial=-1)), int(gt_classes.max(initial=-1)),
               int(crowd_classes.max(initial=-1))) + 1
    if num_classes is None:
        num_classes = seen
    elif seen > num_classes:
        raise DetcalError(f"class id {seen - 1} out of range for {num_classes} classes")

    pd, pg, piou = _candidate_pairs(
        det_image_index, det_boxes, det_classes, gt_image_index, gt_boxes, gt_classes, n_images
    )
    pd, pg, piou = _sort_pairs(det_scores, pd, pg, piou)
    gt_index, iou = _greedy(det_scores, pd, pg, piou, iou_threshold)
    crowd_ioa = _crowd_ioa(det_image_index, det_boxes, det_classes, crowd_image_index, crowd_boxes, crowd_classes)
    return MatchedDetections(
        image_index=det_image_index,
        scores=det_scores,
        classes=det_classes,
        is_tp=gt_index >= 0,
        iou=iou,
        gt_index=gt_index,
        gt_image_index=gt_image_index,
        gt_classes=gt_classes,
        n_gt_per_class=np.bincount(gt_classes, minlength=num_classes).astype(np.int64),
        n_images=int(n_images),
        negative_image_mask=(np.bincount(gt_image_index, minlength=n_images) == 0)
        & (np.bincount(crowd_image_index, minlength=n_images) == 0),
        num_classes=int(num_classes),
        iou_threshold=float(iou_threshold),
        pair_det=pd,
        pair_gt=pg,
        pair_iou=piou,
        crowd_ioa=crowd_ioa,
    )


# ----------------------------------------------------------------------------- core


def _same_key_pairs(det_key, gt_key):
    """All (i, j) with det_key[i] == gt_key[j] -> pair_det (P,), pair_gt (P,) int64, a sort-and-join."""
    g_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[g_order]
    lo = np.searchsorted(gt_key_sorted, det_key, side="left")
    hi = np.searchsorted(gt_key_sorted, det_key, side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    has = np.flatnonzero(counts)
    counts, lo = counts[has], lo[has]
    pd = np.repeat(has, counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return pd, g_order[np.repeat(lo, counts) + offsets]


def _crowd_ioa(det_image, det_boxes, det_classes, crowd_image, crowd_boxes, crowd_classes):
    """(K,) float64: each detection's largest intersection over its own area with a crowd
    region of the same image and class (COCO's IoU for crowd); 0.0 without one."""
    out = np.zeros(det_image.shape[0], np.float64)
    if det_image.size == 0 or crowd_image.size == 0:
        return out
    n_keys = int(max(det_classes.max(), crowd_classes.max())) + 1
    pd, pc = _same_key_pairs(det_image * n_keys + det_classes, crowd_image * n_keys + crowd_classes)
    if pd.size == 0:
        return out
    b1 = det_boxes[pd]
    inter, area = box_intersection_pairs(b1, crowd_boxes[pc]), box_area(b1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ioa = np.where(area > 0, inter / np.where(area > 0, area, 1.0), 0.0)
    np.maximum.at(out, pd, np.clip(ioa, 0.0, 1.0))
    return out


def _candidate_pairs(det_image, det_boxes, det_classes, gt_image, gt_boxes, gt_classes, n_images):
    """All (detection, gt) pairs in the same image and class with IoU > 0.

    A join on the key (image, class) followed by one vectorised IoU over the joined pairs,
    so the cost follows the number of same-class pairs, not detections x boxes per image.
    Returns pair_det (P,) int64, pair_gt (P,) int64, pair_iou (P,) float64, in no set order.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if det_image.size == 0 or gt_image.size == 0:
        return empty
    n_keys_per_image = int(max(det_classes.max(), gt_classes.max())) + 1
    pd, pg = _same_key_pairs(det_image * n_keys_per_image + det_classes, gt_image * n_keys_per_image + gt_classes)
    if pd.size == 0:
        return empty
    piou = box_iou_pairs(det_boxes[pd], gt_boxes[pg])
    nz = piou > 0
    return pd[nz], pg[nz], piou[nz]


def _sort_pairs(scores, pair_det, pair_gt, pair_iou):
    """Pairs ordered by box, then by the greedy's priority: score descending, then position."""
    order = np.lexsort((pair_det, -scores[pair_det], pair_gt))
    return pair_det[order], pair_gt[order], pair_iou[order]


def _greedy(scores, pair_det, pair_gt, pair_iou, iou_threshold):
    """COCO greedy matching on sparse candidate pairs, all images and classes at once.

    scores (K,); pairs as ``_sort_pairs`` orders them, same image and class only. Pairs
    only ever link detections of one image and class, and the flat order keeps each image's
    given order, so (score desc, flat position) orders every competing set exactly as the
    per-image sequential greedy would.
    Returns gt_index (K,) int64 (-1 if unmatched) and iou (K,) float64 (0 if unmatched).
    """
    k = scores.shape[0]
    gt_index = np.full(k, -1, np.int64)
    matched_iou = np.zeros(k, np.float64)
    if pair_det is None:
        raise ValueError("these matched detections have no candidate pairs (a subset?); match the full set")
    keep = (pair_iou >= iou_threshold) & (pair_iou > 0)
    pd, pg, piou = pair_det[keep], pair_gt[keep], pair_iou[keep]
    if pd.size == 0:
        return gt_index, matched_iou
    gt_taken = np.zeros(int(pg.max()) + 1, bool)
    blocked = np.zeros(k, bool)
    while pd.size:
        first = np.ones(pd.size, bool)
        first[1:] = pg[1:] != pg[:-1]
        # a detection is decided now when it heads the queue of every box it competes for
        blocked[pd[~first]] = True
        ready = ~blocked[pd]
        blocked[pd] = False
        idx = np.flatnonzero(ready)
        # best box per ready detection: highest IoU, ties -> later gt (as pycocotools)
        o = idx[np.lexsort((pg[idx], piou[idx], pd[idx]))]
        last = np.ones(o.size, bool)
        last[:-1] = pd[o][1:] != pd[o][:-1]
        win = o[last]
        gt_index[pd[win]] = pg[win]
        matched_iou[pd[win]] = piou[win]
        gt_taken[pg[win]] = True
        alive = ~ready & ~gt_taken[pg]
        pd, pg, piou = pd[alive], pg[alive], piou[alive]
    return gt_index, matched_iou
