"""Evaluate a checkpoint on DPDD, RealDOF, PixelDP, CUHK or a folder (see ifan_jax/evaluation/job.py).

    python evaluate.py --ckpt=ckpt/IFAN --data_dir=datasets --dataset=dpdd --output_dir=results/dpdd
    python evaluate.py --ckpt=runs/ifan --which=best --dataset=realdof ... --save_images
    python evaluate.py ... --subsets=indoor=indoor_labels.npy,outdoor=outdoor_labels.npy

Writes OUTPUT_DIR/scores.csv (name,psnr,ssim,mae,lpips,seconds per image) and
OUTPUT_DIR/summary.json (means of the set and of each subset, bit depths, parameter count, MACs);
OUTPUT_DIR/images/ holds the deblurred images (by default only for sets without ground truth).
A pair that cannot be scored (a missing, truncated or corrupt file, images of different sizes) is
one line, `evaluate.py: NAME: reason`, and left out; the others are scored and written, and the
exit status is 1.
"""

import os
import sys

# TensorFlow's C++ log level is read once, when the first of the C++ libraries that share it logs
# (jaxlib, loaded with ifan_jax.environment, is one): set before anything is imported, so that a
# damaged file that fails to decode is our one line and not also a TensorFlow warning.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ifan_jax import environment, image_io  # noqa: E402
from ifan_jax.errors import UserError  # noqa: E402
from ifan_jax.evaluation.job import METRICS, evaluate  # noqa: E402

FLAGS = flags.FLAGS
PROGRAM = "evaluate.py"
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")

flags.DEFINE_string("ckpt", None, "Training workdir or converted official checkpoint directory.")
flags.DEFINE_string("data_dir", "datasets", "Data root (holding DPDD/, RealDOF/, ...), or the "
                    "image folder for --dataset=folder.")
flags.DEFINE_enum("dataset", "dpdd", ["dpdd", "realdof", "pixeldp", "cuhk", "folder"],
                  "Test set.")
flags.DEFINE_string("output_dir", None, "Where scores.csv, summary.json and images/ go.")
flags.DEFINE_bool("save_images", None, "Write the deblurred images to OUTPUT_DIR/images (PNG, "
                  "input bit depth). Default: only for sets without ground truth (PixelDP, CUHK, "
                  "folder), at the input's full size; --nosave_images turns that off.")
flags.DEFINE_string("subsets", None, "NAME=PATH,... subsets whose means are reported beside the "
                    "whole set's: .npy arrays of 1-based indices into the sorted test list "
                    "(Restormer's indoor_labels.npy) or text files of image names, one a line.")
flags.DEFINE_enum("iac", None, ["separable", "official"], "Override the checkpoint's IAC variant.")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "Checkpoint step of a training workdir.")
flags.DEFINE_string("split", "test", "Split (DPDD also has train and val).")
flags.DEFINE_enum("bit_depth", "auto", ["auto", "8", "16"], "Read 16-bit PNGs at this depth "
                  "(auto: the model's training depth when the checkpoint records it, else the "
                  "file's own).")
flags.DEFINE_integer("limit", None, "Evaluate only the first N images.", lower_bound=1)
flags.DEFINE_integer("max_pixels", image_io.MAX_PIXELS, "Refuse images of more pixels (width x "
                     "height, from the header, before decoding).", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace earlier results in OUTPUT_DIR.")
flags.mark_flags_as_required(["ckpt", "output_dir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with --help exiting 0 and a flag mistake one line (exit status 2)."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(__doc__.strip() + "\n\nFlags:\n" + FLAGS.main_module_help())
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"{PROGRAM}: " + "; ".join(str(e).splitlines()), file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"{PROGRAM}: unexpected arguments: {' '.join(argv[1:])} (see --help)")
    environment.quiet_libraries(FLAGS.verbosity)
    environment.configure_tensorflow()  # before ifan_jax.data's pipelines import TensorFlow
    environment.enable_compilation_cache()
    try:
        summary = evaluate(FLAGS.ckpt, FLAGS.data_dir, FLAGS.dataset, FLAGS.output_dir,
                           save_images=FLAGS.save_images, iac_variant=FLAGS.iac, which=FLAGS.which,
                           split=FLAGS.split,
                           bit_depth=None if FLAGS.bit_depth == "auto" else int(FLAGS.bit_depth),
                           limit=FLAGS.limit, subset_files=FLAGS.subsets,
                           overwrite=FLAGS.overwrite, bad_pair=_bad_pair,
                           max_pixels=FLAGS.max_pixels)
    except UserError as e:
        sys.exit(f"{PROGRAM}: {e}")
    except OSError as e:  # the output folder cannot be written
        sys.exit(f"{PROGRAM}: {e.filename or FLAGS.output_dir}: {e.strerror or e}")
    print(f"{summary['dataset']} {summary['split']}: {_line(summary)}")
    for name, means in summary["subsets"].items():
        print(f"  {name}: {_line(means)}")
    written = [os.path.join(FLAGS.output_dir, "scores.csv"), "summary.json"]
    if summary["images"]:
        written.append(f"{summary['num_images']} images in {summary['images']}")
    print("wrote " + ", ".join(written))
    if summary["failed"]:  # each was named on stderr
        print(f"{len(summary['failed'])} pairs left out (damaged or incomplete; see above)")
        sys.exit(1)


def _bad_pair(name: str, reason: str) -> None:
    """`evaluate.py: NAME: reason`, one line on stderr (above the progress bar)."""
    tqdm.write(f"{PROGRAM}: {name}: {reason}", file=sys.stderr)


def _line(means: dict) -> str:
    """"N images  psnr=...  ssim=..." for the means that exist."""
    values = "  ".join(f"{k}={means[k]:.4f}" for k in (*METRICS, "seconds")
                       if means.get(k) is not None)
    return f"{means['num_images']} images  {values}".rstrip()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
