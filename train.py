"""Train IFAN.

    python train.py --config=configs/ifan.py --workdir=runs/ifan [--config.KEY=VALUE ...]
    python train.py --config=configs/ifan.py:N=26 --workdir=runs/ifan_N26
    python train.py --config=configs/quickstart.py --workdir=runs/quickstart   # CPU, minutes

Restarting with the same --workdir resumes from its latest checkpoint. Progress goes to stdout
and to TensorBoard event files in the workdir (`tensorboard --logdir runs`).
"""

import logging as pylogging
import sys

from ifan_jax import environment

# Before TensorFlow loads: its oneDNN kernels round differently from run to run, and the data
# stream must be the same after a restart (see ifan_jax/environment.py).
environment.configure_tensorflow()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from clu import platform  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ifan_jax import checkpoint  # noqa: E402
from ifan_jax import train as train_lib  # noqa: E402
from ifan_jax.data import DataError  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and the config.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
    """Drop INFO records of orbax (it logs every phase of every checkpoint save)."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    # Readable progress lines on stdout, without orbax's step-by-step INFO records.
    handler = logging.get_absl_handler()
    handler.python_handler.stream = sys.stdout
    handler.addFilter(_QuietLibraries())
    environment.hide_gpus_from_tensorflow()
    environment.enable_compilation_cache()  # a restarted run skips compiling the network again
    config = FLAGS.config
    try:
        train_lib.maybe_initialize_distributed(config)
        logging.info("JAX process: %d / %d", jax.process_index(), jax.process_count())
        logging.info("JAX local devices: %r", jax.local_devices())
        platform.work_unit().set_task_status(
            f"process_index: {jax.process_index()}, process_count: {jax.process_count()}")
        platform.work_unit().create_artifact(platform.ArtifactType.DIRECTORY, FLAGS.workdir, "workdir")
        train_lib.train_and_evaluate(config, FLAGS.workdir)
    except (train_lib.ConfigError, train_lib.NonFiniteLossError, checkpoint.CheckpointError,
            DataError) as e:
        sys.exit(f"train.py: {e}")


if __name__ == "__main__":
    jax.config.config_with_absl()
    app.run(main)
