"""A command in a child process and its own peak memory.

`os.wait4` on a direct child of pytest is not enough: Linux starts a child's peak resident size at
its parent's (fork and vfork share or copy the parent's pages, and exec keeps the high-water mark),
so in a long test session every child would report pytest's own peak. The command is therefore
started by a small Python launcher, whose pages are the only ones its child inherits, and the
launcher reports the child's `ru_maxrss`."""

import os
import signal
import subprocess
import sys
import tempfile
import threading

_LAUNCH = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[2:])\n"
           "_, status, usage = os.wait4(p.pid, 0)\n"
           "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
           "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n")


def run(args, env=None, cwd=None, timeout=600):
    """(exit status, stdout, stderr, peak resident memory in MB) of `args`; killed after `timeout` s."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = os.path.join(scratch, "peak")
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, peak_file, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            stdout, stderr = proc.communicate()
        finally:
            timer.cancel()
        with open(peak_file) if os.path.exists(peak_file) else open(os.devnull) as f:
            peak_kb = int(f.read() or 0)
    code = proc.returncode
    if code is not None and code > 128:  # the launcher's `% 256` of a signal's negative status
        code -= 256
    return (code, stdout.decode(errors="replace"), stderr.decode(errors="replace"), peak_kb / 1024)
