"""layers.ConvTranspose (computed phase by phase) against the dilated convolution it stands for."""

import jax
import jax.numpy as jnp
import numpy as np

from ifan_jax.models.layers import ConvTranspose, leaky_relu


def dilated_reference(x, kernel, bias):
    """PyTorch ConvTranspose2d(k=4, s=2, p=1) + LeakyReLU(0.1): the input dilated by 2, padded
    k - 1 - p = 2 per side, convolved with the spatially flipped kernel."""
    y = jax.lax.conv_general_dilated(
        x, jnp.flip(kernel, (0, 1)), window_strides=(1, 1), padding=((2, 2), (2, 2)),
        lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    return leaky_relu(y + bias)


def test_conv_transpose_is_the_dilated_convolution():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 7, 3)), jnp.float32)
    layer = ConvTranspose(4, precision=jax.lax.Precision.HIGHEST)
    params = layer.init(jax.random.PRNGKey(0), x)["params"]
    params = {"kernel": params["kernel"],
              "bias": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    got = layer.apply({"params": params}, x)
    assert got.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(got, dilated_reference(x, params["kernel"], params["bias"]),
                               atol=1e-5, rtol=1e-5)
