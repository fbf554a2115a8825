"""Typed `--config=configs/NAME.py:ARG` arguments, shared by every config file (big_vision style).

`parse_arg("N=26,fac", N=17, fac=False, variant="FDR")` returns {"N": 26, "fac": True,
"variant": "FDR"}: each value takes the type of its default, booleans strictly ("fac", "fac=True",
"fac=1", "fac=yes" are true; "fac=False", "fac=0", "fac=no" false; "fac=maybe" is an error naming
the key), and an unknown key is an error listing the known ones.
"""

from __future__ import annotations

TRUE = ("", "1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigArgError(ValueError):
    """A config argument that is unknown or of the wrong type; the message names the key."""


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
            raise ConfigArgError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        out[key] = _typed(key, value.strip(), defaults[key])
    return out

