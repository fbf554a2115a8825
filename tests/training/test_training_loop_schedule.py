"""The training loop's schedule, fast: `train_loop` over a `Run` whose network, data, checkpoints
and writer are stand-ins that record what the loop asks of them. Which steps log (and the means
they log), validate, write images and checkpoint; a resumed run starting after its checkpoint; a
NaN stopping the run with no checkpoint after it; a pre-emption notice saving and stopping. The
network itself is trained end to end in test_training_loop.py (slow)."""

import io

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ifan_jax.training import distributed
from ifan_jax.training import loop as train_lib
from ifan_jax.training.console import TrainProgress


class Recorder:
    """Records (name, step or args) of every call made to it."""

    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def __getattr__(self, method):
        return lambda *args, **kwargs: self.calls.append((f"{self.name}.{method}", args))


def make_run(total=7, first=0, every=None, nan_at=None, preempt_at=None):
    """A `Run` (built without its constructor) whose state is the number of updates done and
    whose step's loss is that number; `nan_at`: the update whose loss is NaN."""
    every = {"log": 2, "eval": 3, "checkpoint": 4, "images": 5, **(every or {})}
    config = ml_collections.ConfigDict({"total_steps": total, **{
        key: every[name] for name, key in train_lib.INTERVALS.items()}})
    run = object.__new__(train_lib.Run)
    run.calls = calls = []
    run.config, run.workdir, run.is_chief = config, "/runs/x", True
    run.first, run.last_saved, run.validation, run.state = first, first or None, None, State(first)
    run.console = io.StringIO()
    run.progress = TrainProgress(first, total, stream=run.console, live=False)
    run.writer = Recorder(calls, "writer")
    run.checkpoints = Recorder(calls, "checkpoints")
    run.mesh = distributed.data_mesh()
    run.data = iter(lambda: {"c": np.zeros((1, 8, 8, 3), np.float32)}, None)

    def step_fn(state, batch):
        assert batch["c"].shape == (1, 8, 8, 3)
        loss = np.nan if state + 1 == nan_at else float(state + 1)
        return State(state + 1), {"loss": jnp.float32(loss), "grad_norm": jnp.float32(1.0),
                                  "learning_rate": jnp.float32(0.5)}

    class Validator:
        def __call__(self, params):
            calls.append(("validate", (params,)))
            return {"psnr": 30.0, "input_psnr": 25.0, "ssim": 0.9}

        def summary_images(self, params):
            calls.append(("images", (params,)))
            return {}

    class Preemption:
        def requested(self, step):
            return step == preempt_at

    run.step_fn, run.validator, run.preemption = step_fn, Validator(), Preemption()
    return run


class State(int):
    """The number of updates done, with the `.params` the loop validates and draws images of."""

    @property
    def params(self):
        return int(self)


def steps_of(run, name):
    """The first argument (a state, i.e. a step) of each call of `name`, in order."""
    return [args[0] for call, args in run.calls if call == name]


def test_each_interval_fires_on_its_multiples_and_at_the_last_step():
    run = make_run(total=7)
    state = train_lib.train_loop(run)
    assert state == 7
    logged = [args for call, args in run.calls if call == "writer.write_scalars"
              and "train_loss" in args[1]]
    # Log every 2 and at the end: the mean loss of each interval (the loss of update k is k).
    assert [(step, scalars["train_loss"]) for step, scalars in logged] == [
        (2, 1.5), (4, 3.5), (6, 5.5), (7, 7.0)]
    assert steps_of(run, "validate") == [3, 6, 7]
    assert steps_of(run, "images") == [5, 7]
    assert steps_of(run, "checkpoints.save") == [4, 7]
    # The best checkpoint is considered after each validation.
    assert steps_of(run, "checkpoints.save_best") == [3, 6, 7]
    assert "step 4/7  loss 3.5" in run.console.getvalue()
    assert "step 3/7  validation PSNR 30.00 dB" in run.console.getvalue()


def test_a_resumed_run_continues_after_its_checkpoint():
    run = make_run(total=7, first=4)
    assert train_lib.train_loop(run) == 7
    assert steps_of(run, "checkpoints.save") == [7]
    assert steps_of(run, "validate") == [6, 7]
    logged = [(a[0], a[1]["train_loss"]) for c, a in run.calls
              if c == "writer.write_scalars" and "train_loss" in a[1]]
    assert logged == [(6, 5.5), (7, 7.0)]


def test_a_nan_loss_stops_the_run_with_no_checkpoint_after_it():
    run = make_run(total=12, every={"checkpoint": 2, "log": 3}, nan_at=5)
    with pytest.raises(train_lib.NonFiniteLossError) as raised:
        train_lib.train_loop(run)
    assert str(raised.value) == ("non-finite training loss at step 5 (loss = nan); stopped, the "
                                 "last good checkpoint is /runs/x/checkpoints/4")
    assert steps_of(run, "checkpoints.save") == [2, 4]


def test_a_preemption_notice_saves_the_step_and_stops():
    run = make_run(total=20, preempt_at=3)
    assert train_lib.train_loop(run) == 3
    assert steps_of(run, "checkpoints.save") == [3]
    assert ("Stopped at step 3 on a pre-emption notice, checkpoint saved; run again with "
            "--workdir=/runs/x to resume") in run.console.getvalue()
