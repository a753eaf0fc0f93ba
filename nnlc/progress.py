"""Progress lines with an ETA for long phases (calibration, sensitivities, layers, search points).

One line per update on stderr, throttled to about one a second when stderr is not a terminal, so
logs stay short; `quiet` silences it. Shared by every package with long loops.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class Phase:
    """`with Phase("sensitivities", total) as phase: ... phase.step(name)` prints done/total and ETA."""

    def __init__(self, label: str, total: int, quiet: bool = False, stream: TextIO | None = None,
                 min_interval: float = 1.0, lazy: bool = False):
        """`lazy`: say nothing for phases shorter than `min_interval` (nested phases in a search)."""
        self.label, self.total, self.quiet = label, max(0, int(total)), quiet
        self.lazy, self.printed = lazy, False
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = self.start if lazy else -1e9

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, *exc) -> None:
        if not exc[0]:
            self.finish()

    def step(self, name: str = "", count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        too_soon = now - self._last_print < self.min_interval
        if self.quiet or (too_soon and (self.done < self.total or (self.lazy and not self.printed))):
            return
        self._last_print = now
        self.printed = True
        elapsed = now - self.start
        remaining = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        detail = f" {name}" if name else ""
        print(f"{self.label}: {self.done}/{self.total}{detail} [{format_seconds(elapsed)} elapsed, "
              f"ETA {format_seconds(remaining)}]", file=self.stream, flush=True)

    def finish(self, message: str = "") -> None:
        if not self.quiet and (self.printed or not self.lazy):
            extra = f" {message}" if message else ""
            print(f"{self.label}: done in {format_seconds(time.perf_counter() - self.start)}{extra}",
                  file=self.stream, flush=True)
