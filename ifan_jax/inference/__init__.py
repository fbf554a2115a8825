"""Inference: deblurring photos of any size with a trained or converted IFAN.

    from ifan_jax.inference import Deblurrer
    deblur = Deblurrer.from_checkpoint("IFAN.pytorch")   # or a checkpoint folder or workdir
    sharp = deblur(image)                                # H x W x 3 in [0, 1] (or uint8/uint16)
    python -m ifan_jax.inference --ckpt=IFAN.pytorch photo.jpg    # the deblur command (ifan-deblur)

- `deblurrer.py`: `Deblurrer`, the jitted forward pass with its parameters; whole image or tiles.
- `tiling.py`: overlapping tiles on the network's 1/8 grid and their raised-cosine blending.
- `defocus.py`: the defocus map (the disparity map estimator's output at full size), colour-mapped.
- `cli.py`: the deblur command.
"""

from ifan_jax.inference.deblurrer import (
    Deblurrer,
    Schedule,
    auto_memory_budget,
    check_tile,
    eval_step,
    pad_to_multiple,
)

__all__ = ["Deblurrer", "Schedule", "auto_memory_budget", "check_tile", "eval_step",
           "pad_to_multiple"]
