"""Shared test fixtures: reference arrays of the official implementation, tiny converted models."""

import os

import pytest
from official_reference import reference_state_dict

from ifan_jax.config import load_config


@pytest.fixture(scope="session", autouse=True)
def _cache_of_this_session(tmp_path_factory):
    """$IFAN_JAX_CACHE for the session (unless set): a `Deblurrer` turns on the on-disk compilation
    cache under it, and the tests' processes write nothing under ~/.cache."""
    if os.environ.get("IFAN_JAX_CACHE"):
        yield
        return
    os.environ["IFAN_JAX_CACHE"] = str(tmp_path_factory.mktemp("ifan_jax_cache"))
    try:
        yield
    finally:
        os.environ.pop("IFAN_JAX_CACHE", None)


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
