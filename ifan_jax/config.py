"""Configs as Python files (big_vision style): typed `--config=configs/NAME.py:ARG` arguments, and
loading a config file by path.

    from ifan_jax.config import load_config
    config = load_config("configs/ifan.py:variant=FD")   # a path, with the ":arg" suffix
    config = load_config("configs/ifan.py", "N=26")      # or the argument apart
    config = load_config("quickstart")                   # a name: configs/quickstart.py

The files themselves live in the repository's top-level `configs/` folder; they are not a package
and the library never imports them. A name is looked up in `./configs` (the working directory's)
and then in the `configs/` folder beside this package in a checkout.

`parse_arg("N=26,fac", N=17, fac=False, variant="FDR")` returns {"N": 26, "fac": True,
"variant": "FDR"}: each value takes the type of its default, booleans strictly ("fac", "fac=True",
"fac=1", "fac=yes" are true; "fac=False", "fac=0", "fac=no" false; "fac=maybe" is an error naming
the key), and an unknown key is an error naming the closest known one.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import sys
from types import ModuleType

import ml_collections

from ifan_jax.errors import UserError

TRUE = ("", "1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
_CHECKOUT_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "configs")


class ConfigArgError(UserError):
    """A config argument that is unknown or of the wrong type; the message names the key."""


class ConfigFileError(UserError):
    """A config file that does not exist or has no get_config(); the message names it."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _typed(key: str, value: str, default):
    if isinstance(default, bool):
        v = value.lower()
        if v in TRUE:
            return True
        if v in FALSE:
            return False
        raise ConfigArgError(f"config argument {key}={value!r}: expected a boolean "
                             f"(true/false, 1/0, yes/no)")
    if value == "":
        raise ConfigArgError(f"config argument {key}: needs a value ({key}=...)")
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigArgError(f"config argument {key}={value!r}: expected "
                             f"{type(default).__name__}") from None
    return value


def parse_arg(arg: str | None, **defaults) -> dict:
    """'N=26,fac' -> {'N': 26, 'fac': True, ...}: the comma-separated KEY[=VALUE] items of `arg`
    over `defaults`, each converted to its default's type."""
    out = dict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ConfigArgError(f"unknown config argument {key!r}{did_you_mean(key, defaults)}; "
                                 f"known: {sorted(defaults)}")
        out[key] = _typed(key, value.strip(), defaults[key])
    return out


def _find(spec: str) -> str:
    """The file a spec names: a path as given, or a bare name in ./configs or the checkout's."""
    if os.path.isfile(spec):
        return spec
    if os.sep not in spec and "/" not in spec and not spec.endswith(".py"):
        for folder in (os.path.join(os.getcwd(), "configs"), _CHECKOUT_CONFIGS):
            path = os.path.join(folder, f"{spec}.py")
            if os.path.isfile(path):
                return path
        names = sorted({os.path.splitext(n)[0] for folder in ("configs", _CHECKOUT_CONFIGS)
                        if os.path.isdir(folder) for n in os.listdir(folder) if n.endswith(".py")})
        raise ConfigFileError(f"{spec}: no config of that name{did_you_mean(spec, names)} "
                              f"(named configs: {', '.join(names) or 'none found'}; or give a path)")
    raise ConfigFileError(f"{spec}: no such config file")


def load_module(path: str) -> ModuleType:
    """The Python module in config file `path` (loaded once per file; no package needed)."""
    path = os.path.abspath(path)
    name = (f"ifan_jax_config_{os.path.splitext(os.path.basename(path))[0]}_"
            f"{hashlib.sha1(path.encode()).hexdigest()[:8]}")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def sibling(config_file: str, name: str) -> ModuleType:
    """Config `name` from the folder of `config_file`: how configs/quickstart.py builds on
    configs/ifan.py (`ifan = sibling(__file__, "ifan")`)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"))


def load_config(spec: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file ("configs/ifan.py") or name ("ifan"); `spec` may carry
    the argument after a colon ("configs/ifan.py:N=26"), as --config does."""
    if arg is None and ":" in spec and not os.path.exists(spec):
        spec, arg = spec.split(":", 1)
    module = load_module(_find(spec))
    if not hasattr(module, "get_config"):
        raise ConfigFileError(f"{spec}: has no get_config()")
    return module.get_config(arg) if arg else module.get_config()
