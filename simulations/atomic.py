"""Result files written whole or not at all, with the permissions the user's umask gives.

A temporary file in the target's folder is renamed over the target once written, so a killed
run never leaves a partial file. ``tempfile`` creates temporaries readable by their owner only
(mode 0600); they get ``0666 & ~umask`` before the rename, as any other file the user writes,
so that results can be shared in a lab folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask_mode() -> int:
    """The mode a new file gets under the process's umask (``0666 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def replacing(path: Path | str, *, prefix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends
    without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp"
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, umask_mode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(text: str, path: Path | str) -> None:
    """Write text to ``path`` through a temporary file and a rename: never a partial file."""
    with replacing(path) as temporary, open(temporary, "w", encoding="utf-8", newline="") as out:
        out.write(text)
