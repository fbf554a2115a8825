"""The one way in to a model's weights: a training workdir, a converted checkpoint or an official
`.pytorch`/`.pth` file.

    weights = load_weights("IFAN.pytorch")      # converted once into a cache, then read
    weights = load_weights("runs/ifan", which="best")
    weights.params, weights.model_config, weights.bit_depth

Evaluation, the deblur command, the web page, the ONNX export and `Deblurrer.from_checkpoint` all
open checkpoints here, so "is it a file? convert it" is decided in one place.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from ifan_jax import checkpoint
from ifan_jax.weights import convert

BIT_DEPTH_KEY = "bit_depth"


@dataclasses.dataclass(frozen=True)
class Weights:
    """What a checkpoint holds. `model_config`: the model's fields (`ifan_jax.models.IFAN`);
    `bit_depth`: 8 or 16, the depth the model was trained at, None where the checkpoint does not
    record it; `directory`: the checkpoint folder read (the conversion's, for an official file)."""

    params: dict
    model_config: dict
    bit_depth: int | None
    directory: str
    source: str


def load_weights(path: str, which: str = "latest",
                 report: Callable[[str], None] | None = None) -> Weights:
    """Read the weights at `path`; `which` ("latest" or "best") picks a training workdir's step.

    An official file is converted on first use (`convert.cached_conversion`; `report(message)`
    hears about it). Every failure is a `checkpoint.CheckpointError` with one line naming `path`,
    or the file, key or parameter of it that is wrong: files are checked against their checksums,
    model_config.json against the ranges of a real IFAN and the weights for being finite
    (`checkpoint.load_params`); an official file is read within `torch_pickle.LIMITS`.
    """
    if not os.path.exists(path):
        raise checkpoint.CheckpointError(f"{path}: no such file or folder")
    directory = path
    if not os.path.isdir(path):  # a file (or a device, a FIFO: refused without being read)
        try:
            directory = convert.cached_conversion(path, report=report)
        except convert.ConversionError as e:
            raise checkpoint.CheckpointError(str(e)) from None
    try:
        model_config, params = checkpoint.load_params(directory, which)  # checked: 8 or 16 bits
    except checkpoint.DamagedFileError as e:
        if directory == path:
            raise
        raise checkpoint.CheckpointError(f"{e}; delete {directory} to convert {path} again"
                                         ) from None
    model_config = dict(model_config)
    depth = model_config.pop(BIT_DEPTH_KEY, None)
    return Weights(params, model_config, depth, directory, path)
