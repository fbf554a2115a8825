"""TFDS builders (ifan_jax.data.tfds_builders) on tiny fake data sets written by the tests."""

import importlib.util
import sys
import tempfile
import types

import numpy as np
import tensorflow_datasets as tfds

from ifan_jax.data import tfds_builders
from ifan_jax.data.testing import write_fake_dataset


def _builder_test_case():
    """tfds.testing.DatasetBuilderTestCase. Its module imports tfds' feature test helpers, which
    import dill (used only by FeatureExpectationsTestCase, not here); where dill is not installed a
    placeholder stands in for that import alone and is removed again."""
    if importlib.util.find_spec("dill") is not None:
        return tfds.testing.DatasetBuilderTestCase
    sys.modules["dill"] = types.ModuleType("dill")
    try:
        return tfds.testing.DatasetBuilderTestCase
    finally:
        del sys.modules["dill"]



class _FakeDataMixin:
    """Writes a fake data set (the manual_dir) once per test class."""

    FAKE_DATASET = ""
    FAKE_NUM = 2
    FAKE_BITS = 8
    FAKE_EXT = ".png"

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.FAKE = write_fake_dataset(cls._tmp.name, cls.FAKE_DATASET, cls.FAKE_NUM,
                                      bits=cls.FAKE_BITS, ext=cls.FAKE_EXT, seed=1)
        cls.EXAMPLE_DIR = cls._tmp.name
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._tmp.cleanup()


class DpddTest(_FakeDataMixin, _builder_test_case()):
    DATASET_CLASS = tfds_builders.Dpdd
    FAKE_DATASET = "dpdd"
    FAKE_NUM = {"train": 3, "val": 1, "test": 2}
    FAKE_BITS = 16
    SPLITS = {"train": 3, "validation": 1, "test": 2}


class RealDofTest(_FakeDataMixin, _builder_test_case()):
    DATASET_CLASS = tfds_builders.RealDof
    FAKE_DATASET = "realdof"
    SPLITS = {"test": 2}


class PixelDpTest(_FakeDataMixin, _builder_test_case()):
    DATASET_CLASS = tfds_builders.PixelDp
    FAKE_DATASET = "pixeldp"
    SPLITS = {"test": 2}


class CuhkTest(_FakeDataMixin, _builder_test_case()):
    DATASET_CLASS = tfds_builders.Cuhk
    FAKE_DATASET = "cuhk"
    FAKE_EXT = ".jpg"
    SPLITS = {"test": 2}


def test_builders_store_exact_pixels_per_config(tmp_path):
    """DPDD from 16-bit PNGs: "16bit" keeps the values, "8bit" keeps the high byte (cv2's 8-bit
    reading); 8-bit PixelDP files in "16bit" become v * 257, unrotated (load_split rotates)."""
    written = write_fake_dataset(tmp_path / "manual", "dpdd", {"train": 1, "val": 1, "test": 2},
                                 size=(12, 18), bits=16)
    pixel = write_fake_dataset(tmp_path / "manual", "pixeldp", {"test": 1}, size=(12, 18))
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual"))
    expected = {e["name"]: e for e in written["test"]}
    for name in ("16bit", "8bit"):
        builder = tfds_builders.Dpdd(data_dir=str(tmp_path / "data"), config=name)
        builder.download_and_prepare(download_config=config)
        got = list(tfds.as_numpy(builder.as_dataset(split="test")))
        assert sorted(g["name"].decode() for g in got) == sorted(expected)
        for example in got:
            ref = expected[example["name"].decode()]
            for key in ("c", "l", "r", "gt"):
                want = ref[key] if name == "16bit" else (ref[key] >> 8).astype(np.uint8)
                assert example[key].dtype == want.dtype
                np.testing.assert_array_equal(example[key], want)
    builder = tfds_builders.PixelDp(data_dir=str(tmp_path / "data"), config="16bit")
    builder.download_and_prepare(download_config=config)
    (example,) = tfds.as_numpy(builder.as_dataset(split="test"))
    assert set(example) == {"c", "l", "r", "name"}
    assert example["c"].dtype == np.uint16  # 8-bit files promoted exactly: v * 257
    np.testing.assert_array_equal(example["c"], pixel["test"][0]["c"].astype(np.uint16) * 257)
