"""ifan_jax.cost: parameter and MAC counts (ptflops convention) and its CLI."""

import json
import os

import pytest

from ifan_jax import cost
from ifan_jax.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "ifan.py")
H, W = 720, 1280
PAPER_MACS = 362.9e9  # Table 1 / 4, IFAN (N=17) at 1280 x 720, measured with ptflops


def model_config(arg=""):
    return load_config(CONFIG, arg or None).model


@pytest.fixture(scope="module")
def paper_count():
    return cost.count_macs(model_config(), H, W)


def test_paper_model_macs(paper_count):
    # Our exact count of the convolutions' and transposed convolutions' multiply-accumulates.
    assert paper_count.conv == 361_506_816_000
    assert paper_count.bias == 869_083_200
    assert paper_count.activation == 518_860_800
    assert paper_count.total == paper_count.conv + paper_count.bias + paper_count.activation
    assert abs(paper_count.total - PAPER_MACS) / PAPER_MACS < 0.02
    assert round(paper_count.total / 1e9, 1) == 362.9  # in fact it is exact to the paper's digits
    # IAC is not a module in the official code, so ptflops did not count it: N * 2k MACs per
    # channel and pixel at 1/8 resolution, reported apart.
    assert paper_count.adaptive == 17 * 2 * 3 * 128 * (H // 8) * (W // 8)


def test_per_layer_counts(paper_count):
    layers = {layer.path: layer for layer in paper_count.layers}
    first = layers["feature_extractor/conv1_1"]
    assert first.macs == H * W * 32 * 3 * 3 * 3 and first.bias == first.activation == H * W * 32
    # Transposed conv: every input pixel scatters a 4x4 window to each output channel.
    up = layers["reconstructor/up3"]
    assert up.kind == "conv_transpose" and up.output_shape == (1, H // 4, W // 4, 128)
    assert up.macs == (H // 8) * (W // 8) * 128 * 4 * 4 * 128
    # The 1x1 filter conv: no activation; the disparity head's last conv: no activation either.
    head = layers["filter_predictor/filter_conv"]
    assert head.macs == (H // 8) * (W // 8) * 128 * 17 * 128 * 7 and head.activation == 0
    assert layers["disparity_map_estimator/conv_out"].activation == 0
    assert len(paper_count.layers) == 79  # the official Network's Conv2d + ConvTranspose2d
    by_module = paper_count.by_module()
    assert by_module["feature_extractor"] == by_module["filter_encoder"]
    assert sum(by_module.values()) == paper_count.total


def test_more_iterations_only_widen_the_filter_conv(paper_count):
    more = cost.count_macs(model_config("N=26"), H, W)
    extra_channels = 9 * 128 * 7
    pixels = (H // 8) * (W // 8)
    assert more.conv - paper_count.conv == pixels * 128 * extra_channels
    assert more.bias - paper_count.bias == pixels * extra_channels
    assert more.activation == paper_count.activation


def test_dual_pixel_input_costs_one_wider_first_conv(paper_count):
    dual = cost.count_macs(model_config("dual"), H, W)
    assert dual.conv - paper_count.conv == H * W * 32 * 3 * 3 * 3


def test_size_must_be_a_multiple_of_8():
    with pytest.raises(ValueError, match="multiples of 8"):
        cost.count_macs(model_config(), 100, 64)


def test_summary_counts_the_reblurring_network_apart():
    summary = cost.summarize(model_config(), 64, 64)
    assert summary["params_deblurring"] == 10_476_996
    assert summary["params_reblurring"] == 19_139_685


def test_cli(tmp_path, capsys):
    out = tmp_path / "cost.json"
    rc = cost.main([f"--config={CONFIG}:N=8", "--height=720", "--width=1280", f"--json={out}"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "9,436,740" in text and "1280x720" in text
    numbers = json.loads(out.read_text())
    assert numbers["params_deblurring"] == 9_436_740
    assert numbers["params_reblurring"] > 0
    assert numbers["macs_total"] == (numbers["macs_conv"] + numbers["macs_bias"]
                                     + numbers["macs_activation"])


@pytest.mark.parametrize("args,words", [
    (["--config=configs/nope.py"], ["nope.py", "no such config file"]),
    ([f"--config={CONFIG}:N=17,bogus=1"], ["bogus"]),
    ([f"--config={CONFIG}", "--height=700"], ["multiples of 8"]),
])
def test_cli_errors_are_one_line(args, words, capsys):
    assert cost.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for word in words:
        assert word in err


def test_a_config_that_fails_to_run_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    raise RuntimeError('no GPU here')\n")
    assert cost.main([f"--config={broken}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.py" in err and "no GPU here" in err
