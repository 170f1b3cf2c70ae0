"""Atomic file writes: a temporary file in the destination folder, then one rename.

A reader never sees a half-written output, and a failure leaves the previous file (if any) intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The file gets the permissions a plain ``open`` would give (``0o666`` less the umask). Any
    exception removes the temporary file and propagates unchanged.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as stream:
            write(stream)
        os.chmod(temp_name, 0o666 & ~_current_umask())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda stream: stream.write(text), binary=False)


def write_json_and_markdown(stem: Path, payload: Any, markdown: str) -> tuple[Path, Path]:
    """Write ``payload`` as ``stem.json`` (indented) and ``markdown`` as ``stem.md``, each atomically,
    creating the folder; returns the two paths (JSON, Markdown)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    data = write_text_atomic(stem.with_name(stem.name + ".json"), json.dumps(payload, indent=1) + "\n")
    return data, write_text_atomic(stem.with_name(stem.name + ".md"), markdown)


def _current_umask() -> int:
    """The process umask (reading it requires setting it; it is restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
