"""The tests' tiny IFAN: configs/ifan.py (arguments passed on, e.g. `tiny.py:variant=FD`) with the
official tiny reference's model size (ch=8, N=3, as in tests/assets), batch 2 and 32x32 crops, so
that a training step traces and runs in seconds on a CPU.
"""

import ml_collections

from ifan_jax.config import sibling

ifan = sibling(__file__, "ifan")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ifan.get_config(arg)
    config.model.channels = 8
    config.model.num_iterations = 3
    config.model.reblur_iterations = 3
    config.batch_size = 2
    config.crop_size = 32
    config.learning_rate = 1e-3
    return config
