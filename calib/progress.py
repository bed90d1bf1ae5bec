"""A dependency-free progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream=None):
        self.total = max(int(total), 0)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = time.perf_counter()
        self._tty = getattr(self.stream, "isatty", lambda: False)()
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled or self.total == 0:
            return
        frac = min(self.count / self.total, 1.0)
        if self._tty:
            width = 30
            filled = int(frac * width)
            elapsed = time.perf_counter() - self.start
            rate = self.count / elapsed if elapsed > 0 else 0.0
            self.stream.write(
                f"\r{self.desc}: [{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} {rate:5.1f}/s"
            )
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{self.desc}: {self.count}/{self.total} ({frac:.0%})\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty and self.total:
            self.stream.write(f"\r{self.desc}: {self.count}/{self.total} done in {time.perf_counter() - self.start:.1f}s" + " " * 20 + "\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
