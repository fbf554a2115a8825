"""Training augmentations of the paper (official loader), as stateless TensorFlow ops.

Per example, in this order, on whole HxWx3 float32 [0, 1] images c (combined), l, r (dual-pixel
views) and gt (all-in-focus); a "pairs" data set has only c and gt, which get the same draws:
  1. Gaussian noise with probability `noise_prob`: sigma ~ U[noise_sigma_min, noise_sigma_max], one
     noise field added to c, l and r (not gt), clipped to [0, 1].
  2. Grayscale with probability `gray_prob`, on all four: lin = 0.2126 R + 0.7152 G + 0.07228 B
     (the official loader's weights; sRGB's are 0.0722), then the sRGB transfer curve, written to all
     three channels.
  3. Rescaling with probability `scale_prob` by s ~ U[scale_min, scale_max] to (int(h s), int(w s))
     with area interpolation, on all four.
  4. One crop x crop window at the same place in all four.

They are computed on the source window under the crop only (all but the rescale are per pixel,
and the rescale uses the whole image's area weights), which gives the same result at a fraction of
the cost. The images of an example are stacked (n x H x W x 3) so that each step is one pass over
all of them, a grey example is rescaled as one channel per image, and the rescale uses only the
taps a box can touch (`area_taps`): about 6.5 ms per 256x256 DPDD example on one core instead of 10.

Every draw comes from a key (a shape-[2] int64 stateless seed) so that an example is a pure function
of its key: no hidden generator state, hence reproducible streams and exact resumption.
"""

import math

import tensorflow as tf

from ifan_jax.data.settings import AUGMENT_DEFAULTS, augment_config  # noqa: F401 (re-exported)

# Luminance weights of the official loader (the last is 0.0722 in the sRGB standard).
GRAY_WEIGHTS = (0.2126, 0.7152, 0.07228)

_VECTOR = 64  # elements: a multiple of every CPU's float32 vector width, times Eigen's unrolling

# Sub-streams of an example key, one per random draw.
_NOISE_GATE, _NOISE_SIGMA, _NOISE, _GRAY_GATE, _SCALE_GATE, _SCALE, _CROP = range(7)


def fold(key, *data) -> tf.Tensor:
    """A new key from `key` and integers `data` (tf.random.experimental.stateless_fold_in)."""
    key = tf.convert_to_tensor(key, tf.int64)
    for d in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64))
    return key


def _uniform(key, stream, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform([], fold(key, stream), minval=minval, maxval=maxval,
                                       dtype=tf.float32)


def sample_params(key, cfg: dict) -> dict:
    """The random choices of one example: {"noise": bool, "sigma": f32, "gray": bool,
    "scale": bool, "factor": f32}. All are drawn whatever the gates say, so each is a function of
    the key alone."""
    return {
        "noise": _uniform(key, _NOISE_GATE) < cfg["noise_prob"],
        "sigma": _uniform(key, _NOISE_SIGMA, cfg["noise_sigma_min"], cfg["noise_sigma_max"]),
        "gray": _uniform(key, _GRAY_GATE) < cfg["gray_prob"],
        "scale": _uniform(key, _SCALE_GATE) < cfg["scale_prob"],
        "factor": _uniform(key, _SCALE, cfg["scale_min"], cfg["scale_max"]),
    }


def add_noise(stack, sigma, key) -> tf.Tensor:
    """One Gaussian noise field N(0, sigma^2) of shape H x W x 3 added to each image of `stack`
    (n x H x W x 3), clipped to [0, 1]."""
    shape = tf.shape(stack)
    noise = tf.random.stateless_normal(tf.stack([shape[1], shape[2], 3]), fold(key, _NOISE)) * sigma
    return tf.clip_by_value(stack + noise, 0.0, 1.0)


def gray_level(image: tf.Tensor) -> tf.Tensor:
    """... x 3 [0, 1] -> ... (one channel): the official grayscale, lin = 0.2126 R + 0.7152 G +
    0.07228 B, then the sRGB curve (12.92 lin if lin <= 0.0031308 else 1.055 lin^(1/2.4) - 0.055;
    the power as exp(log(lin) / 2.4), a few float32 ulps from pow and half its cost).

    The curve is evaluated on a flat array padded to a multiple of _VECTOR: the vectorised exp and
    log differ from the scalar ones that would take an unaligned tail, and equal inputs anywhere in
    the stack must give equal outputs."""
    w = GRAY_WEIGHTS
    lin = w[0] * image[..., 0] + w[1] * image[..., 1] + w[2] * image[..., 2]
    flat = tf.reshape(lin, [-1])
    size = tf.size(flat)
    flat = tf.pad(flat, [[0, (-size) % _VECTOR]], constant_values=1.0)
    curve = 1.055 * tf.exp(tf.math.log(tf.maximum(flat, 0.0031308)) * (1.0 / 2.4)) - 0.055
    curve = tf.reshape(curve[:size], tf.shape(lin))
    return tf.where(lin <= 0.0031308, 12.92 * lin, curve)


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """... x 3 [0, 1] -> ... x 3: `gray_level` in all three channels."""
    gray = gray_level(image)
    return tf.stack([gray, gray, gray], axis=-1)


def rescale_area(image: tf.Tensor, height, width) -> tf.Tensor:
    """HxWx3 -> height x width x 3 by area interpolation (tf.image.resize(method="area")); the
    whole-image form of `area_resample`, which the augmentation uses on a window.

    For downscaling this is cv2.INTER_AREA's rule: output pixel (i, j) is the mean of the source
    over the box [i H/height, (i+1) H/height) x [j W/width, (j+1) W/width), source pixels that the
    box cuts counted by the fraction inside it. cv2 reaches the same weights (its integer-factor
    fast path too); results agree to float32 rounding. (For upscaling cv2 switches to bilinear;
    the augmentation only downscales.)
    """
    return tf.image.resize(image, tf.stack([height, width]), method="area")


def scaled_size(height, width, factor, crop: int):
    """(int(height * factor), int(width * factor)) computed in float64 as the official code, but
    never below `crop` (never hit by the paper's data: 0.7 * 1120 > 256)."""
    f = tf.cast(factor, tf.float64)
    new_h = tf.cast(tf.floor(tf.cast(height, tf.float64) * f), tf.int32)
    new_w = tf.cast(tf.floor(tf.cast(width, tf.float64) * f), tf.int32)
    return tf.maximum(new_h, crop), tf.maximum(new_w, crop)


def crop_offsets(key, height, width, crop: int):
    """(top, left), each uniform over the valid integers [0, size - crop]."""
    k = fold(key, _CROP)
    top = tf.random.stateless_uniform([], fold(k, 0), minval=0, maxval=height - crop + 1,
                                      dtype=tf.int32)
    left = tf.random.stateless_uniform([], fold(k, 1), minval=0, maxval=width - crop + 1,
                                       dtype=tf.int32)
    return top, left


def area_taps(scale_min: float, crop: int) -> int:
    """How many source pixels an output pixel of `area_resample` can touch: the box length is
    s = H / max(int(H f), crop) <= 1 / (f - 1 / crop) for f >= scale_min (H >= crop), and a box of
    length s touches at most floor(s) + 2 pixels."""
    taps = math.floor(1.0 / scale_min) + 3  # covers any box, also after int() rounding
    if scale_min > 1.0 / crop:
        taps = min(taps, math.floor(1.0 / (scale_min - 1.0 / crop)) + 2)
    return taps


def area_resample(x, axis: int, out_start, count: int, scale, src_start, taps: int):
    """Output pixels out_start .. out_start + count - 1 along `axis` of area interpolation
    (`rescale_area`'s rule, source/output size ratio `scale`), from `x`, a window of the source
    that starts at source pixel `src_start` and holds every pixel those outputs cover.

    Output pixel i averages the source over the box [i s, (i + 1) s): source pixel j weighs the
    overlap of [j, j + 1) with the box, divided by s. The box touches at most `taps` pixels from
    floor(i s) on (taps >= floor(s) + 2), so this is `taps` gathers, not a dense matrix.
    """
    scale = tf.cast(scale, tf.float64)
    a = tf.cast(out_start + tf.range(count), tf.float64) * scale
    first = tf.floor(a)
    size = tf.shape(x)[axis]
    out = None
    for k in range(taps):
        j = first + k
        weight = tf.maximum(tf.minimum(j + 1.0, a + scale) - tf.maximum(j, a), 0.0) / scale
        local = tf.clip_by_value(tf.cast(j, tf.int32) - src_start, 0, size - 1)
        shape = [-1 if d == axis else 1 for d in range(x.shape.rank)]
        term = tf.gather(x, local, axis=axis) * tf.reshape(tf.cast(weight, tf.float32), shape)
        out = term if out is None else out + term
    return out


def augment_example(images: dict, key, cfg: dict, crop: int, with_info: bool = False,
                    value_scale: float | None = None, image_shape=None) -> dict:
    """Apply the paper's augmentations to {"c", ["l", "r"], "gt"} (HxWx3, same size: float32 in
    [0, 1], or integer pixels with `value_scale` = 255 or 65535) and crop them to crop x crop at one
    place; the result has the same keys. The draws depend on the key alone, so the c and gt of an
    example are the same with or without l and r.
    With `with_info`, adds the draws ("noise", "sigma", "gray", "scale", "factor") and the crop's
    "top" and "left" (in the rescaled image). An image may also be a function (r0, r1, c0, c1) ->
    its window [r0:r1, c0:c1], with `image_shape` = (H, W); only the window is then read.

    The result is that of the official order on whole images (noise, grayscale, rescale, crop),
    computed on the source window the crop comes from: grayscale and noise are per pixel, and the
    rescale of that window uses the whole image's area weights (`area_resample`), so nothing of
    the rest of the image is needed. (The noise field is drawn for the window; it is as random.)
    """
    params = sample_params(key, cfg)
    names = ("c", *(name for name in images if name not in ("c", "gt")), "gt")
    inputs = tuple(images[name] for name in names)

    if image_shape is None:
        image_shape = tf.shape(inputs[0])[:2]
    height, width = image_shape[0], image_shape[1]
    new_h, new_w = scaled_size(height, width, params["factor"], crop)
    do_scale = params["scale"] & ((new_h != height) | (new_w != width))
    out_h, out_w = tf.where(do_scale, new_h, height), tf.where(do_scale, new_w, width)
    top, left = crop_offsets(key, out_h, out_w, crop)

    # The source window under the crop: [r0, r1) x [c0, c1).
    scale_h = tf.cast(height, tf.float64) / tf.cast(out_h, tf.float64)
    scale_w = tf.cast(width, tf.float64) / tf.cast(out_w, tf.float64)

    def span(start, scale, size):
        lo = tf.cast(tf.floor(tf.cast(start, tf.float64) * scale), tf.int32)
        hi = tf.cast(tf.math.ceil(tf.cast(start + crop, tf.float64) * scale), tf.int32)
        return tf.clip_by_value(lo, 0, size), tf.clip_by_value(hi, 0, size)

    r0, r1 = span(top, scale_h, height)
    c0, c1 = span(left, scale_w, width)
    # The images' windows stacked, n x H x W x 3, so that each step below is one pass over all.
    window = []
    for x in inputs:
        window.append(x(r0, r1, c0, c1) if callable(x) else x[r0:r1, c0:c1])
    stack = tf.stack(window)
    if value_scale is not None:
        stack = tf.cast(stack, tf.float32) / value_scale
    n = len(names)

    def noise():  # everything but gt (the last image) gets the same noise field
        return tf.concat([add_noise(stack[:n - 1], params["sigma"], key), stack[n - 1:]], axis=0)

    stack = tf.cond(params["noise"], noise, lambda: stack)
    taps = area_taps(cfg["scale_min"], crop)

    def rescale(x, channels):  # n x H x W x channels -> n x crop x crop x channels
        x = area_resample(x, 1, top, crop, scale_h, r0, taps)  # whole rows: contiguous gathers
        x = area_resample(tf.transpose(x, [2, 0, 1, 3]), 0, left, crop, scale_w, c0, taps)
        return tf.transpose(x, [1, 2, 0, 3])

    def finish(x, channels):  # rescale if drawn: n x crop x crop x channels
        return tf.reshape(tf.cond(do_scale, lambda: rescale(x, channels), lambda: x),
                          [n, crop, crop, channels])

    # A grey example is rescaled as one channel per image (its three channels are equal).
    stack = tf.cond(params["gray"],
                    lambda: tf.broadcast_to(finish(gray_level(stack)[..., None], 1),
                                            [n, crop, crop, 3]),
                    lambda: finish(stack, 3))
    out = dict(zip(names, tf.unstack(stack), strict=True))
    if with_info:
        out.update(params)
        out.update(top=top, left=left)
    return out
