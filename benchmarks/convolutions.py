"""Every convolution of the training step (or the forward pass), timed alone under each of XLA's
CPU convolution libraries: how fast the step could be if each ran at the faster of the two.

    python -m benchmarks.convolutions --train_batch=2 --json=DATE_MACHINE_convolutions_train_b2.json
    python -m benchmarks.convolutions --size=1280x720      # the forward pass instead

XLA's CPU backend computes a convolution with YNNPACK (its default) or with its own Eigen kernels
(`xla_cpu_experimental_ynn_fusion_type=""`); one set of options applies to a whole executable, so
the training step (`ifan_jax.compiled.TRAINING_CPU_OPTIONS`) runs every convolution with YNNPACK.
This tool lists the `conv_general_dilated` operations of the step's jaxpr (the forward pass's
convolutions and, from differentiation, the gradients with respect to their inputs and to their
kernels), compiles each alone with random operands under both option sets, and sums the medians
times the number of uses. `floor_s` is the step's own time with each convolution's time under the
library the step uses (YNNPACK for training, XLA's own for inference:
`ifan_jax.compiled.INFERENCE_CPU_OPTIONS`) replaced by the faster of the two: what choosing the
library per convolution could give at most, with XLA's kernels. The operations are the step's
own (same shapes, strides, dilations and dimension numbers), so a weight gradient is timed as XLA
computes it.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from benchmarks import probes, specs
from ifan_jax import compiled as compiled_lib
from ifan_jax.errors import ArgumentParser

LIBRARIES = {
    "ynnpack": dict(compiled_lib.TRAINING_CPU_OPTIONS),
    "xla": {**compiled_lib.TRAINING_CPU_OPTIONS, "xla_cpu_experimental_ynn_fusion_type": ""},
}
ROLES = ("forward", "input gradient", "weight gradient")


@dataclasses.dataclass(frozen=True)
class Convolution:
    """One `conv_general_dilated` as traced: operand shapes and its parameters."""

    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    params: tuple  # sorted (name, value) pairs of the primitive's parameters

    @property
    def role(self) -> str:
        """What the convolution computes in a training step. JAX's transpose rules give the
        kernel's gradient the input's batch axis as its contracting feature axis, and the input's
        gradient the kernel's output features as its input features; a forward convolution of
        this code base has neither."""
        numbers = dict(self.params)["dimension_numbers"]
        if numbers.lhs_spec[0] != 0:  # batch is not the lhs's first axis: batch as feature
            return "weight gradient"
        if numbers.rhs_spec[:2] == (2, 3):  # the kernel's I and O swapped
            return "input gradient"
        return "forward"

    def macs(self) -> int:
        """Multiply-adds (products with inserted zeros of a dilated input included)."""
        out = jax.eval_shape(self.apply, jax.ShapeDtypeStruct(self.lhs, jnp.float32),
                             jax.ShapeDtypeStruct(self.rhs, jnp.float32)).shape
        spec = dict(self.params)["dimension_numbers"].rhs_spec  # (out, in, *window) axes
        return math.prod(out) * math.prod(self.rhs[a] for a in spec[1:])

    def apply(self, lhs, rhs):
        return jax.lax.conv_general_dilated_p.bind(lhs, rhs, **dict(self.params))


def convolutions(fn: Callable, *args) -> collections.Counter:
    """{Convolution: uses} in `fn(*args)`'s jaxpr, inner jaxprs included (a scan's body counted
    `length` times). A `while` loop's trip count is unknown: its convolutions raise ValueError."""
    found = collections.Counter()

    def walk(jaxpr, uses: int) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                found[Convolution(tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape),
                                  tuple(sorted(eqn.params.items())))] += uses
                continue
            inner = uses * eqn.params["length"] if eqn.primitive.name == "scan" else uses
            for sub in _jaxprs(eqn.params.values()):
                if eqn.primitive.name == "while" and _has_convolution(sub):
                    raise ValueError("a while loop holds a convolution: its trip count is unknown")
                walk(sub, inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr, 1)
    return found


def _jaxprs(values):
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


def _has_convolution(jaxpr) -> bool:
    return any(e.primitive.name == "conv_general_dilated" or _has_convolution_in(e)
               for e in jaxpr.eqns)


def _has_convolution_in(eqn) -> bool:
    return any(_has_convolution(sub) for sub in _jaxprs(eqn.params.values()))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` synchronised calls after one untimed call."""
    times, _ = probes.steady_runs(lambda: jax.block_until_ready(fn()), 1, repeats)
    return probes.summary(times)["time_s"]


def time_alone(conv: Convolution, options: dict, repeats: int) -> float:
    """Median seconds of `conv` compiled alone with XLA `options`, on random operands."""
    lhs = jax.random.normal(jax.random.key(1), conv.lhs)
    rhs = jax.random.normal(jax.random.key(2), conv.rhs)
    executable = jax.jit(conv.apply).lower(lhs, rhs).compile(options)
    return median_seconds(lambda: executable(lhs, rhs), repeats)


def measure(found: collections.Counter, repeats: int) -> dict:
    """Per convolution and per role: seconds under each library (times uses), and the faster."""
    rows = []
    for conv, uses in found.items():
        seconds = {name: time_alone(conv, options, repeats) for name, options in LIBRARIES.items()}
        rows.append({"role": conv.role, "uses": uses, "lhs": list(conv.lhs), "rhs": list(conv.rhs),
                     "strides": list(dict(conv.params)["window_strides"]),
                     "lhs_dilation": list(dict(conv.params)["lhs_dilation"]),
                     "g_macs": uses * conv.macs() / 1e9,
                     **{f"{name}_s": uses * s for name, s in seconds.items()},
                     "best_s": uses * min(seconds.values())})
    rows.sort(key=lambda r: -r["ynnpack_s"])
    by_role = {role: {key: sum(r[key] for r in rows if r["role"] == role)
                      for key in ("uses", "g_macs", "ynnpack_s", "xla_s", "best_s")}
               for role in ROLES}
    total = {key: sum(v[key] for v in by_role.values()) for key in next(iter(by_role.values()))}
    return {"convolutions": rows, "by_role": by_role, "total": total}


def train_step_call(model, batch: int, crop: int):
    """(the training step as a function of (state, batch), its arguments, a function running one
    synchronised step compiled as training compiles it)."""
    from benchmarks import training
    from ifan_jax.training import step as step_lib

    job = specs.TrainStep(model=dataclasses.replace(model, iac_variant="separable"),
                          batch=batch, crop=crop)
    compiled, state, _, data = training.compiled_step(job)
    jaxpr_state = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    one_step, _ = training.stepper(compiled, state, data)  # donates `state`: shapes taken first
    return step_lib.train_step, (jaxpr_state, data), one_step


def forward_call(model, size):
    """(the forward pass as a function of (params, image), its arguments, a function running one
    synchronised call compiled as inference compiles it)."""
    from benchmarks import network

    model_config = model.config("float32")
    params, image = network.random_inputs(model_config, size)
    executable = network.compile_forward(model_config, params, image)
    return network.forward_fn(model_config), (params, image), lambda: executable(params, image)


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m benchmarks.convolutions", name="convolutions",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_batch", type=int, default=0, metavar="N",
                   help="the training step at this batch size (crops of --crop); default: the "
                        "forward pass at --size")
    p.add_argument("--crop", type=int, default=256, help="training crop size (default 256)")
    p.add_argument("--size", type=specs.parse_size, default=(720, 1280), metavar="WxH",
                   help="forward pass input size (default 1280x720)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny network (channels=8, N=3)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if jax.default_backend() != "cpu":
        raise SystemExit("this tool compares XLA's CPU convolution libraries: run it on a CPU "
                         "(JAX_PLATFORMS=cpu)")
    model = specs.TINY_MODEL if args.tiny else specs.FULL_MODEL
    fn, fn_args, call = (train_step_call(model, args.train_batch, args.crop) if args.train_batch
                         else forward_call(model, args.size))
    library = "ynnpack" if args.train_batch else "xla"  # what the step compiles with
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "what": (f"train step {args.train_batch}x{args.crop}x{args.crop}" if args.train_batch
                    else f"forward pass {args.size[1]}x{args.size[0]}"),
           "model": dataclasses.asdict(model), "step_library": library,
           "load_average_start": list(os.getloadavg())}
    out["step_s"] = median_seconds(call, args.repeats)
    out.update(measure(convolutions(fn, *fn_args), args.repeats))
    total = out["total"]
    out["floor_s"] = out["step_s"] - total[f"{library}_s"] + total["best_s"]
    out["load_average_end"] = list(os.getloadavg())
    print(f"{out['what']}: {out['step_s']:.3f} s per call, "
          f"{total['uses']} convolutions ({total['g_macs']:.1f} G multiply-adds)")
    print(f"  {'role':<16} {'uses':>5} {'G MACs':>7} {'YNNPACK s':>10} {'XLA s':>7} {'faster s':>9}")
    for role, v in out["by_role"].items():
        print(f"  {role:<16} {v['uses']:>5} {v['g_macs']:>7.1f} {v['ynnpack_s']:>10.3f} "
              f"{v['xla_s']:>7.3f} {v['best_s']:>9.3f}")
    print(f"  {'all':<16} {total['uses']:>5} {total['g_macs']:>7.1f} {total['ynnpack_s']:>10.3f} "
          f"{total['xla_s']:>7.3f} {total['best_s']:>9.3f}")
    print(f"the call with each convolution at the faster library instead of {library}'s: "
          f"{out['floor_s']:.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
