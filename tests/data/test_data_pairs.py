"""Your own blurred/sharp pairs (dataset "pairs": ROOT/{train,val,test}/{source,target}, matched by
name, no dual-pixel views): listing, errors naming the file, evaluation and training streams, and
the `data=pairs` config argument."""

import itertools

import numpy as np
import pytest
from PIL import Image

from ifan_jax.config import ConfigArgError, load_config
from ifan_jax.data import KEYS, DataError, list_split, load_split, numpy_iterator, train_dataset
from ifan_jax.data.testing import (
    box_blur,
    damage_pixels,
    encode_png,
    fake_folders,
    write_fake_dataset,
    write_png,
)

NO_AUGMENT = dict(noise_prob=0.0, gray_prob=0.0, scale_prob=0.0)
ALWAYS_AUGMENT = dict(noise_prob=1.0, gray_prob=0.5, scale_prob=1.0)


def _batches(root, steps, **kwargs):
    it = train_dataset(root, process_index=0, process_count=1, **kwargs)
    return list(itertools.islice(it, steps))


def test_pairs_are_matched_by_name_in_each_split(tmp_path):
    assert KEYS["pairs"] == ("c", "gt")
    write_fake_dataset(tmp_path, "pairs", {"train": 3, "val": 1}, size=(16, 16))
    # A JPEG source pairs with a PNG target of the same name; hidden and text files are ignored.
    write_png(tmp_path / "train" / "target" / "a_photo.png", np.zeros((16, 16, 3), np.uint8))
    Image.new("RGB", (16, 16)).save(tmp_path / "train" / "source" / "a_photo.jpg")
    (tmp_path / "train" / "source" / "notes.txt").write_text("x")
    (tmp_path / "train" / "target" / ".DS_Store").write_text("x")
    examples = list_split(tmp_path, "pairs", "train")
    assert [e["name"] for e in examples] == ["a_photo", "train_000", "train_001", "train_002"]
    assert examples[0]["c"].endswith("a_photo.jpg") and examples[0]["gt"].endswith("a_photo.png")
    assert examples[1] == {"name": "train_000",
                           "c": str(tmp_path / "train" / "source" / "train_000.png"),
                           "gt": str(tmp_path / "train" / "target" / "train_000.png")}
    assert [e["name"] for e in list_split(tmp_path, "pairs", "validation")] == ["val_000"]
    with pytest.raises(DataError, match=r"missing folder .*test/source \(the blurred images of "
                                        r"the test pairs; expected layout ROOT/\{train,val,test\}"):
        list_split(tmp_path, "pairs", "test")


@pytest.mark.parametrize("missing", ["source", "target"])
def test_missing_partner_is_a_one_line_error_naming_it(tmp_path, missing):
    write_fake_dataset(tmp_path, "pairs", {"train": 2}, size=(16, 16))
    (tmp_path / "train" / missing / "train_001.png").unlink()
    present = "target" if missing == "source" else "source"
    with pytest.raises(DataError) as info:
        train_dataset(tmp_path, batch_size=2, crop=16, dataset="pairs", process_index=0,
                      process_count=1)
    message = str(info.value)
    assert message == (f"unpaired image 'train_001': in {tmp_path / 'train' / present} but not "
                       f"in {tmp_path / 'train' / missing}")


def test_truncated_file_names_the_file(tmp_path):
    """(Size mismatches: tests/data/test_data_layouts.py, for DPDD and pairs.)"""
    write_fake_dataset(tmp_path, "pairs", {"val": 2}, size=(16, 16))
    folders = fake_folders(tmp_path, "pairs", "val")
    data = encode_png(np.ones((16, 16, 3), np.uint8))
    (folders["gt"] / "val_001.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated PNG") as info:
        load_split(tmp_path, "pairs", "val")
    assert str(folders["gt"] / "val_001.png") in str(info.value)


def test_damage_found_while_decoding_a_training_pair_names_the_file(tmp_path):
    write_fake_dataset(tmp_path, "pairs", {"train": 1}, size=(16, 16))
    path = fake_folders(tmp_path, "pairs", "train")["c"] / "train_000.png"
    path.write_bytes(damage_pixels(path.read_bytes()))
    it = train_dataset(tmp_path, batch_size=1, crop=16, dataset="pairs", process_index=0,
                       process_count=1)
    with pytest.raises(DataError, match="cannot decode") as info:
        next(it)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_split_gives_the_exact_pixels_of_each_pair(tmp_path):
    written = write_fake_dataset(tmp_path, "pairs", {"test": 2}, size=(20, 27), bits=16, blur=1)
    for bit_depth, scale in ((None, 65535.0), (16, 65535.0)):
        elements = list(numpy_iterator(load_split(tmp_path, "pairs", "test", bit_depth)))
        assert [e["name"] for e in elements] == [b"test_000", b"test_001"]
        for element, pair in zip(elements, written["test"], strict=True):
            assert set(element) == {"name", "bit_depth", "c", "gt"}
            for key in ("c", "gt"):
                expected = (pair[key][:16, :24] / scale).astype(np.float32)  # multiples of 8
                np.testing.assert_array_equal(element[key], expected)
    np.testing.assert_array_equal(written["test"][0]["c"], box_blur(written["test"][0]["gt"], 1))


def test_training_batches_carry_only_the_pair_and_its_exact_pixels(tmp_path):
    written = write_fake_dataset(tmp_path, "pairs", {"train": 3}, size=(16, 24), seed=4)
    (batch,) = _batches(tmp_path, 1, batch_size=3, crop=16, seed=0, augment=NO_AUGMENT,
                        dataset="pairs", with_info=True)
    assert {"c", "gt"} <= set(batch) and not {"l", "r"} & set(batch)
    for i, scene in enumerate(batch["scene"]):
        left = batch["left"][i]
        for key in ("c", "gt"):
            expected = written["train"][scene][key][:, left:left + 16] / 255.0
            np.testing.assert_array_equal(batch[key][i], expected.astype(np.float32))
    (plain,) = _batches(tmp_path, 1, batch_size=2, crop=16, dataset="pairs")
    assert set(plain) == {"c", "gt"} and plain["c"].shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_pairs_stream_is_the_dpdd_stream_without_the_views(tmp_path):
    """The same c/gt images as a DPDD set (with views) and as pairs give identical c and gt
    batches under the full augmentation: every draw depends on (seed, example) only. Resuming at a
    step and the host cache give the same stream too."""
    written = write_fake_dataset(tmp_path / "dp", "dpdd", {"train": 4}, size=(24, 40), seed=2)
    for pair in written["train"]:
        for key, folder in fake_folders(tmp_path / "pairs", "pairs", "train").items():
            write_png(folder / f"{pair['name']}.png", pair[key])
    kwargs = dict(batch_size=2, crop=16, seed=5, augment=ALWAYS_AUGMENT)
    dpdd = _batches(tmp_path / "dp", 4, **kwargs)
    pairs = _batches(tmp_path / "pairs", 4, dataset="pairs", **kwargs)
    for a, b in zip(dpdd, pairs, strict=True):
        for key in ("c", "gt"):
            np.testing.assert_array_equal(a[key], b[key])
    assert any(np.abs(a["c"] - b["c"]).max() > 0 for a, b in zip(dpdd[:-1], dpdd[1:]))
    resumed = _batches(tmp_path / "pairs", 2, dataset="pairs", start_step=2, **kwargs)
    cached = _batches(tmp_path / "pairs", 4, dataset="pairs", cache=True, **kwargs)
    for a, b in zip(pairs[2:], resumed, strict=True):
        np.testing.assert_array_equal(a["c"], b["c"])
        np.testing.assert_array_equal(a["gt"], b["gt"])
    for a, b in zip(pairs, cached, strict=True):
        np.testing.assert_array_equal(a["c"], b["c"])


def test_sets_without_training_targets_are_refused(tmp_path):
    write_fake_dataset(tmp_path, "realdof", 1, size=(16, 16))
    with pytest.raises(DataError, match="has no split 'train'"):
        train_dataset(tmp_path, batch_size=1, crop=16, dataset="realdof", process_index=0,
                      process_count=1)


def test_data_config_argument():
    assert load_config("ifan").dataset == "dpdd"
    assert load_config("ifan", "data=dpdd").dataset == "dpdd"
    config = load_config("configs/ifan.py:data=pairs")
    assert config.dataset == "pairs" and not config.model.dual_pixel_input
    assert load_config("tiny", "data=pairs,N=8").dataset == "pairs"
    with pytest.raises(ConfigArgError, match="data='folder'"):
        load_config("ifan", "data=folder")
    with pytest.raises(ConfigArgError, match="data=pairs and dual"):
        load_config("ifan", "data=pairs,dual")
    with pytest.raises(ConfigArgError, match="quickstart"):
        load_config("quickstart", "data=pairs")
