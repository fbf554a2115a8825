"""Flax modules of IFAN: `layers`, the IAC layer (`iac`), the network (`ifan`), the reblurring
network (`reblur`) and the down-sampling/warping used by the losses (`resample`)."""

from ifan_jax.models.ifan import IFAN
from ifan_jax.models.reblur import ReblurringNetwork

__all__ = ["IFAN", "ReblurringNetwork"]
