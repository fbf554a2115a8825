"""`ifan_jax.compiled.AheadOfTime`: one executable per argument shape (and static argument),
the same numbers as the jitted function, donation kept."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax.compiled import AheadOfTime, release_freed_memory


def _scaled(params, x, *, square=False):
    y = x * params["w"] + params["b"]
    return y * y if square else y


def test_one_executable_per_shape_and_static_argument_with_the_jitted_numbers():
    jitted = jax.jit(_scaled, static_argnames="square")
    fn = AheadOfTime(jitted)
    params = {"w": jnp.float32(3.0), "b": jnp.float32(-1.0)}
    small, large = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((4, 5), np.float32)
    for x in (small, large, small):
        np.testing.assert_array_equal(fn(params, x), jitted(params, x))
    assert len(fn.executables) == 2  # the third call reused the first executable
    np.testing.assert_array_equal(fn(params, small, square=True),
                                  jitted(params, small, square=True))
    assert len(fn.executables) == 3
    assert fn.compile(params, large) is fn.compile(params, large)


def test_a_donated_first_argument_stays_donated():
    fn = AheadOfTime(jax.jit(lambda state, x: (state + x, x.sum()), donate_argnums=(0,)))
    state = jnp.zeros((64, 64))
    new_state, _ = fn(state, jnp.ones((64, 64)))
    assert state.is_deleted() and float(new_state.sum()) == 64 * 64


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_freed_heap_can_be_released_on_linux():
    assert release_freed_memory() is True
