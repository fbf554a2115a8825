"""Every model variant of the paper builds and runs at a tiny size with the right outputs.

Table 1 (baseline, D, F, FD, FR, FDR), Table 5 (FAC instead of IAC) and the dual-pixel-input
model, all from configs/ifan.py with channels=8, N=3. Parameters come from `jax.eval_shape` of
`init` (the structure), filled with scaled uniform noise by NumPy: fast, and enough to run.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax.config import load_module
from ifan_jax.models import IFAN

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
configs_ifan = load_module(os.path.join(REPO, "configs", "ifan.py"))
SIZE = 32  # 1/8 resolution: 4 x 4
CH, N = 8, 3


def model_config(**kwargs):
    cfg = configs_ifan.model_config(N, **kwargs)
    cfg.channels = CH
    return cfg


def random_params(model, seed=0):
    x = jnp.zeros((1, SIZE, SIZE, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, x, x, x, train=True))
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if len(leaf.shape) == 1:
            return jnp.asarray(rng.uniform(-0.01, 0.01, leaf.shape), jnp.float32)
        kh, kw, cin, cout = leaf.shape
        bound = np.sqrt(6.0 / (kh * kw * (cin + cout)))
        return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map(fill, shapes["params"])


def images(seed=1):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.uniform(0, 1, (1, SIZE, SIZE, 3)), jnp.float32) for _ in range(4)]


CASES = {
    "baseline": dict(variant="baseline"),
    "D": dict(variant="D"),
    "F": dict(variant="F"),
    "FD": dict(variant="FD"),
    "FR": dict(variant="FR"),
    "FDR": dict(variant="FDR"),
    "FDR-fac": dict(variant="FDR", fac=True),
    "FDR-dual": dict(variant="FDR", dual=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_variant_builds_and_runs(name):
    cfg = model_config(**CASES[name])
    model = IFAN.from_config(cfg)
    params = random_params(model)
    c, r, left, gt = images()
    h8 = SIZE // 8

    # Structure: which parts exist.
    assert ("reblurring_network" in params) == cfg.use_reblur
    assert ("iac_substitute" in params) == (not cfg.use_filter_prediction)
    assert params["filter_encoder"]["conv1_1"]["kernel"].shape[2] == (6 if cfg.dual_pixel_input
                                                                      else 3)
    dme_out = params["disparity_map_estimator"]["conv_out"]["kernel"].shape[-1]
    assert dme_out == (1 if cfg.use_disparity else 4 * CH)

    # Training pass: exactly the outputs its losses need.
    out = model.apply({"params": params}, c, r, left, gt, train=True)
    expected = {"result", "filters"}
    if cfg.use_disparity:
        expected |= {"disparity", "warped_right", "left_down"}
    if cfg.use_reblur:
        expected |= {"reblurred", "blurred_down"}
    assert set(out) == expected
    assert out["result"].shape == (1, SIZE, SIZE, 3)
    if not cfg.use_filter_prediction:
        filter_channels = 4 * CH
    elif cfg.adaptive_conv == "fac":
        filter_channels = 4 * CH * cfg.fac_kernel_size**2
    else:
        filter_channels = N * 4 * CH * (2 * cfg.filter_size + 1)
    assert out["filters"].shape == (1, h8, h8, filter_channels)
    for key, channels in (("disparity", 1), ("warped_right", 3), ("left_down", 3),
                          ("reblurred", 3), ("blurred_down", 3)):
        if key in out:
            assert out[key].shape == (1, h8, h8, channels), key
    for key, value in out.items():
        assert np.all(np.isfinite(np.asarray(value))), key

    # Inference pass: {"result"} only, clipped to [0, 1]; the same image as training's, clipped.
    views = (r, left) if cfg.dual_pixel_input else ()
    result = model.apply({"params": params}, c, *views)
    assert set(result) == {"result"}
    result = np.asarray(result["result"])
    assert result.shape == (1, SIZE, SIZE, 3)
    assert result.min() >= 0 and result.max() <= 1
    np.testing.assert_allclose(result, np.clip(np.asarray(out["result"]), 0, 1), atol=1e-5)


def test_dual_pixel_model_needs_both_views():
    model = IFAN.from_config(model_config(dual=True))
    c = images()[0]
    with pytest.raises(ValueError, match="right and left"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), c))


def test_training_needs_views_and_sharp_image():
    model = IFAN.from_config(model_config())
    c = images()[0]
    with pytest.raises(ValueError, match="training needs"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), c, train=True))


def test_unknown_config_key_is_rejected():
    cfg = model_config().to_dict()
    cfg["num_iteration"] = 3
    with pytest.raises(ValueError, match="num_iteration"):
        IFAN.from_config(cfg)
