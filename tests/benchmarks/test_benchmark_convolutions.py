"""The convolution census (`benchmarks.convolutions`): which convolutions a differentiated
function holds, what each computes, and the floor it reports."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import convolutions


def conv(x, k, stride=1):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def two_layers(kernels, x):
    """A stride-2 convolution, then a stride-1 one; the loss is differentiated for the kernels."""
    k1, k2 = kernels
    return jnp.sum(conv(jax.nn.relu(conv(x, k1, 2)), k2) ** 2)


KERNELS = (jnp.ones((3, 3, 3, 4)) * 0.1, jnp.ones((3, 3, 4, 5)) * 0.1)
IMAGE = jax.random.normal(jax.random.key(0), (2, 16, 12, 3))


def test_roles_of_a_differentiated_pair_of_convolutions():
    found = convolutions.convolutions(jax.grad(two_layers), KERNELS, IMAGE)
    roles = sorted((c.role, c.lhs, c.rhs, uses) for c, uses in found.items())
    assert roles == [
        ("forward", (2, 8, 6, 4), (3, 3, 4, 5), 1),
        ("forward", (2, 16, 12, 3), (3, 3, 3, 4), 1),
        # only the second layer's input needs a gradient (the image is not differentiated)
        ("input gradient", (2, 8, 6, 5), (3, 3, 4, 5), 1),
        ("weight gradient", (2, 8, 6, 4), (2, 8, 6, 5), 1),
        ("weight gradient", (2, 16, 12, 3), (2, 8, 6, 4), 1),
    ]
    macs = {(c.role, c.lhs): c.macs() for c in found}
    assert macs[("forward", (2, 16, 12, 3))] == 2 * 8 * 6 * 4 * 9 * 3
    assert macs[("weight gradient", (2, 8, 6, 4))] == 3 * 3 * 4 * 5 * 2 * 8 * 6


def test_a_replayed_convolution_computes_what_the_traced_one_did():
    found = convolutions.convolutions(lambda x, k: conv(x, k, 2), IMAGE, KERNELS[0])
    (only,) = found
    np.testing.assert_array_equal(only.apply(IMAGE, KERNELS[0]), conv(IMAGE, KERNELS[0], 2))


def test_a_scan_counts_its_body_once_per_iteration_and_a_while_loop_is_refused():
    def scanned(x, k):
        return jax.lax.scan(lambda h, _: (conv(h, k), None), x, None, length=4)[0]

    k = jnp.ones((3, 3, 3, 3)) * 0.1
    assert list(convolutions.convolutions(scanned, IMAGE, k).values()) == [4]

    def looped(x, k):
        return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (conv(c[0], k), c[1] + 1), (x, 0))[0]

    with pytest.raises(ValueError, match="while loop"):
        convolutions.convolutions(looped, IMAGE, k)


def test_measure_sums_each_role_and_the_faster_library_is_never_slower():
    found = convolutions.convolutions(jax.grad(two_layers), KERNELS, IMAGE)
    out = convolutions.measure(found, repeats=2)
    assert out["total"]["uses"] == 5
    assert {r: v["uses"] for r, v in out["by_role"].items()} == {
        "forward": 2, "input gradient": 1, "weight gradient": 2}
    for row in out["convolutions"]:
        assert row["best_s"] == min(row["ynnpack_s"], row["xla_s"]) > 0
    assert out["total"]["best_s"] == pytest.approx(sum(r["best_s"] for r in out["convolutions"]))


@pytest.mark.slow
def test_the_command_on_the_tiny_networks_forward_pass(tmp_path, capsys):
    out = convolutions.main(["--tiny", "--size=64x48", "--repeats=2",
                             f"--json={tmp_path / 'c.json'}"])
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(out))
    # the paper's network holds 87 convolutions at any width (the full-size census finds 87 too)
    assert out["by_role"]["forward"]["uses"] == out["total"]["uses"] == 87
    assert out["step_library"] == "xla"
    assert out["floor_s"] == pytest.approx(out["step_s"] - out["total"]["xla_s"]
                                           + out["total"]["best_s"])
    assert "87 convolutions" in capsys.readouterr().out
