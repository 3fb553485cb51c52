"""The one progress bar of the command line: `LABEL [#####.....] 120/1000 UNIT NOTE` on stderr,
redrawn in place with a carriage return."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class ProgressBar:
    def __init__(self, total: int, label: str = "", unit: str = "", *, rate: bool = False,
                 stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.label, self.unit, self.rate = label, unit, rate
        self.stream = stream or sys.stderr
        self._started = time.monotonic()
        self._width = 0
        self._closed = False

    def update(self, done: int, note: str = "") -> None:
        filled = BAR_WIDTH * min(done, self.total) // self.total
        parts = [self.label, f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]",
                 f"{done}/{self.total}", self.unit]
        if self.rate:
            elapsed = max(time.monotonic() - self._started, 1e-9)
            parts.append(f"{done / elapsed:.1f} {self.unit or 'items'}/s")
        line = " ".join(part for part in parts + [note] if part)
        # Padded to the longest line so far: a shorter line must not leave its predecessor's tail.
        self.stream.write("\r" + line.ljust(self._width))
        self._width = max(self._width, len(line))
        self.stream.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.write("\n")
            self.stream.flush()
