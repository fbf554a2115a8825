"""convert_state_dict: official key names and layouts -> our params; bad state dicts rejected."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from official_reference import reference, reference_state_dict

from ifan_jax.models import IFAN
from ifan_jax.weights.convert import (
    ConversionError,
    check_against_model,
    convert_state_dict,
    infer_model_config,
)


@pytest.fixture(scope="module")
def state():
    return reference_state_dict("official")


@pytest.fixture(scope="module")
def converted(state):
    return convert_state_dict(state, "official")


def bare(state):
    """The state dict without its `Network.` prefixes (reblurNet. keys kept)."""
    return {k.removeprefix("Network."): v for k, v in state.items()}


def assert_same_params(a, b):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert set(fa) == set(fb)
    for key in fa:
        np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=str(key))


def test_reference_keys_carry_network_and_reblur_prefixes(state):
    assert all(k.startswith(("Network.", "reblurNet.")) for k in state)
    assert any(k.startswith("reblurNet.") for k in state)


@pytest.mark.parametrize("prefix", ["", "module.", "Network.", "module.Network."])
def test_key_prefixes_are_accepted(state, converted, prefix):
    renamed = {(f"module.{k}" if prefix.startswith("module.") and k.startswith("reblurNet.")
                else k if k.startswith("reblurNet.") else prefix + k): v
               for k, v in bare(state).items()}
    params, config = convert_state_dict(renamed, "official")
    assert config == converted[1]
    assert_same_params(params, converted[0])
    assert "reblurring_network" in params  # reblurNet. keys kept, with or without module.


def test_inferred_config(converted):
    params, config = converted
    assert config["channels"] == 8 and config["num_iterations"] == 3
    assert config["res_units"] == 2 and config["filter_size"] == 3
    assert config["use_reblur"] and config["reblur_iterations"] == 3
    assert not config["dual_pixel_input"]
    assert config["iac_variant"] == "official"
    assert convert_state_dict(reference_state_dict("official"), "separable")[1]["iac_variant"] == \
        "separable"
    check_against_model(params, config)


def test_layouts(state, converted):
    params = converted[0]
    # Conv OIHW -> HWIO; transposed conv IOHW -> (kh, kw, in, out); the 1x1 filter conv.
    np.testing.assert_array_equal(params["feature_extractor"]["conv1_1"]["kernel"],
                                  state["Network.conv1_1.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["reconstructor"]["up2"]["kernel"],
                                  state["Network.upconv2_u.0.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(params["filter_predictor"]["filter_conv"]["kernel"][0, 0],
                                  state["Network.F.3.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(
        params["reblurring_network"]["filter_head"]["res2"]["unit2_conv2"]["bias"],
        state["reblurNet.RBF.2.stem.1.2.bias"])


def test_without_reblurring_network(state):
    params, config = convert_state_dict({k: v for k, v in state.items()
                                         if not k.startswith("reblurNet.")})
    assert not config["use_reblur"] and "reblurring_network" not in params
    check_against_model(params, config)


@pytest.mark.parametrize("n", [2, 5])
def test_num_iterations_inferred_from_shapes(state, n):
    c4, k = 32, 3
    resized = dict(state)
    m = n * c4 * (2 * k + 1)
    resized["Network.F.3.weight"] = np.zeros((m, c4, 1, 1), np.float32)
    resized["Network.F.3.bias"] = np.zeros((m,), np.float32)
    resized["reblurNet.RBF.0.0.weight"] = np.zeros((c4, m, 3, 3), np.float32)
    params, config = convert_state_dict(resized)
    assert config["num_iterations"] == n
    check_against_model(params, config)


def test_dual_pixel_inferred_and_runs(state):
    dual = dict(state)
    w = state["Network.kconv1_1.0.weight"]
    dual["Network.kconv1_1.0.weight"] = np.concatenate([w, w * 0.5], axis=1)  # 6 input channels
    params, config = convert_state_dict(dual)
    assert config["dual_pixel_input"]
    check_against_model(params, config)
    ref = reference("official")
    model = IFAN.from_config(config)
    c, r, left = (jnp.asarray(ref[f"input_{v}"]) for v in "CRL")
    out = model.apply({"params": params}, c, r, left)["result"]
    assert out.shape == c.shape and np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(ValueError, match="right and left"):
        model.apply({"params": params}, c)


@pytest.mark.parametrize("key", ["Network.conv2_2.0.bias", "Network.DME.2.stem.1.0.weight",
                                 "Network.upconv1_u.0.weight", "reblurNet.RBF.3.bias",
                                 "Network.conv1_1.0.weight"])
def test_missing_key_is_named(state, key):
    broken = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ConversionError, match="missing key") as e:
        convert_state_dict(broken)
    assert key.removeprefix("Network.") in str(e.value)


@pytest.mark.parametrize("key", ["Network.conv5_1.0.weight", "Network.F.4.weight",
                                 "Network.conv1_1.0.running_mean", "RBF.0.0.weight",
                                 "reblurNet.conv1_1.0.weight"])
def test_unexpected_key_is_named(state, key):
    broken = dict(state)
    broken[key] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ConversionError, match="unexpected key") as e:
        convert_state_dict(broken)
    assert key in str(e.value)


@pytest.mark.parametrize("key,shape", [("Network.conv2_2.0.weight", (16, 8, 3, 3)),
                                       ("Network.upconv3_u.0.bias", (16,)),
                                       ("Network.out_res.0.weight", (3, 8, 3)),
                                       ("reblurNet.RBF.0.0.weight", (32, 672, 1, 1))])
def test_wrong_shape_is_named(state, key, shape):
    broken = dict(state)
    broken[key] = np.zeros(shape, np.float32)
    with pytest.raises(ConversionError, match="shape") as e:
        convert_state_dict(broken)
    assert key in str(e.value) and str(shape) in str(e.value)


def test_not_an_ifan_checkpoint():
    with pytest.raises(ConversionError, match="conv1_1.0.weight"):
        infer_model_config({"fc.weight": np.zeros((3, 3))})
    with pytest.raises(ConversionError, match="F.3.weight"):
        state = reference_state_dict("official")
        state["Network.F.3.weight"] = np.zeros((100, 32, 1, 1), np.float32)
        convert_state_dict(state)


def test_duplicate_key_after_prefix_stripping(state):
    doubled = dict(state)
    doubled["module.Network.conv1_2.0.bias"] = state["Network.conv1_2.0.bias"]
    with pytest.raises(ConversionError, match="duplicates"):
        convert_state_dict(doubled)
