"""Named subsets of a test split, such as the DPDD indoor and outdoor scenes that papers report.

    subsets = read_subsets("indoor=indoor_labels.npy,outdoor=outdoor.txt", names)
    # {"indoor": ["1P0A1749", ...], "outdoor": [...]}; names: the split's image names, sorted

A subset file is either
  * a `.npy` array of 1-based indices into the sorted test list (Restormer's `indoor_labels.npy`
    and `outdoor_labels.npy` for DPDD), or
  * a text file of image names, one per line, with or without the file extension (blank lines and
    lines starting with `#` are skipped).
A file that cannot be read, an index out of range or a name not in the split is a `SubsetError`
naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ifan_jax.errors import UserError


class SubsetError(UserError):
    """A subset specification or file that does not fit the split; the message names it."""


def parse_spec(spec: str) -> dict[str, str]:
    """"indoor=PATH,outdoor=PATH" -> {"indoor": PATH, "outdoor": PATH} (order kept)."""
    out: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise SubsetError(f"--subsets: {item!r} is not NAME=PATH")
        if name in out:
            raise SubsetError(f"--subsets: subset {name!r} given twice")
        out[name] = path
    if not out:
        raise SubsetError("--subsets: no NAME=PATH given")
    return out


def read_subset(path: str, names: Sequence[str]) -> list[str]:
    """The names (in split order) of the subset in file `path`; `names` is the sorted split."""
    if not os.path.isfile(path):
        raise SubsetError(f"{path}: no such subset file")
    members = _indices(path, len(names)) if path.lower().endswith(".npy") else _names(path, names)
    if not members:
        raise SubsetError(f"{path}: the subset is empty")
    return [names[i] for i in sorted(set(members))]


def read_subsets(spec: str | dict[str, str], names: Sequence[str]) -> dict[str, list[str]]:
    """{subset: names} for a "NAME=PATH,..." string or a {name: path} dict (see `read_subset`)."""
    paths = parse_spec(spec) if isinstance(spec, str) else dict(spec)
    return {name: read_subset(path, names) for name, path in paths.items()}


def _indices(path: str, count: int) -> list[int]:
    """0-based positions from a .npy file of 1-based indices into a list of `count` names."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SubsetError(f"{path}: not a readable .npy array ({e})") from None
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.all(
            np.isfinite(labels) & (labels == np.round(labels)))):
        raise SubsetError(f"{path}: expected integer indices, got {labels.dtype} values")
    labels = labels.astype(np.int64)
    bad = labels[(labels < 1) | (labels > count)]
    if bad.size:
        raise SubsetError(f"{path}: index {int(bad[0])} is out of range: the indices are 1-based "
                          f"into the {count} sorted test images")
    return [int(i) - 1 for i in labels]


def _names(path: str, names: Sequence[str]) -> list[int]:
    """Positions in `names` of the names listed in text file `path`."""
    position = {name: i for i, name in enumerate(names)}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SubsetError(f"{path}: cannot read the subset file ({e})") from None
    out = []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        stem = os.path.splitext(name)[0]
        if name in position:
            out.append(position[name])
        elif stem in position:
            out.append(position[stem])
        else:
            raise SubsetError(f"{path}: line {number}: no image named {name!r} in the split")
    return out
