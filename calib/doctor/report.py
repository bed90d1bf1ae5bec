"""Doctor's result types: one ``Check`` per item of the checklist, the ``DoctorReport``, the ``DoctorOptions``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import DetcalError
from ..jsonable import to_jsonable
from ..artifact import PostprocessConfig
from ..pipeline import postprocess


STATUSES = ("fail", "warn", "ok", "skipped")


SEVERITIES = ("high", "medium", "low", "none")


@dataclass
class Check:
    """One check's verdict. status: ok | warn | fail | skipped; severity: high | medium | low | none."""

    name: str
    status: str
    severity: str
    finding: str                                   # one line
    evidence: dict = field(default_factory=dict)   # numbers, JSON-friendly
    fix: str = ""
    files: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.status in ("warn", "fail")

    def sort_key(self) -> tuple[int, int]:
        return STATUSES.index(self.status), SEVERITIES.index(self.severity)


@dataclass
class DoctorReport:
    model: str
    data: str
    split: str
    serve_size: tuple[int, int]
    native_size: tuple[int, int] | None
    dataset_summary: str
    checks: list[Check]
    out_dir: str | None = None
    seconds: float = 0.0

    @property
    def flagged(self) -> bool:
        return any(c.flagged for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when nothing is flagged, 1 when something is (2 is for bad input, raised as DetcalError)."""
        return 1 if self.flagged else 0

    def ordered(self) -> list[Check]:
        return sorted(self.checks, key=Check.sort_key)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return to_jsonable({
            "model": self.model, "data": self.data, "split": self.split,
            "serve_size": list(self.serve_size), "native_size": list(self.native_size) if self.native_size else None,
            "dataset": self.dataset_summary, "flagged": self.flagged, "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.ordered()],
        }, 6)

    def format_text(self) -> str:
        native = f"{self.native_size[0]}x{self.native_size[1]}" if self.native_size else "unknown"
        lines = [f"detcal doctor: {self.model} on {self.data} (split {self.split})",
                 f"  {self.dataset_summary}; serving size {self.serve_size[0]}x{self.serve_size[1]}, native {native}", ""]
        for c in self.ordered():
            tag = {"fail": "FAIL", "warn": "WARN", "ok": "ok", "skipped": "skip"}[c.status]
            sev = f"[{c.severity}]" if c.severity != "none" else ""
            lines.append(f"{tag:<5}{sev:<9}{c.name}: {c.finding}")
            if c.flagged and c.fix:
                lines.append(f"{'':14}fix: {c.fix}")
            if c.files:
                lines.append(f"{'':14}see: {', '.join(c.files)}")
        n_fail = sum(c.status == "fail" for c in self.checks)
        n_warn = sum(c.status == "warn" for c in self.checks)
        lines.append("")
        lines.append(f"{n_fail + n_warn} of {len(self.checks)} checks flagged ({n_fail} fail, {n_warn} warn)"
                     if self.flagged else f"nothing flagged in {len(self.checks)} checks")
        return "\n".join(lines)


@dataclass
class DoctorOptions:
    conf: float = 0.25                 # the default confidence threshold users deploy with
    base_conf: float = 0.001           # score floor for collecting detections
    match_iou: float = 0.5
    high_score: float = 0.8            # "confident" false positive on a negative scene
    dece_warn: float = 0.08
    dece_fail: float = 0.15
    saturation_score: float = 0.98
    saturation_share: float = 0.5
    saturation_precision: float = 0.95  # saturated scores flagged only when their precision is below this
    letterbox_warn: float = 0.01
    letterbox_fail: float = 0.05
    negative_rate_warn: float = 0.01
    negative_rate_fail: float = 0.05
    edge_share_warn: float = 0.02
    imbalance_warn: float = 10.0
    size_ratio_warn: float = 1.5
    size_ratio_fail: float = 2.0
    bpr_warn: float = 0.98
    bpr_fail: float = 0.90
    anchor_t: float = 4.0              # YOLOv5's anchor-multiple threshold
    candidates_p99_warn: int = 1000
    candidates_mean_warn: int = 300
    post_share_warn: float = 0.5
    post_ms_floor: float = 2.0          # ...and only when post-processing takes at least this many ms per image
    timing_images: int = 32
    recall_gap_warn: float = 0.05
    recall_gap_fail: float = 0.15
    dece_gap_warn: float = 0.03
    dece_gap_fail: float = 0.08
    max_crops: int = 24
    bootstrap: int = 200
    seed: int = 0
    postprocess: PostprocessConfig = field(default_factory=lambda: PostprocessConfig(mask_padding=False))

    def validate(self) -> None:
        if not 0 < self.conf < 1:
            raise DetcalError(f"--conf must be in (0, 1), got {self.conf}")
        if not 0 <= self.base_conf < self.conf:
            raise DetcalError(f"the score floor must be in [0, conf), got {self.base_conf}")
        if self.timing_images < 1:
            raise DetcalError("timing_images must be >= 1")


def fmt_size(size) -> str:
    return f"{size[0]}x{size[1]}"


def verdict(fail: bool, warn: bool, warn_severity: str = "medium") -> tuple[str, str]:
    if fail:
        return "fail", "high"
    if warn:
        return "warn", warn_severity
    return "ok", "none"


def skipped(name: str, why: str, **evidence) -> Check:
    return Check(name, "skipped", "none", why, evidence)


def fmt_number(x, fmt="{:.3f}"):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)
