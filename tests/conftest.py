"""Shared test fixtures: reference arrays of the official implementation, tiny converted models."""

import pytest
from official_reference import reference_state_dict

from ifan_jax.config import load_config


@pytest.fixture(scope="session")
def tiny_official_checkpoint(tmp_path_factory):
    """A converted tiny official checkpoint directory (N=3, ch=8, official IAC)."""
    from ifan_jax import checkpoint
    from ifan_jax.weights.convert import convert_state_dict

    params, config = convert_state_dict(reference_state_dict("official"), "official")
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny_official")
    checkpoint.save_inference_checkpoint(path, params, config)
    return path


@pytest.fixture
def tiny_config():
    """configs/tiny.py: the paper's config with a ch=8, N=3 model, batch 2, 32x32 crops."""
    return load_config("tiny")
