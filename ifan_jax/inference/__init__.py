"""Inference: deblurring photos of any size with a trained or converted IFAN.

    from ifan_jax.inference import Deblurrer
    deblur = Deblurrer.from_checkpoint("IFAN.pytorch")   # or a checkpoint folder or workdir
    sharp = deblur(image)               # H x W x 3 uint8, uint16 or float in [0, 1]: the same kind back
    result = deblur.deblur(image, strength=0.8, keep_bokeh="auto")   # image, defocus, level, readout
    python -m ifan_jax.inference --ckpt=IFAN.pytorch photo.jpg    # the deblur command (ifan-deblur)

- `deblurrer.py`: `Deblurrer` (whole image or tiles) and `Forward`, the one jitted forward pass
  (evaluation and training's validation run it too).
- `intent.py`: `Deblurred`, the result, where strength and keep-the-bokeh are applied, and the
  readout.
- `tiling.py`: overlapping tiles on the network's 1/8 grid (`ALIGN`, `check_tile`) and their blending.
- `defocus.py`: the defocus map (the disparity map estimator's output at full size), colour-mapped.
- `cli.py`: the deblur command.
"""

from ifan_jax.inference.deblurrer import (
    DeblurError,
    Deblurrer,
    Forward,
    Schedule,
    auto_memory_budget,
    check_finite,
    eval_step,
    pad_to_multiple,
)
from ifan_jax.inference.intent import Deblurred
from ifan_jax.inference.tiling import check_tile

__all__ = ["DeblurError", "Deblurred", "Deblurrer", "Forward", "Schedule", "auto_memory_budget",
           "check_finite", "check_tile", "eval_step", "pad_to_multiple"]
