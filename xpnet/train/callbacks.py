"""Callbacks: hooks that ``Network.fit`` calls around epochs, in Keras's vocabulary.

A callback subclasses :class:`Callback` and overrides any of
``on_train_begin(net, logs)``, ``on_epoch_begin(net, epoch, logs)``,
``on_epoch_end(net, epoch, logs)`` and ``on_train_end(net, logs)``. ``epoch``
counts from 0 across ``fit`` calls; ``logs`` holds the epoch's metrics
(``loss``, ``accuracy``, ``val_loss``, ...) and a callback may add to it.
Setting ``net.stop_training = True`` ends ``fit`` after the current epoch.

This module sees a network only through its public attributes, so it never
imports ``network.py``.
"""

from __future__ import annotations

import csv
import inspect
import math
import string
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint
from ..backend import numpy_kernels as kernels


class Callback:
    """Base class; every hook does nothing."""

    def on_train_begin(self, net: Any, logs: dict[str, float]) -> None:
        """Called once when ``fit`` starts."""

    def on_epoch_begin(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        """Called before each epoch."""

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch with its metrics."""

    def on_train_end(self, net: Any, logs: dict[str, float]) -> None:
        """Called once when ``fit`` ends (not when it raises)."""


def parameters_finite(net: Any) -> bool:
    """Whether every parameter of ``net`` is finite (one device read for all of them)."""
    arrays = [p for layer in net.layers for p in layer.params.values()]
    engine = getattr(net, "_engine", None)
    if engine is None:  # a network-like object of the user's
        return kernels.all_finite(arrays, net.backend.xp)
    return engine().finite(arrays)  # type: ignore[no-any-return]


class TerminateOnNaN(Callback):
    """Stop when the training loss or a parameter becomes NaN or infinite (on in every ``fit``).

    The parameters are checked at the end of every epoch too, so weights that
    blow up in an epoch's last steps, after its loss was computed, stop the
    run as a non-finite loss does.

    Parameters
    ----------
    raise_error : bool
        Raise :class:`FloatingPointError` naming the epoch (the default), or
        stop quietly. Either way ``net.history`` keeps every epoch up to it.
    """

    def __init__(self, raise_error: bool = True) -> None:
        self.raise_error = raise_error

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        loss = logs.get("loss", 0.0)
        if not math.isfinite(loss):
            what, detail = f"the training loss became {loss}", ""
        elif not parameters_finite(net):
            what, detail = "the network's parameters became NaN or infinite", " (its loss was still finite)"
        else:
            return
        net.stop_training = True
        if self.raise_error:
            raise FloatingPointError(
                f"{what} in epoch {epoch + 1}{detail}; training stopped "
                "(network.history holds every epoch up to it). Try a smaller learning rate "
                "or check the scale of the data."
            )


_MAXIMIZED = ("accuracy", "precision", "recall", "f1", "auc")
"""Metrics where larger is better: ``mode="auto"`` maximizes them (with or without ``val_``)."""


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        key = monitor.removeprefix("val_")
        return "max" if "accuracy" in monitor or key in _MAXIMIZED else "min"
    return mode


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_logs(callbacks: list[Any], validating: bool) -> None:
    """ValueError, before training starts, for a callback that needs ``val_`` logs from a ``fit``
    without validation data (each says what it needs through ``needed_logs()``).

    Only while every callback before it is one of this module's, which add no
    ``val_`` logs: a user's callback may compute them itself.
    """
    if validating:
        return
    for callback in callbacks:
        if type(callback).__module__ != __name__:
            return
        needed = getattr(callback, "needed_logs", None)
        missing = [key for key in (needed() if needed is not None else []) if key.startswith("val_")]
        if missing:
            raise ValueError(
                f"{callback.describe_need(missing)}, which fit does not log (pass validation_data or "
                "validation_split to fit: this one has no validation data; nothing was trained)"
            )


def _monitored(monitor: str, logs: dict[str, float], owner: str) -> float:
    if monitor not in logs:
        hint = " (pass validation_data to fit)" if monitor.startswith("val_") else ""
        raise ValueError(
            f"{owner} monitors {monitor!r}, which fit does not log{hint}; logged: {sorted(logs)}"
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when a monitored metric has stopped improving.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``"val_loss"`` or ``"val_accuracy"``.
    patience : int
        Epochs without improvement to wait before stopping.
    min_delta : float
        The least change that counts as an improvement.
    restore_best_weights : bool
        At the end of training, put back the weights of the best epoch.
    mode : {"auto", "min", "max"}
        Whether smaller or larger is better; ``"auto"`` maximizes accuracies.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        mode: str = "auto",
    ) -> None:
        _count("patience", patience)
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.mode = _monitor_mode(monitor, mode)
        self.stopped_epoch: int | None = None

    def needed_logs(self) -> list[str]:
        """The log keys this callback reads (see :func:`check_logs`)."""
        return [self.monitor]

    def describe_need(self, missing: list[str]) -> str:
        return f"{type(self).__name__} monitors {self.monitor!r}"

    def on_train_begin(self, net: Any, logs: dict[str, float]) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[Any] | None = None
        self.stopped_epoch = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        value = _monitored(self.monitor, logs, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = net.get_weights()
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            net.stop_training = True

    def on_train_end(self, net: Any, logs: dict[str, float]) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            net.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the network after each epoch (or only when the monitored metric improves).

    Writes are atomic: a temporary file in the same folder is renamed over
    ``path``, so a crash never leaves a half-written checkpoint (see
    :func:`xpnet.checkpoint.atomic_write_bytes`). An epoch whose loss, or any
    of whose parameters or optimizer state, is NaN or infinite is never
    saved (a RuntimeWarning says so), whatever the order of the callbacks:
    the last good checkpoint stays.

    Parameters
    ----------
    path : str or Path
        Target file; may hold ``{epoch}`` (1-based) and log keys, e.g.
        ``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``.
    monitor, mode : str
        As in :class:`EarlyStopping`; used with ``save_best_only``.
    save_best_only : bool
        Save only when ``monitor`` improves on the best value so far.
    """

    def __init__(
        self,
        path: str | Path,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        self.path = str(path)
        self.fields = _template_fields(self.path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _monitor_mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []

    def needed_logs(self) -> list[str]:
        """The log keys this callback reads: its path's fields, and ``monitor`` with ``save_best_only``."""
        fields = [f for f in self.fields if f != "epoch"]
        return [*fields, self.monitor] if self.save_best_only else fields

    def describe_need(self, missing: list[str]) -> str:
        named = [f for f in missing if f in self.fields]
        if named:
            return f"ModelCheckpoint path {self.path!r} names {named}"
        return f"ModelCheckpoint(save_best_only=True) monitors {self.monitor!r}"

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        target = self._target(epoch, logs)
        if not math.isfinite(logs.get("loss", 0.0)):
            self._skip(epoch, "its training loss is not finite")
            return
        if self.save_best_only:
            value = _monitored(self.monitor, logs, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
        tensors, metadata = net.state()
        if not all(bool(np.all(np.isfinite(t))) for t in tensors.values() if t.dtype.kind == "f"):
            self._skip(epoch, "its parameters or optimizer state are not finite")
            return
        checkpoint.write(target, tensors, metadata)
        if self.save_best_only:
            self.best = value
        self.saved.append(target)

    def _target(self, epoch: int, logs: dict[str, float]) -> str:
        missing = [f for f in self.fields if f != "epoch" and f not in logs]
        if missing:
            hint = " (pass validation_data to fit)" if any(f.startswith("val_") for f in missing) else ""
            raise ValueError(
                f"ModelCheckpoint path {self.path!r} names {missing}, which fit does not log{hint}; "
                f"logged: {sorted(logs)}"
            )
        try:
            return self.path.format(epoch=epoch + 1, **logs)
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"ModelCheckpoint path {self.path!r} cannot be formatted: {exc}") from None

    def _skip(self, epoch: int, why: str) -> None:
        warnings.warn(
            f"ModelCheckpoint did not save epoch {epoch + 1}: {why}; the last good checkpoint stays",
            RuntimeWarning,
            stacklevel=3,
        )


def _template_fields(path: str) -> list[str]:
    """The names a ``str.format`` template uses (ValueError for a malformed one or positional fields)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(path) if field is not None]
    except ValueError as exc:
        raise ValueError(f"ModelCheckpoint path {path!r} is not a valid template: {exc}") from None
    names = [field.split(".")[0].split("[")[0] for field in fields]
    if any(not name or name.isdigit() for name in names):
        raise ValueError(
            f"ModelCheckpoint path {path!r} has a positional field; "
            "name it, e.g. {epoch} or {val_loss:.3f}"
        )
    return names


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch from ``schedule(epoch)``.

    ``schedule`` takes the 0-based epoch (and, if it accepts two arguments,
    the current learning rate) and returns the new rate; see
    :func:`step_decay`, :func:`exponential_decay` and :func:`cosine_decay`.
    The rate used is logged as ``"lr"``.
    """

    def __init__(self, schedule: Callable[..., float]) -> None:
        if not callable(schedule):
            raise ValueError(f"LearningRateScheduler needs a function of the epoch, got {schedule!r}")
        self.schedule = schedule
        self.arguments = _schedule_arguments(schedule)

    def on_epoch_begin(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        current = net.optimizer.learning_rate
        if self.arguments == 2:
            rate = self.schedule(epoch, current)
        elif self.arguments == 1:
            rate = self.schedule(epoch)
        else:  # no signature to read (some builtins): try both forms
            try:
                rate = self.schedule(epoch, current)
            except TypeError:
                rate = self.schedule(epoch)
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"the schedule returned {rate!r} for epoch {epoch}; expected a number") from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"the schedule gave learning rate {rate} for epoch {epoch}")
        net.optimizer.learning_rate = rate

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        logs["lr"] = net.optimizer.learning_rate


def _schedule_arguments(schedule: Callable[..., float]) -> int | None:
    """2 if ``schedule`` takes (epoch, rate), 1 if (epoch), None if its signature is unknown.

    Decided once, so a TypeError raised inside the schedule is the user's to
    see, not taken for a wrong number of arguments.
    """
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    for count in (2, 1):
        try:
            signature.bind(*range(count))
        except TypeError:
            continue
        return count
    raise ValueError(
        f"the schedule {schedule!r} must take the epoch, or the epoch and the current learning rate"
    )


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a monitored metric stops improving (Keras's rules).

    At the end of each epoch: while in cooldown, the cooldown counter drops
    by one and the wait restarts; an improvement (by more than
    ``min_delta``) becomes the best value and restarts the wait; otherwise,
    out of cooldown, the wait grows, and when it reaches ``patience`` the
    rate becomes ``max(rate * factor, min_lr)`` (unless it is already at
    ``min_lr``), the wait restarts and ``cooldown`` epochs of cooldown begin.
    The epoch where the cooldown ends already counts towards the wait, as in
    Keras. The rate used during the epoch is logged as ``"lr"``. Counters
    restart at the beginning of each ``fit``.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``"val_loss"`` or ``"val_auc"``.
    factor : float
        In ``(0, 1)``: ``new_lr = lr * factor``.
    patience : int
        Epochs without improvement before the rate is reduced.
    min_delta : float
        The least change that counts as an improvement.
    cooldown : int
        Epochs after a reduction during which no wait is counted.
    min_lr : float
        The rate is never reduced below this.
    mode : {"auto", "min", "max"}
        Whether smaller or larger is better; ``"auto"`` maximizes accuracy,
        precision, recall, f1 and auc.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1) so that the rate shrinks, got {factor!r}")
        if not min_delta >= 0 or not min_lr >= 0:
            raise ValueError(f"min_delta and min_lr must be >= 0, got {min_delta!r} and {min_lr!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = _count("patience", patience)
        self.min_delta = float(min_delta)
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = float(min_lr)
        self.mode = _monitor_mode(monitor, mode)
        self.on_train_begin(None, {})

    def needed_logs(self) -> list[str]:
        """The log keys this callback reads (see :func:`check_logs`)."""
        return [self.monitor]

    def describe_need(self, missing: list[str]) -> str:
        return f"ReduceLROnPlateau monitors {self.monitor!r}"

    def on_train_begin(self, net: Any, logs: dict[str, float]) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        logs["lr"] = net.optimizer.learning_rate
        value = _monitored(self.monitor, logs, "ReduceLROnPlateau")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and net.optimizer.learning_rate > self.min_lr:
                net.optimizer.learning_rate = max(net.optimizer.learning_rate * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0


class CSVLogger(Callback):
    """Append one CSV row of metrics per epoch to ``path`` (flushed every epoch).

    Parameters
    ----------
    path : str or Path
        The CSV file; its header is ``epoch`` and the metric names.
    append : bool
        Keep existing rows (for resumed training) instead of starting afresh.
    """

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self._keys: list[str] | None = None

    def on_train_begin(self, net: Any, logs: dict[str, float]) -> None:
        self._keys = None
        if not self.append and self.path.exists():
            self.path.unlink()

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if self._keys is None:
            self._keys = list(logs)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["epoch", *self._keys])
            writer.writerow([epoch + 1, *(logs.get(k, "") for k in self._keys)])
