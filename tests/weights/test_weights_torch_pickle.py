"""The torch-free reader of PyTorch checkpoint files equals torch.load, and runs no code from them."""

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from official_reference import ASSETS, reference_state_dict

from ifan_jax.weights import convert, torch_pickle

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def assert_same(got, expected):
    """`got` (torch_pickle) holds what `expected` (torch.load) holds, tensors as numpy arrays."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, np.ndarray)
        assert got.shape == tuple(expected.shape) and got.flags.c_contiguous
        want = expected.float() if expected.dtype == torch.bfloat16 else expected
        np.testing.assert_array_equal(got, want.numpy())
        assert got.dtype == want.numpy().dtype
    elif isinstance(expected, dict):
        assert type(got) is type(expected) and list(got) == list(expected)
        for k in expected:
            assert_same(got[k], expected[k])
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_same(a, b)
    else:
        assert type(got) is type(expected) and got == expected


def awkward_tensors():
    """Tensors whose layout a naive reader gets wrong: views of shared storages, strides, dtypes."""
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    return collections.OrderedDict([
        ("transposed", base.t()),  # non-contiguous, shares base's storage
        ("base", base),
        ("row_view", base[2]),  # storage offset 16
        ("strided", base[1::2, ::3]),
        ("half", torch.linspace(-2, 2, 7).half()),
        ("bfloat16", torch.linspace(-3, 3, 5).bfloat16()),
        ("double", torch.tensor([1e-300, 2.5], dtype=torch.float64)),
        ("long", torch.tensor([-(2**40), 7])),
        ("int8", torch.tensor([-3, 4], dtype=torch.int8)),
        ("bool", torch.tensor([True, False])),
        ("empty", torch.zeros(0, 3)),
        ("scalar", torch.tensor(3.5)),
    ])


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_equals_torch_load(tmp_path, fmt):
    state = collections.OrderedDict(
        (k, torch.from_numpy(v.copy())) for k, v in reference_state_dict("official").items())
    state.update(awkward_tensors())
    obj = {"state_dict": state, "epoch": 3, "lr": 1e-4, "name": "IFAN", "flags": [True, None],
           "shape": (1, 2)}
    path = save(obj, tmp_path / "ckpt.pth", fmt)
    assert_same(torch_pickle.load(path), torch.load(path, weights_only=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_official_names_and_shapes_convert(tmp_path, fmt):
    """A state dict with every official key and shape (IFAN N=17, ch=32, with its reblurring
    network), as the official trainer saves it (`module.state_dict()`, an OrderedDict with
    metadata), reads as torch reads it and converts."""
    with open(os.path.join(ASSETS, "official_state_dict_manifest.json")) as f:
        manifest = json.load(f)
    shapes = {**manifest["IFAN (N=17, ch=32)"], **manifest["RBN"]}
    rng = np.random.default_rng(0)
    # Few distinct values keep the test fast; each tensor is distinct.
    state = collections.OrderedDict(
        (name, torch.full(shape, float(i)) + torch.from_numpy(
            rng.standard_normal(shape[-1:]).astype(np.float32)))
        for i, (name, shape) in enumerate(shapes.items()))
    state._metadata = collections.OrderedDict([("", {"version": 1})])  # as state_dict() sets it
    path = save(state, tmp_path / "IFAN.pytorch", fmt)
    got = torch_pickle.load(path)
    assert_same(got, torch.load(path, weights_only=True))
    params, config = convert.convert_file(path)
    assert (config["num_iterations"], config["channels"], config["use_reblur"]) == (17, 32, True)
    kernel = params["feature_extractor"]["conv1_1"]["kernel"]
    np.testing.assert_array_equal(kernel, got["Network.conv1_1.0.weight"].transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_reading_needs_no_torch(tmp_path):
    path = save({k: torch.from_numpy(v) for k, v in reference_state_dict("official").items()},
                tmp_path / "IFAN.pytorch", "zip")
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "from ifan_jax.weights import convert\n"
            f"params, config = convert.convert_file({path!r})\n"
            "print(config['num_iterations'], config['channels'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(ASSETS) + "/..")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "8"]


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["zip", "legacy", "bare pickle"])
def test_malicious_pickle_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = {"evil": _RunsCommand(marker), "conv1_1.0.weight": torch.zeros(2)}
    path = tmp_path / "evil.pytorch"
    if container == "bare pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        # torch.save pickles the payload with Python's pickler: the reduce is in the file.
        save(payload, path, container)
    with pytest.raises(torch_pickle.TorchPickleError) as e:
        torch_pickle.load(path)
    assert "refused to load posix.system" in str(e.value) or "refused to load os.system" in str(
        e.value)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    with pytest.raises(convert.ConversionError, match="evil.pytorch: refused"):
        convert.load_torch_state_dict(str(path))


def test_whole_module_pickle_is_refused(tmp_path):
    path = save(torch.nn.Linear(2, 2), tmp_path / "module.pt", "zip")
    with pytest.raises(torch_pickle.TorchPickleError, match="torch.nn.modules.linear.Linear"):
        torch_pickle.load(path)


def _handmade_tensor_pickle(numel_in_storage, size):
    """A protocol-2 pickle of _rebuild_tensor_v2 over a FloatStorage, written opcode by opcode."""
    def text(s):
        data = s.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    def tup(*items):
        return b"(" + b"".join(items) + b"t"

    def small(n):
        return b"K" + bytes([n])

    storage = tup(text("storage"), b"ctorch\nFloatStorage\n", text("0"), text("cpu"),
                  small(numel_in_storage)) + b"Q"
    args = tup(storage, small(0), tup(small(size)), tup(small(1)), b"\x89")
    return b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R."


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tensor_reading_its_storage_twice_is_refused(tmp_path, fmt):
    """`expand` (stride 0) and overlapping strides read a storage element by several indices: a
    state dict never holds such a tensor, and a hostile one claims gigabytes from a few bytes."""
    for tensor in (torch.ones(3, 1).expand(3, 4), torch.arange(10.0).as_strided((4, 3), (2, 1))):
        path = save({"w": tensor}, tmp_path / "overlap.pt", fmt)
        with pytest.raises(torch_pickle.TorchPickleError, match=r"reads elements of its storage "
                                                                r"more than once"):
            torch_pickle.load(path)
    # Views that read each element at most once (slices, transposes, steps) are read as torch does.
    base = torch.arange(60.0).reshape(3, 4, 5)
    views = {"permuted": base.permute(2, 0, 1), "sliced": base[:, 1:3, ::2], "row": base[1, 2]}
    path = save(views, tmp_path / "views.pt", fmt)
    assert_same(torch_pickle.load(path), torch.load(path, weights_only=True))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("bad/data.pkl", _handmade_tensor_pickle(4, 10))
        z.writestr("bad/data/0", np.zeros(4, np.float32).tobytes())
    with pytest.raises(torch_pickle.TorchPickleError, match="reaches past"):
        torch_pickle.load(path)
    with zipfile.ZipFile(path, "w") as z:  # the same layout within bounds reads
        z.writestr("ok/data.pkl", _handmade_tensor_pickle(10, 10))
        z.writestr("ok/data/0", np.arange(10, dtype=np.float32).tobytes())
    np.testing.assert_array_equal(torch_pickle.load(path), np.arange(10))


@pytest.mark.parametrize("damage", ["truncated", "random", "missing storage"])
def test_damaged_files_are_one_line_errors(tmp_path, damage):
    good = save({"w": torch.ones(64)}, tmp_path / "good.pt", "zip")
    data = open(good, "rb").read()
    path = tmp_path / "bad.pt"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    else:
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for name in src.namelist():
                if "/data/" not in name:
                    dst.writestr(name, src.read(name))
    with pytest.raises(torch_pickle.TorchPickleError) as e:
        torch_pickle.load(path)
    assert "\n" not in str(e.value)


def test_the_limits_are_the_largest_official_model_with_a_margin():
    """`torch_pickle.LIMITS` and `checkpoint.MAX_PARAMETERS` come from IFAN_44 (the largest
    release) with the dual-pixel filter encoder and the reblurring network: the count both use is
    that model's, and every official model fits with room to spare."""
    from ifan_jax import checkpoint

    largest = convert.official_shapes(dict(channels=32, num_iterations=44, filter_size=3,
                                           res_units=2, dual_pixel_input=True, use_reblur=True,
                                           reblur_iterations=44, reblur_filter_size=3))
    count = sum(int(np.prod(s)) for s in largest.values())
    assert count == torch_pickle.LARGEST_OFFICIAL_PARAMETERS == checkpoint.LARGEST_OFFICIAL_PARAMETERS
    assert torch_pickle.LIMITS.max_bytes == 2 * 4 * count  # float32, twice over
    assert len(largest) * 8 < torch_pickle.LIMITS.max_tensors
    with open(os.path.join(ASSETS, "official_state_dict_manifest.json")) as f:
        manifest = json.load(f)
    shapes = {**manifest["IFAN (N=17, ch=32)"], **manifest["RBN"]}
    assert 4 * sum(int(np.prod(s)) for s in shapes.values()) < torch_pickle.LIMITS.max_bytes / 4
