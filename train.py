"""Train IFAN.

    python train.py --config=configs/ifan.py --workdir=runs/ifan [--config.KEY=VALUE ...]
    python train.py --config=configs/ifan.py:N=26 --workdir=runs/ifan_N26
    python train.py --config=configs/quickstart.py --workdir=runs/quickstart   # CPU, minutes

Restarting with the same --workdir resumes from its latest checkpoint. Progress goes to stdout
and to TensorBoard event files in the workdir (`tensorboard --logdir runs`); --verbosity=1 adds
the libraries' INFO logs (absl, JAX, orbax, TensorFlow).
"""

import os
import sys

from ifan_jax import environment

# Before TensorFlow loads: its oneDNN kernels round differently from run to run, and the data
# stream must be the same after a restart (see ifan_jax/environment.py).
environment.configure_tensorflow()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ifan_jax.config import did_you_mean, load_config  # noqa: E402
from ifan_jax.errors import UserError, one_line  # noqa: E402
from ifan_jax.training import distributed  # noqa: E402
from ifan_jax.training import loop as train_lib  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and the config.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

HELP = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def _user_message(error: BaseException, argv: list[str] | None = None) -> str:
    """One line for a mistake found while parsing the flags or loading the config file: the most
    specific one-line message of the exception chain (absl/ml_collections wrap the config file's
    own error in multi-line reports); an unknown `--config.KEY` names the closest valid key."""
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    lines = [x for x in chain if str(x).strip() and "\n" not in str(x).strip()]
    for x in lines:
        if str(x).startswith("config argument"):  # configs/*.py name the argument
            return str(x)
    if isinstance(chain[-1], KeyError):
        return _unknown_key(str(chain[-1].args[0]), argv or [])
    if lines:
        return str(lines[0]) if isinstance(lines[0], flags.Error) else one_line(lines[-1])
    return one_line(error)


def _unknown_key(key: str, argv: list[str]) -> str:
    """'--config.a.kye: the config has no key 'kye' (did you mean 'key'?)': the override naming
    `key`, and the closest key at its level of the config file that --config names."""
    spec = next((a[len("--config="):] for a in argv[1:] if a.startswith("--config=")), None)
    for arg in argv[1:]:
        path = arg[len("--config."):].split("=", 1)[0].split(".") if arg.startswith(
            "--config.") else []
        if key not in path:
            continue
        hint = ""
        try:
            node = load_config(spec)
            for part in path[:path.index(key)]:
                node = node[part]
            hint = did_you_mean(key, node.keys())
        except Exception:  # noqa: BLE001  (no hint; the message stands without it)
            pass
        return f"--config.{'.'.join(path)}: the config has no key {key!r}{hint}"
    return f"--config: the config has no key {key!r}"


def _missing_config_file(argv: list[str]) -> str | None:
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg[len("--config="):].split(":", 1)[0]
            if not os.path.isfile(path):
                return path
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with every mistake on one line (exit status 2) and --help exiting 0.
    The config file is loaded here, so a missing file or a bad argument of it is reported now."""
    missing = _missing_config_file(argv)
    if missing is not None:
        print(f"train.py: --config: {missing}: no such config file", file=sys.stderr)
        sys.exit(2)
    try:
        rest = FLAGS(argv)
        FLAGS.config.get("distributed")  # the file is loaded lazily: its errors show here
    except SystemExit as e:
        if any(arg.split("=")[0] in HELP for arg in argv[1:]):  # absl exits 1 after the help
            sys.exit(0)
        raise e
    except Exception as e:  # noqa: BLE001  (absl, ml_collections and config files raise anything)
        print(f"train.py: {_user_message(e, argv)}", file=sys.stderr)
        sys.exit(2)
    return rest


def exit_now(status: int) -> None:
    """End the process without the interpreter's final clean-up. Everything is written and
    closed by now (checkpoints waited for, event files closed), and TensorFlow's tf.data iterator
    destructor was seen holding the exit for about a minute after a long run, waiting on its
    autotuning thread. With several processes JAX's shutdown barrier runs first."""
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if jax.process_count() > 1:
        jax.distributed.shutdown()
    os._exit(status)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: unexpected arguments {' '.join(argv[1:])}")
    environment.quiet_libraries(FLAGS.verbosity)
    if FLAGS.verbosity >= 1:  # absl's verbosity 1 is DEBUG; ours: library INFO, 2 and up DEBUG
        logging.set_verbosity(logging.INFO if FLAGS.verbosity == 1 else logging.DEBUG)
    try:
        distributed.maybe_initialize_distributed(FLAGS.config.get("distributed", False))
        environment.hide_gpus_from_tensorflow()
        environment.enable_compilation_cache()  # a restarted run skips compiling the network
        logging.info("JAX process %d / %d, local devices %r", jax.process_index(),
                     jax.process_count(), jax.local_devices())
        train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except UserError as e:  # a mistake a person can fix: one line
        print(f"train.py: {e}", file=sys.stderr)
        exit_now(1)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        # Another process died or the network failed: say so and leave now. (A normal exit would
        # wait for the dead process at JAX's shutdown barrier, then abort with pages of logs.)
        print(f"train.py: process {jax.process_index()} of {jax.process_count()} stopped: lost "
              f"contact with the other processes ({one_line(e)})", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(1)  # (not exit_now: JAX's shutdown would wait for the lost process)
    exit_now(0)


if __name__ == "__main__":
    jax.config.config_with_absl()
    app.run(main, flags_parser=parse_flags)
