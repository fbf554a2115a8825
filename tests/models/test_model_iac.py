"""IAC and FAC against direct per-pixel NumPy loops, and the equivalence of their fast forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax.models import IFAN
from ifan_jax.models import iac as iac_lib


def lrelu(v):
    return v if v >= 0 else 0.1 * v


def numpy_iac(x, filters, n, k, activate_last, variant):
    """IAC by the definition: for every pixel, channel and tap, edge-replicated borders.

    Filter map layout (official): for iteration i, channels [i*2Ck, i*2Ck + Ck) hold f_i1 and the
    next Ck hold f_i2, each channel-major (c*k + tap); the N bias vectors follow all filters.
    """
    b_, h, w, c = x.shape
    half = k // 2
    cur = x.astype(np.float64)
    for i in range(n):
        base = i * 2 * c * k
        f1 = filters[..., base: base + c * k]
        f2 = f1 if variant == "official" else filters[..., base + c * k: base + 2 * c * k]
        bias = filters[..., n * 2 * c * k + i * c: n * 2 * c * k + (i + 1) * c]
        vert = np.zeros_like(cur)
        for b in range(b_):
            for y in range(h):
                for xx in range(w):
                    for ch in range(c):
                        for j in range(k):
                            sy = min(max(y + j - half, 0), h - 1)
                            vert[b, y, xx, ch] += cur[b, sy, xx, ch] * f1[b, y, xx, ch * k + j]
        nxt = np.zeros_like(cur)
        for b in range(b_):
            for y in range(h):
                for xx in range(w):
                    for ch in range(c):
                        acc = 0.0
                        for j in range(k):
                            sx = min(max(xx + j - half, 0), w - 1)
                            acc += vert[b, y, sx, ch] * f2[b, y, xx, ch * k + j]
                        acc += bias[b, y, xx, ch]
                        nxt[b, y, xx, ch] = lrelu(acc) if (i < n - 1 or activate_last) else acc
        cur = nxt
    return cur


def numpy_fac(x, filters, k, activate_last):
    """FAC by the definition: a dense k x k filter per pixel and channel (c*k*k + dy*k + dx)."""
    b_, h, w, c = x.shape
    half = k // 2
    out = np.zeros(x.shape, np.float64)
    for b in range(b_):
        for y in range(h):
            for xx in range(w):
                for ch in range(c):
                    acc = 0.0
                    for dy in range(k):
                        for dx in range(k):
                            sy = min(max(y + dy - half, 0), h - 1)
                            sx = min(max(xx + dx - half, 0), w - 1)
                            acc += x[b, sy, sx, ch] * filters[b, y, xx, ch * k * k + dy * k + dx]
                    out[b, y, xx, ch] = lrelu(acc) if activate_last else acc
    return out


def random_case(seed, shape=(2, 5, 7, 3), n=3, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    m = iac_lib.iac_channels(n, shape[-1], k)
    # Filters around 1/k keep the values O(1) over the iterations.
    filters = (rng.normal(size=shape[:-1] + (m,)) * 0.5 / k).astype(np.float32)
    return x, filters


CASES = [(variant, act, k) for variant in iac_lib.VARIANTS for act in (True, False)
         for k in (3, 5)]


@pytest.mark.parametrize("variant,activate_last,k", CASES)
def test_iac_matches_numpy_loop(variant, activate_last, k):
    n = 3
    x, filters = random_case(k, n=n, k=k)
    expected = numpy_iac(x, filters, n, k, activate_last, variant)
    got = iac_lib.iac(jnp.asarray(x), jnp.asarray(filters), n, k, activate_last=activate_last,
                      variant=variant)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    per_pixel = iac_lib.iac_per_pixel(jnp.asarray(x), jnp.asarray(filters), n, k, activate_last,
                                      variant)
    np.testing.assert_allclose(np.asarray(per_pixel), expected, rtol=1e-5, atol=1e-5)


def test_variants_differ():
    x, filters = random_case(0)
    a = iac_lib.iac(x, filters, 3, 3, variant="official")
    b = iac_lib.iac(x, filters, 3, 3, variant="separable")
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


@pytest.mark.parametrize("variant", iac_lib.VARIANTS)
@pytest.mark.parametrize("activate_last", [True, False])
def test_iac_from_head_equals_iac_of_full_filter_map(variant, activate_last):
    n, k, c, d = 4, 3, 3, 5
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(1, 5, 7, c)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(1, 5, 7, d)), jnp.float32)
    m = iac_lib.iac_channels(n, c, k)
    kernel = jnp.asarray(rng.normal(size=(d, m)) * 0.1, jnp.float32)
    bias = jnp.asarray(rng.normal(size=(m,)) * 0.1, jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    filters = jnp.einsum("bhwd,dm->bhwm", head, kernel, precision=hi) + bias
    expected = iac_lib.iac(x, filters, n, k, activate_last=activate_last, variant=variant)
    got = iac_lib.iac_from_head(x, head, kernel, bias, n, k, activate_last=activate_last,
                                variant=variant, precision=hi)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant", iac_lib.VARIANTS)
def test_grad_through_iac_is_finite_and_remat_is_exact(variant):
    x, filters = random_case(2)
    loss = lambda remat: lambda a, f: jnp.sum(
        iac_lib.iac(a, f, 3, 3, variant=variant, remat=remat) ** 2)
    value, grads = jax.value_and_grad(loss(False), argnums=(0, 1))(x, filters)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0
    value_r, grads_r = jax.value_and_grad(loss(True), argnums=(0, 1))(x, filters)
    np.testing.assert_allclose(float(value_r), float(value), rtol=1e-6)
    for g, g_r in zip(grads, grads_r, strict=True):
        np.testing.assert_allclose(np.asarray(g_r), np.asarray(g), rtol=1e-5, atol=1e-6)
    if variant == "official":
        # The unused f_n2 half of the filter map gets no gradient.
        f2 = np.asarray(grads[1])[..., 9:18]  # iteration 0, C=3, k=3: f_01 = [0, 9), f_02 = [9, 18)
        assert np.all(f2 == 0)


@pytest.mark.parametrize("activate_last", [True, False])
def test_fac_matches_numpy_loop(activate_last):
    k, c = 5, 2
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 7, c)).astype(np.float32)
    filters = (rng.normal(size=(1, 5, 7, c * k * k)) / k).astype(np.float32)
    got = iac_lib.fac(jnp.asarray(x), jnp.asarray(filters), k, activate_last)
    np.testing.assert_allclose(np.asarray(got), numpy_fac(x, filters, k, activate_last),
                               rtol=1e-5, atol=1e-5)


def test_wrong_filter_channels_are_rejected():
    x, filters = random_case(0)
    with pytest.raises(ValueError, match="channels"):
        iac_lib.iac(x, filters[..., :-1], 3, 3)
    with pytest.raises(ValueError, match="variant"):
        iac_lib.iac(x, filters, 3, 3, variant="dense")
    with pytest.raises(ValueError, match="C\\*k\\*k"):
        iac_lib.fac(x, filters, 3)


def _scans_with_recomputed_bodies(closed_jaxpr) -> list[bool]:
    """For every `scan` in a jaxpr (nested ones too): whether its body is a `jax.checkpoint`."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                body = eqn.params["jaxpr"].jaxpr
                found.append(any(e.primitive.name in ("checkpoint", "remat", "remat2")
                                 for e in body.eqns))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return found


@pytest.mark.slow
def test_training_recomputes_every_iac_iteration_and_inference_keeps_none():
    """In training both IACs (the deblurring one and the reblurring network's) recompute each
    iteration in the backward pass instead of keeping its intermediates; inference has nothing
    to recompute."""
    model = IFAN(channels=4, num_iterations=3, reblur_iterations=2, iac_variant="separable")
    x = jnp.zeros((1, 32, 32, 3))
    params = model.init(jax.random.PRNGKey(0), x, x, x, x, train=True)
    train = jax.make_jaxpr(lambda p: model.apply(p, x, x, x, x, train=True))(params)
    assert _scans_with_recomputed_bodies(train) == [True, True]
    infer = jax.make_jaxpr(lambda p: model.apply(p, x))(params)
    assert _scans_with_recomputed_bodies(infer) == [False]
