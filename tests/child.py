"""A command in a child process and its own peak memory.

`os.wait4` on a direct child of pytest is not enough: Linux starts a child's peak resident size at
its parent's (fork and vfork share or copy the parent's pages, and exec keeps the high-water mark),
so in a long test session every child would report pytest's own peak. The command is therefore
started by a small Python launcher, whose pages are the only ones its child inherits; the launcher
writes the child's `ru_maxrss` to a file and ends as the child ended (its exit status, or its
signal)."""

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading

_LAUNCH = """\
import os, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    if os.WTERMSIG(status) != signal.SIGKILL:  # (SIGKILL's handler cannot be set)
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def run(args, env=None, cwd=None, timeout=600):
    """(exit status, stdout, stderr, peak resident memory in MB) of `args`, killed after `timeout`
    seconds; the peak is NaN (so no bound holds) when the launcher was killed before writing it."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = os.path.join(scratch, "peak")
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, peak_file, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", env=env, cwd=cwd, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            stdout, stderr = proc.communicate()
        finally:
            timer.cancel()
        try:
            with open(peak_file) as f:
                peak_mb = int(f.read()) / 1024
        except FileNotFoundError:
            peak_mb = math.nan
    return proc.returncode, stdout, stderr, peak_mb
