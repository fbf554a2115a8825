"""`python -m ifan_jax.weights --input=IFAN.pytorch --output=ckpt/IFAN`: see `convert.main`."""

import sys

from ifan_jax.weights.convert import main

sys.exit(main())
