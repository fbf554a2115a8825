"""The optimiser against hand-computed values and a hand-written torch_optimizer.RAdam reference."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from repo import ROOT

from ifan_jax.training import optimizer as opt_lib


def ifan_config(arg=None):
    spec = importlib.util.spec_from_file_location("ifan_config", os.path.join(ROOT, "configs", "ifan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def official_lr(last_epoch, lr_init, boundaries, rate):
    """The official LR_decay.get_lr: the first period whose boundary is >= last_epoch."""
    period = len(boundaries)
    for i, b in enumerate(boundaries):
        if last_epoch <= b:
            period = i
            break
    return lr_init * rate**period


def test_paper_schedule_halves_at_update_500002():
    config = ifan_config()
    _, schedule = opt_lib.create_optimizer(config)
    # count = updates already made; the official scheduler has stepped `count` times.
    expected = {0: 1e-4, 499_999: 1e-4, 500_000: 1e-4, 500_001: 5e-5, 550_000: 5e-5,
                550_001: 2.5e-5, 599_999: 2.5e-5}
    for count, lr in expected.items():
        assert float(schedule(count)) == pytest.approx(lr, rel=1e-6), count


def test_schedule_follows_official_counter():
    schedule = opt_lib.learning_rate_schedule(1e-3, (3, 6), 0.5)
    # torch: the scheduler steps once in its constructor (last_epoch 0) and once after every
    # optimiser step, so update number k (1-based) runs with last_epoch = k - 1.
    for k in range(1, 12):
        assert float(schedule(k - 1)) == pytest.approx(official_lr(k - 1, 1e-3, (3, 6), 0.5))


def test_clipping_hand_computed():
    clip = opt_lib.clip_by_global_norm_torch(0.5)
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    out, _ = clip.update(grads, clip.init(grads))
    scale = 0.5 / (5.0 + 1e-6)
    np.testing.assert_allclose(out["a"], [3.0 * scale, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [[4.0 * scale]], rtol=1e-6)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([[0.2]])}  # norm 0.36 < 0.5: untouched
    out, _ = clip.update(small, clip.init(small))
    np.testing.assert_array_equal(out["a"], small["a"])
    np.testing.assert_array_equal(out["b"], small["b"])


def reference_run(params, grads_seq, lr_init, boundaries, rate, b1, b2, eps, wd, clip):
    """torch clip_grad_norm_ + torch_optimizer.RAdam (0.1.0) + LR_decay, in float64 numpy."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    n_inf = 2 / (1 - b2) - 1
    for t, grads in enumerate(grads_seq, 1):
        g = {k: x.astype(np.float64) for k, x in grads.items()}
        norm = math.sqrt(sum(float((x**2).sum()) for x in g.values()))
        coef = clip / (norm + 1e-6)
        if coef < 1:
            g = {k: x * coef for k, x in g.items()}
        lr = official_lr(t - 1, lr_init, boundaries, rate)
        b2t = b2**t
        n_sma = n_inf - 2 * t * b2t / (1 - b2t)
        if n_sma >= 5:
            step = lr * math.sqrt((1 - b2t) * (n_sma - 4) / (n_inf - 4) * (n_sma - 2) / n_sma
                                  * n_inf / (n_inf - 2)) / (1 - b1**t)
        else:
            step = lr / (1 - b1**t)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            p[k] = p[k] - wd * lr * p[k]
            if n_sma >= 5:
                p[k] = p[k] - step * m[k] / (np.sqrt(v[k]) + eps)
            else:
                p[k] = p[k] - step * m[k]
    return p


def make_problem(steps=10):
    rng = np.random.default_rng(0)
    # Small parameters, so that float32 rounding of p stays far below the movement compared.
    params = {"w": (0.01 * rng.normal(size=(4, 5))).astype(np.float32),
              "b": (0.01 * rng.normal(size=(5,))).astype(np.float32)}
    # Gradients of very different scales: "b" ~1e-7, where the placement of eps matters.
    grads = [{"w": rng.normal(size=(4, 5)).astype(np.float32),
              "b": (1e-7 * rng.normal(size=(5,))).astype(np.float32)} for _ in range(steps)]
    return params, grads


def run_chain(tx, params, grads_seq):
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    for g in grads_seq:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, updates)
    return p


HYPER = dict(lr_init=1e-2, boundaries=(3, 6), rate=0.5, b1=0.9, b2=0.999, eps=1e-8, wd=0.01, clip=0.5)


def chain_for(hyper):
    config = ifan_config()
    config.learning_rate = hyper["lr_init"]
    config.lr_boundaries = hyper["boundaries"]
    config.lr_decay = hyper["rate"]
    config.beta1, config.beta2, config.eps = hyper["b1"], hyper["b2"], hyper["eps"]
    config.weight_decay, config.grad_clip_norm = hyper["wd"], hyper["clip"]
    return opt_lib.create_optimizer(config)[0]


@pytest.mark.slow
def test_radam_chain_matches_reference():
    params, grads = make_problem(10)  # steps 1-5 un-rectified, 6-10 rectified, two lr drops
    got = run_chain(chain_for(HYPER), params, grads)
    want = reference_run(params, grads, **HYPER)
    for k in params:
        moved = want[k] - params[k]
        assert np.abs(moved).max() > 1e-5  # the test moves the parameters
        np.testing.assert_allclose(np.asarray(got[k]) - params[k], moved, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_radam_direction_is_not_optax_radam_but_agrees_without_eps():
    params, grads = make_problem(8)
    ours = run_chain(opt_lib.scale_by_radam_torch(0.9, 0.999, 1e-8), params, grads)
    optax_ = run_chain(optax.scale_by_radam(0.9, 0.999, 1e-8), params, grads)
    # With eps on sqrt(v) (torch_optimizer) vs on sqrt(v_hat) (optax) tiny gradients move differently.
    assert not np.allclose(ours["b"], optax_["b"], rtol=5e-2, atol=0)
    # The un-rectified steps 1-5 (bias-corrected momentum, no sqrt(v)) are optax's exactly. (Later
    # steps differ by ~1 %: optax mixes N_inf in float64 with beta2^t in float32, off by 0.026 at
    # step 6, while our step factors come from a float64 table.)
    for k in params:
        np.testing.assert_allclose(
            run_chain(opt_lib.scale_by_radam_torch(0.9, 0.999, 1e-8), params, grads[:5])[k],
            run_chain(optax.scale_by_radam(0.9, 0.999, 1e-8), params, grads[:5])[k], rtol=1e-6, atol=3e-6)


@pytest.mark.slow
def test_radam_matches_torch_radam_with_decoupled_decay():
    torch = pytest.importorskip("torch")
    params, grads = make_problem(10)
    h = dict(HYPER, boundaries=(), clip=1e9)  # torch.optim has no LR_decay; compare RAdam alone
    got = run_chain(chain_for(h), params, grads)
    tparams = [torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in ("w", "b")]
    topt = torch.optim.RAdam(tparams, lr=h["lr_init"], betas=(h["b1"], h["b2"]), eps=h["eps"],
                             weight_decay=h["wd"], decoupled_weight_decay=True)
    for g in grads:
        for tp, k in zip(tparams, ("w", "b")):
            tp.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
    for tp, k in zip(tparams, ("w", "b")):
        want = tp.detach().numpy() - params[k]
        np.testing.assert_allclose(np.asarray(got[k]) - params[k], want, rtol=1e-5, atol=1e-8)


def test_step_factor_table_joins_formula():
    table = opt_lib.radam_step_factors(np.arange(990.0, 1010.0), 0.9, 0.999)[0]
    formula = opt_lib.radam_step_factors(jnp.arange(990.0, 1010.0), 0.9, 0.999, xp=jnp)[0]
    np.testing.assert_allclose(np.asarray(formula), table, rtol=1e-6)
    # Past the table the float32 formula takes over: a 2-step table moves like the full one.
    params, grads = make_problem(10)
    short = run_chain(opt_lib.scale_by_radam_torch(0.9, 0.999, 1e-8, table_steps=2), params, grads)
    full = run_chain(opt_lib.scale_by_radam_torch(0.9, 0.999, 1e-8), params, grads)
    for k in params:
        np.testing.assert_allclose(short[k], full[k], rtol=1e-3)
