"""Training pipeline (train_dataset): batches, exact pixels, determinism, resumption, per-epoch
scene order and per-host sharding."""

import itertools

import numpy as np
import pytest

from ifan_jax.data import list_split, train_dataset
from ifan_jax.data.testing import write_fake_dataset

NO_AUGMENT = dict(noise_prob=0.0, gray_prob=0.0, scale_prob=0.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_root")
    write_fake_dataset(root, "dpdd", {"train": 5}, size=(24, 32), seed=3)
    return root


def _batches(root, steps, **kwargs):
    kwargs.setdefault("process_index", 0)
    kwargs.setdefault("process_count", 1)
    it = train_dataset(root, **kwargs)
    return list(itertools.islice(it, steps))


def test_batches_shapes_and_range(root):
    (batch,) = _batches(root, 1, batch_size=4, crop=16, seed=0)
    assert set(batch) == {"c", "l", "r", "gt"}
    for value in batch.values():
        assert value.shape == (4, 16, 16, 3) and value.dtype == np.float32
        assert value.min() >= 0.0 and value.max() <= 1.0


@pytest.mark.slow
def test_examples_are_the_scenes_pixels(root, tmp_path):
    """Without augmentation and with the whole image as the crop, each example is exactly its
    scene's four images, paired by name (8-bit reading of 16-bit files: the high byte)."""
    for bit_depth in (8, 16):
        data = tmp_path / f"bits{bit_depth}"
        written = write_fake_dataset(data, "dpdd", {"train": 3}, size=(16, 24), bits=16, seed=9)
        examples = list_split(data, "dpdd", "train")
        assert [e["name"] for e in examples] == [w["name"] for w in written["train"]]
        (batch,) = _batches(data, 1, batch_size=3, crop=16, seed=0, augment=NO_AUGMENT,
                            bit_depth=bit_depth, with_info=True)
        for i, scene in enumerate(batch["scene"]):
            for key in ("c", "l", "r", "gt"):
                pixels = written["train"][scene][key]
                expected = pixels / 65535.0 if bit_depth == 16 else (pixels >> 8) / 255.0
                left = batch["left"][i]
                np.testing.assert_array_equal(batch[key][i],
                                              expected[:, left:left + 16].astype(np.float32))


@pytest.mark.slow
def test_same_seed_same_stream_other_seed_other_stream(root):
    a = _batches(root, 3, batch_size=4, crop=16, seed=7)
    b = _batches(root, 3, batch_size=4, crop=16, seed=7)
    c = _batches(root, 3, batch_size=4, crop=16, seed=8)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not all(np.array_equal(x["c"], z["c"]) for x, z in zip(a, c, strict=True))


def test_resuming_at_a_step_reproduces_the_stream(root):
    full = _batches(root, 4, batch_size=2, crop=16, seed=1)
    resumed = _batches(root, 2, batch_size=2, crop=16, seed=1, start_step=2)
    for x, y in zip(full[2:], resumed, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_every_epoch_visits_each_scene_once_in_a_new_order(root):
    batches = _batches(root, 5, batch_size=4, crop=16, seed=2, with_info=True)
    scenes = np.concatenate([b["scene"] for b in batches])  # 20 examples = 4 epochs of 5
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), np.arange(20))
    epochs = scenes.reshape(4, 5)
    for epoch in epochs:
        assert sorted(epoch) == list(range(5))
    assert len({tuple(e) for e in epochs}) > 1


@pytest.mark.slow
def test_hosts_read_disjoint_examples_that_make_the_global_batch(root):
    single = _batches(root, 3, batch_size=4, crop=16, seed=4, with_info=True)
    hosts = [_batches(root, 3, batch_size=4, crop=16, seed=4, with_info=True,
                      process_index=p, process_count=2) for p in range(2)]
    for step in range(3):
        indices = [set(h[step]["index"].tolist()) for h in hosts]
        assert not indices[0] & indices[1]
        assert indices[0] | indices[1] == set(single[step]["index"].tolist())
        for key in ("c", "l", "r", "gt", "scene", "top", "left"):
            assert hosts[0][step][key].shape[0] == 2
            np.testing.assert_array_equal(
                np.concatenate([hosts[0][step][key], hosts[1][step][key]]), single[step][key])
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        train_dataset(root, batch_size=3, crop=16, process_index=0, process_count=2)


def test_defaults_to_jax_process_layout(root):
    it = train_dataset(root, batch_size=2, crop=16)
    assert it.local_batch_size == 2 and next(it)["c"].shape == (2, 16, 16, 3)
    assert it.step == 1


def test_damage_found_while_decoding_names_the_file(tmp_path):
    from ifan_jax.data import DataError
    from ifan_jax.data.testing import damage_pixels, fake_folders

    write_fake_dataset(tmp_path, "dpdd", {"train": 1}, size=(16, 16))
    path = fake_folders(tmp_path, "dpdd", "train")["l"] / "train_000.png"
    path.write_bytes(damage_pixels(path.read_bytes()))
    it = train_dataset(tmp_path, batch_size=1, crop=16, process_index=0, process_count=1)
    with pytest.raises(DataError, match="cannot decode") as info:
        next(it)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_interpreter_exits_with_unfinished_iterators(root):
    """Endless prefetching pipelines left unfinished must not block the process's exit."""
    import subprocess
    import sys

    code = (
        "from ifan_jax.data import load_split, train_dataset\n"
        "for _ in range(4):\n"
        f"    it = train_dataset({str(root)!r}, batch_size=4, crop=16, process_index=0,"
        " process_count=1)\n"
        "    next(it)\n"
        f"    next(load_split({str(root)!r}, 'dpdd', 'train').as_numpy_iterator())\n"
        "print('done')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "done" in result.stdout


def test_no_autotuning_thread_and_close_releases_the_training_pipeline(root):
    """Both pipelines run without tf.data's autotuning: destroying an iterator that had run a few
    minutes waited for the autotuning thread's next wake-up (up to 60 s), so every quickstart run
    sat idle for about a minute after its last line. `close` ends the training pipeline at once."""
    from ifan_jax.data import load_split

    it = train_dataset(root, batch_size=4, crop=16, process_index=0, process_count=1)
    evaluation = load_split(root, "dpdd", "train")
    for ds in (it.dataset, evaluation):
        assert ds.options().autotune.enabled is False
        assert ds.options().deterministic is True
    first = next(it)
    assert not it.closed
    it.close()
    assert it.closed
    with pytest.raises(RuntimeError, match="training pipeline was closed"):
        next(it)
    again = next(train_dataset(root, batch_size=4, crop=16, process_index=0, process_count=1))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])


def test_cached_scenes_give_the_same_stream(root):
    plain = _batches(root, 3, batch_size=4, crop=16, seed=6)
    cached = _batches(root, 3, batch_size=4, crop=16, seed=6, cache=True)
    for x, y in zip(plain, cached, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_cache_with_scenes_of_different_sizes_at_16_bits(tmp_path):
    from ifan_jax.data.testing import fake_folders, write_png

    write_fake_dataset(tmp_path, "dpdd", {"train": 2}, size=(20, 26), bits=16, seed=11)
    rng = np.random.default_rng(12)
    for folder in fake_folders(tmp_path, "dpdd", "train").values():  # a taller, narrower scene
        write_png(folder / "train_002.png", rng.integers(0, 65536, (31, 18, 3)).astype(np.uint16))
    kwargs = dict(batch_size=3, crop=16, seed=3, bit_depth=16, with_info=True)
    plain = _batches(tmp_path, 4, **kwargs)
    cached = _batches(tmp_path, 4, cache=True, **kwargs)
    assert {int(s) for b in plain for s in b["scene"]} == {0, 1, 2}
    for x, y in zip(plain, cached, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
