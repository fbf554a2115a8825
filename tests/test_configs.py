"""configs/ifan.py (the paper and its variants) and configs/quickstart.py."""

import os

import jax
import numpy as np
import pytest

from ifan_jax.config import ConfigArgError, load_config
from ifan_jax.training import loop as train_lib
from ifan_jax.training import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("total_steps", "batch_size", "seed", "checkpoint_every_steps", "eval_every_steps",
            "log_every_steps", "data_dir", "model")




def test_paper_config():
    c = load_config("ifan")
    for key in REQUIRED:
        assert key in c, key
    assert (c.batch_size, c.crop_size, c.total_steps) == (8, 256, 600_000)
    assert (c.learning_rate, tuple(c.lr_boundaries), c.lr_decay) == (1e-4, (500_000, 550_000), 0.5)
    assert (c.beta1, c.beta2, c.eps, c.weight_decay, c.grad_clip_norm) == (0.9, 0.999, 1e-8, 0.01, 0.5)
    m = c.model
    assert (m.num_iterations, m.iac_variant, m.adaptive_conv) == (17, "separable", "iac")
    assert m.use_filter_prediction and m.use_disparity and m.use_reblur and not m.dual_pixel_input


@pytest.mark.parametrize("arg, expect", [
    ("variant=baseline", dict(use_filter_prediction=False, use_disparity=False, use_reblur=False)),
    ("variant=FD", dict(use_filter_prediction=True, use_disparity=True, use_reblur=False)),
    ("variant=FR", dict(use_filter_prediction=True, use_disparity=False, use_reblur=True)),
    ("N=26", dict(num_iterations=26, reblur_iterations=26)),
    ("N=44", dict(num_iterations=44)),
    ("fac", dict(adaptive_conv="fac", fac_kernel_size=11)),
    ("dual", dict(dual_pixel_input=True)),
])
def test_variants_select_the_model(arg, expect):
    model = load_config("ifan", arg).model
    for key, value in expect.items():
        assert model[key] == value, (arg, key)


def test_sixteen_bit_and_unknown_arguments():
    assert load_config("ifan", "bits=16").bit_depth == 16
    with pytest.raises(ValueError, match="unknown config argument 'M'"):
        load_config("ifan", "M=3")


@pytest.mark.parametrize("arg, fac, dual", [
    ("fac", True, False), ("fac=True", True, False), ("fac=true", True, False), ("fac=1", True, False),
    ("fac=False", False, False), ("fac=false", False, False), ("fac=0", False, False),
    ("dual=False", False, False), ("dual=0,fac=no", False, False), ("dual", False, True),
    ("dual=yes,fac=off", False, True), ("", False, False),
])
def test_boolean_arguments_mean_what_they_say(arg, fac, dual):
    # `fac=False` used to turn FAC on (the value was kept as the string "False").
    model = load_config("ifan", arg).model
    assert (model.adaptive_conv == "fac", model.dual_pixel_input) == (fac, dual)
    assert load_config(f"configs/ifan.py:{arg}").model.adaptive_conv == model.adaptive_conv


@pytest.mark.parametrize("arg, key", [("fac=maybe", "fac"), ("dual=2", "dual"), ("N=many", "N"),
                                      ("bits=12", "bits"), ("variant=XYZ", "variant"),
                                      ("iac=both", "iac"), ("N", "N")])
def test_bad_argument_values_name_the_key(arg, key):
    with pytest.raises(ConfigArgError if key in ("fac", "dual", "N") else ValueError,
                       match=f"config argument {key}"):
        load_config("ifan", arg)


def test_load_config_by_name_path_and_suffix(tmp_path):
    assert load_config("ifan", "N=26").model.num_iterations == 26
    assert load_config("configs/ifan.py", "N=26").model.num_iterations == 26
    assert load_config(os.path.join(ROOT, "configs", "ifan.py:N=8")).model.num_iterations == 8
    assert load_config("quickstart").model.channels == 8
    tiny = load_config("tiny:variant=FD")
    assert (tiny.model.channels, tiny.model.num_iterations, tiny.model.use_reblur) == (8, 3, False)
    own = tmp_path / "mine.py"
    own.write_text("from ifan_jax.config import load_config\n\ndef get_config(arg=None):\n"
                   f"    c = load_config({os.path.join(ROOT, 'configs', 'ifan.py')!r}, arg)\n"
                   "    c.seed = 7\n    return c\n")
    assert load_config(str(own), "fac").seed == 7
    with pytest.raises(ValueError, match="nonexistent.py: no such config file"):
        load_config("configs/nonexistent.py")


@pytest.mark.slow
@pytest.mark.parametrize("arg", ["fac", "dual"])
def test_variant_train_step_traces(arg):
    config = load_config("ifan", arg)
    config.model.channels, config.model.num_iterations, config.model.reblur_iterations = 8, 3, 3
    state = jax.eval_shape(lambda: step_lib.create_train_state(config))
    batch = {k: jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32) for k in ("c", "r", "l", "gt")}
    _, metrics = jax.eval_shape(step_lib.train_step, state, batch)
    assert {"loss", "loss_deblur", "loss_disparity", "loss_reblur"} <= set(metrics)


def test_quickstart_config():
    c = load_config("quickstart")
    for key in REQUIRED:
        assert key in c, key
    assert c.synthetic.generate and "{workdir}" in c.data_dir
    assert c.data_dir.format(workdir="/w") == "/w/data"
    assert c.crop_size <= c.synthetic.size and c.crop_size % 8 == 0
    train_lib.check_config(c, num_devices=1)


@pytest.mark.slow
def test_paper_config_trains_two_steps_at_a_tiny_crop():
    """The full paper model of configs/ifan.py (ch=32, N=17, RBN), only the crop made small."""
    config = load_config("ifan")
    config.batch_size, config.crop_size = 2, 32
    train_lib.check_config(config, num_devices=1)
    state = step_lib.create_train_state(config)
    step = jax.jit(step_lib.train_step)
    rng = np.random.default_rng(0)
    for _ in range(2):
        batch = {k: rng.random((2, 32, 32, 3), dtype=np.float32) for k in ("c", "r", "l", "gt")}
        new, metrics = step(state, batch)
        assert all(np.isfinite(float(v)) for v in metrics.values())
        assert float(metrics["learning_rate"]) == pytest.approx(1e-4)
        for name in state.params:  # every module, the reblurring network included, is updated
            changed = [not np.array_equal(a, b) for a, b in
                       zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(new.params[name]))]
            assert any(changed), name
        state = new
    assert int(state.step) == 2
