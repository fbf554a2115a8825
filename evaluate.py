"""Evaluate a checkpoint on DPDD, RealDOF, PixelDP, CUHK or a folder (see ifan_jax/evaluate.py).

    python evaluate.py --ckpt=ckpt/IFAN --data_dir=datasets --dataset=dpdd --output_dir=results/dpdd
    python evaluate.py --ckpt=runs/ifan --which=best --dataset=realdof ... --save_images

Writes OUTPUT_DIR/scores.csv (name,psnr,ssim,mae,lpips,seconds per image) and
OUTPUT_DIR/summary.json (means, parameter count, MACs); --save_images adds OUTPUT_DIR/images/.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string("ckpt", None, "Training workdir or converted official checkpoint directory.")
flags.DEFINE_string("data_dir", "datasets", "Data root (holding DPDD/, RealDOF/, ...), or the "
                    "image folder for --dataset=folder.")
flags.DEFINE_enum("dataset", "dpdd", ["dpdd", "realdof", "pixeldp", "cuhk", "folder"],
                  "Test set.")
flags.DEFINE_string("output_dir", None, "Where scores.csv, summary.json and images/ go.")
flags.DEFINE_bool("save_images", False, "Also write the deblurred images (PNG, input bit depth).")
flags.DEFINE_enum("iac", None, ["separable", "official"], "Override the checkpoint's IAC variant.")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "Checkpoint step of a training workdir.")
flags.DEFINE_string("split", "test", "Split (DPDD also has train and val).")
flags.DEFINE_enum("bit_depth", "auto", ["auto", "8", "16"], "Read 16-bit PNGs at this depth.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N images.")
flags.mark_flags_as_required(["ckpt", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import os

    from ifan_jax import environment

    environment.configure_tensorflow()
    from ifan_jax.checkpoint import CheckpointError
    from ifan_jax.data import DataError
    from ifan_jax.evaluate import EvaluationError, evaluate
    from ifan_jax.image_io import ImageError

    environment.enable_compilation_cache()
    try:
        summary = evaluate(FLAGS.ckpt, FLAGS.data_dir, FLAGS.dataset, FLAGS.output_dir,
                           save_images=FLAGS.save_images, iac_variant=FLAGS.iac, which=FLAGS.which,
                           split=FLAGS.split,
                           bit_depth=None if FLAGS.bit_depth == "auto" else int(FLAGS.bit_depth),
                           limit=FLAGS.limit)
    except (CheckpointError, DataError, EvaluationError, ImageError) as e:
        sys.exit(f"evaluate.py: {e}")
    means = "  ".join(f"{k}={summary[k]:.4f}" for k in ("psnr", "ssim", "mae", "lpips", "seconds")
                      if summary[k] is not None)
    print(f"{summary['dataset']} {summary['split']}: {summary['num_images']} images  {means}")
    print(f"wrote {os.path.join(FLAGS.output_dir, 'scores.csv')} and summary.json")


if __name__ == "__main__":
    app.run(main)
