"""Writing files and directories all or nothing, with one permission rule.

    with atomic_file("out.png") as f:      # f: a binary file object under a temporary name
        f.write(data)                        # renamed to out.png only when the block succeeds
    atomic_write_text("model_config.json", text, overwrite=True)
    with atomic_directory("ckpt/IFAN") as tmp:   # fill tmp; renamed to ckpt/IFAN on success
        ...

Everything is assembled under a hidden temporary name in the destination's folder and renamed into
place when complete, so an interrupted write leaves no partial file behind and never replaces the
previous content. An existing destination is an error (`FileExistsError` naming it) unless
`overwrite`; without `overwrite` a file appearing meanwhile is not replaced either (hard link, where
the file system has them). Files get the usual permissions, 0666 less the process's umask
(`mkstemp` alone would leave them 0600), and directories 0777 less the umask.

A full disk (ENOSPC; also an exhausted quota, EDQUOT, or the process's file size limit, EFBIG)
while a file or folder is written here is a `DiskFullError`, one line naming the destination and
saying so; the temporary file or folder is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

from ifan_jax.errors import UserError

_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


# What the disk said, as a person reads it.
_FULL = {errno.ENOSPC: "the disk is full (no space left on device)",
         errno.EDQUOT: "the disk quota is exhausted (no space left for this user)",
         errno.EFBIG: "the file is larger than this system allows (file size limit)"}


class DiskFullError(UserError):
    """A file or folder that could not be written for lack of space: the disk is full, the quota
    exhausted or a file size limit reached. Nothing was left behind."""


def _full(error: BaseException, path: str) -> DiskFullError | None:
    """A DiskFullError naming `path` when `error` is the disk running out of space, else None."""
    if isinstance(error, OSError) and error.errno in _FULL:
        return DiskFullError(f"{path}: {_FULL[error.errno]}; nothing was written")
    return None


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exists_error(path: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "exists (not overwritten)", path)


def _commit_file(tmp: str, path: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` appeared meanwhile
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if os.path.exists(path):  # a file system without hard links
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator:
    """A binary file object whose content becomes `path` when the block exits without error."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise _exists_error(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                   suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        _commit_file(tmp, path, overwrite)
    except OSError as e:
        full = _full(e, path)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    with atomic_file(path, overwrite=overwrite) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """A temporary directory, filled by the block, that becomes `path` when the block succeeds.

    With `overwrite` an existing `path` is replaced (only once the new content is complete);
    otherwise it is an error before anything is written."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise _exists_error(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.",
                               suffix=".partial")
    except OSError as e:
        full = _full(e, path)
        if full is None:
            raise
        raise full from None
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".old")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:  # what the block wrote itself, not through atomic_file
        full = _full(e, path)
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


CACHE_ENV = "IFAN_JAX_CACHE"


def cache_dir(name: str) -> str:
    """The project's cache folder `name` (xla, converted, app_examples): $IFAN_JAX_CACHE/name, or
    ~/.cache/ifan_jax/name when the variable is not set. Creates nothing."""
    base = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "ifan_jax")
    return os.path.join(os.path.expanduser(base), name)
