"""Box geometry as graph nodes: the one graph twin of calib.boxes.cxcywh_to_xyxy.

Every inserted graph that turns cxcywh boxes into corners (the candidates before NMS, the decoded
multi-output heads, the box-aware features) calls these, so the float32 arithmetic is written once:
half = size / 2, (x1, y1) = centre - half, (x2, y2) = centre + half, as calib.boxes does it.
"""
from __future__ import annotations

from .graph_builder import GraphBuilder


def cxcywh_corners(b: GraphBuilder, boxes: str, axis: int, tag: str) -> tuple[str, str]:
    """boxes with (cx, cy, w, h) along `axis` (length 4) -> corners (xy1, xy2), each of length 2
    along that axis: Split, Div, Sub, Add."""
    centre, size = b.split(boxes, [2, 2], axis, name=f"{tag}/centre_size")
    half = b.op("Div", size, b.f32(f"{tag}/two", 2.0), name=f"{tag}/half")
    return b.op("Sub", centre, half, name=f"{tag}/xy1"), b.op("Add", centre, half, name=f"{tag}/xy2")


def cxcywh_to_xyxy(b: GraphBuilder, boxes: str, axis: int, tag: str) -> str:
    """boxes with (cx, cy, w, h) along `axis` -> (x1, y1, x2, y2) along it (cxcywh_corners, Concat)."""
    xy1, xy2 = cxcywh_corners(b, boxes, axis, tag)
    return b.op("Concat", xy1, xy2, name=f"{tag}/xyxy", axis=axis)


__all__ = ["cxcywh_corners", "cxcywh_to_xyxy"]
