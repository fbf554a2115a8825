"""Error messages for people: one base class, one argument parser, any exception as one line.

Every user-facing error of ifan-jax is one line naming the file or key and what is wrong:

- `UserError` is the base of every error a person can fix (a bad file, a wrong argument, a
  damaged checkpoint, a full disk). Each module raises its own subclass (`CheckpointError`,
  `ImageError`, `DataError`, ...) and every entry point catches `UserError` and prints
  `PROGRAM: message`, with a non-zero exit status: `report_and_exit`.
- `ArgumentParser` is argparse with a usage mistake as one line, `PROGRAM: error: ... (see
  --help)`, and exit status 2: every command-line tool's parser.
- `one_line` puts a library's exception (orbax, tensorstore, JAX, pickle, ...) into such a line.
"""

from __future__ import annotations

import argparse
import re
import sys


class UserError(ValueError):
    """A mistake a person can fix; its message is one line naming the file or key and what is wrong.

    A ValueError, so code that catches ValueError keeps working; subclasses may add another base
    (`NonFiniteLossError` is also a RuntimeError)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line on stderr, `NAME: error: MESSAGE (see --help)`,
    and exit status 2 (no usage block). `name` is the short program name of the line (`deblur`);
    `prog` stays the command as typed (`python -m ifan_jax.inference`) for --help."""

    def __init__(self, *args, name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name

    def error(self, message):
        self.exit(2, f"{self.name}: error: {message} (see --help)\n")


def report_and_exit(program: str, error: BaseException, status: int = 1):
    """Print `PROGRAM: message` (one line) on stderr and exit with `status`."""
    print(f"{program}: {one_line(error, with_type=not isinstance(error, UserError))}",
          file=sys.stderr, flush=True)
    raise SystemExit(status)


def one_line(error: BaseException, *, limit: int = 300, with_type: bool = True) -> str:
    """`error`'s message on one line: whitespace collapsed, prefixed by its type's name (unless
    `with_type` is false), at most `limit` characters; the type's name alone if it has no message."""
    text = re.sub(r"\s+", " ", str(error)).strip()
    if not text:
        return type(error).__name__
    text = f"{type(error).__name__}: {text}" if with_type else text
    return text if len(text) <= limit else text[:limit - 3] + "..."
