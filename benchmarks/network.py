"""Our workers for the network alone: inference on random weights, IAC, the probe.

Each function takes its job (`specs`) and returns a JSON-able dict of what it measured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import probes, specs
from benchmarks.weights import random_params
from ifan_jax import environment
from ifan_jax import inference as inference_lib
from ifan_jax.models import IFAN, count_params
from ifan_jax.models import iac as iac_lib


def forward_fn(model_config):
    """The jitted forward pass (params, (N, H, W, 3) image) -> deblurred image of `model_config`:
    inference's one forward pass (`ifan_jax.inference.Forward`), as a plain jitted function."""
    return inference_lib.Forward(IFAN.from_config(model_config).apply).compiled.jitted


def compile_forward(model_config, params, image):
    """The forward pass of `model_config` compiled for `params` and `image` as `Deblurrer` compiles
    it: ahead of the first call, with its CPU options, the compiler's freed heap released."""
    return inference_lib.Forward(IFAN.from_config(model_config).apply).compiled.compile(params, image)


def random_inputs(model_config, size: tuple[int, int]):
    """(random weights of `model_config` and a random (1, H, W, 3) image), on the device."""
    h, w = size
    image = np.random.default_rng(1).random((1, h, w, 3), np.float32)
    return jax.device_put(random_params(model_config)), jax.device_put(image)


def inference(job: specs.Inference) -> dict:
    """Compile and run the jitted IFAN forward pass on one (1, H, W, 3) image."""
    if job.cache_dir:
        environment.enable_compilation_cache(job.cache_dir)
    cache = probes.count_cache_hits()
    model_config = job.model.config(job.dtype)
    params, image = random_inputs(model_config, job.size)
    compiled, compile_s = probes.timed_first(lambda: compile_forward(model_config, params, image))
    out, first_run_s = probes.timed_first(lambda: compiled(params, image).block_until_ready())
    times, reset = probes.steady_runs(lambda: compiled(params, image).block_until_ready(),
                                      job.warmup, job.repeats, probes.reset_peak_rss)
    memory = compiled.memory_analysis()
    return {**probes.summary(times), "compile_s": compile_s, "first_run_s": first_run_s,
            "peak_rss_mb": probes.peak_rss_mb(), "steady_rss_mb": probes.steady_rss_mb(reset),
            "peak_device_mb": probes.peak_device_mb(), "device_mb": probes.executable_mb(compiled),
            "cache_hits": cache["hits"], "backend": jax.default_backend(),
            "xla_temp_mb": getattr(memory, "temp_size_in_bytes", 0) / 1e6,
            "output_finite": bool(np.isfinite(np.asarray(out)).all()),
            "num_params": count_params(params)}


def iac(job: specs.Iac) -> dict:
    """IAC alone: `iac` (given map), `iac_from_head` (streaming) or `iac_per_pixel` (gather)."""
    b, h, w, c = job.features
    n, k, variant = job.iterations, job.filter_size, "official"
    m = iac_lib.iac_channels(n, c, k)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((b, h, w, c), np.float32)
    head = rng.standard_normal((b, h, w, c), np.float32)
    kernel = rng.uniform(-1, 1, (c, m)).astype(np.float32) * np.sqrt(6 / (c + m)) * 1.5
    bias = np.zeros((m,), np.float32)
    filters = (head.reshape(-1, c) @ kernel).reshape(b, h, w, m)
    forms = {
        "map": (lambda e, f: iac_lib.iac(e, f, n, k, variant=variant), (features, filters)),
        "per_pixel": (lambda e, f: iac_lib.iac_per_pixel(e, f, n, k, variant=variant),
                      (features, filters)),
        "head": (lambda e, d, kk, bb: iac_lib.iac_from_head(e, d, kk, bb, n, k, variant=variant),
                 (features, head, kernel, bias)),
    }
    fn, args = forms[job.form]
    args = jax.device_put(args)
    compiled, compile_s = probes.timed_first(lambda: jax.jit(fn).lower(*args).compile())
    out = compiled(*args).block_until_ready()
    times, _ = probes.steady_runs(lambda: compiled(*args).block_until_ready(), job.warmup,
                                  job.repeats)
    return {**probes.summary(times), "compile_s": compile_s, "peak_rss_mb": probes.peak_rss_mb(),
            "peak_device_mb": probes.peak_device_mb(), "backend": jax.default_backend(),
            "output_finite": bool(np.isfinite(np.asarray(out)).all()),
            "checksum": float(np.abs(np.asarray(out, np.float64)).mean())}


def probe(job: specs.Probe) -> dict:
    """What JAX runs on here, and whether its default precision rounds float32 matrix products
    (TF32 on NVIDIA GPUs)."""
    device = jax.local_devices()[0]
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 256), jnp.float32)
    exact = jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST)
    error = float(jnp.abs(jnp.dot(x, x) - exact).max() / jnp.abs(exact).max())
    return {"backend": jax.default_backend(), "device_kind": device.device_kind,
            "device_count": jax.local_device_count(), "default_matmul_rel_error": error}
