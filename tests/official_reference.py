"""The official implementation's reference arrays in tests/assets, for the tests that compare
against them (`pythonpath = ["tests"]` in pyproject.toml makes this importable)."""

import os

import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def reference(variant: str) -> dict:
    """Arrays of tests/assets/tiny_{variant}_iac.npz (official outputs on fixed tiny weights)."""
    with np.load(os.path.join(ASSETS, f"tiny_{variant}_iac.npz")) as d:
        return {k: d[k] for k in d.files}


def reference_state_dict(variant: str) -> dict:
    """The official state dict (name -> array) the reference outputs were computed with."""
    ref = reference(variant)
    return {k[len("weight/"):]: v for k, v in ref.items() if k.startswith("weight/")}
