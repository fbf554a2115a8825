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
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


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
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        _commit_file(tmp, path, overwrite)
    finally:
        if os.path.exists(tmp):
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
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".partial")
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
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


CACHE_ENV = "IFAN_JAX_CACHE"


def cache_dir(name: str) -> str:
    """The project's cache folder `name` (xla, converted, app_examples): $IFAN_JAX_CACHE/name, or
    ~/.cache/ifan_jax/name when the variable is not set. Creates nothing."""
    base = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "ifan_jax")
    return os.path.join(os.path.expanduser(base), name)
