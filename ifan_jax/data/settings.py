"""The training augmentation's settings, without TensorFlow (configs import them).

AUGMENT_DEFAULTS are the paper's (official trainer): Gaussian noise with p=0.05 and sigma uniform in
[0.001, sqrt(0.005)], greyscale with p=0.3, rescaling by a factor in [0.7, 1] with p=0.5.
"""

import math

AUGMENT_DEFAULTS = dict(
    noise_prob=0.05,
    noise_sigma_min=0.001,
    noise_sigma_max=math.sqrt(0.005),
    gray_prob=0.3,
    scale_prob=0.5,
    scale_min=0.7,
    scale_max=1.0,
)


def augment_config(augment=None) -> dict:
    """The augmentation settings: AUGMENT_DEFAULTS (the paper's) updated with `augment` (a dict or
    ConfigDict with the same keys, as config.augment); error for unknown keys or bad ranges."""
    cfg = dict(AUGMENT_DEFAULTS)
    if augment is not None:
        given = dict(augment.items()) if hasattr(augment, "items") else dict(augment)
        unknown = sorted(set(given) - set(cfg))
        if unknown:
            raise ValueError(f"augment: unknown key(s) {unknown}; known: {sorted(cfg)}")
        cfg.update({k: float(v) for k, v in given.items()})
    for name in ("noise_prob", "gray_prob", "scale_prob"):
        if not 0.0 <= cfg[name] <= 1.0:
            raise ValueError(f"augment.{name} must be in [0, 1], got {cfg[name]}")
    if not 0.0 <= cfg["noise_sigma_min"] <= cfg["noise_sigma_max"]:
        raise ValueError("augment: need 0 <= noise_sigma_min <= noise_sigma_max")
    if not 0.0 < cfg["scale_min"] <= cfg["scale_max"] <= 1.0:
        raise ValueError("augment: need 0 < scale_min <= scale_max <= 1 (downscaling only)")
    return cfg
