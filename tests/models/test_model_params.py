"""Parameter counts and names against the official model, and the official initialisation."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from official_reference import ASSETS

from ifan_jax.config import load_module
from ifan_jax.models import IFAN, count_params, layers
from ifan_jax.models import abstract_params as param_shapes
from ifan_jax.models import ifan as ifan_module
from ifan_jax.models.layers import xavier_uniform
from ifan_jax.weights.convert import check_against_model, convert_state_dict, official_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
configs_ifan = load_module(os.path.join(REPO, "configs", "ifan.py"))


def ifan_config_module():
    return configs_ifan


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(ASSETS, "official_state_dict_manifest.json")) as f:
        return json.load(f)


def test_paper_model_parameter_count(manifest):
    shapes = param_shapes(ifan_config_module().get_config().model)
    assert count_params(shapes) == manifest["param_count_IFAN"] == 10_476_996
    assert count_params(shapes["reblurring_network"]) == manifest["param_count_RBN"] == 19_139_685
    assert count_params({"params": shapes}, include_reblur=True) == 10_476_996 + 19_139_685


@pytest.mark.parametrize("n,expected", [(8, 9_436_740), (26, 11_517_252), (35, 12_557_508),
                                        (44, 13_597_764)])
def test_parameter_count_per_num_iterations(manifest, n, expected):
    assert manifest[f"param_count_IFAN_N{n}"] == expected
    shapes = param_shapes(ifan_config_module().get_config(f"N={n}").model)
    assert count_params(shapes) == expected


def test_official_state_dict_maps_one_to_one(manifest):
    official = {**manifest["IFAN (N=17, ch=32)"], **manifest["RBN"]}
    state = {key: np.zeros(shape, np.float32) for key, shape in official.items()}
    params, config = convert_state_dict(state, "official")
    assert (config["channels"], config["num_iterations"], config["res_units"]) == (32, 17, 2)
    assert config["use_reblur"] and not config["dual_pixel_input"]
    # Every official tensor became exactly one of ours and the tree is exactly the model's.
    assert len(flatten_dict(params)) == len(official)
    check_against_model(params, config)
    assert count_params(params) == manifest["param_count_IFAN"]
    assert count_params(params["reblurring_network"]) == manifest["param_count_RBN"]
    # The converter's own list of official tensors is the manifest.
    stripped = {key.removeprefix("Network."): tuple(shape) for key, shape in official.items()}
    assert official_shapes(config) == stripped


def test_xavier_uniform_distribution():
    """`xavier_uniform(gain)` is torch's xavier_uniform_: U(-a, a), a = gain*sqrt(6/(fan_in+fan_out))."""
    for gain, shape in ((1.5, (3, 3, 32, 64)), (1.0, (4, 4, 16, 8))):
        w = np.asarray(xavier_uniform(gain)(jax.random.PRNGKey(0), shape))
        kh, kw, cin, cout = shape
        bound = gain * math.sqrt(6.0 / (kh * kw * (cin + cout)))
        assert np.max(np.abs(w)) <= bound * (1 + 1e-6)
        assert np.max(w) >= 0.98 * bound and np.min(w) <= -0.98 * bound
        assert abs(np.mean(w)) < 0.05 * bound
        np.testing.assert_allclose(np.var(w), bound**2 / 3, rtol=0.05)


@pytest.fixture(scope="module")
def tiny_params_with_gain_marks():
    """Tiny model params initialised with every Xavier initialiser replaced by `fill with gain`.

    So each kernel shows which gain the model asked for (and that it used `xavier_uniform` at
    all); biases come from the model's own initialiser. No random numbers: fast.
    """
    cfg = ifan_config_module().model_config(3)
    cfg.channels = 8
    model = IFAN.from_config(cfg)
    x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    mark = lambda gain: lambda key, shape, dtype=jnp.float32: np.full(shape, gain, np.float32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layers, "xavier_uniform", mark)
        patch.setattr(ifan_module, "xavier_uniform", mark)
        variables = model.lazy_init(jax.random.PRNGKey(0), x, x, x, x, train=True)
    return flatten_dict(variables["params"])


def test_kernels_use_xavier_with_official_gains(tiny_params_with_gain_marks):
    params = tiny_params_with_gain_marks
    kernels = {path: np.asarray(v) for path, v in params.items() if path[-1] == "kernel"}
    assert len(kernels) == len(params) // 2
    for path, w in kernels.items():
        # The filter predictor's head (official `F`, gain wiF = 1.5); everything else, the
        # reblurring network included (wi = wiRF = 1.0), gain 1.
        gain = 1.5 if path[0] == "filter_predictor" and path[1].startswith("filter_") else 1.0
        assert np.all(w == gain), ("/".join(path), np.unique(w)[:5], gain)
    filter_head = [p for p in kernels if p[0] == "filter_predictor" and p[1].startswith("filter_")]
    assert len(filter_head) == 1 + 2 * 2 * 2 + 1  # conv_in, 2 blocks x 2 units x 2 convs, 1x1
    assert any(p[0] == "reblurring_network" for p in kernels)


def test_biases_start_at_zero(tiny_params_with_gain_marks):
    params = tiny_params_with_gain_marks
    biases = [np.asarray(v) for path, v in params.items() if path[-1] == "bias"]
    assert len(biases) == len(params) // 2
    assert all(not np.any(b) for b in biases)
