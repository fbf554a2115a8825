"""`python -m ifan_jax.benchmark`: see `ifan_jax.benchmark.cli`."""

from ifan_jax.benchmark.cli import main

main()
