"""TFDS builders for DPDD, RealDOF, PixelDP and CUHK (manual download).

    python -m ifan_jax.data.tfds_builders --dataset=dpdd/8bit --manual_dir=datasets --data_dir=tfds

    import tensorflow_datasets as tfds
    from ifan_jax.data import tfds_builders  # registers dpdd, real_dof, pixel_dp, cuhk
    ds = tfds.load("dpdd/8bit", split="test",
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir="datasets")})

The data sets cannot be downloaded automatically; each builder's MANUAL_DOWNLOAD_INSTRUCTIONS say
where to get the zip and where to unzip it (manual_dir, by default
~/tensorflow_datasets/downloads/manual/). The files are found, paired and checked exactly as
`ifan_jax.data.load_split` does (same layouts, same errors). Images are stored whole and as they
are on disk: PixelDP is not rotated here (load_split rotates it for the network) and nothing is
cropped to a multiple of 8.

Configs: "8bit" (uint8 images; 16-bit PNGs reduced to their high byte as the official 8-bit
loader does) and "16bit" (uint16 images; 8-bit files promoted exactly, v * 257, so that
v / 255 == (v * 257) / 65535). CUHK is JPEG and has "8bit" only.

The command line builds one data set into `--data_dir` (as `tfds build --manual_dir` would; TFDS's
own `tfds build` command imports apache_beam, which these builders do not need and which is not a
requirement of this project: it brings 17 packages and another protobuf than TensorFlow's).
"""

import inspect
import sys

from ifan_jax import environment

if __name__ == "__main__":  # the command: TensorFlow's process set-up before TensorFlow loads
    environment.configure_tensorflow()

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from etils import epath  # noqa: E402

from ifan_jax.data.decode import check_examples, decode_pixels, read_depth
from ifan_jax.data.layouts import KEYS, DataError, list_split
from ifan_jax.errors import ArgumentParser, UserError

_CITATION_IFAN = """@InProceedings{Lee2021IFAN,
  author = {Junyong Lee and Hyeongseok Son and Jaesung Rim and Sunghyun Cho and Seungyong Lee},
  title = {Iterative Filter Adaptive Network for Single Image Defocus Deblurring},
  booktitle = {CVPR},
  year = {2021}
}"""

_CITATION_DPDD = """@InProceedings{Abuolaim2020DPDNet,
  author = {Abdullah Abuolaim and Michael S. Brown},
  title = {Defocus Deblurring Using Dual-Pixel Data},
  booktitle = {ECCV},
  year = {2020}
}"""

_CITATION_CUHK = """@InProceedings{Shi2014Blur,
  author = {Jianping Shi and Li Xu and Jiaya Jia},
  title = {Discriminative Blur Detection Features},
  booktitle = {CVPR},
  year = {2014}
}"""

_IFAN_HOMEPAGE = "https://github.com/codeslake/IFAN"

_BIT_CONFIGS = [
    tfds.core.BuilderConfig(name="8bit", description="uint8 images (16-bit PNGs: high byte)."),
    tfds.core.BuilderConfig(name="16bit", description="uint16 images (8-bit files: v * 257)."),
]

_NAMES = {"c": "combined (dual-pixel sum) defocused input", "l": "left dual-pixel view",
          "r": "right dual-pixel view", "gt": "all-in-focus ground truth"}


def _instructions(folder: str, zip_urls: str, layout: str) -> str:
    return (f"Download {folder}.zip from the official IFAN release ({_IFAN_HOMEPAGE}, section "
            f"Datasets): {zip_urls}\nUnzip it into `manual_dir` (by default "
            f"~/tensorflow_datasets/downloads/manual/) so that this layout exists:\n"
            f"  manual_dir/{layout}\n`manual_dir` may also be the {folder} folder itself.")


class _ManualImageBuilder:
    """What the four builders share: features from KEYS, examples from layouts.list_split."""

    DATASET = ""  # name in ifan_jax.data.layouts
    SPLIT_NAMES: dict[str, str] = {"test": "test"}  # tfds split -> folder split
    DESCRIPTION = ""
    CITATION = _CITATION_IFAN
    HOMEPAGE = _IFAN_HOMEPAGE

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. (tfds' own lookup first tries importlib_resources, which its 4.9 releases
        import without requiring it; the file of the class is what that lookup returns anyway.)"""
        return epath.Path(inspect.getfile(cls))

    def _bits(self) -> int:
        config = getattr(self, "builder_config", None)
        return 16 if config is not None and config.name == "16bit" else 8

    def _info(self):
        dtype = np.uint16 if self._bits() == 16 else np.uint8
        features = {key: tfds.features.Image(shape=(None, None, 3), dtype=dtype,
                                             encoding_format="png", doc=_NAMES[key])
                    for key in KEYS[self.DATASET]}
        features["name"] = tfds.features.Text(doc="file name without extension")
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features), homepage=self.HOMEPAGE,
            citation=self.CITATION)

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        return {name: self._generate_examples(root, split)
                for name, split in self.SPLIT_NAMES.items()}

    def _generate_examples(self, root, split):
        keys = KEYS[self.DATASET]
        bits = self._bits()
        examples = list_split(str(root), self.DATASET, split)
        headers = check_examples(examples, keys, 1, f"{self.DATASET} {split}")
        for example, header in zip(examples, headers, strict=True):
            record = {"name": example["name"]}
            for key in keys:
                h = header[key]
                pixels = decode_pixels(h.path, h.format_code, read_depth(h.bit_depth, bits),
                                       h.orientation, (h.height, h.width))
                if bits == 16 and pixels.dtype == np.uint8:
                    pixels = pixels.astype(np.uint16) * np.uint16(257)
                record[key] = pixels
            yield example["name"], record


class Dpdd(_ManualImageBuilder, tfds.core.GeneratorBasedBuilder):
    """DPDD (Abuolaim & Brown, ECCV 2020): 500 dual-pixel scenes from a Canon EOS 5D Mark IV."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _BIT_CONFIGS
    DEFAULT_BUILDER_CONFIG_NAME = "8bit"
    DATASET = "dpdd"
    SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
    DESCRIPTION = ("Dual-pixel defocus deblurring data set: 350 training, 74 validation and 76 test "
                   "scenes, each a defocused combined image, its left and right dual-pixel views "
                   "and an all-in-focus image taken with a small aperture.")
    CITATION = _CITATION_DPDD
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
        "DPDD", "https://www.dropbox.com/s/w9urn5m4mzllrwu/DPDD.zip?dl=1 (or the OneDrive link)",
        "DPDD/{train,val,test}_{c,l,r}/source/*.png and DPDD/{train,val,test}_c/target/*.png")


class RealDof(_ManualImageBuilder, tfds.core.GeneratorBasedBuilder):
    """RealDOF (Lee et al., CVPR 2021): 50 real defocused / all-in-focus pairs (test only)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _BIT_CONFIGS
    DEFAULT_BUILDER_CONFIG_NAME = "8bit"
    DATASET = "realdof"
    DESCRIPTION = ("Real defocused images with all-in-focus ground truth, captured with a "
                   "dual-camera system; a test set.")
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
        "RealDOF", "https://www.dropbox.com/s/arox1aixvg67fw5/RealDOF.zip?dl=1 (or OneDrive)",
        "RealDOF/source/* and RealDOF/target/*")


class PixelDp(_ManualImageBuilder, tfds.core.GeneratorBasedBuilder):
    """PixelDP: dual-pixel images from a Google Pixel 4, without ground truth (test only)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _BIT_CONFIGS
    DEFAULT_BUILDER_CONFIG_NAME = "8bit"
    DATASET = "pixeldp"
    DESCRIPTION = ("Defocused dual-pixel images (combined, left, right) from a Google Pixel 4, "
                   "without ground truth. Stored as on disk; the official evaluation rotates them "
                   "90 degrees counter-clockwise before the network.")
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
        "PixelDP", "https://www.dropbox.com/s/pw7w2bpp7pc410n/PixelDP.zip?dl=1 (or OneDrive)",
        "PixelDP/test_{c,l,r}/source/*")


class Cuhk(_ManualImageBuilder, tfds.core.GeneratorBasedBuilder):
    """CUHK blur detection (Shi et al., CVPR 2014): 704 defocused internet images, inputs only."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_BIT_CONFIGS[0]]
    DEFAULT_BUILDER_CONFIG_NAME = "8bit"
    DATASET = "cuhk"
    DESCRIPTION = "Defocused internet images without ground truth; a test set."
    CITATION = _CITATION_CUHK
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
        "CUHK", "https://www.dropbox.com/s/zxjhzuxsxh4v0cv/CUHK.zip?dl=1 (or OneDrive)",
        "CUHK/* (the images, or folders of them)")


BUILDERS = {builder.name: builder for builder in (Dpdd, RealDof, PixelDp, Cuhk)}


def build(name: str, manual_dir: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Prepare data set `name` ("dpdd", "dpdd/16bit", "real_dof/8bit", ...) from the unzipped
    release under `manual_dir` into `data_dir` (TFDS's default when None); returns its builder.
    DataError naming the file when the release is incomplete or damaged, or the name unknown."""
    dataset, _, config = name.partition("/")
    if dataset not in BUILDERS:
        raise DataError(f"unknown data set {name!r}; expected one of {sorted(BUILDERS)} "
                         f"(with /8bit or /16bit)")
    configs = [c.name for c in BUILDERS[dataset].BUILDER_CONFIGS]
    if config and config not in configs:
        raise DataError(f"{dataset} has no config {config!r}; it has {configs}")
    cls = BUILDERS[dataset]
    for split in cls.SPLIT_NAMES.values():  # a missing or unpaired release fails before TFDS
        list_split(manual_dir, cls.DATASET, split)  # writes anything
    builder = cls(config=config or None, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python -m ifan_jax.data.tfds_builders", name="tfds_builders",
        description="Build a TFDS data set (dpdd, real_dof, pixel_dp, cuhk; /8bit or /16bit) "
                    "from its unzipped release.")
    parser.add_argument("--dataset", required=True, help="e.g. dpdd/8bit, real_dof/16bit, cuhk")
    parser.add_argument("--manual_dir", required=True,
                        help="folder holding the unzipped release (e.g. datasets, with DPDD/ in it)")
    parser.add_argument("--data_dir", default=None,
                        help="where TFDS writes the prepared set (default ~/tensorflow_datasets)")
    parser.add_argument("--verbosity", default=0, type=int, help="1: library INFO logs")
    args = parser.parse_args(argv)
    environment.quiet_libraries(args.verbosity)
    try:
        builder = build(args.dataset, args.manual_dir, args.data_dir)
    except (UserError, FileNotFoundError) as e:
        print(f"tfds_builders: {e}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name} {info.num_examples}" for name, info in builder.info.splits.items())
    print(f"{builder.data_dir} ({splits})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
