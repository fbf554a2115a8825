"""LPIPS v0.1 (AlexNet, net-lin): official weights, exact zero, sensible order, torch parity.

tests/assets/lpips_v0.1_alex_lin.npz holds the official v0.1 AlexNet lin-layer weights, extracted
from lpips/weights/v0.1/alex.pth of the `lpips` package (BSD-2-Clause, Copyright (c) 2018 Richard
Zhang, Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang; the licence text and the file's
sha256 are stored in the npz itself).
"""

import importlib.util
import os

import numpy as np
import pytest
import skimage.data
import skimage.filters
from repo import ASSETS

from ifan_jax.evaluation import lpips as lpips_lib


@pytest.fixture(scope="module")
def model():
    return lpips_lib.LPIPS()


@pytest.fixture(scope="module")
def photo():
    image = skimage.data.astronaut()[::4, ::4].astype(np.float32) / 255  # 128 x 128
    return np.ascontiguousarray(image)


def test_lin_weights_are_the_official_v0_1_weights():
    weights = lpips_lib.load_weights()
    with np.load(os.path.join(ASSETS, "lpips_v0.1_alex_lin.npz")) as official:
        for i, lin in enumerate(weights["lins"]):
            np.testing.assert_array_equal(lin, official[f"lin{i}"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("lpips") is None,
                    reason="needs torch and the lpips package's weight files")
def test_lin_weights_equal_the_lpips_package_file():
    import torch

    path = os.path.join(os.path.dirname(importlib.util.find_spec("lpips").origin),
                        "weights", "v0.1", "alex.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for i, lin in enumerate(lpips_lib.load_weights()["lins"]):
        np.testing.assert_array_equal(lin, state[f"lin{i}.model.1.weight"].numpy().reshape(-1))


def test_identical_images_give_exactly_zero(model, photo):
    assert model(photo, photo) == 0.0
    batch = np.stack([photo, photo[::-1]])
    np.testing.assert_array_equal(model(batch, batch), [0.0, 0.0])


def test_distance_grows_with_blur(model, photo):
    blurred = [skimage.filters.gaussian(photo, sigma=s, channel_axis=-1).astype(np.float32)
               for s in (0.5, 1.0, 2.0, 4.0)]
    d = [model(photo, b) for b in blurred]
    assert all(0 < x < y for x, y in zip(d, d[1:])), d
    assert model(photo, blurred[-1]) == pytest.approx(model(blurred[-1], photo), rel=1e-6)


def test_batch_equals_single_images(model, photo):
    other = np.clip(photo + 0.05, 0, 1)
    batch = model(np.stack([photo, other]), np.stack([other, photo]))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [model(photo, other)] * 2, rtol=1e-5)


def test_rejects_images_alexnet_cannot_take(model):
    with pytest.raises(ValueError, match="at least"):
        model(np.zeros((20, 40, 3)), np.zeros((20, 40, 3)))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_matches_a_torch_implementation_of_the_official_forward(model, photo):
    """The official LPIPS forward written in torch (ScalingLayer, torchvision AlexNet features,
    normalize_tensor, lin, spatial mean), on [-1, 1] inputs, with the same weights."""
    import torch
    import torch.nn.functional as F

    weights = lpips_lib.load_weights()
    convs = [(torch.from_numpy(k).permute(3, 2, 0, 1).contiguous(), torch.from_numpy(b))
             for k, b in weights["convs"]]
    lins = [torch.from_numpy(w).reshape(1, -1, 1, 1) for w in weights["lins"]]
    shift = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def features(x):
        x = (x - shift) / scale
        outs = []
        for i, ((k, b), (stride, pad)) in enumerate(zip(convs, lpips_lib.ALEXNET_CONVS)):
            x = F.relu(F.conv2d(x, k, b, stride=stride, padding=pad))
            outs.append(x)
            if i < 2:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return outs

    def torch_lpips(a, b):  # a, b: N x H x W x 3 in [0, 1]
        ta, tb = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2) * 2 - 1
                  for x in (a, b))
        total = 0
        for fa, fb, lin in zip(features(ta), features(tb), lins):
            na = fa / (torch.sqrt(torch.sum(fa**2, dim=1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt(torch.sum(fb**2, dim=1, keepdim=True)) + 1e-10)
            total = total + F.conv2d((na - nb) ** 2, lin).mean(dim=(2, 3))
        return total.reshape(-1).numpy()

    rng = np.random.default_rng(0)
    a = np.stack([photo, rng.random(photo.shape, dtype=np.float32)])
    b = np.stack([skimage.filters.gaussian(photo, sigma=2, channel_axis=-1).astype(np.float32),
                  rng.random(photo.shape, dtype=np.float32)])
    with torch.no_grad():
        expected = torch_lpips(a, b)
    np.testing.assert_allclose(model(a, b), expected, rtol=1e-4, atol=1e-6)

