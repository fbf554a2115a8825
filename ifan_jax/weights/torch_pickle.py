"""Read PyTorch checkpoint files (`torch.save`) with NumPy, without torch and without running code.

    obj = load("IFAN.pytorch")    # e.g. an OrderedDict of name -> numpy array

Both of `torch.save`'s formats are read: the zip archive (the default since PyTorch 1.6:
`ARCHIVE/data.pkl` plus one raw file `ARCHIVE/data/KEY` per storage) and the legacy stream
(`_use_new_zipfile_serialization=False`: a magic-number pickle, a protocol-version pickle, a
system-info pickle, the object's pickle, a pickle of the storage keys, then each storage as an
int64 element count and its raw bytes). Tensors become numpy arrays (bfloat16 through `ml_dtypes`)
with their shape, strides and storage offset applied, copied into contiguous arrays; bfloat16
tensors (which NumPy lacks) become float32, exactly.

The pickles are read by a restricted unpickler: it builds only plain containers (dict, list,
tuple, `collections.OrderedDict`), str, bytes, int, float, bool and None, tensors
(`torch._utils._rebuild_tensor*`, `_rebuild_parameter`) and typed storages (`torch.FloatStorage`
and the like). Any other global (a class, `os.system`, ...) is refused with `TorchPickleError`
before anything is called, so a malicious file cannot run code. A tensor whose shape and strides
reach outside its storage is refused too.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from ifan_jax.errors import UserError, one_line

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchPickleError(UserError):
    """A file that is not a PyTorch checkpoint this reader accepts; the message says why."""


class _Sealed:
    """Objects of this reader that a pickle's BUILD opcode may not modify."""

    def __setstate__(self, state):
        raise TorchPickleError("refused to set the state of a tensor or storage")


class _StorageType(_Sealed):
    """Stands for `torch.<Name>Storage` in a pickle: only its element type is used."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])
        self.bfloat16 = name == "BFloat16Storage"  # read as uint16, widened to float32


class _Storage(_Sealed):
    """A flat storage: its element type, element count and (once read) its data."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, bfloat16: bool = False):
        self.key, self.dtype, self.numel, self.bfloat16 = key, dtype, int(numel), bfloat16
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes, byteorder: str = "little") -> None:
        dtype = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if len(raw) != self.numel * dtype.itemsize:
            raise TorchPickleError(f"storage {self.key}: {len(raw)} bytes for {self.numel} "
                                   f"elements of {self.dtype}")
        self.data = np.frombuffer(raw, dtype).astype(self.dtype, copy=False)


class _Tensor(_Sealed):
    """A tensor waiting for its storage's data (legacy files store the data after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise TorchPickleError("a tensor without a storage")
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or min(size + stride, default=0) < 0 or int(offset) < 0:
            raise TorchPickleError(f"storage {storage.key}: invalid tensor layout (size {size}, "
                                   f"stride {stride}, offset {offset})")
        if all(size) and int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel:
            raise TorchPickleError(f"storage {storage.key}: a tensor of size {size} reaches past "
                                   f"its {storage.numel} elements")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchPickleError(f"storage {self.storage.key}: its data is missing")
        if not all(self.size):
            return np.zeros(self.size, np.float32 if self.storage.bfloat16 else self.storage.dtype)
        if self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) >= data.size:
            raise TorchPickleError(f"storage {self.storage.key}: a tensor reaches past its data")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], self.size, [s * data.itemsize for s in self.stride], writeable=False)
        out = np.array(view, order="C")
        if self.storage.bfloat16:  # the upper half of a float32
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


# The only globals a checkpoint may name.
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages  # key -> _Storage
        self.legacy_zip: zipfile.ZipFile | None = None

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchPickleError(f"refused to load {module}.{name}: only tensors, storages and "
                                   f"plain containers are allowed") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchPickleError(f"unsupported persistent id {str(pid)[:60]}")
        _, storage_type, key, _location, numel = pid[:5]
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, numel, storage_type.bfloat16)
        return self._storages[key]


def _materialize(obj):
    """Replace every `_Tensor` in plain containers by its numpy array (shared storages stay correct:
    each tensor is copied out of its storage)."""
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, (dict, collections.OrderedDict)):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_materialize(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v) for v in obj)
    if isinstance(obj, _Storage):
        return obj.data
    if isinstance(obj, _StorageType):
        raise TorchPickleError(f"a bare storage type {obj.name} is not data")
    return obj


def _load_zip(archive: zipfile.ZipFile) -> object:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchPickleError("a zip file without the one ARCHIVE/data.pkl of torch.save")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchPickleError(f"unknown byte order {byteorder[:20]!r}")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
    for key, storage in storages.items():
        record = f"{prefix}data/{key}"
        if record not in names:
            raise TorchPickleError(f"storage {key}: {record} is missing from the archive")
        storage.fill(archive.read(record), byteorder)
    return _materialize(obj)


def _load_legacy(f) -> object:
    storages: dict[str, _Storage] = {}

    def unpickle():
        return _Unpickler(f, storages).load()

    if unpickle() != LEGACY_MAGIC:
        raise TorchPickleError("not a PyTorch checkpoint (no torch.save magic number)")
    if unpickle() != LEGACY_PROTOCOL:
        raise TorchPickleError("an unknown legacy PyTorch protocol version")
    sys_info = unpickle()
    byteorder = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj = unpickle()
    keys = unpickle()
    if not isinstance(keys, list):
        raise TorchPickleError("no list of storage keys after the pickle")
    for key in keys:
        key = str(key)
        if key not in storages:
            raise TorchPickleError(f"storage {key} is listed but no tensor uses it")
        storage = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise TorchPickleError(f"storage {key}: the file ends before its data")
        numel = struct.unpack("<q" if byteorder else ">q", head)[0]
        if numel != storage.numel:
            raise TorchPickleError(f"storage {key}: {numel} elements stored, {storage.numel} "
                                   f"expected")
        raw = f.read(numel * storage.dtype.itemsize)
        storage.fill(raw, "little" if byteorder else "big")
    return _materialize(obj)


def load(path: str | os.PathLike) -> object:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays.

    Raises `TorchPickleError` (one line) for a file in neither format, a truncated or corrupt one,
    and one whose pickle names anything but tensors, storages and plain containers;
    `FileNotFoundError`/`IsADirectoryError` for a missing path or a folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a PyTorch checkpoint file")
    with open(path, "rb") as f:
        try:
            if zipfile.is_zipfile(f):
                f.seek(0)
                with zipfile.ZipFile(f) as archive:
                    return _load_zip(archive)
            f.seek(0)
            return _load_legacy(f)
        except TorchPickleError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                KeyError, IndexError, AttributeError, struct.error, OverflowError,
                MemoryError, RecursionError) as e:
            raise TorchPickleError(f"not a readable PyTorch checkpoint "
                                   f"({one_line(e, limit=160)})") from None
