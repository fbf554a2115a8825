"""`python -m ifan_jax.app`: see `ifan_jax.app.cli`."""

import sys

from ifan_jax.app.cli import run

sys.exit(run())
