"""The command line of the web page.

    python -m ifan_jax.app --ckpt=ckpt/IFAN [--port=7860]

loads the checkpoint, renders the example photos (once, into a cache folder), and serves the page
on http://127.0.0.1:7860 (`--host=0.0.0.0` to let other machines in; $GRADIO_SERVER_NAME sets
the default, as on Hugging Face Spaces) until Ctrl-C. A checkpoint that cannot be loaded, or a
missing `gradio`, is a one-line error and exit status 1.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile

import jax

from ifan_jax import image_io
from ifan_jax.app import examples as example_photos
from ifan_jax.app.service import Service
from ifan_jax.environment import enable_compilation_cache
from ifan_jax.errors import ArgumentParser, UserError
from ifan_jax.inference import Deblurrer, tiling
from ifan_jax.models import count_params

DEFAULT_PORT = 7860
MAX_QUEUE = 64


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m ifan_jax.app", name="app",
        description="Serve a web page that deblurs uploaded photos with an IFAN checkpoint.")
    p.add_argument("--ckpt", default=None,
                   help="converted checkpoint, training workdir or official .pytorch file "
                        "(required)")
    p.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT),
                   help=f"port to serve on (default {DEFAULT_PORT}, or $GRADIO_SERVER_PORT)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                   help="tile size (0: whole image; default: chosen from the free memory)")
    p.add_argument("--overlap", type=int, default=tiling.DEFAULT_OVERLAP, metavar="PIXELS",
                   help=f"overlap of neighbouring tiles (default {tiling.DEFAULT_OVERLAP})")
    p.add_argument("--which", choices=("latest", "best"), default="latest",
                   help="checkpoint step of a training workdir (default latest)")
    p.add_argument("--examples_dir", default=None,
                   help="cache folder for the example photos (default $IFAN_JAX_CACHE/"
                        "app_examples, or ~/.cache/ifan_jax/app_examples)")
    p.add_argument("--max_pixels", type=int, default=image_io.MAX_PIXELS, metavar="N",
                   help=f"refuse uploads of more than N pixels, from their header, before "
                        f"decoding (default {image_io.MAX_PIXELS:,})")
    p.add_argument("--max_queue", type=int, default=MAX_QUEUE,
                   help=f"requests that may wait in the queue (default {MAX_QUEUE})")
    args = p.parse_args(argv)
    if not args.ckpt:
        p.error("--ckpt=PATH is required: a converted checkpoint, a training workdir or an "
                "official .pytorch file (e.g. --ckpt=IFAN.pytorch)")
    try:
        tiling.check_tile(args.tile or 0, args.overlap, flags=True)
    except tiling.TileError as e:
        p.error(str(e))
    if args.max_pixels < 1:
        p.error(f"--max_pixels must be a number of pixels >= 1, got {args.max_pixels}")
    if args.max_queue < 1:
        p.error("--max_queue must be >= 1")
    return args


def describe(deblurrer: Deblurrer, ckpt: str) -> str:
    """One Markdown line naming the model (name, N, parameters) and the device it runs on."""
    name = os.path.splitext(os.path.basename(os.path.normpath(ckpt)))[0]
    config = deblurrer.model_config
    device = jax.local_devices()[0]
    kind = "CPU" if device.platform == "cpu" else f"{device.device_kind} ({device.platform.upper()})"
    return (f"Model **{name}**: IFAN, N = {config.get('num_iterations')}, "
            f"{count_params(deblurrer.params):,} parameters, {config.get('iac_variant', 'official')} IAC. "
            f"Device: **{kind}**. Photos are deblurred one at a time at full resolution; "
            f"others wait in a queue.")


# Blocks of at least this many bytes are mapped and unmapped on their own (glibc mallopt
# M_MMAP_THRESHOLD), not carved from a heap.
MMAP_THRESHOLD = 4 << 20


def return_large_blocks_to_the_os() -> bool:
    """Make glibc map every block of MMAP_THRESHOLD bytes or more on its own, so that freeing it
    gives it back at once. Requests run on a worker thread, whose malloc arena otherwise keeps the
    freed tiles and images of a large photo (glibc's dynamic threshold rises to 32 MB after the
    first such block is freed) and the server's resident memory creeps up tile by tile. False where
    there is no glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio on import: no telemetry
    try:
        from ifan_jax.app import page  # gradio: an optional extra
    except ImportError as e:
        print(f"app: needs gradio ({e}): pip install \".[app]\"", file=sys.stderr)
        return 1
    try:  # before the slow start-up: is the port free?
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as e:
        print(f"app: cannot listen on {args.host}:{args.port} ({e.strerror or e}); choose another "
              f"--port", file=sys.stderr)
        return 1
    enable_compilation_cache()
    return_large_blocks_to_the_os()
    try:
        deblurrer = Deblurrer.from_checkpoint(args.ckpt, which=args.which)
    except (UserError, OSError) as e:
        print(f"app: {e}", file=sys.stderr)
        return 1
    if deblurrer.needs_dual_pixel:
        print(f"app: {args.ckpt}: a dual-pixel-input model needs left/right views; the page "
              f"takes single photos", file=sys.stderr)
        return 1
    try:
        examples = example_photos.ensure_examples(args.examples_dir)
    except (OSError, ValueError) as e:
        print(f"app: no example photos ({e})", file=sys.stderr)
        examples = []
    workdir = tempfile.mkdtemp(prefix="ifan_jax_app_")
    # SIGTERM ends the server like Ctrl-C (Gradio closes it), and the request folders are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        service = Service(deblurrer, workdir, tile=args.tile, overlap=args.overlap,
                          max_pixels=args.max_pixels)
        demo = page.build(service, examples, describe(deblurrer, args.ckpt))
        allowed = [workdir] + ([os.path.dirname(examples[0][0])] if examples else [])
        page.launch(demo, args.host, args.port, args.max_queue, allowed)
    except OSError as e:  # e.g. the port is taken
        print(f"app: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run(argv=None) -> int:
    """`main`, with Ctrl-C ending the server quietly."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return 0
