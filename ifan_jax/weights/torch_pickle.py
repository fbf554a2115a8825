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
before anything is called, so a malicious file cannot run code.

A hostile file is refused from what it declares, before anything is inflated or allocated
(`Limits`; the defaults, `LIMITS`, are what the largest official IFAN file can hold, with a
margin): only a regular file is opened (not a device, a FIFO or a folder, also behind a symlink),
of at most `max_file_bytes`; a zip's central directory is read only if it is small, and a member
flagged as encrypted or compressed other than stored or deflated is refused; the pickle is at most
`max_pickle_bytes`; the storages it declares and the tensors it builds hold at most `max_bytes`
together and `max_tensors` tensors; each tensor lies inside its storage and reads no element of
it twice (no stride 0, no overlapping strides, as `expand` makes); each storage's bytes in the
file are exactly what the pickle declares (a zip member's declared size, the legacy stream's
element count), and a member is read through a bound of its declared size.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import stat
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

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a file may declare before it is refused.

    max_bytes: the tensor data, in bytes, of the storages the pickle declares, and separately of
        the arrays its tensors make (bfloat16 counted as the float32 it becomes);
    max_tensors: tensors the pickle builds;
    max_pickle_bytes: the object's pickle (a zip's data.pkl; the legacy stream's five pickles);
    max_file_bytes: the file;
    max_directory_bytes: a zip's central directory (its list of members, read whole by zipfile).
    """

    max_bytes: int
    max_tensors: int
    max_pickle_bytes: int
    max_file_bytes: int
    max_directory_bytes: int


# The largest official IFAN (IFAN_44; counted with the dual-pixel filter encoder and the
# reblurring network, which a released file may carry) has 61,261,248 float32 parameters in 178
# tensors, 233.7 MiB (`convert.official_shapes`; tests/weights checks these numbers against it).
# The limits allow twice its bytes, 4096 tensors (a training checkpoint with an optimiser's two
# moments per parameter fits), 1 MiB of pickle (an official state dict's is 28 KB) and a 2 MiB
# central directory (torch.save writes about 100 bytes per member).
LARGEST_OFFICIAL_PARAMETERS = 61_261_248
LIMITS = Limits(
    max_bytes=2 * 4 * LARGEST_OFFICIAL_PARAMETERS,
    max_tensors=4096,
    max_pickle_bytes=1 * MiB,
    max_file_bytes=2 * 4 * LARGEST_OFFICIAL_PARAMETERS + 16 * MiB,
    max_directory_bytes=2 * MiB,
)


class TorchPickleError(UserError):
    """A file that is not a PyTorch checkpoint this reader accepts; the message says why."""


def _size(n: int) -> str:
    """A byte count for a message: exact below 10 KiB, else in KiB, MiB or GiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= 10 * (1 << 10) and n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class _Budget:
    """The running totals of one file against its `Limits`."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.storage_bytes = self.tensor_bytes = self.tensors = 0

    def storage(self, key: str, nbytes: int) -> None:
        self.storage_bytes += nbytes
        if self.storage_bytes > self.limits.max_bytes:
            raise TorchPickleError(
                f"storage {key}: the storages declare more than {_size(self.limits.max_bytes)} "
                f"of tensor data, more than an IFAN checkpoint holds")

    def tensor(self, key: str, nbytes: int) -> None:
        self.tensors += 1
        self.tensor_bytes += nbytes
        if self.tensors > self.limits.max_tensors:
            raise TorchPickleError(f"more than {self.limits.max_tensors} tensors, more than an "
                                   f"IFAN checkpoint holds")
        if self.tensor_bytes > self.limits.max_bytes:
            raise TorchPickleError(
                f"storage {key}: the tensors declare more than {_size(self.limits.max_bytes)} "
                f"of data, more than an IFAN checkpoint holds")


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
        self.key, self.dtype, self.numel, self.bfloat16 = key, dtype, numel, bfloat16
        self.data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def fill(self, raw: bytes, byteorder: str = "little") -> None:
        dtype = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if len(raw) != self.nbytes:
            raise TorchPickleError(f"storage {self.key}: {len(raw)} bytes for {self.numel} "
                                   f"elements of {self.dtype}")
        self.data = np.frombuffer(raw, dtype).astype(self.dtype, copy=False)


def _count(value, what: str, key: str) -> int:
    """A non-negative int of the pickle (a size, stride, offset or element count) below 2^48."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 48:
        raise TorchPickleError(f"storage {key}: invalid {what} {str(value)[:40]}")
    return value


def _reads_an_element_twice(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a layout reaches some storage element by two indices (stride 0, or strides that
    overlap or interleave): with the dimensions of more than one element sorted by stride, each
    stride must step over everything the smaller ones span."""
    span = 1
    for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
        if s < span:
            return True
        span += (n - 1) * s
    return False


class _Tensor(_Sealed):
    """A tensor waiting for its storage's data (legacy files store the data after the pickle)."""

    def __init__(self, storage, offset, size, stride, budget: _Budget):
        if not isinstance(storage, _Storage):
            raise TorchPickleError("a tensor without a storage")
        key = storage.key
        if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or len(
                size) != len(stride) or len(size) > 16:
            raise TorchPickleError(f"storage {key}: invalid tensor layout (size "
                                   f"{str(size)[:60]}, stride {str(stride)[:60]})")
        size = tuple(_count(n, "tensor size", key) for n in size)
        stride = tuple(_count(s, "tensor stride", key) for s in stride)
        offset = _count(offset, "storage offset", key)
        numel = 1
        for n in size:
            numel *= n
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise TorchPickleError(f"storage {key}: a tensor of size {size} reaches past its "
                                       f"{storage.numel} elements")
            if _reads_an_element_twice(size, stride):
                raise TorchPickleError(f"storage {key}: a tensor of size {size} with stride "
                                       f"{stride} reads elements of its storage more than once")
        budget.tensor(key, numel * (4 if storage.bfloat16 else storage.dtype.itemsize))
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchPickleError(f"storage {self.storage.key}: its data is missing")
        if not all(self.size):
            return np.zeros(self.size, np.float32 if self.storage.bfloat16 else self.storage.dtype)
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], self.size, [s * data.itemsize for s in self.stride], writeable=False)
        out = np.array(view, order="C")
        if self.storage.bfloat16:  # the upper half of a float32
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_parameter(data, *unused):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages, budget: _Budget):
        super().__init__(file)
        self._storages = storages  # key -> _Storage
        self._budget = budget
        rebuild = self._rebuild_tensor
        self._allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor"): rebuild,
            ("torch._utils", "_rebuild_tensor_v2"): rebuild,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
        }  # the only globals a checkpoint may name

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *unused):
        return _Tensor(storage, storage_offset, size, stride, self._budget)

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise TorchPickleError(f"refused to load {module}.{name}: only tensors, storages and "
                                   f"plain containers are allowed") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchPickleError(f"unsupported persistent id {str(pid)[:60]}")
        _, storage_type, key, _location, numel = pid[:5]
        key = str(key)[:100]
        if key not in self._storages:
            numel = _count(numel, "element count", key)
            storage = _Storage(key, storage_type.dtype, numel, storage_type.bfloat16)
            self._budget.storage(key, storage.nbytes)
            self._storages[key] = storage
        return self._storages[key]


def _materialize(obj, done: dict | None = None):
    """Replace every `_Tensor` in plain containers by its numpy array (each tensor is copied out of
    its storage). An object the pickle references several times is converted once (`done`, by
    id), so shared references cost nothing more."""
    done = {} if done is None else done
    if id(obj) in done:
        return done[id(obj)][1]
    if isinstance(obj, _Tensor):
        out = obj.array()
    elif isinstance(obj, (dict, collections.OrderedDict)):
        out = type(obj)((k, _materialize(v, done)) for k, v in obj.items())
    elif isinstance(obj, list):
        out = [_materialize(v, done) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_materialize(v, done) for v in obj)
    elif isinstance(obj, _Storage):
        out = obj.data
    elif isinstance(obj, _StorageType):
        raise TorchPickleError(f"a bare storage type {obj.name} is not data")
    else:
        return obj
    done[id(obj)] = (obj, out)  # (obj kept alive: its id stays its own)
    return out


class _CappedFile:
    """A file whose single reads may not exceed `cap` bytes (None: any): zipfile reads a zip's
    whole central directory in one read of the size the archive declares."""

    def __init__(self, f, size: int, cap: int | None):
        self.f, self.size, self.cap = f, size, cap

    def read(self, n=-1):
        if n is None or n < 0:
            n = max(0, self.size - self.f.tell())
        if self.cap is not None and n > self.cap:
            raise TorchPickleError(f"the zip's list of members is larger than "
                                   f"{_size(self.cap)}, more than an IFAN checkpoint has")
        return self.f.read(n)

    def seek(self, *args):
        return self.f.seek(*args)

    def tell(self):
        return self.f.tell()

    def seekable(self):
        return True


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, reading at most its declared size plus one (zipfile checks the CRC)."""
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise TorchPickleError(f"{info.filename}: {len(data)} bytes, {info.file_size} declared")
    return data


def _load_zip(f, size: int, limits: Limits) -> object:
    capped = _CappedFile(f, size, limits.max_directory_bytes)
    with zipfile.ZipFile(capped) as archive:
        capped.cap = None
        return _load_members(archive, limits)


def _load_members(archive: zipfile.ZipFile, limits: Limits) -> object:
    infos = archive.infolist()
    if len(infos) > limits.max_tensors + 16:
        raise TorchPickleError(f"{len(infos)} members in the zip, more than an IFAN checkpoint "
                               f"has")
    for info in infos:
        if info.flag_bits & 0x41:  # traditional or strong encryption
            raise TorchPickleError(f"{info.filename}: encrypted; a checkpoint is never encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise TorchPickleError(f"{info.filename}: compression method {info.compress_type} "
                                   f"(only stored or deflated members are read)")
    members = {info.filename: info for info in infos}
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchPickleError("a zip file without the one ARCHIVE/data.pkl of torch.save")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in members:
        info = members[f"{prefix}byteorder"]
        if info.file_size > 16:
            raise TorchPickleError(f"{info.filename}: {info.file_size} bytes for a byte order")
        byteorder = _read_member(archive, info).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchPickleError(f"unknown byte order {byteorder[:20]!r}")
    info = members[pickles[0]]
    if info.file_size > limits.max_pickle_bytes:
        raise TorchPickleError(f"{info.filename}: declares {_size(info.file_size)}, more than the "
                               f"{_size(limits.max_pickle_bytes)} an IFAN checkpoint's pickle "
                               f"needs")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(io.BytesIO(_read_member(archive, info)), storages, _Budget(limits)).load()
    for key, storage in storages.items():  # every size checked before any data is read
        record = f"{prefix}data/{key}"
        if record not in members:
            raise TorchPickleError(f"storage {key}: {record} is missing from the archive")
        if members[record].file_size != storage.nbytes:
            raise TorchPickleError(f"{record}: declares {_size(members[record].file_size)}, the "
                                   f"pickle's storage {key} holds {_size(storage.nbytes)}")
    for key, storage in storages.items():
        storage.fill(_read_member(archive, members[f"{prefix}data/{key}"]), byteorder)
    return _materialize(obj)


class _Stream:
    """The legacy format's file, read forward: at most `max_pickle_bytes` through the pickles, and
    no read past the end of the file (so a count that lies is refused before it is allocated)."""

    def __init__(self, f, size: int, limits: Limits):
        self.f, self.left, self.pickle_left, self.limits = f, size, limits.max_pickle_bytes, limits
        self.in_pickle = True

    def _take(self, n: int) -> None:
        if n > self.left:
            raise TorchPickleError(f"declares {_size(n)} where the file has {_size(self.left)} "
                                   f"left (truncated, or a count that lies)")
        if self.in_pickle:
            if n > self.pickle_left:
                raise TorchPickleError(f"the pickles are larger than "
                                       f"{_size(self.limits.max_pickle_bytes)}, more than an "
                                       f"IFAN checkpoint's need")
            self.pickle_left -= n
        self.left -= n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise TorchPickleError("an unbounded read")
        self._take(n)
        return self.f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        line = self.f.readline(min(self.left, self.pickle_left, 1 << 16))
        self._take(len(line))
        return line


def _load_legacy(f, size: int, limits: Limits) -> object:
    storages: dict[str, _Storage] = {}
    stream = _Stream(f, size, limits)
    budget = _Budget(limits)

    def unpickle():
        return _Unpickler(stream, storages, budget).load()

    if unpickle() != LEGACY_MAGIC:
        raise TorchPickleError("not a PyTorch checkpoint (no torch.save magic number)")
    if unpickle() != LEGACY_PROTOCOL:
        raise TorchPickleError("an unknown legacy PyTorch protocol version")
    sys_info = unpickle()
    byteorder = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj = unpickle()
    keys = unpickle()
    stream.in_pickle = False
    if not isinstance(keys, list) or len(keys) > len(storages):
        raise TorchPickleError("no list of the storage keys after the pickle")
    for key in keys:
        key = str(key)
        if key not in storages:
            raise TorchPickleError(f"storage {key[:100]} is listed but no tensor uses it")
        storage = storages[key]
        numel = struct.unpack("<q" if byteorder else ">q", stream.read(8))[0]
        if numel != storage.numel:
            raise TorchPickleError(f"storage {key}: {numel} elements stored, {storage.numel} "
                                   f"declared by the pickle")
        storage.fill(stream.read(storage.nbytes), "little" if byteorder else "big")
    return _materialize(obj)


def check_file(path: str | os.PathLike, limits: Limits = LIMITS) -> int:
    """The size of the regular file at `path` (a symlink is followed), from its metadata alone.

    Raises `FileNotFoundError`/`IsADirectoryError` for a missing path or a folder, and
    `TorchPickleError` for a device, FIFO or socket and for a file larger than
    `limits.max_file_bytes`."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{path}: is a directory, not a PyTorch checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise TorchPickleError("not a regular file (a device, FIFO or socket): refused")
    if info.st_size > limits.max_file_bytes:
        raise TorchPickleError(f"{_size(info.st_size)}, more than an IFAN checkpoint file holds "
                               f"(at most {_size(limits.max_file_bytes)})")
    return info.st_size


def load(path: str | os.PathLike, limits: Limits = LIMITS) -> object:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays.

    Raises `TorchPickleError` (one line) for a file in neither format, a truncated or corrupt one,
    one whose pickle names anything but tensors, storages and plain containers, and one that
    declares more than `limits` allow (checked before the data is read);
    `FileNotFoundError`/`IsADirectoryError` for a missing path or a folder.
    """
    path = os.fspath(path)
    check_file(path, limits)
    # O_NONBLOCK: a FIFO put in place after the check does not block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limits.max_file_bytes:
            raise TorchPickleError("not a regular file of a checkpoint's size: refused")
        try:
            head = f.read(4)
            f.seek(0)
            if head.startswith(b"PK"):
                return _load_zip(f, info.st_size, limits)
            return _load_legacy(f, info.st_size, limits)
        except TorchPickleError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                KeyError, IndexError, AttributeError, struct.error, OverflowError,
                MemoryError, RecursionError, NotImplementedError) as e:
            raise TorchPickleError(f"not a readable PyTorch checkpoint "
                                   f"({one_line(e, limit=160)})") from None
