"""IFAN's training losses, as the paper defines them and the official trainer computes them.

    total = MSE(result, sharp)                          deblurring loss, always
          + MSE(warped_right, left_down)                disparity loss   [use_disparity, views]
          + MSE(reblurred, blurred_down)                reblurring loss  [use_reblur]

Every MSE is the mean over all elements (batch, height, width, channels), as torch's MSELoss.
`warped_right` is the 8x8-area-mean right view warped by the predicted disparity, `left_down` the
8x8-area-mean left view, `reblurred` the RBN output on the 1/8 nearest-downsampled sharp image and
`blurred_down` the 8x8-area-mean blurred input (torch's interpolate(scale_factor=1/8, mode='area'));
`ifan_jax.models.IFAN(..., train=True)` returns all of them. The terms are unweighted. Data without
dual-pixel views (plain blurred/sharp pairs) has no left view to compare with: `disparity=False`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean of (a - b)^2 over every element, in float32."""
    return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def ifan_losses(outputs: dict, sharp: jax.Array, *, disparity: bool = True
                ) -> dict[str, jax.Array]:
    """{"deblur", "disparity" (if predicted and `disparity`), "reblur" (if predicted), "total"}
    scalars.

    `outputs` is the dict of `IFAN.__call__(..., train=True)`; `sharp` the ground truth NHWC.
    `disparity=False` leaves the disparity term out (no dual-pixel views to supervise it).
    """
    terms = {"deblur": mse(outputs["result"], sharp)}
    if disparity and "warped_right" in outputs:
        terms["disparity"] = mse(outputs["warped_right"], outputs["left_down"])
    if "reblurred" in outputs:
        terms["reblur"] = mse(outputs["reblurred"], outputs["blurred_down"])
    terms["total"] = sum(terms.values())
    return terms
