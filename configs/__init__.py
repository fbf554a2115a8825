"""Training configurations as Python (`get_config(arg)` returning a ConfigDict), and `load_config`.

    from configs import load_config
    config = load_config("ifan", "N=26")                  # configs/ifan.py:N=26
    config = load_config("configs/quickstart.py")         # a path works too
    config = load_config("configs/ifan.py:variant=FD")    # and so does the ":arg" suffix

`ifan` is the paper and its ablations, `quickstart` the CPU demonstration on synthetic data, `tiny`
the tests' small model. `python train.py --config=configs/ifan.py:ARG` reads the same files.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import ml_collections

from configs.common import ConfigArgError, parse_arg

__all__ = ["ConfigArgError", "load_config", "parse_arg", "NAMES"]

NAMES = ("ifan", "quickstart", "tiny")
_HERE = os.path.dirname(os.path.abspath(__file__))


class ConfigFileError(ValueError):
    """A config file that does not exist or has no get_config(); the message names it."""


def load_config(spec: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config named ("ifan") or given by path ("configs/ifan.py", any .py
    file); `spec` may carry the argument after a colon ("ifan:N=26"), as --config does."""
    if arg is None and ":" in spec and not os.path.exists(spec):
        spec, arg = spec.split(":", 1)
    name = os.path.splitext(os.path.basename(spec))[0]
    in_package = os.path.abspath(os.path.dirname(spec) or _HERE) == _HERE and name in NAMES
    if in_package:
        module = importlib.import_module(f"configs.{name}")
    else:
        if not os.path.isfile(spec):
            raise ConfigFileError(f"{spec}: no such config file (named configs: {', '.join(NAMES)})")
        module_spec = importlib.util.spec_from_file_location(f"ifan_user_config_{name}", spec)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigFileError(f"{spec}: has no get_config()")
    return module.get_config(arg) if arg else module.get_config()
