"""Atomic writes on a full disk: one line naming the file, no temporary file, no partial target.

Real ENOSPC comes from the kernel through /dev/full (the temporary file's descriptor is swapped
for one on /dev/full, so every byte written reaches the real write(2) and fails there); real
EFBIG from a child process whose file size limit (RLIMIT_FSIZE) is below the file's size."""

import errno
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from ifan_jax import fileio, image_io
from ifan_jax.errors import UserError


@pytest.fixture
def full_disk(monkeypatch):
    """fileio's temporary files are created for real (so their removal is seen) but written to
    /dev/full, where the kernel answers every write with ENOSPC."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, full_disk):
    target = tmp_path / "out.bin"
    with pytest.raises(fileio.DiskFullError) as e:
        fileio.atomic_write_bytes(target, os.urandom(200_000))
    message = str(e.value)
    assert message == f"{target}: the disk is full (no space left on device); nothing was written"
    assert isinstance(e.value, UserError) and e.value.__cause__ is None
    assert os.listdir(tmp_path) == []


def test_a_full_disk_keeps_the_file_it_would_have_replaced(tmp_path, full_disk):
    target = tmp_path / "photo.png"
    target.write_bytes(b"the earlier result")
    noise = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    with pytest.raises(fileio.DiskFullError, match=r"photo\.png: the disk is full"):
        image_io.write_image(str(target), noise, overwrite=True)
    assert target.read_bytes() == b"the earlier result"
    assert os.listdir(tmp_path) == ["photo.png"]


def test_space_running_out_at_fsync_or_inside_a_folder_is_the_same_line(tmp_path, monkeypatch):
    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(fileio.os, "fsync", no_space)  # a file system that reports it when syncing
        with pytest.raises(fileio.DiskFullError, match=r"a\.txt: the disk is full"):
            fileio.atomic_write_text(tmp_path / "a.txt", "text")
    assert os.listdir(tmp_path) == []

    folder = tmp_path / "images"
    with pytest.raises(fileio.DiskFullError) as e:
        with fileio.atomic_directory(folder) as staging:
            (open(os.path.join(staging, "first.png"), "wb")).close()
            raise OSError(errno.EDQUOT, "Disk quota exceeded")  # a write of the block itself
    assert str(e.value) == (f"{folder}: the disk quota is exhausted (no space left for this "
                            f"user); nothing was written")
    assert os.listdir(tmp_path) == []


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(PermissionError):
        with fileio.atomic_file(tmp_path / "x") as f:
            f.write(b"x")
            raise PermissionError(errno.EACCES, "Permission denied")
    assert os.listdir(tmp_path) == []


_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from ifan_jax import fileio
    from ifan_jax.errors import UserError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write(2) answers EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        fileio.atomic_write_bytes(sys.argv[1], bytes(100_000))
    except UserError as e:
        sys.exit(f"write: {e}")
""")


def test_a_file_size_limit_from_the_kernel_is_one_line(tmp_path):
    target = tmp_path / "big.bin"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(target)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"write: {target}: the file is larger than this system allows (file "
                           f"size limit); nothing was written\n")
    assert os.listdir(tmp_path) == []
