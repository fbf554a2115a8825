"""Weights: reading official PyTorch files without PyTorch, converting them, and opening any
checkpoint.

    from ifan_jax.weights import load_weights
    weights = load_weights("IFAN.pytorch")   # or a converted checkpoint, or a training workdir
    python -m ifan_jax.weights --input=IFAN.pytorch --output=ckpt/IFAN    # convert (ifan-convert)

- `torch_pickle.py`: a PyTorch file's tensors as NumPy arrays, through a restricted unpickler.
- `convert.py`: the official state dict -> our parameter tree and model config.
- `loader.py`: `load_weights`, the one opener the tools share.
"""

from ifan_jax.weights.loader import Weights, load_weights

__all__ = ["Weights", "load_weights"]
