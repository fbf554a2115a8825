"""Checkpoints that travel and training that scales out, with real processes: 1 and 2 devices,
resume on another device count, and two `train.py` processes started as README.md says."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from repo import ROOT

from ifan_jax import checkpoint
from ifan_jax.data import testing as data_testing

STEPS = 4
OVERRIDES = {"total_steps": STEPS, "checkpoint_every_steps": 2, "eval_every_steps": 2,
             "log_every_steps": 2, "image_summary_every_steps": 1000, "keep_checkpoints": 10,
             "eval_lpips": False}
ROUNDING = 1e-5  # parameters of another device count: same batches, another summation order

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # Three validation images: two processes score two and one (see validation_psnr).
    data_testing.write_fake_dataset(root, "dpdd", num={"train": 4, "val": 3}, size=(40, 48))
    return str(root)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xla_cache")
    return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", IFAN_JAX_CACHE=str(cache),
                IFAN_JAX_HEARTBEAT_TIMEOUT="10")


def train_args(workdir, data_root, **extra):
    args = [f"--config={os.path.join(ROOT, 'configs', 'tiny.py')}", f"--workdir={workdir}",
            f"--config.data_dir={data_root}"]
    return args + [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]


class Process:
    """A subprocess whose output is collected by a thread (so that no pipe fills up)."""

    def __init__(self, args, env):
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.last_line = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.append(line)
            self.last_line = time.monotonic()
        self.closed = time.monotonic()  # the process's output ends when it exits

    def poll(self):
        return self.popen.poll()

    @property
    def returncode(self):
        return self.popen.returncode

    def send_signal(self, sig):
        self.popen.send_signal(sig)

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()

    def finish(self, timeout=900):
        """(output, seconds from the last output line to the exit)."""
        self.popen.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return "".join(self.lines), self.closed - self.last_line


def start(args, env, devices=1, extra_env=None) -> Process:
    env = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               **(extra_env or {}))
    return Process(args, env)


def finish(proc, timeout=900):
    return proc.finish(timeout)


def single(workdir, data_root, env, devices, **extra):
    return start([sys.executable, "train.py", *train_args(workdir, data_root, **extra)], env, devices)


def leaves(params):
    return jax.tree.leaves(params)


def max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b), strict=True))


def steps_of(workdir, sub="checkpoints"):
    return sorted(int(s) for s in os.listdir(os.path.join(workdir, sub)) if s.isdigit())


def validation_metrics(workdir, step):
    """The validation metrics recorded with best/<step> (full precision)."""
    with open(os.path.join(workdir, "best", str(step), "metrics", "metrics")) as f:
        return json.load(f)


def validation_psnr(workdir, step):
    return validation_metrics(workdir, step)["psnr"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root, env):
    """Workdirs trained STEPS steps on 1 and on 2 devices (run side by side)."""
    base = tmp_path_factory.mktemp("runs")
    workdirs = {n: str(base / f"devices{n}") for n in (1, 2)}
    procs = {n: single(w, data_root, env, n) for n, w in workdirs.items()}
    for n, proc in procs.items():
        out, tail = finish(proc)
        assert proc.returncode == 0, out[-3000:]
        assert f"Validation after step {STEPS}" in out and f"on {n} device(s)" in out
        assert tail < 20, f"the process exited {tail:.0f} s after its last line"
    return workdirs


def test_a_two_device_workdir_deblurs_in_a_one_device_process_like_a_one_device_one(runs):
    from ifan_jax.inference import Deblurrer

    assert jax.device_count() == 1
    _, one = checkpoint.load_params(runs[1])
    _, two = checkpoint.load_params(runs[2])
    assert all(isinstance(x, np.ndarray) for x in leaves(two))
    difference = max_difference(one, two)
    print(f"max |params 2 devices - 1 device| after {STEPS} steps: {difference:.3g}")
    assert 0 <= difference < ROUNDING
    image = np.random.default_rng(3).random((48, 64, 3), dtype=np.float32)
    out_one = Deblurrer.from_checkpoint(runs[1])(image)
    out_two = Deblurrer.from_checkpoint(runs[2])(image)
    print(f"max |deblurred 2 devices - 1 device|: {np.abs(out_two - out_one).max():.3g}")
    np.testing.assert_allclose(out_two, out_one, atol=1e-4, rtol=0)


def resumable_copy(workdir, target, step=2):
    """`workdir` as it was after `step`: its later checkpoints removed."""
    shutil.copytree(workdir, target)
    for later in steps_of(target):
        if later > step:
            shutil.rmtree(os.path.join(target, "checkpoints", str(later)))
    shutil.rmtree(os.path.join(target, "best"))
    return str(target)


def test_resume_on_another_device_count(runs, data_root, env, tmp_path):
    resumed = {(2, 1): resumable_copy(runs[2], tmp_path / "two_to_one"),
               (1, 2): resumable_copy(runs[1], tmp_path / "one_to_two")}
    procs = {key: single(w, data_root, env, key[1]) for key, w in resumed.items()}
    for (before, after), proc in procs.items():
        out, _ = finish(proc)
        assert proc.returncode == 0, out[-3000:]
        workdir = resumed[(before, after)]
        assert f"Resuming from {workdir}/checkpoints/2" in out and f"on {after} device(s)" in out
        _, got = checkpoint.load_params(workdir)
        for n in (1, 2):
            _, straight = checkpoint.load_params(runs[n])
            difference = max_difference(got, straight)
            print(f"resumed {before}->{after} devices vs {n} device(s) straight: {difference:.3g}")
            assert difference < ROUNDING


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_command():
    """The several-hosts command of README.md, as (environment, arguments)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line for line in f if "JAX_PROCESS_ID=" in line and "train.py" in line]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    assignments = [w for w in words if re.fullmatch(r"[A-Z_]+=\S+", w)]
    command = words[len(assignments):]
    assert command[:2] == ["python", "train.py"] and "--config.distributed=True" in command
    return dict(a.split("=", 1) for a in assignments), command[2:]


def start_processes(workdir, data_root, env, **extra):
    """The README's command on "two hosts" (two processes here): its variables and flags, with
    the coordinator on localhost, the tiny config, this workdir and these overrides."""
    variables, args = readme_command()
    assert set(variables) == {"JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"}
    port = free_port()
    ours = train_args(workdir, data_root, **extra)  # --config, --workdir: in the README's places
    replace = {o.split("=")[0]: o for o in ours[:2]}
    args = [replace.get(a.split("=")[0], a) for a in args] + ours[2:]
    procs = []
    for index in range(2):
        values = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                  "JAX_PROCESS_ID": str(index)}
        procs.append(start([sys.executable, "train.py", *args], env, 1, values))
    return procs


def wait_for(condition, procs, timeout=600):
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(p.poll() is None for p in procs), "a process ended early"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def kill_all(procs):
    for p in procs:
        p.kill()


def test_two_processes(runs, data_root, env, tmp_path):
    workdir = str(tmp_path / "two_processes")
    # 1. Two processes, one device each, the same global batch as the 2-device run.
    procs = start_processes(workdir, data_root, env)
    try:
        outs = [finish(p)[0] for p in procs]
    finally:
        kill_all(procs)
    for index, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, out[-3000:]
        assert f"[process {index}] reads rows {index}-{index} of each global batch" in out
    assert "on 2 device(s) (2 process(es))" in outs[0]
    assert outs[0].count(f"Validation after step {STEPS}") == 1 and "Validation" not in outs[1]
    # One set of checkpoints, complete, that a plain one-device process (this one) reads.
    assert steps_of(workdir) == [2, 4]
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]
    _, params = checkpoint.load_params(workdir)
    _, two_devices = checkpoint.load_params(runs[2])
    difference = max_difference(params, two_devices)
    print(f"max |params 2 processes - 1 process with 2 devices|: {difference:.3g}")
    assert difference < ROUNDING
    # Validation over the whole split, combined once: the 2-device run's value.
    psnr, reference = validation_psnr(workdir, steps_of(workdir, "best")[0]), \
        validation_psnr(runs[2], steps_of(runs[2], "best")[0])
    print(f"validation PSNR, 2 processes {psnr!r}, 1 process {reference!r}")
    assert abs(psnr - reference) < 1e-3
    # ... and each of the 3 validation images counted once over the two processes (2 + 1).
    assert validation_metrics(workdir, steps_of(workdir, "best")[0])["num_images"] == 3

    # 2. Resumed for a long run; process 1 killed: process 0 stops with a clear error, soon.
    procs = start_processes(workdir, data_root, env, total_steps=10**6)
    try:
        wait_for(lambda: os.path.isdir(os.path.join(workdir, "checkpoints", "6")), procs)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, _ = finish(procs[0], timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        kill_all(procs)
    print(f"process 0 stopped {stopped_after:.1f} s after process 1 was killed")
    assert procs[0].returncode not in (0, None)
    # Where process 0 waits in a collective it says so on one line at once; where it waits on
    # JAX's coordination service, JAX itself ends it after the heartbeat timeout.
    # (JAX's own line names the heartbeats: "Task 1 heartbeat timeout" where the error reaches
    # Python, "tasks are unhealthy (stopped sending heartbeats)" where its client aborts first.)
    assert ("train.py: process 0 of 2 stopped: lost contact with the other processes" in out
            or "Task 1 heartbeat timeout" in out or "stopped sending heartbeats" in out), out[-3000:]
    last = max(steps_of(workdir))

    # 3. Both restarted: they resume; SIGTERM to both: both save the same step and exit 0.
    procs = start_processes(workdir, data_root, env, total_steps=10**6)
    try:
        wait_for(lambda: max(steps_of(workdir)) >= last + 2, procs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [finish(p, timeout=300)[0] for p in procs]
    finally:
        kill_all(procs)
    assert f"Resuming from {workdir}/checkpoints/{last}" in outs[0]
    stops = [re.findall(r"\[process (\d)\] Stopped at step (\d+) on a pre-emption notice", out)
             for out in outs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert stops[0] and stops[1] and stops[0][0][1] == stops[1][0][1], stops
    assert int(stops[0][0][1]) == max(steps_of(workdir))
