"""Our worker for mixed precision: how far bfloat16 moves the output from float32.

Apart from `network` because the metrics load SciPy, which the timed processes should not hold.
"""

from __future__ import annotations

import numpy as np
import skimage.data

from benchmarks import probes, specs
from benchmarks.network import forward_fn
from benchmarks.weights import random_params
from ifan_jax.evaluation import metrics


def bf16_psnr(job: specs.Bf16Psnr) -> dict:
    """PSNR between bfloat16 and float32 outputs of the same random-weight IFAN on a photo."""
    photo = skimage.data.astronaut().astype(np.float32) / 255.0  # 512 x 512 x 3
    h, w = job.size
    photo = photo[:h, :w]
    params = random_params(job.model.config())
    outs = {}
    for dtype in ("float32", "bfloat16"):
        forward = forward_fn(job.model.config(dtype))
        outs[dtype] = np.asarray(forward(params, photo[None]))[0].astype(np.float32)
    return {"psnr_bf16_vs_fp32_db": float(metrics.psnr(outs["bfloat16"], outs["float32"])),
            "psnr_fp32_vs_input_db": float(metrics.psnr(outs["float32"], photo)),
            "max_abs_diff": float(np.abs(outs["bfloat16"] - outs["float32"]).max()),
            "peak_rss_mb": probes.peak_rss_mb(), "photo": f"skimage.data.astronaut()[:{h}, :{w}]"}
