"""ifan-jax: IFAN single image defocus deblurring (Lee et al., CVPR 2021) in JAX/Flax."""

__version__ = "0.1.0"
