"""Hostile and damaged checkpoints, built at test time, each refused in one line, within memory.

Every attack is a small file (or folder) made here, without torch: a zip bomb in a storage or in
the pickle, a tensor that reads its storage twice, tensors whose data add up to gigabytes, a symlink
to /dev/zero, a FIFO, an encrypted or oddly compressed zip, a legacy stream whose counts lie, a NaN
weight, a flipped bit in a converted checkpoint, a model_config.json of an impossible IFAN. Each is
read in-process (fast), then given to the user's commands as the README prints them, each in its
own process (`python -m ifan_jax.weights|inference|export`, run by `runpy` as `-m` runs them, one
forked child per attack from one driver process per command so that the imports are paid once;
`train.py` as a plain process): the exit status is not 0, stderr is exactly one line naming the
file or key and what is wrong, nothing is written, and the child's peak RSS (`os.wait4`) stays
under 1.5 GB and its time under 90 s. A training run whose newest checkpoint has a flipped byte
resumes from the one before and says so.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import child
import numpy as np
import pytest
from official_reference import reference_state_dict
from repo import ROOT

from ifan_jax import checkpoint
from ifan_jax.weights import convert, load_weights, torch_pickle

GiB, MiB = 1 << 30, 1 << 20
MAX_RSS_KB = 1_500_000  # 1.5 GB
MAX_SECONDS = 90

# --------------------------------------------------------------------------------------------
# torch.save's formats, written by hand


def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(1 << 31) <= n < 1 << 31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _ordered_dict(items: list[tuple[str, bytes]]) -> bytes:
    out = _global("collections", "OrderedDict") + b")R"
    if items:
        out += b"(" + b"".join(_str(k) + v for k, v in items) + b"u"
    return out


def _tensor(key: str, numel: int, size, stride, offset: int = 0,
            storage: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2 over storage `key` of `numel` elements."""
    pid = _tuple(_str("storage"), _global("torch", storage), _str(key), _str("cpu"),
                 _int(numel)) + b"Q"
    args = _tuple(pid, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                  b"\x89", _ordered_dict([]))
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_pickle(tensors: list[tuple[str, bytes]]) -> bytes:
    """A protocol-2 pickle of an OrderedDict name -> tensor (made by `_tensor`)."""
    return b"\x80\x02" + _ordered_dict(tensors) + b"."


def write_zip(path, members: list[dict]) -> None:
    """A zip of `members`: dicts of name, data (the bytes as stored), and optionally method
    (0 stored, 8 deflated, ...), size (the declared uncompressed size), crc and flags."""
    out, central = bytearray(), bytearray()
    for m in members:
        name, data = m["name"].encode(), m["data"]
        method, flags = m.get("method", 0), m.get("flags", 0)
        size = m.get("size", len(data))
        crc = m.get("crc", zlib.crc32(data) if method == 0 else 0)
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0, crc, len(data),
                           size, len(name), 0) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc,
                               len(data), size, len(name), 0, 0, 0, 0, 0, offset) + name
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                 len(central), len(out), 0)
    with open(path, "wb") as f:
        f.write(out)


def torch_zip(path, pickle_bytes: bytes, storages: dict[str, bytes], **pickle_member) -> None:
    """A file as torch.save writes it: ARCHIVE/data.pkl, byteorder, data/KEY per storage."""
    write_zip(path, [dict(name="archive/data.pkl", data=pickle_bytes, **pickle_member),
                     dict(name="archive/byteorder", data=b"little"),
                     *(dict(name=f"archive/data/{k}", data=v) for k, v in storages.items()),
                     dict(name="archive/version", data=b"3\n")])


def state_dict_file(path, state: dict[str, np.ndarray]) -> None:
    """A state dict of float32 arrays in torch.save's zip format (one storage per tensor)."""
    tensors, storages = [], {}
    for i, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array, np.float32)
        strides = [s // 4 for s in array.strides]
        tensors.append((name, _tensor(str(i), array.size, array.shape, strides)))
        storages[str(i)] = array.tobytes()
    torch_zip(path, state_pickle(tensors), storages)


def legacy_file(path, pickle_bytes: bytes, storages: list[tuple[str, int, bytes]]) -> None:
    """torch.save's legacy stream: magic, protocol, system info, the pickle, the keys, then per
    storage an int64 element count (as given, true or not) and its bytes."""
    import pickle

    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        torch_pickle.LEGACY_MAGIC, torch_pickle.LEGACY_PROTOCOL,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}))
    keys = pickle.dumps([k for k, _, _ in storages], protocol=2)
    body = b"".join(struct.pack("<q", count) + data for _, count, data in storages)
    with open(path, "wb") as f:
        f.write(head + pickle_bytes + keys + body)


def deflate_bomb(size: int) -> bytes:
    """A raw deflate stream of `size` zero bytes (a multiple of 1 MiB) in about size / 1000 bytes:
    one fully flushed 1 MiB block, repeated (each block refers to nothing before it)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (size // MiB) + b"\x03\x00"  # and an empty final block


# --------------------------------------------------------------------------------------------
# The attacks: name -> (build(folder) -> path, the message it must get)


def _storage_bomb(folder, declared_by_pickle):
    path = folder / "bomb.pytorch"
    numel = declared_by_pickle // 4
    # The storage member: 2 MB of deflate declaring (and inflating to) 2 GiB.
    write_zip(path, [dict(name="archive/data.pkl", data=state_pickle(
                         [("conv1_1.0.weight", _tensor("0", numel, [numel], [1]))])),
                     dict(name="archive/data/0", data=deflate_bomb(2 * GiB), method=8,
                          size=2 * GiB, crc=0)])
    return path


def _storage_bomb_that_lies(folder):
    """The member declares 1 MiB (as the pickle does) but inflates to 2 GiB: only 1 MiB is read."""
    path = folder / "liar.pytorch"
    numel = MiB // 4
    write_zip(path, [dict(name="archive/data.pkl", data=state_pickle(
                         [("conv1_1.0.weight", _tensor("0", numel, [numel], [1]))])),
                     dict(name="archive/data/0", data=deflate_bomb(2 * GiB), method=8, size=MiB,
                          crc=zlib.crc32(bytes(MiB)))])
    return path


def _pickle_bomb(folder, declared):
    path = folder / "pickle_bomb.pytorch"
    write_zip(path, [dict(name="archive/data.pkl", data=deflate_bomb(GiB), method=8,
                          size=declared, crc=0)])
    return path


def _stride_zero(folder):
    path = folder / "stride0.pytorch"
    legacy_file(path, state_pickle([("w", _tensor("0", 1, [20000, 20000], [0, 0]))]),
                [("0", 1, bytes(4))])
    return path


def _shared_storage(folder):
    path = folder / "shared.pytorch"
    numel = MiB // 4
    tensors = [(f"t{i}", _tensor("0", numel, [numel], [1])) for i in range(2000)]
    torch_zip(path, state_pickle(tensors), {"0": bytes(MiB)})
    return path


def _dev_zero(folder):
    path = folder / "x.pytorch"
    os.symlink("/dev/zero", path)
    return path


def _fifo(folder):
    path = folder / "fifo.pytorch"
    os.mkfifo(path)
    return path


def _tiny_state(nan: bool = False) -> dict:
    state = dict(reference_state_dict("official"))
    if nan:
        key = "Network.F.3.weight"
        state[key] = state[key].copy()
        state[key].flat[7] = np.nan
    return state


def _encrypted(folder):
    path = folder / "encrypted.pytorch"
    state_dict_file(path, _tiny_state())
    data = bytearray(path.read_bytes())
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central flags
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + at] |= 1
            start += 4
    path.write_bytes(bytes(data))
    return path


def _compression_99(folder):
    path = folder / "method99.pytorch"
    state = _tiny_state()
    tensors = [(k, _tensor(str(i), v.size, v.shape, [s // 4 for s in v.strides]))
               for i, (k, v) in enumerate(state.items())]
    write_zip(path, [dict(name="archive/data.pkl", data=state_pickle(tensors), method=99),
                     *(dict(name=f"archive/data/{i}", data=v.astype(np.float32).tobytes())
                       for i, v in enumerate(state.values()))])
    return path


def _legacy_count_lies(folder):
    path = folder / "legacy_count.pytorch"
    legacy_file(path, state_pickle([("w", _tensor("0", 16, [16], [1]))]),
                [("0", 1 << 40, bytes(64))])
    return path


def _legacy_truncated(folder):
    """The pickle declares 100 million floats (381 MiB, within the limits); 64 bytes follow."""
    path = folder / "legacy_short.pytorch"
    legacy_file(path, state_pickle([("w", _tensor("0", 100_000_000, [100_000_000], [1]))]),
                [("0", 100_000_000, bytes(64))])
    return path


def _central_directory(folder):
    """A zip whose list of members spans 256 MiB (a sparse file: no disk space is used), which
    zipfile would read whole and parse into millions of entries."""
    path = folder / "directory.pytorch"
    size = 256 * MiB
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(size - 22)
        f.seek(size - 22)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size - 22, 0, 0))
    return path


def _nan_weight(folder):
    path = folder / "nan.pytorch"
    state_dict_file(path, _tiny_state(nan=True))
    return path


FILE_ATTACKS = {
    # name: (builder, regex of the message after "PATH: ")
    "storage inflating to 2 GiB, declared": (
        lambda d: _storage_bomb(d, 2 * GiB),
        r"storage 0: the storages declare more than 467\.4 MiB of tensor data, more than an "
        r"IFAN checkpoint holds"),
    "storage inflating to 2 GiB, pickle says 1 MiB": (
        lambda d: _storage_bomb(d, MiB),
        r"archive/data/0: declares 2\.0 GiB, the pickle's storage 0 holds 1\.0 MiB"),
    "storage inflating to 2 GiB, declared 1 MiB": (
        _storage_bomb_that_lies, r"conv1_1\.0\.weight: expected a 4-D tensor, got shape "
                                 r"\(262144,\)"),
    "data.pkl inflating to 1 GiB, declared": (
        lambda d: _pickle_bomb(d, GiB),
        r"archive/data\.pkl: declares 1\.0 GiB, more than the 1\.0 MiB an IFAN checkpoint's "
        r"pickle needs"),
    "data.pkl inflating to 1 GiB, declared 1 KiB": (
        lambda d: _pickle_bomb(d, 1024),
        r"not a readable PyTorch checkpoint \(BadZipFile: Bad CRC-32 for file "
        r"'archive/data\.pkl'\)"),
    "stride 0 claiming 20000x20000": (
        _stride_zero, r"storage 0: a tensor of size \(20000, 20000\) with stride \(0, 0\) reads "
                      r"elements of its storage more than once"),
    "2000 tensors sharing one 1 MB storage": (
        _shared_storage, r"storage 0: the tensors declare more than 467\.4 MiB of data, more "
                         r"than an IFAN checkpoint holds"),
    "symlink to /dev/zero": (
        _dev_zero, r"not a regular file \(a device, FIFO or socket\): refused"),
    "FIFO": (_fifo, r"not a regular file \(a device, FIFO or socket\): refused"),
    "zip flagged encrypted": (
        _encrypted, r"archive/data\.pkl: encrypted; a checkpoint is never encrypted"),
    "unknown compression method": (
        _compression_99, r"archive/data\.pkl: compression method 99 \(only stored or deflated "
                         r"members are read\)"),
    "legacy count lies": (
        _legacy_count_lies, r"storage 0: 1099511627776 elements stored, 16 declared by the "
                            r"pickle"),
    "legacy stream shorter than declared": (
        _legacy_truncated, r"declares 381\.5 MiB where the file has 64 bytes left \(truncated, "
                           r"or a count that lies\)"),
    "zip directory of 256 MiB": (
        _central_directory, r"the zip's list of members is larger than 2\.0 MiB, more than an "
                            r"IFAN checkpoint has"),
    "NaN in one weight": (
        _nan_weight, r"parameter Network\.F\.3\.weight holds NaN; the weights of a trained "
                     r"model are finite"),
}


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Every hostile file, each in its own folder: name -> path."""
    root = tmp_path_factory.mktemp("attacks")
    out = {}
    for i, (name, (build, _)) in enumerate(FILE_ATTACKS.items()):
        folder = root / f"a{i:02d}"
        folder.mkdir()
        out[name] = build(folder)
    return out


def test_the_hostile_files_are_small_and_say_what_they_claim(attacks):
    sizes = {name: os.lstat(path).st_size for name, path in attacks.items()}
    assert sizes["storage inflating to 2 GiB, declared"] < 2.5 * MiB
    assert sizes["data.pkl inflating to 1 GiB, declared"] < 1.2 * MiB
    assert sizes["stride 0 claiming 20000x20000"] < 500
    assert sizes["2000 tensors sharing one 1 MB storage"] < 1.5 * MiB
    # The bombs inflate to what they declare (checked on a slice: zlib, bounded).
    bomb = zlib.decompressobj(-15).decompress(deflate_bomb(4 * MiB), 5 * MiB)
    assert len(bomb) == 4 * MiB and not any(bomb)
    # A file written here is one torch reads, where torch is installed.
    torch = pytest.importorskip("torch")
    good = attacks["NaN in one weight"]
    loaded = torch.load(good, weights_only=True)
    assert np.isnan(loaded["Network.F.3.weight"].numpy()).sum() == 1


@pytest.mark.parametrize("name", FILE_ATTACKS)
def test_each_hostile_file_is_refused_by_the_converter(attacks, name):
    with pytest.raises(convert.ConversionError) as info:
        convert.convert_file(str(attacks[name]))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{attacks[name]}: ")
    assert _matches(FILE_ATTACKS[name][1], message.removeprefix(f"{attacks[name]}: "))


def _matches(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


# --------------------------------------------------------------------------------------------
# Damaged and hostile converted checkpoints


def _flip(path, byte=None, bit=0) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if byte is None else byte] ^= 1 << bit
    with open(path, "wb") as f:
        f.write(data)


def _largest_data_file(step_folder) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_folder) for f in fs
             if os.sep + "d" + os.sep in os.path.join(r, f)]
    return max(files, key=os.path.getsize)


def _with_model_config(source, target, **changes) -> str:
    shutil.copytree(source, target)
    config = json.loads((target / checkpoint.MODEL_CONFIG_FILE).read_text())
    config.update(changes)
    (target / checkpoint.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    checkpoint.write_checksums(str(target), [checkpoint.MODEL_CONFIG_FILE])  # as an attacker would
    return str(target)


CONFIG_ATTACKS = {
    "num_iterations 10^9": (dict(num_iterations=10**9),
                            r"num_iterations=1000000000: must be an integer from 1 to 64"),
    "res_units 10^6": (dict(res_units=10**6), r"res_units=1000000: must be an integer from 1 to 8"),
    "channels 0": (dict(channels=0), r"channels=0: must be an integer from 1 to 128"),
}


@pytest.fixture(scope="module")
def damaged_checkpoints(tiny_official_checkpoint, tmp_path_factory):
    """name -> (converted checkpoint folder, the file the message names, regex of the rest)."""
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    flipped = root / "flipped"
    shutil.copytree(tiny_official_checkpoint, flipped)
    data = _largest_data_file(flipped / "checkpoints" / "0" / "params")
    _flip(data, bit=3)
    out["one flipped bit in a converted checkpoint"] = (
        str(flipped), data, r"damaged \(its SHA-256 differs from the one recorded when it was "
                            r"written\)")
    for i, (name, (changes, message)) in enumerate(CONFIG_ATTACKS.items()):
        folder = _with_model_config(tiny_official_checkpoint, root / f"config{i}", **changes)
        out[f"model_config.json with {name}"] = (
            folder, os.path.join(folder, checkpoint.MODEL_CONFIG_FILE), message)
    return out


def test_damaged_and_hostile_converted_checkpoints_are_refused(damaged_checkpoints):
    for name, (folder, named, message) in damaged_checkpoints.items():
        with pytest.raises(checkpoint.CheckpointError) as info:
            load_weights(folder)
        text = str(info.value)
        assert "\n" not in text and text.startswith(f"{named}: "), (name, text)
        assert _matches(message, text.removeprefix(f"{named}: ")), (name, text)


def test_every_byte_of_a_converted_checkpoint_is_covered(tiny_official_checkpoint, tmp_path):
    """Each file of a converted checkpoint is listed with its SHA-256 but orbax's own commit
    record, and a flipped bit at the start, the end or anywhere in any listed file, or in a list,
    is caught; with the bit flipped back it reads again."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_official_checkpoint, ckpt)
    listed, lists = set(), sorted(ckpt.rglob(checkpoint.CHECKSUMS_FILE))
    for sums in lists:
        listed |= {str(sums.parent / line.split("  ", 1)[1])
                   for line in sums.read_text().splitlines()}
    files = {str(p) for p in ckpt.rglob("*") if p.is_file()}
    assert {os.path.basename(p) for p in files - listed} == set(checkpoint.UNLISTED)
    assert len(listed) > 5 and len(lists) == 2
    rng = np.random.default_rng(0)
    for path in sorted(listed) + [str(p) for p in lists]:
        size = os.path.getsize(path)
        for byte in sorted({0, size - 1, int(rng.integers(size))}):
            bit = int(rng.integers(8))
            _flip(path, byte, bit)
            with pytest.raises(checkpoint.CheckpointError) as info:
                checkpoint.load_params(str(ckpt))
            if path in listed:
                assert str(info.value).startswith(f"{path}: damaged"), str(info.value)
            _flip(path, byte, bit)
    _, params = checkpoint.load_params(str(ckpt))
    assert np.isfinite(params["feature_extractor"]["conv1_1"]["kernel"]).all()


# --------------------------------------------------------------------------------------------
# Through the commands, as the README prints them

# One process per command imports it once, then runs each attack as `python -m MODULE ARGS` runs
# (runpy) in a forked child of its own: its exit status, its peak RSS (os.wait4) and its time.
DRIVER = r"""
import importlib, json, os, runpy, signal, sys, time
jobs = json.loads(sys.argv[1])
for module in sys.argv[2:]:
    importlib.import_module(module)
results = []
for job in jobs:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(TIMEOUT)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.chdir(job["cwd"])
            sys.argv = [job["module"], *job["args"]]
            runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 99
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    results.append({"code": os.waitstatus_to_exitcode(status), "max_rss_kb": usage.ru_maxrss,
                    "seconds": time.monotonic() - start})
print(json.dumps(results))
""".replace("TIMEOUT", str(MAX_SECONDS + 30))


def _snapshot(*folders) -> list:
    """Every entry under `folders`: path, kind, size and modification time."""
    out = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in sorted(dirs + files):
                info = os.lstat(os.path.join(root, name))
                out.append((os.path.join(root, name), info.st_mode, info.st_size,
                            info.st_mtime_ns))
    return sorted(out)


def run_attacks(module: str, preload: list[str], jobs: list[tuple[str, list[str]]], workdir,
                cache) -> list[dict]:
    """Run `python -m MODULE ARGS` for each (cwd, args) of `jobs`; each result: code, max_rss_kb,
    seconds, stderr, stdout."""
    runs = []
    for i, (cwd, args) in enumerate(jobs):
        runs.append(dict(module=module, args=args, cwd=str(cwd),
                         stdout=str(workdir / f"{i}.out"), stderr=str(workdir / f"{i}.err")))
    env = dict(os.environ, IFAN_JAX_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs), *preload], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for result, run in zip(results, runs, strict=True):
        result["stderr"] = open(run["stderr"]).read()
        result["stdout"] = open(run["stdout"]).read()
    return results


def assert_refused(result: dict, line: str, label: str) -> None:
    """Exit status not 0, stderr exactly `line` (a regex), nothing on stdout, within memory and
    time; prints the row of the attack table."""
    lines = result["stderr"].splitlines()
    assert result["code"] not in (0, 99) and len(lines) == 1, (label, result)
    assert _matches(line, lines[0]), (label, lines[0], line)
    assert result["stdout"] == "", (label, result["stdout"])
    assert result["max_rss_kb"] < MAX_RSS_KB, (label, result["max_rss_kb"])
    assert result["seconds"] < MAX_SECONDS, (label, result["seconds"])
    print(f"ATTACK | {label} | {lines[0]} | {result['max_rss_kb'] / 1024:.0f} MB | "
          f"{result['seconds']:.2f} s")


def _escaped(path) -> str:
    import re

    return re.escape(str(path))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photo")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)).save(
        folder / "photo.png")
    return folder


COMMANDS = {  # module, what it preloads, its name on the console, its arguments for a checkpoint
    "weights": ("ifan_jax.weights", ["ifan_jax.weights.convert"], "convert",
                lambda ckpt, out: [f"--input={ckpt}", f"--output={out}"]),
    "deblur": ("ifan_jax.inference", ["ifan_jax.inference.cli"], "deblur",
               lambda ckpt, out: [f"--ckpt={ckpt}", "photo.png"]),
    "export": ("ifan_jax.export", ["ifan_jax.export.cli", "ifan_jax.export.onnx"], "export",
               lambda ckpt, out: [f"--ckpt={ckpt}", f"--output={out}.onnx"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_attack_through_the_commands(command, attacks, damaged_checkpoints, photo,
                                           tmp_path):
    """Each hostile official file (and, for the tools that open checkpoints, each damaged or
    hostile converted checkpoint) given to the command: refused in one line naming the file, exit
    status 1, nothing written beside the file, in the photo's folder or in the cache, under
    1.5 GB and 90 s."""
    module, preload, name, arguments = COMMANDS[command]
    cases = [(label, path, path, message) for label, path in attacks.items()
             for message in [FILE_ATTACKS[label][1]]]
    if command != "weights":  # the converter takes official files only
        cases += [(label, folder, named, message)
                  for label, (folder, named, message) in damaged_checkpoints.items()]
    cache = tmp_path / "cache"
    cache.mkdir()
    folders = [photo, *{os.path.dirname(str(c[1])) for c in cases}]
    before = _snapshot(*folders)
    jobs = [(photo, arguments(ckpt, os.path.join(os.path.dirname(str(ckpt)), "out")))
            for _, ckpt, _, _ in cases]
    results = run_attacks(module, preload, jobs, tmp_path, cache)
    for (label, _, named, message), result in zip(cases, results, strict=True):
        assert_refused(result, rf"{name}: {_escaped(named)}: {message}", f"{label} ({command})")
    assert _snapshot(*folders) == before
    assert not os.path.exists(cache / "converted")


TRAIN = ["--config.checkpoint_every_steps=2", "--config.eval_every_steps=1000",
         "--config.log_every_steps=1000", "--config.image_summary_every_steps=1000",
         "--config.eval_lpips=False", "--config.keep_checkpoints=3"]


def run_process(args, tmp_path, cwd=ROOT):
    """A command in a process of its own: (exit status, stdout, stderr, peak RSS in kB)."""
    env = dict(os.environ, IFAN_JAX_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    code, out, err, peak_mb = child.run([sys.executable, *args], env=env, cwd=cwd, timeout=900)
    return code, out, err, peak_mb * 1024


@pytest.mark.slow
def test_a_training_run_resumes_from_the_newest_intact_step_and_says_so(tmp_path, photo):
    """train.py as the README prints it (configs/tiny.py): a flipped byte in the newest step is
    found when the run restarts, said in one line, the step is moved aside and training resumes
    from the step before; the deblur command refuses the damaged step in one line meanwhile; a
    --workdir that is a file is one line and stays as it was."""
    from ifan_jax.data import testing as data_testing

    data = tmp_path / "data"
    data_testing.write_fake_dataset(data, "dpdd", num={"train": 4, "val": 2}, size=(40, 48))
    workdir = tmp_path / "run"
    train = ["train.py", "--config=configs/tiny.py", f"--workdir={workdir}",
             f"--config.data_dir={data}", *TRAIN]
    code, out, err, _ = run_process([*train, "--config.total_steps=4"], tmp_path)
    assert code == 0, err[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    damaged = _largest_data_file(workdir / "checkpoints" / "4" / "params")
    _flip(damaged, bit=5)

    code, out, err, rss = run_process(["-m", "ifan_jax.inference", f"--ckpt={workdir}",
                                       "photo.png"], tmp_path, cwd=photo)
    assert code == 1 and out == "" and rss < MAX_RSS_KB
    assert err.splitlines() == [f"deblur: {damaged}: damaged (its SHA-256 differs from the one "
                                f"recorded when it was written)"]
    assert sorted(os.listdir(photo)) == ["photo.png"]

    code, out, err, _ = run_process([*train, "--config.total_steps=6"], tmp_path)
    assert code == 0, err[-3000:]
    said = out.splitlines()
    relative = os.path.relpath(damaged, workdir / "checkpoints" / "4")
    assert said[0] == (f"{workdir}/checkpoints/4: {relative} is damaged (its SHA-256 differs "
                       f"from the one recorded when it was written); moved to 4.damaged, "
                       f"resuming from step 2")
    assert said[1] == f"Resuming from {workdir}/checkpoints/2"
    assert err == ""  # nothing else: no orbax logs
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "4.damaged", "6"]
    _, params = checkpoint.load_params(str(workdir))  # the new steps carry their checksums
    assert checkpoint.verify_checksums(str(workdir / "checkpoints" / "4"))

    # --workdir=FILE
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, out, err, rss = run_process(
        ["train.py", "--config=configs/tiny.py", f"--workdir={notes}",
         f"--config.data_dir={data}"], tmp_path)
    assert code == 1 and rss < MAX_RSS_KB
    assert err.splitlines() == [f"train.py: {notes}: is a file, not a folder; --workdir takes a "
                                f"folder (a new one, or one holding a run to resume)"]
    assert notes.read_text() == "mine" and sorted(os.listdir(tmp_path)) == sorted(
        ["cache", "data", "run", "notes.txt"])
    print(f"ATTACK | --workdir=FILE (train.py) | {err.strip()} | {rss / 1024:.0f} MB")
