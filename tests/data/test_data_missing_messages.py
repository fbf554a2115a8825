"""A missing data set is one line naming the folder looked for and where the set is published."""

import pytest

from ifan_jax.data import layouts


@pytest.mark.parametrize("dataset,folder,address", [
    ("dpdd", "DPDD", "https://www.dropbox.com/s/w9urn5m4mzllrwu/DPDD.zip"),
    ("realdof", "RealDOF", "https://www.dropbox.com/s/arox1aixvg67fw5/RealDOF.zip"),
    ("pixeldp", "PixelDP", "https://www.dropbox.com/s/pw7w2bpp7pc410n/PixelDP.zip"),
    ("cuhk", "CUHK", "https://www.dropbox.com/s/zxjhzuxsxh4v0cv/CUHK.zip"),
])
def test_a_missing_data_set_says_where_it_is_published(tmp_path, dataset, folder, address):
    with pytest.raises(layouts.DataError) as e:
        layouts.list_split(tmp_path, dataset, "test")
    message = str(e.value)
    assert message.startswith(f"missing folder {tmp_path / folder} ") and "\n" not in message
    assert address in message and "github.com/codeslake/IFAN" in message


def test_a_missing_part_of_a_data_set_says_where_it_is_published(tmp_path):
    (tmp_path / "DPDD" / "test_c" / "source").mkdir(parents=True)
    with pytest.raises(layouts.DataError, match=r"test_l/source .*DPDD\.zip .*Abuolaim"):
        layouts.list_split(tmp_path, "dpdd", "test")
    (tmp_path / "RealDOF" / "source").mkdir(parents=True)
    with pytest.raises(layouts.DataError, match=r"RealDOF/target .*RealDOF\.zip"):
        layouts.list_split(tmp_path, "realdof", "test")
    with pytest.raises(layouts.DataError) as e:  # your own pairs: no address to give
        layouts.list_split(tmp_path / "mine", "pairs", "train")
    assert "http" not in str(e.value)
