"""Output paths of the ``xpnet`` command, checked before any work starts.

A command may write only the outputs it was named: never one of its own
inputs (through a symlink or a hard link either), never one output over
another, never a directory; and the place must be writable, so that a long
training never ends in a traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


class OutputPathError(ValueError):
    """An output path the command must not or cannot write."""


def check_outputs(outputs: dict[str, str | None], inputs: Iterable[str]) -> None:
    """Raise OutputPathError for the first output that is unsafe or unwritable.

    Parameters
    ----------
    outputs : dict
        Option name (e.g. ``"--out"``) to the path given, or None when absent.
    inputs : iterable of str
        What the command reads; those that are existing files are protected.
    """
    sources = [path for path in inputs if path and os.path.isfile(path)]
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if path == "":
            raise OutputPathError(f"{option} is empty; give a file name")
        target = Path(path)
        if target.is_dir():
            raise OutputPathError(f"{option} {path} is a directory; give a file name inside it")
        for source in sources:
            if _same_file(target, Path(source)):
                raise OutputPathError(f"{option} {path} is the input {source}; writing it would destroy it")
        real = os.path.realpath(target)
        if real in seen:
            raise OutputPathError(f"{option} {path} is also {seen[real]}; give each output its own file")
        seen[real] = option
        _check_writable(option, path, target)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_writable(option: str, path: str, target: Path) -> None:
    folder = Path(os.path.realpath(target)).parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{option} {path} cannot be written: {existing} is a file, not a folder")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"{option} {path} is read-only")
    try:  # the only sure test: create (and at once remove) a file there
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise OutputPathError(f"{option} {path} cannot be written in {existing}: {exc.strerror}") from None
