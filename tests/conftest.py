"""Shared test fixtures: reference arrays of the official implementation, tiny converted models."""

import os

import numpy as np
import pytest

from configs import load_config

ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def reference(variant: str) -> dict:
    """Arrays of tests/assets/tiny_{variant}_iac.npz (official outputs on fixed tiny weights)."""
    with np.load(os.path.join(ASSETS, f"tiny_{variant}_iac.npz")) as d:
        return {k: d[k] for k in d.files}


def reference_state_dict(variant: str) -> dict:
    """The official state dict (name -> array) the reference outputs were computed with."""
    ref = reference(variant)
    return {k[len("weight/"):]: v for k, v in ref.items() if k.startswith("weight/")}


@pytest.fixture(scope="session")
def tiny_official_checkpoint(tmp_path_factory):
    """A converted tiny official checkpoint directory (N=3, ch=8, official IAC)."""
    from ifan_jax import checkpoint
    from ifan_jax.convert_torch import convert_state_dict

    params, config = convert_state_dict(reference_state_dict("official"), "official")
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny_official")
    checkpoint.save_inference_checkpoint(path, params, config)
    return path


@pytest.fixture
def tiny_config():
    """configs/tiny.py: the paper's config with a ch=8, N=3 model, batch 2, 32x32 crops."""
    return load_config("tiny")
