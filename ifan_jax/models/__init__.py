"""Flax modules of IFAN: `layers`, the IAC layer (`iac`), the network (`ifan`), the reblurring
network (`reblur`), the down-sampling/warping used by the losses (`resample`), and the abstract
parameter tree of a config (`params`)."""

from ifan_jax.models.ifan import IFAN
from ifan_jax.models.params import REBLUR_KEY, abstract_params, count_params
from ifan_jax.models.reblur import ReblurringNetwork

__all__ = ["IFAN", "REBLUR_KEY", "ReblurringNetwork", "abstract_params", "count_params"]
