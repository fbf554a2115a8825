"""`python -m ifan_jax.export --ckpt=PATH --output=ifan.onnx`: the ONNX export command (`cli.py`)."""

import sys

from ifan_jax.export.cli import main

sys.exit(main())
