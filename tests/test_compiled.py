"""`ifan_jax.compiled.AheadOfTime`: one executable per argument shape (and static argument),
the same numbers as the jitted function, donation kept, its CPU options reaching XLA."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax.compiled import (
    INFERENCE_CPU_OPTIONS,
    TRAINING_CPU_OPTIONS,
    AheadOfTime,
    compiler_options,
    release_freed_memory,
)


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


def _conv(params, x):
    return jax.lax.conv_general_dilated(x, params, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_the_cpu_options_reach_xla(monkeypatch, tiny_official_checkpoint):
    """The options go to XLA through `Lowered.compile(compiler_options)`: the inference options
    for `Deblurrer`'s forward (and `evaluation.Scorer`'s), the training options for the compiled
    training step; a convolution compiled with them gives the same numbers."""
    passed = []
    original = jax.stages.Lowered.compile

    def recording(self, compiler_options=None, **kwargs):
        passed.append(compiler_options)
        return original(self, compiler_options, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", recording)
    w, x = jnp.ones((3, 3, 32, 32)), jnp.ones((1, 32, 32, 32))
    assert compiler_options(w, INFERENCE_CPU_OPTIONS) == INFERENCE_CPU_OPTIONS  # this jaxlib has both
    tuned = AheadOfTime(jax.jit(_conv), INFERENCE_CPU_OPTIONS)
    np.testing.assert_allclose(tuned(w, x), jax.jit(_conv)(w, x), rtol=1e-6)
    assert passed[-1] == INFERENCE_CPU_OPTIONS
    AheadOfTime(jax.jit(_conv))(w, x)
    assert passed[-1] is None  # no options: XLA's defaults

    from ifan_jax.inference import Deblurrer
    from ifan_jax.training import step

    passed.clear()
    Deblurrer.from_checkpoint(tiny_official_checkpoint).deblur_whole(np.zeros((16, 16, 3)))
    assert passed == [INFERENCE_CPU_OPTIONS]
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    assert step.compile_train_step(mesh).cpu_options == TRAINING_CPU_OPTIONS


def test_options_this_xla_lacks_are_left_out():
    w = jnp.ones((3, 3, 8, 8))
    assert compiler_options(w, {"xla_cpu_no_such_option": True}) is None
    assert compiler_options(w, {}) is None
