"""`python -m ifan_jax.inference --ckpt=... photo.jpg`: the deblur command (`cli.py`)."""

import sys

from ifan_jax.inference.cli import run

sys.exit(run())
