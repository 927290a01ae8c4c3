"""Content digests of what decides a stored result: files, and the package's own code.

A power or SBC folder records these digests; a folder made from other inputs is refused (or,
with ``--replace-stale``, replaced), never mixed or resumed.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

#: The packages whose source decides a replicate's result (``code_digest``).
CODE_PACKAGES = ("models", "simulations")
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def file_digest(path: Path | str | None) -> str:
    """SHA-256 of a file's contents ("" for no file)."""
    if path is None:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_digest(root: Path = SOURCE_ROOT) -> str:
    """SHA-256 of the package version and of every ``.py`` file of ``CODE_PACKAGES``."""
    digest = hashlib.sha256(metadata.version("cd49d").encode())
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
