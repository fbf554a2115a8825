"""IFAN.map_reach: how far a tile's zero-padded edges reach into the defocus map's computation."""

import jax
import numpy as np
import pytest

from ifan_jax.config import load_config
from ifan_jax.models import IFAN


def _encode(model, params, x):
    return model.apply({"params": params}, x, method=lambda m, x: m._encode(x, None, None))


def _estimate(model, params, f):
    return model.apply({"params": params}, f, method=lambda m, f: m.disparity_map_estimator(f))


@pytest.mark.slow  # ~14 s of CPU: two compilations of the encoder and of the estimator
def test_map_reach_is_exactly_where_a_tile_edge_stops_changing_the_outputs():
    """A 128-pixel window of a 256-pixel image, run alone: its filter encoder output equals the
    whole image's from `before` 1/8-pixels after its first edge to `after` before its last, and
    differs one pixel further out; the estimator, given the whole image's features in a window,
    `estimator` pixels inside its edges."""
    model = IFAN.from_config(load_config("tiny").model)
    reach = model.map_reach()
    assert reach == (5, 4, 10)
    assert IFAN.from_config(load_config("ifan").model).map_reach() == reach  # k=3, 2 res units
    x = np.random.default_rng(0).random((1, 256, 256, 3), np.float32)
    # The filter encoder's and the estimator's parameters only.
    params = model.init(jax.random.PRNGKey(1), x[:, :64, :64], method=lambda m, x: (
        m.disparity_map_estimator(m._encode(x, None, None))))["params"]
    whole = np.asarray(_encode(model, params, x))[0]
    tile = np.asarray(_encode(model, params, x[:, 64:192, 64:192]))[0]
    # 16 x 16 pixels of the 1/8 grid; float rounding may differ between the two shapes.
    differs = np.abs(tile - whole[8:24, 8:24]).max(axis=-1) > 1e-6 * np.abs(whole).max()
    expected = [True] * 5 + [False] * 7 + [True] * 4
    # Rows (columns) of the window that differ from the whole image's in the exact columns (rows).
    assert differs[:, 5:12].any(axis=1).tolist() == expected
    assert differs[5:12, :].any(axis=0).tolist() == expected

    features = np.random.default_rng(1).standard_normal((1, 48, 48, 32)).astype(np.float32)
    whole = np.asarray(_estimate(model, params, features))[0, ..., 0]
    window = np.asarray(_estimate(model, params, features[:, 12:36, 12:36]))[0, ..., 0]
    differs = np.abs(window - whole[12:36, 12:36]) > 1e-6 * np.abs(whole).max()
    expected = [True] * 10 + [False] * 4 + [True] * 10
    assert differs[:, 10:14].any(axis=1).tolist() == expected
    assert differs[10:14, :].any(axis=0).tolist() == expected
