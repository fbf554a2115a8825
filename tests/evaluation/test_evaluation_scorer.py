"""The evaluation core (ifan_jax.evaluation.scorer) and its training front-end, the Validator: both
run inference's one forward pass (`ifan_jax.inference.Forward`) on the whole image."""

import numpy as np
import pytest
from jax.experimental import multihost_utils

from ifan_jax import checkpoint
from ifan_jax.config import load_config
from ifan_jax.data import testing as data_testing
from ifan_jax.evaluation import metrics, scorer
from ifan_jax.inference import Deblurrer, Forward
from ifan_jax.models import IFAN
from ifan_jax.training import validation


@pytest.fixture(scope="module")
def tiny_model(tiny_official_checkpoint):
    """(apply_fn, params, Deblurrer) of the tiny converted official model."""
    model_config, params = checkpoint.load_params(tiny_official_checkpoint)
    return IFAN.from_config(model_config).apply, params, Deblurrer(params, model_config)


def _image(h, w, seed):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@pytest.mark.slow
def test_scorer_pads_crops_back_and_scores_the_output(tiny_model):
    apply_fn, params, deblurrer = tiny_model
    blurred, sharp = _image(37, 45, 0), _image(37, 45, 1)
    score = scorer.Scorer(Forward(apply_fn), dual=False, metrics=("psnr", "mae"),
                          input_metrics=("psnr",), timed=True)
    scored = score.score(params, {"name": b"scene", "c": blurred, "gt": sharp, "bit_depth": 16})
    want = deblurrer.deblur_whole(blurred)  # edge-padded to 40 x 48, cropped back
    # The deblurrer's own forward pass, as evaluate.py runs it: the very same pixels.
    same = scorer.Scorer(deblurrer.forward, dual=False, metrics=()).forward(deblurrer.params,
                                                                            {"c": blurred})[0]
    np.testing.assert_array_equal(same, want)
    assert scored.name == "scene" and scored.bit_depth == 16
    np.testing.assert_allclose(scored.output, want, atol=1e-6)
    assert scored.scores["psnr"] == pytest.approx(metrics.psnr(want, sharp), abs=1e-4)
    assert scored.scores["mae"] == pytest.approx(metrics.mae(want, sharp), abs=1e-6)
    assert scored.scores["input_psnr"] == metrics.psnr(blurred, sharp)
    assert scored.scores["seconds"] > 0 and "ssim" not in scored.scores

    # Rotated sets (PixelDP): the network sees the rotated image; output and truth turn back.
    rotated = scorer.Scorer(Forward(apply_fn), dual=False, metrics=("psnr",), rotated=True)
    out = rotated.score(params, {"name": "r", "c": np.rot90(blurred), "gt": np.rot90(sharp)})
    want = np.rot90(deblurrer.deblur_whole(np.ascontiguousarray(np.rot90(blurred))), k=-1)
    np.testing.assert_allclose(out.output, want, atol=1e-6)
    assert out.scores["psnr"] == pytest.approx(metrics.psnr(want, sharp), abs=1e-4)
    # Without ground truth: the output only.
    assert rotated.score(params, {"name": "n", "c": blurred}).scores == {}


def test_totals_and_means_skip_missing_values():
    rows = [{"psnr": 20.0, "seconds": 1.0}, {"psnr": 30.0}, {"seconds": 3.0}]
    sums = scorer.totals(rows, ("psnr", "seconds", "lpips"))
    np.testing.assert_array_equal(sums, [[50.0, 2.0], [4.0, 2.0], [0.0, 0.0]])
    assert scorer.means(sums, ("psnr", "seconds", "lpips")) == {
        "psnr": 25.0, "seconds": 2.0, "lpips": None}
    with pytest.raises(ValueError, match="unknown metric 'psnrr'"):
        scorer.metric_functions(["psnrr"])


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    written = data_testing.write_fake_dataset(root, "dpdd", num={"val": 3}, size=(40, 48))
    return str(root), written["val"]


@pytest.mark.slow
def test_validator_over_two_hosts_counts_each_image_once(tiny_model, val_root, monkeypatch):
    apply_fn, params, deblurrer = tiny_model
    root, examples = val_root
    config = load_config("tiny")
    config.eval_lpips = False
    # Independently: the mean over the three validation images.
    outs = [(deblurrer.deblur_whole(e["c"] / np.float32(255)), e["gt"] / np.float32(255),
             e["c"] / np.float32(255)) for e in examples]
    want = {"psnr": np.mean([metrics.psnr(o, g) for o, g, _ in outs]),
            "ssim": np.mean([metrics.ssim(o, g) for o, g, _ in outs]),
            "input_psnr": np.mean([metrics.psnr(c, g) for _, g, c in outs])}

    validator = validation.Validator(config, root, apply_fn)
    assert isinstance(validator.scorer.forward_pass, Forward)  # inference's forward, its params
    alone = validator(params)
    assert set(alone) == {"psnr", "ssim", "input_psnr", "num_images"}
    assert alone["num_images"] == 3
    for key, value in want.items():
        assert alone[key] == pytest.approx(value, abs=1e-4)

    # Two hosts: each runs its share (image i on host i mod 2) and all-gathers its sums.
    shares = []
    monkeypatch.setattr(validation.jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: shares.append(np.array(x)) or np.stack([x, x]))
    for host in (0, 1):
        monkeypatch.setattr(validation.jax, "process_index", lambda host=host: host)
        validator(params)
    assert [int(s[0, 1]) for s in shares] == [2, 1]
    combined = scorer.means(shares[0] + shares[1], validator.keys)
    for key in want:
        assert combined[key] == pytest.approx(alone[key], abs=1e-9)


@pytest.mark.slow
def test_an_output_that_is_not_finite_is_refused_naming_the_image(tiny_model):
    apply_fn, params, _ = tiny_model
    damaged = {**params, "reconstructor": {
        **params["reconstructor"],
        "conv_out": {k: np.full_like(np.asarray(v), np.nan)
                     for k, v in params["reconstructor"]["conv_out"].items()}}}
    score = scorer.Scorer(Forward(apply_fn), dual=False, metrics=("psnr",))
    with pytest.raises(ValueError, match=r"^the output for scene_7 has \d+ values that are not "
                                         r"finite") as e:
        score.score(damaged, {"name": "scene_7", "c": _image(16, 24, 2), "gt": _image(16, 24, 3)})
    assert "\n" not in str(e.value)
