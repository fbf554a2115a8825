"""The parameter tree of a model config, without computing anything, and parameter counts.

    shapes = abstract_params(config.model)   # {"feature_extractor": ..., "reblurring_network": ...}
    count_params(shapes)                      # 10,476,996 for configs/ifan.py (reblurring net left out)

Checkpoint restore, conversion, the cost model and the benchmark all build the tree here: it is
traced with `jax.eval_shape` (no arithmetic, nothing allocated) from a training-mode forward pass,
so it holds the reblurring network whenever the model has one.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ifan_jax.models.ifan import IFAN

REBLUR_KEY = "reblurring_network"
TRACE_SIZE = 64  # image side of the abstract trace (parameter shapes do not depend on it)


def abstract_params(model_config, *, with_reblur: bool = True):
    """`jax.ShapeDtypeStruct`s of every parameter of `model_config` (a ConfigDict or dict of
    `IFAN` fields); the reblurring network's are left out unless `with_reblur`."""
    model = model_config if isinstance(model_config, IFAN) else IFAN.from_config(model_config)
    x = jax.ShapeDtypeStruct((1, TRACE_SIZE, TRACE_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(
        lambda c, r, left, s: model.init(jax.random.PRNGKey(0), c, r, left, s, train=True),
        x, x, x, x)["params"]
    if not with_reblur:
        shapes = {k: v for k, v in shapes.items() if k != REBLUR_KEY}
    return shapes


def count_params(params_or_shapes, *, include_reblur: bool = False) -> int:
    """Number of scalars in a Flax params tree (arrays or `jax.ShapeDtypeStruct`s).

    A tree wrapped as {"params": ...} is unwrapped. The reblurring network (used only in training,
    and not counted by the paper) is left out unless `include_reblur`.
    """
    tree = params_or_shapes
    if isinstance(tree, Mapping) and set(tree) == {"params"}:
        tree = tree["params"]
    if isinstance(tree, Mapping) and not include_reblur:
        tree = {k: v for k, v in tree.items() if k != REBLUR_KEY}
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))
