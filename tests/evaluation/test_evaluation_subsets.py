"""Subset files: Restormer-style 1-based .npy label arrays and text files of names."""

import numpy as np
import pytest

from ifan_jax.evaluation.subsets import SubsetError, parse_spec, read_subset, read_subsets

NAMES = ["1P0A1001", "1P0A1002", "1P0A1003", "1P0A1004", "1P0A1005"]  # the sorted test list


def test_npy_labels_are_one_based_indices_into_the_sorted_list(tmp_path):
    path = tmp_path / "indoor_labels.npy"
    np.save(path, np.array([1, 3, 5]))
    assert read_subset(str(path), NAMES) == ["1P0A1001", "1P0A1003", "1P0A1005"]
    # Restormer's files may hold the indices as floats, and in any order; duplicates count once.
    np.save(path, np.array([[4.0], [2.0], [4.0]]))
    assert read_subset(str(path), NAMES) == ["1P0A1002", "1P0A1004"]


def test_text_files_list_names_with_or_without_extension(tmp_path):
    path = tmp_path / "outdoor.txt"
    path.write_text("# outdoor scenes\n1P0A1004.png\n\n  1P0A1002  \n")
    assert read_subset(str(path), NAMES) == ["1P0A1002", "1P0A1004"]


@pytest.mark.parametrize("labels, message", [
    (np.array([1, 6]), "index 6 is out of range"),
    (np.array([0, 2]), "index 0 is out of range"),
    (np.array([1.5]), "integer indices"),
    (np.array([], np.int64), "empty"),
])
def test_bad_label_arrays_are_errors_naming_the_file(tmp_path, labels, message):
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    with pytest.raises(SubsetError, match=message) as e:
        read_subset(str(path), NAMES)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unknown_name_or_missing_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("1P0A1001\n1P0A9999\n")
    with pytest.raises(SubsetError, match=r"names.txt: line 2: no image named '1P0A9999'"):
        read_subset(str(path), NAMES)
    with pytest.raises(SubsetError, match="nowhere.npy: no such subset file"):
        read_subset(str(tmp_path / "nowhere.npy"), NAMES)
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    with pytest.raises(SubsetError, match="broken.npy: not a readable .npy array"):
        read_subset(str(tmp_path / "broken.npy"), NAMES)


def test_spec_names_each_subset_once(tmp_path):
    np.save(tmp_path / "a.npy", np.array([1]))
    (tmp_path / "b.txt").write_text("1P0A1005\n")
    spec = f"indoor={tmp_path / 'a.npy'},outdoor={tmp_path / 'b.txt'}"
    assert read_subsets(spec, NAMES) == {"indoor": ["1P0A1001"], "outdoor": ["1P0A1005"]}
    assert list(parse_spec(spec)) == ["indoor", "outdoor"]
    for bad, message in (("indoor", "not NAME=PATH"), ("=x.npy", "not NAME=PATH"),
                         ("a=x.npy,a=y.npy", "given twice"), (",", "no NAME=PATH")):
        with pytest.raises(SubsetError, match=message):
            parse_spec(bad)
