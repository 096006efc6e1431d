"""Training progress: a tqdm bar per epoch, one line per epoch, or silence.

Reading the running loss means waiting for the device, so the bar reads it
only when it redraws (a few times a second), never once per step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

_REFRESH_SECONDS = 0.3


def format_logs(logs: dict[str, float]) -> str:
    """``loss: 0.1234 - accuracy: 0.950`` style text for a dict of metrics."""
    parts = []
    for key, value in logs.items():
        digits = 3 if "accuracy" in key else 4
        parts.append(f"{key}: {value:.{digits}f}")
    return " - ".join(parts)


class Progress:
    """Reports training progress for ``Network.fit``.

    Parameters
    ----------
    verbose : {0, 1, 2}
        0 silent; 1 a progress bar per epoch (tqdm in a terminal or notebook,
        one line per epoch when the output is not a terminal or tqdm is
        missing); 2 one line per epoch.
    steps : int
        Optimizer steps per epoch.
    epochs : int
        Epochs in this call of ``fit``.
    first_epoch : int
        Index of the first epoch (non-zero when training resumes).
    file : text stream, optional
        Where to write; standard error by default, as tqdm does.
    """

    def __init__(
        self,
        verbose: int,
        steps: int,
        epochs: int,
        first_epoch: int = 0,
        file: TextIO | None = None,
    ) -> None:
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        self.verbose = verbose
        self.steps = steps
        self.last_epoch = first_epoch + epochs
        self.file = file if file is not None else sys.stderr
        self._tqdm: Any = None
        if verbose == 1:
            self._tqdm = _tqdm_class(self.file)
        self._bar: Any = None
        self._next_refresh = 0.0
        self._started = 0.0

    @property
    def active(self) -> bool:
        """Whether a bar is drawing (and so wants :meth:`step` calls)."""
        return self._bar is not None

    def start_epoch(self, epoch: int) -> None:
        """Begin an epoch (0-based index)."""
        self._epoch = epoch
        self._started = time.perf_counter()
        if self._tqdm is not None:
            self._bar = self._tqdm(
                total=self.steps,
                desc=f"Epoch {epoch + 1}/{self.last_epoch}",
                unit="step",
                file=self.file,
                leave=True,
                dynamic_ncols=True,
            )
            self._next_refresh = self._started + _REFRESH_SECONDS

    def step(self, done: int, read_logs: Callable[[], dict[str, float]]) -> None:
        """Report ``done`` steps; ``read_logs`` is called only when the bar redraws."""
        if self._bar is None:
            return
        self._bar.update(done - self._bar.n)
        now = time.perf_counter()
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_SECONDS
            self._bar.set_postfix_str(format_logs(read_logs()), refresh=True)

    def end_epoch(self, logs: dict[str, float]) -> None:
        """Finish an epoch with its final metrics."""
        if self.verbose == 0:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs), refresh=False)
            self._bar.close()
            self._bar = None
            return
        seconds = time.perf_counter() - self._started
        took = f"{seconds:.2f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
        print(
            f"Epoch {self._epoch + 1}/{self.last_epoch} - {took} - {format_logs(logs)}",
            file=self.file,
            flush=True,
        )

    def close(self) -> None:
        """Close an open bar (after an interrupted epoch)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _tqdm_class(file: TextIO) -> Any:
    """tqdm's notebook-aware class, or None where a bar would not render."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    in_notebook = "ipykernel" in sys.modules
    if not in_notebook and not (hasattr(file, "isatty") and file.isatty()):
        return None
    return tqdm
