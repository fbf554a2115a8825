"""Random network weights in the shapes of a model config, without compiling anything."""

from __future__ import annotations

import jax
import numpy as np

from ifan_jax.models import abstract_params


def random_params(model_config, *, with_reblur: bool = False, seed: int = 0):
    """Xavier-uniform kernels and zero biases for every parameter of `model_config`.

    The shapes come from `abstract_params` (`jax.eval_shape`), the values from NumPy: nothing is
    compiled, so a process's memory and time are the measured network's alone.
    """
    shapes = abstract_params(model_config, with_reblur=with_reblur)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1].key == "bias":
            return np.zeros(leaf.shape, np.float32)
        *window, fan_in, fan_out = leaf.shape
        field = int(np.prod(window))
        bound = np.sqrt(6.0 / (field * (fan_in + fan_out)))
        return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
