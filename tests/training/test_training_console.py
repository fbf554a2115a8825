"""The training console: durations, the interval line, the live line only on a terminal."""

import io

from ifan_jax.training.console import TrainProgress, format_duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_durations_are_minutes_and_seconds():
    assert [format_duration(s) for s in (0, 12.4, 65, 3725)] == ["0s", "12s", "1m 05s",
                                                                 "1h 02m 05s"]


def test_interval_line_and_live_line():
    log = io.StringIO()
    progress = TrainProgress(0, 100, stream=log)
    progress.step_done(1, lambda: 1 / 0)  # not a terminal: no live line, the loss is not read
    progress.finished(10)
    progress.timed_from = (10, progress.timed_from[1] - 10.0)  # 10 s ago
    progress.interval(20, {"loss": 0.5, "loss_deblur": 0.25, "loss_reblur": 0.25,
                           "grad_norm": 1.0, "learning_rate": 1e-3})
    line = log.getvalue()
    assert line.startswith("step 20/100  loss 0.5 (deblur 0.25, reblur 0.25)  lr 0.001  ")
    assert "steps/s  ETA 1m 20s" in line or "steps/s  ETA 1m 19s" in line
    assert line.count("\n") == 1 and "\r" not in line

    tty = Terminal()
    live = TrainProgress(0, 100, stream=tty, redraw_s=0.0)
    live.step_done(5, lambda: 0.125)
    live.line("step 5/100  validation PSNR 30.00 dB")
    out = tty.getvalue()
    assert out.startswith("\rstep 5/100  loss 0.125") and out.endswith("validation PSNR 30.00 dB\n")
    silent = TrainProgress(0, 100, stream=Terminal(), enabled=False)
    silent.line("from another process")
    assert silent.stream.getvalue() == ""
