"""The converted tiny official checkpoint reproduces the official PyTorch outputs.

tests/assets/tiny_*_iac.npz hold the official code's outputs (ch=8, N=3) on fixed weights and
inputs, for both IAC variants; README.json holds its three training losses.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from official_reference import ASSETS, reference, reference_state_dict

from benchmarks.weights import random_params
from ifan_jax.inference import Deblurrer
from ifan_jax.models import IFAN
from ifan_jax.weights.convert import convert_state_dict

TOL = 1e-5

# our training output -> reference array
TRAIN_OUTPUTS = {
    "result": "result_train",
    "filters": "filters",
    "disparity": "disparity_R",
    "warped_right": "warped_R_down",
    "left_down": "L_down",
    "reblurred": "reblurred_GT_down",
}


@pytest.fixture(scope="module", params=["official", "separable"])
def run(request):
    variant = request.param
    ref = reference(variant)
    params, config = convert_state_dict(reference_state_dict(variant), variant)
    model = IFAN.from_config(config)
    c, r, left, gt = (jnp.asarray(ref[f"input_{n}"]) for n in ("C", "R", "L", "GT"))
    variables = {"params": params}
    return dict(
        variant=variant,
        ref=ref,
        eval=model.apply(variables, c),  # default: train=False, streaming IAC
        plain=model.apply(variables, c, return_filters=True),
        train=model.apply(variables, c, r, left, gt, train=True),
        gt=gt,
    )


def max_diff(a, b):
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_eval_result_matches_official(run):
    assert set(run["eval"]) == {"result"}
    assert max_diff(run["eval"]["result"], run["ref"]["result_eval"]) < TOL


def test_streaming_equals_plain_path(run):
    assert set(run["plain"]) == {"result", "filters"}
    assert max_diff(run["eval"]["result"], run["plain"]["result"]) < TOL
    # The plain path's filters are those of the training pass (same weights, same input).
    assert max_diff(run["plain"]["filters"], run["ref"]["filters"]) < TOL


@pytest.mark.parametrize("ours", sorted(TRAIN_OUTPUTS))
def test_train_outputs_match_official(run, ours):
    assert max_diff(run["train"][ours], run["ref"][TRAIN_OUTPUTS[ours]]) < TOL


def test_losses_match_official(run):
    with open(os.path.join(ASSETS, "README.json")) as f:
        expected = json.load(f)["cases"][f"{run['variant']}_iac"]["losses_mse"]
    out = run["train"]
    mse = lambda a, b: float(jnp.mean((a - b) ** 2))
    got = {
        "deblur": mse(out["result"], run["gt"]),
        "disparity": mse(out["warped_right"], out["left_down"]),
        "reblur": mse(out["reblurred"], out["blurred_down"]),
    }
    for name, value in expected.items():
        assert abs(got[name] - value) < TOL, (name, got[name], value)


def test_deblurrer_matches_official(run):
    """The user's path: `Deblurrer` compiles with its own XLA options on the CPU
    (`compiled.INFERENCE_CPU_OPTIONS`: other convolution kernels, another schedule)."""
    params, config = convert_state_dict(reference_state_dict(run["variant"]), run["variant"])
    image = run["ref"]["input_C"][0]
    out = Deblurrer(params, config)(image, tile=0)
    assert max_diff(out, run["ref"]["result_eval"][0]) < TOL


def test_deblurrer_options_keep_the_numbers_where_they_change_the_kernels():
    """At 32 channels XLA's defaults run the convolutions as YNNPACK fusions and `Deblurrer`
    compiles them without (`compiled.INFERENCE_CPU_OPTIONS`): the outputs agree to 1e-5 (the full
    paper-size network against the official code is in the README: 7.2e-7 at 720x1280)."""
    config = {"channels": 32, "num_iterations": 3, "reblur_iterations": 3,
              "iac_variant": "official"}
    params = random_params(config)
    image = np.random.default_rng(0).random((64, 96, 3), np.float32)
    model = IFAN.from_config(config)
    plain = jax.jit(lambda p, x: model.apply({"params": p}, x)["result"])
    assert "__ynn_fusion" in plain.lower(params, image[None]).compile().as_text()
    deblur = Deblurrer(params, config)
    out = deblur(image, tile=0)
    (executable,) = deblur.forward.compiled.executables.values()
    assert "__ynn_fusion" not in executable.as_text()
    assert max_diff(out, plain(params, image[None])[0]) < TOL


def test_wrong_iac_variant_does_not_reproduce_reference():
    """The variant matters: separable-trained weights run with the official IAC do not match."""
    ref = reference("separable")
    params, config = convert_state_dict(reference_state_dict("separable"), "official")
    out = IFAN.from_config(config).apply({"params": params}, jnp.asarray(ref["input_C"]))
    assert max_diff(out["result"], ref["result_eval"]) > 1e-4
