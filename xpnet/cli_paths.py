"""Output paths of the ``xpnet`` command, checked before any work starts.

A command may write only the outputs it was named: never one of its own
inputs (through a symlink or a hard link either), never one output over
another, never a directory; and the place must be writable, so that a long
training never ends in a traceback.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

PROBE_BYTES = 64 * 1024
"""Bytes written (and removed) where each output goes, so a full disk is found before the work."""


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
        _check_regular(option, path)
        for source in sources:
            if _same_file(target, Path(source)):
                raise OutputPathError(f"{option} {path} is the input {source}; writing it would destroy it")
        real = os.path.realpath(target)
        if real in seen:
            raise OutputPathError(f"{option} {path} is also {seen[real]}; give each output its own file")
        seen[real] = option
        _check_writable(option, path, target)


_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(option: str, path: str) -> None:
    """Refuse an existing output that is not a regular file (``/dev/null``, a FIFO): outputs are
    written to a temporary file and renamed over the path, which such a file cannot take."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
    raise OutputPathError(
        f"{option} {path} is {kind}; give a regular file's name (xpnet writes a whole file and renames it)"
    )


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
    try:  # the only sure test: create (and at once remove) a file there, with some bytes in it
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise OutputPathError(f"{option} {path} cannot be written in {existing}: {exc.strerror}") from None
