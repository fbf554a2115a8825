"""Where the images of each data set live on disk, and which files make one example.

Folder layouts, as the official releases unzip under a data root ROOT:

    ROOT/DPDD/{train,val,test}_{c,l,r}/source/*.png   # c: combined, l/r: dual-pixel views
    ROOT/DPDD/{train,val,test}_c/target/*.png         # all-in-focus ground truth
    ROOT/RealDOF/{source,target}/*                    # test only
    ROOT/PixelDP/test_{c,l,r}/source/*                # test only, no ground truth
    ROOT/CUHK/*                                       # test only, inputs only
    ROOT/{train,val,test}/{source,target}/*           # "pairs": your own blurred/sharp pairs

"pairs" is for any blurred (source) / sharp (target) pairs without dual-pixel views; ROOT is the
folder that holds train/, val/ and test/ (a split is needed only when it is used).

An example is the files of the same name (stem) in the folders of one split: the official loader
lists each folder sorted and pairs by position, which is the same pairing when the folders hold the
same names; here files are paired by name, never by position, so a missing file cannot shift the
pairs: `list_split` refuses a name missing from one of the folders, and `pair_split` (evaluation)
sets it aside with the reason and keeps the complete examples. Examples come sorted by the file
name of the combined image, the official order.

This module only lists files (no decoding, no TensorFlow); see `decode` and `pipeline`.
"""

import os
from pathlib import Path
from typing import NamedTuple

from ifan_jax.errors import UserError

DATASETS = ("dpdd", "realdof", "pixeldp", "cuhk", "folder", "pairs")

# Data sets whose images the official evaluation rotates 90 degrees counter-clockwise before the
# network (np.rot90(x, k=1)); callers rotate outputs back with np.rot90(y, k=-1).
ROTATED_DATASETS = frozenset({"pixeldp"})

# Folder name of each data set under the data root, as the official releases unzip.
FOLDER_NAMES = {"dpdd": "DPDD", "realdof": "RealDOF", "pixeldp": "PixelDP", "cuhk": "CUHK"}

# Where each data set is published (docs/reproduce.md lists the mirrors): named in the error for a
# missing set. The zips are the layout the official IFAN code (and this one) reads.
_IFAN = "linked from https://github.com/codeslake/IFAN, README section Datasets"
PUBLISHED = {
    "dpdd": ("https://www.dropbox.com/s/w9urn5m4mzllrwu/DPDD.zip (" + _IFAN + "; the authors' "
             "release: https://github.com/Abdullah-Abuolaim/defocus-deblurring-dual-pixel)"),
    "realdof": f"https://www.dropbox.com/s/arox1aixvg67fw5/RealDOF.zip ({_IFAN})",
    "pixeldp": f"https://www.dropbox.com/s/pw7w2bpp7pc410n/PixelDP.zip ({_IFAN})",
    "cuhk": f"https://www.dropbox.com/s/zxjhzuxsxh4v0cv/CUHK.zip ({_IFAN})",
}


def published(dataset: str) -> str:
    """'; download it from URL (...)' for a published data set, '' for the others."""
    where = PUBLISHED.get(dataset)
    return f"; download it from {where}" if where else ""


SPLITS = {
    "dpdd": ("train", "val", "test"),
    "realdof": ("test",),
    "pixeldp": ("test",),
    "cuhk": ("test",),
    "folder": ("test",),
    "pairs": ("train", "val", "test"),
}

# Images of one example: c = combined (the network input), l/r = dual-pixel left/right views,
# gt = all-in-focus ground truth.
KEYS = {
    "dpdd": ("c", "l", "r", "gt"),
    "realdof": ("c", "gt"),
    "pixeldp": ("c", "l", "r"),
    "cuhk": ("c",),
    "folder": ("c",),
    "pairs": ("c", "gt"),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Image formats that are recognisably images but that the loaders cannot decode: an error, so that
# such a file is never skipped silently.
UNSUPPORTED_EXTENSIONS = (".tif", ".tiff", ".webp", ".heic", ".heif", ".dng", ".cr2", ".nef",
                          ".arw", ".exr", ".ppm", ".pgm")
_IGNORED_NAMES = ("Thumbs.db", "desktop.ini")

DPDD_LAYOUT = "DPDD/{train,val,test}_{c,l,r}/source and DPDD/{split}_c/target"
PAIRS_LAYOUT = "ROOT/{train,val,test}/source (blurred) and ROOT/{train,val,test}/target (sharp)"


class DataError(UserError):
    """A data set on disk is not what the loaders expect; the message names the file or folder."""


def canonical_dataset(dataset: str) -> str:
    """'DPDD', 'RealDOF', ... -> 'dpdd', 'realdof', ...; error for unknown names."""
    name = str(dataset).lower().replace("_", "").replace("-", "")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    return name


def canonical_split(dataset: str, split: str) -> str:
    """The split name as the folders spell it ('validation' -> 'val'); error if the set lacks it."""
    dataset = canonical_dataset(dataset)
    split = {"validation": "val", "eval": "val"}.get(str(split), str(split))
    if split not in SPLITS[dataset]:
        raise DataError(f"dataset {dataset!r} has no split {split!r}; it has {SPLITS[dataset]}")
    return split


def dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """The folder of `dataset` under the data root: ROOT/DPDD, ROOT/RealDOF, ... (for "folder"
    and "pairs", the root itself). `root` may also be that folder itself (e.g. .../DPDD)."""
    dataset = canonical_dataset(dataset)
    root = Path(root).expanduser()
    if dataset in ("folder", "pairs"):
        path = root
    else:
        folder = FOLDER_NAMES[dataset]
        if (root / folder).is_dir():
            path = root / folder
        elif root.name.lower() == folder.lower() and root.is_dir():
            path = root
        else:
            raise DataError(f"missing folder {root / folder} (the {folder} data set is expected "
                            f"there, unzipped under the data root {root}{published(dataset)})")
    if not path.is_dir():
        raise DataError(f"missing folder {path}")
    return path


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("@") or name in _IGNORED_NAMES


def _problem(bad: dict[str, str] | None, name: str, message: str) -> None:
    """Raise `message` as a DataError (bad is None: strict listing), or keep it as the reason
    `name` is set aside (the first reason found stays)."""
    if bad is None:
        raise DataError(message)
    bad.setdefault(name, message)


def image_files(folder: Path, bad: dict[str, str] | None = None) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (hidden files and non-image files such as
    text files are left out; an image in a format the loaders cannot read is an error, or with
    `bad` a reason under its stem)."""
    out = []
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if _is_hidden(entry) or not path.is_file():
            continue
        ext = path.suffix.lower()
        if ext in UNSUPPORTED_EXTENSIONS:
            _problem(bad, path.stem, f"{path}: {ext} images are not supported (convert to PNG)")
        elif ext in IMAGE_EXTENSIONS:
            out.append(path)
    return out


def _named_files(folder: Path, bad: dict[str, str] | None = None) -> dict[str, Path]:
    """{stem: path} of the images in `folder`; error if the folder is missing or empty, or if two
    files share a stem (e.g. a.png and a.jpg; with `bad`: a reason under that stem, and neither
    file is listed)."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}")
    named: dict[str, Path] = {}
    for path in image_files(folder, bad):
        if path.stem in named:
            _problem(bad, path.stem, f"{folder}: two images named {path.stem!r} "
                                     f"({named[path.stem].name} and {path.name})")
        named[path.stem] = path
    if not named:
        raise DataError(f"no images in folder {folder}")
    return {name: path for name, path in named.items() if bad is None or name not in bad}


def _leaf_files(folder: Path, bad: dict[str, str] | None = None) -> dict[str, Path]:
    """{name: path} of the images directly in `folder`, or, when it holds none, of the images in the
    folders below it (the official loader walks every leaf folder); names are then relative paths
    without extension."""
    direct = image_files(folder, bad)
    if direct:
        return _named_files(folder, bad)
    named: dict[str, Path] = {}
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for path in image_files(Path(dirpath), bad):
            name = str(path.relative_to(folder).with_suffix("")).replace(os.sep, "/")
            if name in named:
                _problem(bad, name, f"{folder}: two images named {name!r}")
            named[name] = path
    if not named:
        raise DataError(f"no images in folder {folder} or below it")
    return {name: path for name, path in named.items() if bad is None or name not in bad}


def split_folders(root: str | os.PathLike, dataset: str, split: str) -> dict[str, Path]:
    """{key: folder} holding the images of each key (c, l, r, gt) of one split; DataError naming
    a missing folder."""
    dataset = canonical_dataset(dataset)
    split = canonical_split(dataset, split)
    base = dataset_dir(root, dataset)
    if dataset == "dpdd":
        folders = {
            "c": base / f"{split}_c" / "source",
            "l": base / f"{split}_l" / "source",
            "r": base / f"{split}_r" / "source",
            "gt": base / f"{split}_c" / "target",
        }
        for key, folder in folders.items():
            if not folder.is_dir():
                raise DataError(f"missing folder {folder} (the {key!r} images of DPDD {split}; "
                                f"expected layout {DPDD_LAYOUT}{published(dataset)})")
        return folders
    if dataset == "pairs":
        folders = {"c": base / split / "source", "gt": base / split / "target"}
        for key, folder in folders.items():
            if not folder.is_dir():
                what = "blurred" if key == "c" else "sharp"
                raise DataError(f"missing folder {folder} (the {what} images of the {split} "
                                f"pairs; expected layout {PAIRS_LAYOUT})")
        return folders
    if dataset == "realdof":
        folders = {"c": base / "source", "gt": base / "target"}
    elif dataset == "pixeldp":
        folders = {}
        for key in ("c", "l", "r"):
            view = base / f"test_{key}"
            # The release has test_{c,l,r}/source; a flat test_{c,l,r} is accepted as well.
            folders[key] = view / "source" if (view / "source").is_dir() else view
    else:  # cuhk, folder: inputs only
        return {"c": base}
    for key, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"missing folder {folder} (the {key!r} images of {dataset}"
                            f"{published(dataset)})")
    return folders


class Pairing(NamedTuple):
    """A split's files paired by name (`pair_split`)."""

    examples: list[dict]  # the complete examples, as `list_split` gives them
    names: list[str]  # every name of a combined image, complete or not, in the official order
    bad: dict[str, str]  # name -> why it makes no example (a missing or duplicated file), one line


def _listed(root, dataset: str, split: str, bad: dict[str, dict[str, str]] | None):
    """(dataset, folders, {key: {name: path}}) of one split; with `bad` ({}), the names set aside
    (duplicated, unsupported) are left out of the listing, their reasons in bad[key]."""
    dataset = canonical_dataset(dataset)
    split = canonical_split(dataset, split)
    folders = split_folders(root, dataset, split)
    if bad is not None:
        bad.update({key: {} for key in folders})
    reasons = {key: None if bad is None else bad[key] for key in folders}
    if dataset in ("cuhk", "folder"):
        return dataset, folders, {"c": _leaf_files(folders["c"], reasons["c"])}
    return dataset, folders, {key: _named_files(folder, reasons[key])
                              for key, folder in folders.items()}


def _unpaired(folders: dict, files: dict, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """({name: "in C but not in KEY"}, {name: "in KEY but not in C"}) between the combined
    images' folder and `key`'s."""
    c, other = set(files["c"]), set(files[key])
    return ({n: f"in {folders['c']} but not in {folders[key]}" for n in sorted(c - other)},
            {n: f"in {folders[key]} but not in {folders['c']}" for n in sorted(other - c)})


def _official_order(folders: dict, files: dict, more=()) -> list[str]:
    """The names of the combined images (and `more` names) sorted as the official loader sorts
    their files: by path under the folder (a name without a file by itself)."""
    def key(name):
        return str(files["c"][name].relative_to(folders["c"])) if name in files["c"] else name

    return sorted([*files["c"], *more], key=key)


def list_split(root: str | os.PathLike, dataset: str = "dpdd", split: str = "test") -> list[dict]:
    """The examples of one split: a list of {"name": str, "c": path, ["l", "r", "gt"]: path} (paths
    as str; the keys are `KEYS[dataset]`), sorted by the file name of the combined image.

    Checks the layout only (folders exist, names pair up); `decode.check_examples` reads the image
    headers. Raises DataError naming the folder or file that is wrong.
    """
    dataset, folders, files = _listed(root, dataset, split, None)
    for key in files:
        if key != "c":
            only_c, only_key = _unpaired(folders, files, key)
            names = only_c or only_key
            if names:
                name = next(iter(names))
                more = f" ({len(names) - 1} more such names)" if len(names) > 1 else ""
                raise DataError(f"unpaired image {name!r}: {names[name]}{more}")
    return [{"name": n, **{key: str(files[key][n]) for key in KEYS[dataset]}}
            for n in _official_order(folders, files)]


def pair_split(root: str | os.PathLike, dataset: str = "dpdd", split: str = "test") -> Pairing:
    """`list_split` that sets aside, rather than refuses, each name that makes no example: a file
    missing from one of the folders, two images of one name, an image format the loaders cannot
    read; each with its reason in `Pairing.bad`. A missing or empty folder is still a DataError.
    Pairs are made by name, so a missing file never shifts another name's pair."""
    listing: dict[str, dict[str, str]] = {}
    dataset, folders, files = _listed(root, dataset, split, listing)
    bad = {name: reason for found in listing.values() for name, reason in found.items()}
    for key in files:
        if key != "c":
            for found in _unpaired(folders, files, key):
                for name, reason in found.items():
                    bad.setdefault(name, f"unpaired image: {reason}")
    names = _official_order(folders, files)
    examples = [{"name": n, **{key: str(files[key][n]) for key in KEYS[dataset]}}
                for n in names if n not in bad]
    return Pairing(examples, _official_order(folders, files, listing["c"]),
                   dict(sorted(bad.items())))
