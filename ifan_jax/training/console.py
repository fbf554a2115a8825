"""The training console: one live progress line and a compact line per log interval.

    step 1200/2000  loss 0.01234  6.9 steps/s  ETA 1m 56s          <- live, redrawn (terminals only)
    step 1200/2000  loss 0.01231 (deblur 0.0102, disparity 0.0004, reblur 0.0017)  lr 0.001  ...

The live line is redrawn at most once a second, on a terminal only (a log file gets the interval
lines alone). Steps per second are counted from the first time results are fetched, so compilation
does not count.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    """'1h 02m 05s', '7m 05s' or '12s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class TrainProgress:
    """Progress of steps `first + 1 .. total`; prints only when `enabled` (the chief process)."""

    def __init__(self, first: int, total: int, *, enabled: bool = True, stream=None,
                 live: bool | None = None, redraw_s: float = 1.0):
        self.first, self.total, self.enabled = first, total, enabled
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = (isatty() if live is None else live) and enabled
        self.redraw_s = redraw_s
        self.start = time.monotonic()
        self.timed_from: tuple[int, float] | None = None  # (step, time) of the first fetch
        self.drawn = 0.0
        self.width = 0

    def steps_per_second(self, step: int) -> float | None:
        if self.timed_from is None or step <= self.timed_from[0]:
            return None
        elapsed = time.monotonic() - self.timed_from[1]
        return (step - self.timed_from[0]) / elapsed if elapsed > 0 else None

    def eta(self, step: int) -> str:
        rate = self.steps_per_second(step)
        return "?" if not rate else format_duration((self.total - step) / rate)

    def elapsed(self) -> str:
        return format_duration(time.monotonic() - self.start)

    def rate_text(self, step: int) -> str:
        rate = self.steps_per_second(step)
        return f"  {rate:.2f} steps/s  ETA {self.eta(step)}" if rate else ""

    def finished(self, step: int) -> None:
        """Steps up to `step` have run (their results were fetched). The speed is counted from
        the first such point, so that compilation is left out."""
        if self.timed_from is None:
            self.timed_from = (step, time.monotonic())

    def step_done(self, step: int, last_loss: Callable[[], float]) -> None:
        """After step `step` was dispatched; `last_loss()` (which waits for the step) is called
        only when the live line is redrawn."""
        if not self.live or time.monotonic() - self.drawn < self.redraw_s:
            return
        loss = last_loss()
        self.finished(step)
        self.drawn = time.monotonic()
        self._draw(f"step {step}/{self.total}  loss {loss:.5g}{self.rate_text(step)}")

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def line(self, text: str) -> None:
        """A permanent line (the live line is cleared first and redrawn at the next step)."""
        if not self.enabled:
            return
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
            self.drawn = 0.0
        self.stream.write(text + "\n")
        self.stream.flush()

    def interval(self, step: int, means: dict[str, float]) -> None:
        """The compact line of a log interval: mean losses, learning rate, speed and ETA."""
        terms = ", ".join(f"{k[len('loss_'):]} {v:.4g}" for k, v in means.items()
                          if k.startswith("loss_"))
        self.line(f"step {step}/{self.total}  loss {means['loss']:.5g}"
                  + (f" ({terms})" if terms else "")
                  + f"  lr {means['learning_rate']:.3g}{self.rate_text(step)}")

    def close(self) -> None:
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0
