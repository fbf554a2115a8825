"""Where the time of one IFAN forward pass goes: a profile broken down by kind of operation.

    python -m benchmarks.profile --size=1280x720 --json=benchmarks/results/DATE_MACHINE_profile.json
    python -m benchmarks.profile --official=/path/to/IFAN ...   # the official code too
    python -m benchmarks.profile --train_batch=2                # the training step
    python -m benchmarks.profile --trace_dir=T --no_parse       # trace only (no TensorFlow)
    python -m benchmarks.profile --from_trace=T                 # parse a trace made elsewhere

Ours: the jitted forward (random weights, the "official" IAC variant, as the benchmark's
inference row), or with --train_batch the training step as the benchmark's train rows run it, is
traced with `jax.profiler` for `--calls` calls after a warm-up; every XLA
operation's own time (the thunks on the CPU, the kernels on a GPU; nested time such as a `while`
loop's body counted once, in the operations that ran it) is summed per kind: convolutions, fused
element-wise passes (bias, activation, residual additions), padding, transposes and copies,
gathers/slices, reductions, matrix products, loops' own overhead, other. On the CPU the sum is over
all threads (CPU time), next to the wall time per call. Reading the trace needs the XPlane
protocol buffer module that ships with TensorFlow; `--no_parse` only writes the trace, for
machines without it.

The official code (--official, a local codeslake/IFAN checkout; torch needed) is profiled with
`torch.profiler` on the same input: self time per aten operation, grouped the same way (IAC's
unfold is "gathers/slices"), CPU only.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import re
import sys
import tempfile
import time

import jax

from benchmarks import network, official, specs, training
from ifan_jax.errors import ArgumentParser

KINDS = ("convolution", "elementwise fusion", "padding", "transpose/copy", "gather/slice",
         "reduction", "matrix product", "loop overhead", "other")
_PATTERNS = [  # (regex on the operation's name, kind); the first match wins
    (r"conv|cudnn|xmma|implicit_gemm|winograd|fprop|dgrad|wgrad", "convolution"),
    (r"(^|[_.:])pad", "padding"),
    (r"transpose|^copy|[_.]copy|bitcast|layout", "transpose/copy"),
    (r"gather|slice|concatenate|unfold|im2col|index|narrow|select_scatter|\bcat\b", "gather/slice"),
    (r"reduce|sum|mean|norm", "reduction"),
    (r"\bdot|gemm|matmul|\bmm\b|addmm|\bbmm\b", "matrix product"),
    (r"^while|^call|^conditional|^scan", "loop overhead"),
    (r"fusion|add|mul|leaky|relu|where|select|maximum|sub|div|exp|clamp|tanh|sigmoid|copy_",
     "elementwise fusion"),
]
_WRAPPERS = re.compile(r"^(ThunkExecutor|Thunk|PjitFunction|CommonPjRt|ParseArguments|\$|"
                       r"ExecuteHelper|TfrtCpu|PjRt|xla::|XLA |Execute)")


def kind_of(name: str) -> str:
    """The kind (one of KINDS) of an XLA operation or aten operation called `name`."""
    low = name.lower().removeprefix("aten::")
    for pattern, kind in _PATTERNS:
        if re.search(pattern, low):
            return kind
    return "other"


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^)]*\)|\S+) (?:\{[^}]*\} )?"
                          r"([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
HLO_FILE = "optimized_hlo.txt"


def hlo_kinds(hlo_text: str) -> dict:
    """{instruction name: kind} of an optimised HLO module: each instruction by its opcode and the
    JAX operation it came from (a fusion that holds a convolution, such as XNNPACK's or cuDNN's
    convolution + bias + activation, is a convolution)."""
    kinds = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        source = _OP_NAME.search(line)
        source = source.group(1).rsplit("/", 1)[-1] if source else ""
        text = f"{source} fusion" if opcode == "fusion" else f"{opcode} {source}"
        if opcode == "custom-call" and "cudnn$conv" in line:
            text = "convolution"
        kinds[name] = kind_of(text)
    return kinds


def _self_times(events):
    """[(name, self duration)] of (name, start, duration) events of one timeline: each event's
    duration less the events nested inside it."""
    out = []
    stack = []  # [name, end, self]
    for name, start, dur in sorted(events, key=lambda e: (e[1], -e[2])):
        while stack and stack[-1][1] <= start:
            out.append(tuple(stack.pop()[::2]))
        if stack:
            stack[-1][2] -= dur
        stack.append([name, start + dur, dur])
    out.extend(tuple(s[::2]) for s in stack)
    return out


def parse_trace(trace_dir: str) -> dict:
    """{platform: "gpu"|"cpu", "ops": {op name: seconds of its own}} from the newest XPlane file
    under `trace_dir` (the XLA operations of the device planes, else of the host's XLA threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # ships with TensorFlow

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"{trace_dir}: no *.xplane.pb trace under it")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    gpu = [p for p in space.planes if p.name.startswith("/device:GPU")]
    planes = gpu or [p for p in space.planes if p.name == "/host:CPU"]
    ops = collections.Counter()
    for plane in planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            if not gpu and "XLA" not in line.name:
                continue  # the host's Python and runtime threads
            if gpu and not line.name.startswith("Stream"):
                continue
            events = []
            for ev in line.events:
                name = names[ev.metadata_id]
                if gpu:  # name the kernel by the HLO operation it implements
                    for stat in ev.stats:  # its value: a string, or a reference to one
                        if stat_names.get(stat.metadata_id) == "hlo_op":
                            hlo = stat.str_value or stat_names.get(stat.ref_value, "")
                            # a CUDA graph's kernels keep their own names (XLA's fusion names)
                            name = name if hlo.startswith("command_buffer") else hlo or name
                events.append((name, ev.offset_ps, ev.duration_ps))
            for name, own in _self_times(events):
                if not _WRAPPERS.match(name):
                    ops[name] += own / 1e12
    return {"platform": "gpu" if gpu else "cpu", "ops": dict(ops)}


def breakdown(ops: dict, calls: int, known: dict | None = None) -> dict:
    """Seconds per call and share of each kind, and the ten most expensive operations; `known`
    ({name: kind}, from `hlo_kinds`) before the kind the name alone suggests."""
    known = known or {}
    kind = lambda name: known.get(name) or kind_of(name)
    kinds = collections.Counter()
    for name, seconds in ops.items():
        kinds[kind(name)] += seconds / calls
    total = sum(kinds.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:10]
    return {"total_s": total,
            "kinds": {k: {"s": kinds[k], "share": kinds[k] / total if total else 0.0}
                      for k in KINDS if kinds[k]},
            "top_ops": [{"op": n, "kind": kind(n), "s": s / calls} for n, s in top]}


def forward_call(model, size):
    """(optimised HLO text, a function running one synchronised call) of the jitted forward pass
    of `model` (a `specs.Model`) on a random (1, H, W, 3) image, as the inference row runs it."""
    model_config = model.config("float32")
    params, image = network.random_inputs(model_config, size)
    compiled = network.compile_forward(model_config, params, image)
    return compiled.as_text(), lambda: compiled(params, image).block_until_ready()


def train_call(model, batch: int, crop: int):
    """(optimised HLO text, a function running one synchronised step) of the training step (all
    losses, the paper's optimiser, the separable IAC as configs/ifan.py) on a random batch, as
    the benchmark's train rows run it."""
    job = specs.TrainStep(model=dataclasses.replace(model, iac_variant="separable"),
                          batch=batch, crop=crop)
    compiled, state, _, data = training.compiled_step(job)
    return compiled.as_text(), training.stepper(compiled, state, data)[0]


def trace_ours(hlo_text: str, call, calls: int, trace_dir: str) -> dict:
    """Run `call` once, time `calls` calls, then trace `calls` more into `trace_dir` (with the
    HLO text beside the trace, to name its operations)."""
    def seconds_per_call():
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - start) / calls

    os.makedirs(trace_dir, exist_ok=True)
    with open(os.path.join(trace_dir, HLO_FILE), "w") as f:
        f.write(hlo_text)
    call()
    untraced = seconds_per_call()
    jax.profiler.start_trace(trace_dir)
    traced = seconds_per_call()
    jax.profiler.stop_trace()
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
            "wall_s_per_call": untraced, "wall_s_per_call_traced": traced}


def profile_official(model, size, calls: int, checkout: str) -> dict:
    """Self CPU time per aten operation of the official network (random weights) per call."""
    import torch  # optional: only for the official side

    job = specs.Inference(size=size, model=model, platform="cpu")
    _, network_cls, _, _ = official.official_modules(job, checkout)
    torch.manual_seed(0)
    net = network_cls(official.official_config(job, job.model)).eval()
    h, w = size
    image = torch.rand(1, 3, h, w)
    with torch.no_grad():
        net(image, is_train=False)
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                net(image, is_train=False)
        wall = (time.perf_counter() - start) / calls
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()
           if e.self_cpu_time_total > 0}
    return {"wall_s_per_call_traced": wall, "threads": torch.get_num_threads(),
            **breakdown(ops, calls)}


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m benchmarks.profile", name="profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=specs.parse_size, default=(720, 1280), metavar="WxH",
                   help="input size (default 1280x720)")
    p.add_argument("--calls", type=int, default=3, help="traced calls (default 3)")
    p.add_argument("--train_batch", type=int, default=0, metavar="N",
                   help="profile the training step at this batch size (crops of --crop) instead "
                        "of the forward pass")
    p.add_argument("--crop", type=int, default=256, help="training crop size (default 256)")
    p.add_argument("--trace_dir", default=None, help="where the JAX trace goes (default: a "
                   "temporary folder, deleted after parsing)")
    p.add_argument("--no_parse", action="store_true", help="write the trace, do not parse it")
    p.add_argument("--from_trace", default=None, metavar="DIR",
                   help="parse a trace written earlier (with --calls as it was) instead")
    p.add_argument("--official", default=None, metavar="PATH",
                   help="also profile the official code of this codeslake/IFAN checkout (CPU)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny network (channels=8, N=3)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result here")
    return p.parse_args(argv)


def _print(title: str, result: dict) -> None:
    print(f"{title}: {result['total_s']:.3f} s of operations per call")
    for kind, v in result["kinds"].items():
        print(f"  {kind:<20} {v['s']:8.3f} s  {100 * v['share']:5.1f}%")


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = specs.TINY_MODEL if args.tiny else specs.FULL_MODEL
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "what": (f"train step {args.train_batch}x{args.crop}x{args.crop}" if args.train_batch
                    else "forward pass"), "size": list(args.size)[::-1],
           "model": dataclasses.asdict(model),
           "calls": args.calls, "load_average_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as scratch:
        trace_dir = args.from_trace or args.trace_dir or scratch
        if not args.from_trace:
            hlo, call = (train_call(model, args.train_batch, args.crop) if args.train_batch
                         else forward_call(model, args.size))
            out["ours_run"] = trace_ours(hlo, call, args.calls, trace_dir)
        if not args.no_parse:
            parsed = parse_trace(trace_dir)
            with open(os.path.join(trace_dir, HLO_FILE)) as f:
                known = hlo_kinds(f.read())
            out["ours"] = {"platform": parsed["platform"],
                           **breakdown(parsed["ops"], args.calls, known)}
            _print(f"ifan-jax ({parsed['platform']})", out["ours"])
    if args.official and not args.train_batch:
        out["official"] = profile_official(model, args.size, args.calls, args.official)
        _print("official (cpu)", out["official"])
    out["load_average_end"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
