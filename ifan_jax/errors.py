"""Error messages for people: any exception as one line.

Every user-facing error of ifan-jax is one line naming the file or key and what is wrong; when the
cause is a library's exception (orbax, tensorstore, JAX, pickle, ...), its message goes into that
line through `one_line`.
"""

from __future__ import annotations

import re


def one_line(error: BaseException, *, limit: int = 300, with_type: bool = True) -> str:
    """`error`'s message on one line: whitespace collapsed, prefixed by its type's name (unless
    `with_type` is false), at most `limit` characters; the type's name alone if it has no message."""
    text = re.sub(r"\s+", " ", str(error)).strip()
    if not text:
        return type(error).__name__
    text = f"{type(error).__name__}: {text}" if with_type else text
    return text if len(text) <= limit else text[:limit - 3] + "..."
