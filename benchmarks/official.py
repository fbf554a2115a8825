"""The official PyTorch IFAN, measured the way our workers measure ours.

Its code is imported from a local checkout of codeslake/IFAN (`models/archs/IFAN.py`,
`models/archs/RBN.py`, `models/IAC.py`) given on the command line; nothing of it is copied here
(AGPL). torch and the checkout are imported inside the functions: they are optional and live
outside this package. Both networks get Xavier-uniform random weights: the work does not depend on
the values.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

from benchmarks import probes, specs


def official_modules(job: specs.Job, checkout: str):
    """(torch, Network, ReblurNetwork, IAC) of the checkout, torch set to this machine's cores."""
    sys.path.insert(0, os.path.abspath(checkout))
    import torch
    from models.archs.IFAN import Network  # the official checkout's modules
    from models.archs.RBN import Network as ReblurNetwork
    from models.IAC import IAC

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if job.platform == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--platform=gpu but torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True  # the official trainer's setting; its best case
    return torch, Network, ReblurNetwork, IAC


class _Run:
    """Device, synchronisation, autocast and peak memory of one official measurement."""

    def __init__(self, torch, job: specs.Job):
        self.torch = torch
        self.job = job
        self.gpu = job.platform == "gpu"
        self.device = "cuda" if self.gpu else "cpu"
        self.bf16 = job.dtype == "bfloat16"
        self.rss_reset = False
        self.peak_with_warmup_mb = None

    def autocast(self):
        """bfloat16 autocast for --dtype=bfloat16 (the official code has no such option)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device, dtype=self.torch.bfloat16)

    def timed(self, fn):
        """`fn` under autocast, synchronised with the device."""
        def run():
            with self.autocast():
                out = fn()
            if self.gpu:
                self.torch.cuda.synchronize()
            return out
        return run

    def reset_peak(self):
        """After the warm-up calls: cuDNN's algorithm search (benchmark mode) is done."""
        self.rss_reset = probes.reset_peak_rss()
        if self.gpu:
            self.peak_with_warmup_mb = self.torch.cuda.max_memory_allocated() / 1e6
            self.torch.cuda.reset_peak_memory_stats()

    def steady(self, fn):
        """Timings of the job's warm-up and repeats of `fn` (see `probes.steady_runs`)."""
        times, _ = probes.steady_runs(fn, self.job.warmup, self.job.repeats, self.reset_peak)
        return times

    def memory(self) -> dict:
        steady = self.torch.cuda.max_memory_allocated() / 1e6 if self.gpu else None
        peak = self.peak_with_warmup_mb if self.peak_with_warmup_mb is not None else steady
        info = {"peak_rss_mb": probes.peak_rss_mb(),
                "steady_rss_mb": probes.steady_rss_mb(self.rss_reset),
                "peak_device_mb": peak, "device_mb": steady,
                "threads": self.torch.get_num_threads(), "backend": self.device}
        if self.gpu:
            info["tf32_convolutions"] = bool(self.torch.backends.cudnn.allow_tf32)
            info["tf32_matmul"] = bool(self.torch.backends.cuda.matmul.allow_tf32)
        return info


def official_config(job: specs.Job, model: specs.Model):
    """The official option namespace for `model` (the paper's kernel sizes and residual blocks)."""
    return argparse.Namespace(N=model.num_iterations, ch=model.channels, ks=3, Fs=3,
                              res_num=2, wiF=1.5, wiRF=1.0, RBFs=3,
                              RBF_num=model.reblur_iterations,
                              device="cuda" if job.platform == "gpu" else "cpu")


def _xavier(torch, *modules):
    for module in modules:
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)


def inference(job: specs.Inference, checkout: str) -> dict:
    """The official Network(C, is_train=False) under torch.no_grad on one (1, 3, H, W) image."""
    torch, network_cls, _, _ = official_modules(job, checkout)
    run = _Run(torch, job)
    torch.manual_seed(0)
    net = network_cls(official_config(job, job.model)).eval()
    _xavier(torch, net)
    net = net.to(run.device)
    h, w = job.size
    image = torch.rand(1, 3, h, w).to(run.device)
    forward = run.timed(lambda: net(image, is_train=False)["result"])
    with torch.no_grad():
        out, first_run_s = probes.timed_first(forward)
        times = run.steady(forward)
    return {**probes.summary(times), "first_run_s": first_run_s, **run.memory(),
            "output_finite": bool(torch.isfinite(out).all()),
            "num_params": int(sum(p.numel() for p in net.parameters()))}


def train_step(job: specs.TrainStep, checkout: str) -> dict:
    """Forward (is_train=True) + RBN + the three MSE losses + backward + clipping + RAdam.

    torch.optim.RAdam(weight_decay=0.01) stands in for the official trainer's
    torch_optimizer.RAdam (not a dependency); the work per step is the same.
    """
    torch, network_cls, reblur_cls, _ = official_modules(job, checkout)
    run = _Run(torch, job)
    functional = torch.nn.functional
    torch.manual_seed(0)
    config = official_config(job, job.model)
    net = network_cls(config)
    rbn = reblur_cls(config, net.kernel_dim)
    _xavier(torch, net, rbn)
    net, rbn = net.to(run.device), rbn.to(run.device)
    params = list(net.parameters()) + list(rbn.parameters())
    opt = torch.optim.RAdam(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    size = job.crop
    blurred, right, left = (torch.rand(job.batch, 3, size, size).to(run.device) for _ in range(3))
    sharp = torch.clamp(blurred + 0.05, 0, 1)
    holder = {}

    def one_step():
        with run.autocast():
            outs = net(blurred, right, left, is_train=True)
            reblurred = rbn(sharp, outs["Filter"])["SB"]
            loss = (functional.mse_loss(outs["result"], sharp)
                    + functional.mse_loss(outs["f_R_w"], outs["f_L"])
                    + functional.mse_loss(reblurred, functional.interpolate(
                        blurred, scale_factor=1 / 8, mode="area")))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        holder["loss"] = loss.item()  # waits for the step

    _, first_run_s = probes.timed_first(one_step)
    times = run.steady(one_step)
    return {**probes.summary(times), "first_run_s": first_run_s, **run.memory(),
            "loss": holder["loss"], "optimizer": "torch.optim.RAdam (stand-in for "
            "torch_optimizer.RAdam)", "output_finite": math.isfinite(holder["loss"])}


def iac(job: specs.Iac, checkout: str) -> dict:
    """The official IAC (unfold) on a given filter map, or with the 1x1 conv that makes it."""
    torch, _, _, iac_fn = official_modules(job, checkout)
    run = _Run(torch, job)
    b, h, w, c = job.features
    n, k = job.iterations, job.filter_size
    m = n * c * (2 * k + 1)
    torch.manual_seed(0)
    features = torch.randn(b, c, h, w).to(run.device)
    head = torch.randn(b, c, h, w).to(run.device)
    conv = torch.nn.Conv2d(c, m, 1)
    torch.nn.init.xavier_uniform_(conv.weight, gain=1.5)
    torch.nn.init.zeros_(conv.bias)
    conv = conv.to(run.device)
    with torch.no_grad():
        filters = conv(head)
        if job.form == "map":
            fn = run.timed(lambda: iac_fn(features, filters, n, c, k))
        else:
            fn = run.timed(lambda: iac_fn(features, conv(head), n, c, k))
        out = fn()
        times = run.steady(fn)
    return {**probes.summary(times), **run.memory(),
            "output_finite": bool(torch.isfinite(out).all())}
