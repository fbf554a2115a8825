"""Listing, pairing and loading whole images of each data set (list_split, pair_split,
load_split), and the errors for bad data sets: each names the file or folder and what is wrong."""

import shutil

import numpy as np
import pytest
from PIL import Image

from ifan_jax.data import (
    KEYS,
    ROTATED_DATASETS,
    DataError,
    list_split,
    load_split,
    numpy_iterator,
    pair_split,
    train_dataset,
)
from ifan_jax.data.testing import encode_png, fake_folders, write_fake_dataset, write_png


def _dpdd_names(root, split, names_per_key):
    """Write DPDD files whose names differ per key: {key: [names]}."""
    folders = fake_folders(root, "dpdd", split)
    for key, names in names_per_key.items():
        for name in names:
            write_png(folders[key] / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    return folders


def test_dpdd_pairs_files_by_name_sorted(tmp_path):
    names = ["1P0A2", "1P0A10", "0A77", "zz"]
    folders = _dpdd_names(tmp_path, "test", {key: names for key in "c l r gt".split()})
    (folders["c"] / "README.txt").write_text("not an image")  # ignored: not an image
    (folders["l"] / ".DS_Store").write_bytes(b"\0")  # ignored: hidden
    examples = list_split(tmp_path, "dpdd", "test")
    assert [e["name"] for e in examples] == sorted(names)
    for e in examples:
        for key in KEYS["dpdd"]:
            assert e[key] == str(folders[key] / f"{e['name']}.png")
    # The DPDD folder itself may be given as the root.
    assert list_split(tmp_path / "DPDD", "dpdd", "test") == examples
    assert list_split(tmp_path, "DPDD", "test") == examples  # data set names in any case


@pytest.mark.parametrize("key", ["l", "r", "gt"])
def test_unpaired_name_is_an_error_naming_it(tmp_path, key):
    names = {k: ["a", "b", "c"] for k in "c l r gt".split()}
    names[key] = ["a", "b", "x"]  # same count: position pairing would silently mis-pair
    folders = _dpdd_names(tmp_path, "test", names)
    with pytest.raises(DataError, match="unpaired image") as info:
        list_split(tmp_path, "dpdd", "test")
    message = str(info.value)
    assert "'c'" in message and str(folders["c"]) in message and str(folders[key]) in message


def test_pair_split_sets_each_incomplete_name_aside_and_pairs_the_others_by_name(tmp_path):
    names = {key: ["a", "b", "c", "d", "e"] for key in "c l r gt".split()}
    names["gt"] = ["a", "c", "d", "e", "z"]  # b's target missing, z a target alone
    folders = _dpdd_names(tmp_path, "test", names)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folders["r"] / "d.jpg")  # two d's
    (folders["c"] / "e.tif").write_bytes(b"II*\0")  # a format the loaders cannot read
    pairing = pair_split(tmp_path, "dpdd", "test")
    assert [e["name"] for e in pairing.examples] == ["a", "c"]
    for example in pairing.examples:  # each file of its own name: nothing shifted by b
        assert all(example[k] == str(folders[k] / f"{example['name']}.png") for k in folders)
    assert pairing.names == ["a", "b", "c", "d", "e"]  # the official list, for subsets
    assert pairing.bad == {
        "b": f"unpaired image: in {folders['c']} but not in {folders['gt']}",
        "d": f"{folders['r']}: two images named 'd' (d.jpg and d.png)",
        "e": f"{folders['c'] / 'e.tif'}: .tif images are not supported (convert to PNG)",
        "z": f"unpaired image: in {folders['gt']} but not in {folders['c']}",
    }
    with pytest.raises(DataError, match="e.tif: .tif images are not supported"):
        list_split(tmp_path, "dpdd", "test")  # the strict listing still refuses


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="missing folder") as info:
        list_split(tmp_path, "dpdd", "test")
    assert str(tmp_path / "DPDD") in str(info.value)
    folders = _dpdd_names(tmp_path, "test", {k: ["a"] for k in ("c", "r", "gt")})
    with pytest.raises(DataError, match="missing folder") as info:
        list_split(tmp_path, "dpdd", "test")
    assert str(folders["l"]) in str(info.value)
    folders["l"].mkdir(parents=True)
    with pytest.raises(DataError, match="no images in folder") as info:
        list_split(tmp_path, "dpdd", "test")
    assert str(folders["l"]) in str(info.value)
    with pytest.raises(DataError, match="no split"):
        list_split(tmp_path, "realdof", "train")
    with pytest.raises(DataError, match="unknown dataset"):
        list_split(tmp_path, "imagenet", "test")


def test_duplicate_stems_and_unsupported_formats(tmp_path):
    folders = _dpdd_names(tmp_path, "test", {k: ["a"] for k in "c l r gt".split()})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folders["r"] / "a.jpg")
    with pytest.raises(DataError, match="two images named 'a'"):
        list_split(tmp_path, "dpdd", "test")
    (folders["r"] / "a.jpg").unlink()
    (folders["gt"] / "b.tif").write_bytes(b"II*\0")
    with pytest.raises(DataError, match="not supported") as info:
        list_split(tmp_path, "dpdd", "test")
    assert "b.tif" in str(info.value)


def test_load_split_dpdd_exact_pixels_cropped_to_multiple_of_8(tmp_path):
    written = write_fake_dataset(tmp_path, "dpdd", {"test": 2, "train": 1, "val": 1},
                                 size=(21, 30))
    examples = list(numpy_iterator(load_split(tmp_path, "dpdd", "test")))
    assert [e["name"].decode() for e in examples] == [w["name"] for w in written["test"]]
    for got, want in zip(examples, written["test"], strict=True):
        assert set(got) == {"c", "l", "r", "gt", "name", "bit_depth"}
        assert got["bit_depth"] == 8
        for key in KEYS["dpdd"]:
            assert got[key].shape == (16, 24, 3) and got[key].dtype == np.float32
            np.testing.assert_array_equal(got[key], (want[key][:16, :24] / 255.0).astype(np.float32))


def test_load_split_16bit_at_each_bit_depth(tmp_path):
    written = write_fake_dataset(tmp_path, "realdof", 1, size=(16, 8), bits=16)["test"][0]
    for bit_depth, expected, bits in ((None, written["c"] / 65535.0, 16),
                                      (16, written["c"] / 65535.0, 16),
                                      (8, (written["c"] >> 8) / 255.0, 8)):
        (got,) = numpy_iterator(load_split(tmp_path, "realdof", bit_depth=bit_depth))
        assert set(got) == {"c", "gt", "name", "bit_depth"} and got["bit_depth"] == bits
        np.testing.assert_array_equal(got["c"], expected.astype(np.float32))


def test_pixeldp_is_rotated_counter_clockwise_before_cropping(tmp_path):
    assert "pixeldp" in ROTATED_DATASETS and "dpdd" not in ROTATED_DATASETS
    written = write_fake_dataset(tmp_path, "pixeldp", 1, size=(20, 27))["test"][0]
    (got,) = numpy_iterator(load_split(tmp_path, "pixeldp", "test"))
    assert set(got) == {"c", "l", "r", "name", "bit_depth"}
    for key in ("c", "l", "r"):
        rotated = np.rot90(written[key], k=1)  # 27 x 20
        np.testing.assert_array_equal(got[key], (rotated[:24, :16] / 255.0).astype(np.float32))
    # A flat PixelDP/test_c (without source/) is accepted too.
    base = tmp_path / "PixelDP"
    for key in "clr":
        shutil.move(base / f"test_{key}" / "source", base / f"flat_{key}")
        shutil.rmtree(base / f"test_{key}")
        shutil.move(base / f"flat_{key}", base / f"test_{key}")
    assert len(list_split(tmp_path, "pixeldp", "test")) == 1


def test_cuhk_and_folder_inputs_only(tmp_path):
    written = write_fake_dataset(tmp_path, "cuhk", 3, size=(16, 16), ext=".jpg")["test"]
    got = list(numpy_iterator(load_split(tmp_path, "cuhk")))
    assert [g["name"].decode() for g in got] == [w["name"] for w in written]
    assert all(set(g) == {"c", "name", "bit_depth"} for g in got)
    expected = np.asarray(Image.open(tmp_path / "CUHK" / f"{written[0]['name']}.jpg")) / 255.0
    np.testing.assert_array_equal(got[0]["c"], expected.astype(np.float32))
    # CUHK images in sub-folders (the official loader walks leaf folders).
    nested = tmp_path / "nested"
    write_png(nested / "CUHK" / "source" / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert [e["name"] for e in list_split(nested, "cuhk")] == ["source/x"]
    (folder_example,) = list_split(nested / "CUHK" / "source", "folder")
    assert folder_example["name"] == "x"


@pytest.mark.parametrize("dataset, key", [("dpdd", "r"), ("pairs", "gt")])
def test_size_mismatch_names_both_files(tmp_path, dataset, key):
    write_fake_dataset(tmp_path, dataset, {"test": 2}, size=(16, 16))
    folders = fake_folders(tmp_path, dataset, "test")
    write_png(folders[key] / "test_001.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(DataError, match="size mismatch in example 'test_001'") as info:
        load_split(tmp_path, dataset, "test")
    assert str(folders[key] / "test_001.png") in str(info.value)
    assert str(folders["c"] / "test_001.png") in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_broken_png_fails_when_the_split_is_loaded(tmp_path, damage):
    write_fake_dataset(tmp_path, "dpdd", {"test": 2}, size=(16, 16))
    path = fake_folders(tmp_path, "dpdd", "test")["gt"] / "test_000.png"
    data = encode_png(np.ones((16, 16, 3), np.uint8))
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(DataError, match="truncated PNG" if damage == "truncated" else "empty") as e:
        load_split(tmp_path, "dpdd", "test")
    assert str(path) in str(e.value)


def test_image_smaller_than_the_crop(tmp_path):
    write_fake_dataset(tmp_path, "dpdd", {"train": 2}, size=(40, 30))
    with pytest.raises(DataError, match="smaller than 32x32") as info:
        train_dataset(tmp_path, batch_size=2, crop=32, process_index=0, process_count=1)
    assert "train_c/source/train_000.png" in str(info.value)
    train_dataset(tmp_path, batch_size=2, crop=30, process_index=0, process_count=1)
    write_png(tmp_path / "tiny" / "a.png", np.zeros((4, 9, 3), np.uint8))
    with pytest.raises(DataError, match="smaller than 8x8"):
        load_split(tmp_path / "tiny", "folder")
