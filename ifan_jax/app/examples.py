"""The page's example photos: scikit-image's sample photos, defocused as the synthetic data set does.

    paths = ensure_examples()   # into $IFAN_JAX_CACHE/app_examples (default ~/.cache/ifan_jax/...)

Each example is one scene of `ifan_jax.data.synth.make_scene` (a random crop, a depth map, the
motorcycle's measured one where it has it, a focus plane, and the thin-lens dual-pixel renderer;
the combined view is the blurred photo), written as an 8-bit PNG. They are rendered once
(a few seconds) into the folder, which is reused while its marker matches these parameters (a
folder of other files is never replaced).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ifan_jax.data import synth
from ifan_jax.fileio import atomic_directory, cache_dir

# (scikit-image photo, label on the page); the motorcycle has a measured depth map.
EXAMPLES = (("motorcycle", "Motorcycle (measured depth)"), ("astronaut", "Astronaut"),
            ("coffee", "Coffee"), ("rocket", "Rocket"))
SIZE = 360  # pixels a side
MAX_COC = 8.0  # largest circle-of-confusion radius, pixels
SEED = 0
MARKER = "examples.json"


def default_dir() -> str:
    """$IFAN_JAX_CACHE/app_examples, or ~/.cache/ifan_jax/app_examples when it is not set (the
    converted official weights go beside it: `ifan_jax.weights.convert.cache_root`)."""
    return cache_dir("app_examples")


def ensure_examples(directory: str | None = None) -> list[tuple[str, str]]:
    """[(path of a blurred 8-bit PNG, label)] for EXAMPLES, rendered into `directory` if needed."""
    directory = os.path.abspath(os.path.expanduser(directory or default_dir()))
    params = {"photos": [name for name, _ in EXAMPLES], "size": SIZE, "max_coc": MAX_COC,
              "seed": SEED, "version": 1}
    marker = os.path.join(directory, MARKER)
    if not (os.path.isfile(marker) and _read_json(marker) == params):
        if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(marker):
            raise ValueError(f"{directory}: not empty and not an examples folder written by "
                             f"ifan_jax.app; choose another --examples_dir")
        photos = {p.name: p for p in synth.load_photos()}
        with atomic_directory(directory, overwrite=True) as tmp:
            for i, (name, _) in enumerate(EXAMPLES):
                scene = synth.make_scene(photos[name], np.random.default_rng([SEED, i]), SIZE,
                                         MAX_COC)
                pixels = np.round(np.clip(scene["c"], 0.0, 1.0) * 255.0).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(tmp, f"{name}.png"))
            with open(os.path.join(tmp, MARKER), "w") as f:
                json.dump(params, f)
    return [(os.path.join(directory, f"{name}.png"), label) for name, label in EXAMPLES]


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
