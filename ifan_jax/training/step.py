"""The train state and the pure training step of IFAN: what one optimiser update computes.

`train_step(state, batch)` is a pure function of the state and the batch (jit it, or use
`compile_train_step(mesh)` for data parallelism over a device mesh); the loop that feeds it, saves
checkpoints and validates is `ifan_jax.training.loop`. This module needs no TensorFlow and no clu, so the
step can be compiled, timed and tested on a machine that has only JAX.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from ifan_jax.compiled import TRAINING_CPU_OPTIONS, AheadOfTime
from ifan_jax.models import IFAN
from ifan_jax.training import distributed, losses
from ifan_jax.training.optimizer import create_optimizer

DUAL_PIXEL_VIEWS = frozenset({"l", "r"})
INIT_SIZE = 16  # image side used to create the parameters (their shapes do not depend on it)


class TrainState(train_state.TrainState):
    """step, params, opt_state (flax TrainState) plus the base RNG key of the run.

    Step s (0-based, = `step` before the update) draws its randomness from fold_in(rng, s).
    `learning_rate_fn(step)` is the schedule inside `tx`, for logging.
    """

    rng: jax.Array
    learning_rate_fn: Callable = flax.struct.field(pytree_node=False, default=None)


# --------------------------------------------------------------------------------------------
# State and step


def create_model(config: ml_collections.ConfigDict) -> IFAN:
    """The IFAN of config.model; a field it does not have or a bad value is a ValueError."""
    return IFAN.from_config(config.model)


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array | None = None) -> TrainState:
    """A fresh state: IFAN parameters (with the reblurring network) and the optimiser of `config`.

    `rng` (a raw uint32 key) defaults to PRNGKey(config.seed); it is split into the seed of the
    initialisation and the state's base key. The initialisation draws with the "rbg" generator:
    jitted, threefry makes XLA compile far longer on a CPU (measured 90 s against 15 s for a
    tiny IFAN on a busy 2-core machine).
    """
    model = create_model(config)
    rng = jax.random.PRNGKey(config.seed) if rng is None else rng
    init_rng, train_rng = jax.random.split(rng)
    init_key = jax.random.key(jax.random.randint(init_rng, (), 0, 2**31 - 1), impl="rbg")
    x = jnp.zeros((1, INIT_SIZE, INIT_SIZE, 3), jnp.float32)
    params = jax.jit(functools.partial(model.init, train=True))(init_key, x, x, x, x)["params"]
    tx, schedule = create_optimizer(config)
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=train_rng,
                             learning_rate_fn=schedule)


def train_step(state: TrainState, batch: dict, microbatches: int = 1
               ) -> tuple[TrainState, dict]:
    """One optimiser update on a batch {"c", "gt", ["r", "l"]: (B, H, W, 3) float32 in [0, 1]}.

    Without the dual-pixel views "r" and "l" (a data set of plain pairs) the blurred image stands
    in for them and the disparity loss is left out. Returns the new state and the metrics of this
    step: loss (the total), loss_deblur, loss_disparity / loss_reblur (when computed), grad_norm
    (before clipping) and learning_rate (the rate this update used).

    `microbatches` > 1 computes the gradient in that many forward/backward passes over equal parts
    of the batch (rows i, i + k, i + 2k, ... form part i, so that each part is spread over the
    devices as the batch is) and averages them: every loss is a mean over equal-sized parts, so the
    update is that of the whole batch (to float rounding), with the activations of one part alive
    at a time. B must be a multiple of `microbatches` times the number of devices.
    """
    # IFAN has no stochastic layer; the key is there for models that add one (dropout, ...).
    step_rng = jax.random.fold_in(state.rng, state.step)
    dual = DUAL_PIXEL_VIEWS <= set(batch)

    def loss_and_grads(part: dict, rng: jax.Array):
        right, left = (part["r"], part["l"]) if dual else (part["c"], part["c"])

        def loss_fn(params):
            outputs = state.apply_fn({"params": params}, part["c"], right, left, part["gt"],
                                     train=True, rngs={"dropout": rng})
            terms = losses.ifan_losses(outputs, part["gt"], disparity=dual)
            return terms["total"], terms

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return terms, grads

    if microbatches == 1:
        terms, grads = loss_and_grads(batch, step_rng)
    else:
        terms, grads = _accumulated(loss_and_grads, batch, step_rng, microbatches)
    metrics = {"loss": terms["total"], "grad_norm": optax.global_norm(grads),
               "learning_rate": state.learning_rate_fn(state.step)}
    metrics.update({f"loss_{k}": v for k, v in terms.items() if k != "total"})
    return state.apply_gradients(grads=grads), metrics


def microbatch_parts(batch: dict, parts: int) -> dict:
    """`batch` as `parts` stacked parts (parts, B / parts, ...): part i holds rows i, i + parts,
    i + 2 * parts, ..., so that each part takes the same rows from every device's share."""
    def split(x):
        if x.shape[0] % parts:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {parts} microbatches")
        return jnp.swapaxes(x.reshape(x.shape[0] // parts, parts, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def _accumulated(loss_and_grads: Callable, batch: dict, rng: jax.Array, parts: int):
    """The mean of `loss_and_grads(part, rng_i)` over the `parts` parts of `batch`
    (`microbatch_parts`), one part after the other.

    The parts are unrolled, each made to wait for the gradient sum of the one before, so that one
    part's activations are alive at a time. Not `lax.scan`: in a loop XLA's CPU backend computes
    the convolutions' gradients far slower (measured on the 2-core CPU: batch 4 at 64x64 in 2
    parts, 7.1 s per step in a scan against 0.77 s unrolled). Not an optimisation barrier:
    XLA removes those before it schedules, and the parts then overlap (batch 4 in 2 parts needed
    2.08 GB of XLA's temporary memory against 1.24 GB chained).
    """
    split = microbatch_parts(batch, parts)
    total, terms = None, []
    for i in range(parts):
        part = jax.tree.map(operator.itemgetter(i), split)
        if i:
            part = _after(total, part)
        part_terms, grads = loss_and_grads(part, jax.random.fold_in(rng, i))
        total = grads if total is None else jax.tree.map(jnp.add, total, grads)
        terms.append(part_terms)
    return (jax.tree.map(lambda *t: sum(t) / parts, *terms),
            jax.tree.map(lambda g: g / parts, total))


def _after(tree, values):
    """`values` unchanged, but computed after every leaf of `tree`: each gets an exact zero made
    from one element of every leaf (0 * a finite number; XLA does not fold a float times 0)."""
    zero = 0.0 * jnp.nan_to_num(sum(leaf.ravel()[0] for leaf in jax.tree.leaves(tree)))
    return jax.tree.map(lambda x: x + zero.astype(x.dtype), values)


def compile_train_step(mesh: jax.sharding.Mesh, microbatches: int = 1) -> AheadOfTime:
    """`train_step` (in `microbatches` passes) jitted for `mesh`: state replicated (and donated:
    the update reuses its buffers), batch split on its first axis; compiled ahead of the first step
    (on the CPU with `TRAINING_CPU_OPTIONS`), the compiler's freed heap released before it runs
    (`ifan_jax.compiled`)."""
    replicated = distributed.replicated(mesh)
    step = functools.partial(train_step, microbatches=microbatches)
    return AheadOfTime(jax.jit(step, in_shardings=(replicated, distributed.split_batch(mesh)),
                               out_shardings=(replicated, replicated), donate_argnums=(0,)),
                       TRAINING_CPU_OPTIONS)
