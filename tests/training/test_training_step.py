"""The losses, the train state and the pure train step, on synthetic numpy batches."""


import jax
import numpy as np
import pytest

from ifan_jax import inference
from ifan_jax.config import load_config
from ifan_jax.training import loop as train_lib
from ifan_jax.training import losses
from ifan_jax.training import step as step_lib


def ifan_config(arg=None):
    return load_config("ifan", arg)


def tiny_config(arg=None):
    return load_config("tiny", arg)


def batch(size=32, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.random((n, size, size, 3), dtype=np.float32) for k in ("c", "r", "l", "gt")}


def test_losses_are_the_mean_squared_errors():
    rng = np.random.default_rng(0)
    out = {k: rng.random((2, 8, 8, 3), dtype=np.float32)
           for k in ("result", "warped_right", "left_down", "reblurred", "blurred_down")}
    gt = rng.random((2, 8, 8, 3), dtype=np.float32)
    terms = losses.ifan_losses(out, gt)
    want = {"deblur": np.mean((out["result"] - gt) ** 2),
            "disparity": np.mean((out["warped_right"] - out["left_down"]) ** 2),
            "reblur": np.mean((out["reblurred"] - out["blurred_down"]) ** 2)}
    for k, v in want.items():
        assert float(terms[k]) == pytest.approx(float(v), rel=1e-6)
    assert float(terms["total"]) == pytest.approx(sum(float(v) for v in want.values()), rel=1e-6)
    only = losses.ifan_losses({"result": out["result"]}, gt)
    assert set(only) == {"deblur", "total"}


@pytest.mark.parametrize("variant, terms", [
    ("baseline", {"loss_deblur"}), ("D", {"loss_deblur", "loss_disparity"}),
    ("FR", {"loss_deblur", "loss_reblur"}), ("FDR", {"loss_deblur", "loss_disparity", "loss_reblur"}),
])
@pytest.mark.slow
def test_loss_terms_follow_the_components(variant, terms):
    config = tiny_config(f"variant={variant}")
    state = jax.eval_shape(lambda: step_lib.create_train_state(config))
    _, metrics = jax.eval_shape(step_lib.train_step, state, batch())
    assert {k for k in metrics if k.startswith("loss_")} == terms
    assert ("reblurring_network" in state.params) == ("R" in variant)


@pytest.mark.slow
def test_one_step_changes_parameters_and_lowers_the_loss():
    state = step_lib.create_train_state(tiny_config())
    step = jax.jit(step_lib.train_step)
    b = batch()
    new, m0 = step(state, b)
    assert int(new.step) == 1
    for name in ("feature_extractor", "filter_predictor", "reblurring_network"):
        before = jax.tree.leaves(state.params[name])
        after = jax.tree.leaves(new.params[name])
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), name
    _, m1 = step(new, b)  # the loss of the updated parameters on the same batch
    assert float(m1["loss"]) < float(m0["loss"])
    assert float(m0["learning_rate"]) == pytest.approx(1e-3)
    assert np.isfinite(float(m0["grad_norm"])) and float(m0["grad_norm"]) > 0
    # The deblurred output of eval_step is clipped to [0, 1].
    out = jax.jit(lambda p, x: inference.eval_step(new.apply_fn, p, x))(new.params, {"c": b["c"]})
    assert out.shape == b["c"].shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_batch_must_divide_by_the_devices():
    config = tiny_config()
    config.batch_size = 8
    train_lib.check_config(config, num_devices=4)
    with pytest.raises(train_lib.ConfigError, match="batch_size=8 .* number of devices \\(3"):
        train_lib.check_config(config, num_devices=3)
    config.crop_size = 60
    with pytest.raises(train_lib.ConfigError, match="crop_size"):
        train_lib.check_config(config, num_devices=1)


def test_microbatches_must_divide_each_devices_share():
    config = tiny_config()
    config.batch_size, config.microbatches = 8, 2
    train_lib.check_config(config, num_devices=4)
    with pytest.raises(train_lib.ConfigError, match="microbatches=2 .*batch_size=8 over 8 dev"):
        train_lib.check_config(config, num_devices=8)
    config.microbatches = 0
    with pytest.raises(train_lib.ConfigError, match="microbatches=0"):
        train_lib.check_config(config, num_devices=1)


@pytest.mark.slow
def test_microbatches_run_the_batch_in_interleaved_passes():
    """The network runs once per part on that part's rows, each part rows i, i + k, ... (so it
    spreads over the devices as the batch does); tests/training/test_training_devices.py checks
    that the update is the whole batch's."""
    state = jax.eval_shape(lambda: step_lib.create_train_state(tiny_config()))
    b = batch(n=4)

    def calls(microbatches):  # the first pixel of "c" of each forward pass of the network
        seen = []

        def recording_apply(variables, blurred, *args, **kwargs):
            seen.append(blurred[:, 0, 0, 0])
            return state.apply_fn(variables, blurred, *args, **kwargs)

        recording = state.replace(apply_fn=recording_apply)
        jax.make_jaxpr(lambda s, x: step_lib.train_step(s, x, microbatches))(recording, b)
        return seen

    assert [tuple(c.shape) for c in calls(1)] == [(4,)]
    parts = calls(2)
    assert [tuple(c.shape) for c in parts] == [(2,), (2,)]
    rows = step_lib.microbatch_parts({"c": np.arange(8)}, 4)["c"]
    np.testing.assert_array_equal(rows, [[0, 4], [1, 5], [2, 6], [3, 7]])
    with pytest.raises(ValueError, match="batch of 4 does not split into 3 microbatches"):
        jax.eval_shape(lambda s, x: step_lib.train_step(s, x, microbatches=3), state, b)
