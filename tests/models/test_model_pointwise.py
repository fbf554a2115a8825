"""`layers.Pointwise`: a convolution of a 1x1 convolution's output, without forming that output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax.models import IFAN, ReblurringNetwork
from ifan_jax.models.layers import Conv, Pointwise


def _factors(seed=0, shape=(2, 9, 11, 6), channels=40):
    rng = np.random.default_rng(seed)
    return Pointwise(jnp.asarray(rng.standard_normal(shape), jnp.float32),
                     jnp.asarray(rng.standard_normal((shape[-1], channels)), jnp.float32),
                     jnp.asarray(rng.standard_normal((channels,)), jnp.float32))


@pytest.mark.parametrize("kernel_size,stride,activation", [(3, 1, True), (3, 2, False),
                                                           (1, 1, True), (5, 1, False)])
@pytest.mark.slow
def test_conv_of_factors_equals_conv_of_the_map(kernel_size, stride, activation):
    """Borders included: the bias term shrinks where the window hangs over the zero padding."""
    factors = _factors()
    conv = Conv(7, kernel_size, stride, activation=activation)
    params = conv.init(jax.random.PRNGKey(1), factors.materialize())
    # Non-zero conv bias too, so every term is exercised.
    params = jax.tree_util.tree_map(lambda x: x + 0.1, params)
    expected = conv.apply(params, factors.materialize())
    got = conv.apply(params, factors)
    assert got.shape == expected.shape
    scale = float(jnp.abs(expected).max())
    np.testing.assert_allclose(got, expected, atol=2e-6 * scale, rtol=0)
    # The border pixels differ from the interior ones only through the padding: a bias-free
    # composition would get them wrong.
    no_bias = Pointwise(factors.features, factors.kernel, jnp.zeros_like(factors.bias))
    assert float(jnp.abs(conv.apply(params, no_bias) - expected).max()) > 1e-3 * scale


def test_conv_of_factors_has_the_maps_parameter_shapes():
    factors = _factors(channels=40)
    shapes = jax.eval_shape(Conv(7).init, jax.random.PRNGKey(0), factors)
    assert shapes["params"]["kernel"].shape == (3, 3, 40, 7)


@pytest.mark.slow
def test_gradients_through_factors_equal_gradients_through_the_map():
    factors = _factors(shape=(1, 8, 8, 5), channels=24)
    conv = Conv(4)
    params = conv.init(jax.random.PRNGKey(2), factors.materialize())

    def loss(p, f, use_factors):
        x = f if use_factors else f.materialize()
        return jnp.sum(jnp.sin(conv.apply(p, x)))

    for argnum in (0, 1):
        g_map = jax.grad(loss, argnum)(params, factors, False)
        g_fac = jax.grad(loss, argnum)(params, factors, True)
        for a, b in zip(jax.tree_util.tree_leaves(g_map), jax.tree_util.tree_leaves(g_fac)):
            np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(a).max()), rtol=0)


@pytest.mark.slow
def test_reblurring_network_reads_factors_like_the_map():
    rng = np.random.default_rng(3)
    rbn = ReblurringNetwork(channels=16, num_iterations=2, iac_variant="official")
    factors = _factors(shape=(1, 4, 4, 16), channels=2 * 16 * 7)
    sharp = jnp.asarray(rng.random((1, 32, 32, 3)), jnp.float32)
    params = rbn.init(jax.random.PRNGKey(4), sharp, factors.materialize())
    expected = rbn.apply(params, sharp, factors.materialize())
    np.testing.assert_allclose(rbn.apply(params, sharp, factors), expected,
                               atol=1e-5 * float(jnp.abs(expected).max()), rtol=0)


@pytest.mark.slow
def test_training_never_forms_the_filter_map_unless_read():
    """The jitted training forward without the "filters" output has no M-channel array in it."""
    model = IFAN(channels=4, num_iterations=3, reblur_iterations=2, iac_variant="official")
    m = model.num_filter_channels()
    x = jnp.zeros((1, 32, 32, 3))
    params = model.init(jax.random.PRNGKey(0), x, x, x, x, train=True)

    def losses_inputs(p):
        out = model.apply(p, x, x, x, x, train=True)
        return {k: v for k, v in out.items() if k != "filters"}

    map_type = f"tensor<1x4x4x{m}xf32>"  # (B, H/8, W/8, M) in the lowered StableHLO
    assert map_type not in jax.jit(losses_inputs).lower(params).as_text()
    full = jax.jit(lambda p: model.apply(p, x, x, x, x, train=True)["filters"]).lower(params)
    assert map_type in full.as_text()
