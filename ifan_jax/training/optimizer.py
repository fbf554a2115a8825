"""The paper's optimiser as an optax chain: clipping, RAdam, decoupled weight decay, step decay.

The official trainer runs, once per iteration,

    clip_grad_norm_(params, 0.5)                                  # torch
    torch_optimizer.RAdam(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01).step()
    LR_decay(decay_period=[500000, 550000], decay_rate=0.5).step()

and `create_optimizer(config)` reproduces it update for update:

    optax.chain(clip_by_global_norm_torch(grad_clip_norm),        # g * min(1, c / (|g| + 1e-6))
                scale_by_radam_torch(beta1, beta2, eps),          # torch_optimizer's RAdam direction
                optax.add_decayed_weights(weight_decay),          # + wd * p  (decoupled)
                optax.scale_by_learning_rate(schedule))           # * -lr(count)

Weight decay. torch_optimizer 0.1.0 (the version the official requirements pin) applies it as
`p.add_(-weight_decay * lr, p)` *before* and apart from the moment updates: decoupled weight decay
(AdamW style) scaled by the current learning rate, never added to the gradient; it is applied in
the un-rectified first steps too. Chaining `add_decayed_weights` after the RAdam direction and
before the learning-rate scaling gives exactly p <- p - lr * (direction + wd * p).

RAdam. torch_optimizer computes N_sma = N_inf - 2 t beta2^t / (1 - beta2^t) with
N_inf = 2 / (1 - beta2) - 1. When N_sma >= 5 the step is

    p -= lr * sqrt((1 - beta2^t) r_t) / (1 - beta1^t) * m / (sqrt(v) + eps)

with r_t the usual rectification term; otherwise p -= lr * m / (1 - beta1^t) (bias-corrected
momentum SGD, learning rate included). `optax.scale_by_radam` has the same threshold (5) and the
same un-rectified step, but adds eps to sqrt(v_hat) (the bias-corrected second moment) instead of
sqrt(v): an effective eps larger by 1 / sqrt(1 - beta2^t) in torch_optimizer (13x at t = 6). Hence
`scale_by_radam_torch`, which places eps as torch_optimizer does; with eps = 0 the two agree.
Its per-step scalars come, for the first `table_steps` steps, from a float64 table: in float32,
beta2 = 0.999 itself is off by 1.3e-8 and N_sma near the threshold is off by ~1e-2, which would
change the rectification factor by 0.3 %.

Gradient clipping. torch's `clip_grad_norm_` scales by max_norm / (norm + 1e-6);
`optax.clip_by_global_norm` by max_norm / norm. `clip_by_global_norm_torch` follows torch.

Learning rate. The scheduler's counter is the number of updates already made (it steps after the
optimiser), and the rate is halved once that counter is *greater than* a boundary: update number
count (0-based, = optax's count) uses lr_init * decay ** #{b in boundaries : count > b}, so the
first halved update has count 500001, the 500002nd update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (total_norm + 1e-6)
RECTIFY_THRESHOLD = 5.0  # torch_optimizer.RAdam: rectified step when N_sma >= 5


def learning_rate_schedule(init_value: float, boundaries, decay: float) -> optax.Schedule:
    """lr(count) = init_value * decay ** (number of boundaries b with count > b).

    `count` is the number of updates already applied (0 for the first update), as in optax and
    in the official `LR_decay` scheduler, whose `last_epoch <= b` test keeps the undecayed rate
    up to and including count == b.
    """
    return optax.piecewise_constant_schedule(
        init_value, {int(b) + 1: float(decay) for b in boundaries})


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """Scale all gradients by min(1, max_norm / (global_norm + 1e-6)), as torch's clip_grad_norm_."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.global_norm(updates) + TORCH_CLIP_EPS))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def radam_step_factors(t, b1: float, b2: float, threshold: float = RECTIFY_THRESHOLD, xp=np):
    """(step factor, rectified?) of torch_optimizer's RAdam at step t >= 1, without the lr.

    Rectified steps move by factor * m / (sqrt(v) + eps), the others by factor * m. With xp=np and
    float64 `t` this is the reference; with xp=jnp the float32 formula used past the table.
    """
    log_b2 = float(np.log(b2))
    n_inf = 2.0 / (1.0 - b2) - 1.0
    b2t = xp.exp(t * log_b2)
    one_minus_b2t = -xp.expm1(t * log_b2)
    n_sma = n_inf - 2.0 * t * b2t / one_minus_b2t
    bias1 = -xp.expm1(t * float(np.log(b1))) if b1 > 0 else xp.ones_like(t)
    rectified = n_sma >= threshold
    n_safe = xp.where(rectified, n_sma, threshold)  # keeps the sqrt real where not taken
    r = ((n_safe - 4.0) / (n_inf - 4.0) * (n_safe - 2.0) / n_safe * n_inf / (n_inf - 2.0))
    factor = xp.where(rectified, xp.sqrt(one_minus_b2t * r) / bias1, 1.0 / bias1)
    return factor, rectified


class ScaleByRAdamTorchState(NamedTuple):
    count: jax.Array  # int32, number of updates made
    mu: optax.Updates  # exp_avg
    nu: optax.Updates  # exp_avg_sq


def scale_by_radam_torch(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                         threshold: float = RECTIFY_THRESHOLD,
                         table_steps: int = 1000) -> optax.GradientTransformation:
    """torch_optimizer.RAdam's update direction (learning rate and weight decay excluded).

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1;
    direction = factor_t * m / (sqrt(v) + eps) if N_sma(t) >= threshold else factor_t * m
    (see `radam_step_factors`). Steps 1..table_steps take factor_t from a float64 table.
    """
    table_t = np.arange(1, table_steps + 1, dtype=np.float64)
    factor_table, rectified_table = radam_step_factors(table_t, b1, b2, threshold)
    factor_table = factor_table.astype(np.float32)

    def factors(count):
        formula_factor, formula_rect = radam_step_factors(
            count.astype(jnp.float32), b1, b2, threshold, xp=jnp)
        index = jnp.clip(count - 1, 0, table_steps - 1)
        in_table = count <= table_steps
        factor = jnp.where(in_table, jnp.asarray(factor_table)[index], formula_factor)
        rectified = jnp.where(in_table, jnp.asarray(rectified_table)[index], formula_rect)
        return factor, rectified

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ScaleByRAdamTorchState(jnp.zeros([], jnp.int32), zeros,
                                      jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * g * g, updates, state.nu)
        count = optax.safe_int32_increment(state.count)
        factor, rectified = factors(count)

        def direction(m, v):
            adaptive = m / (jnp.sqrt(v) + eps)
            return (factor * jnp.where(rectified, adaptive, m)).astype(m.dtype)

        return jax.tree.map(direction, mu, nu), ScaleByRAdamTorchState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(the optax chain, its learning-rate schedule) from config keys learning_rate,
    lr_boundaries, lr_decay, beta1, beta2, eps, weight_decay, grad_clip_norm (configs/ifan.py)."""
    schedule = learning_rate_schedule(config.learning_rate, config.lr_boundaries, config.lr_decay)
    parts = []
    if config.grad_clip_norm and config.grad_clip_norm > 0:
        parts.append(clip_by_global_norm_torch(float(config.grad_clip_norm)))
    parts.append(scale_by_radam_torch(float(config.beta1), float(config.beta2), float(config.eps)))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(float(config.weight_decay)))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts), schedule
