"""Training: ``fit`` (the loop over epochs with its hooks) and ``train_step``.

:class:`Trainer` gives :class:`~xpnet.Network` its training verbs, as Keras's
``Trainer`` gives its ``Model`` (the network is the composition; this is its
loop). ``fit`` checks the options, chooses once how each epoch is fed
(:mod:`xpnet.train.feed`: whole arrays on the device, batches streamed from
the host, or split across processes), then runs the epochs: callbacks around
each, the epoch's logs (loss and accuracy from training; ``metrics`` and
validation scores from :mod:`xpnet.train.inference`, with the epoch's final
weights), the progress display and the history. When nothing needs to run
between epochs (no display, validation, metrics or callbacks but
:class:`~xpnet.callbacks.TerminateOnNaN`), a runner that can (JAX) trains
several epochs in one compiled call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..backend import Array, Backend
from ..data import streams
from . import adapter, feed, inference, inputs
from .callbacks import TerminateOnNaN, check_logs
from .history import History
from .progress import Progress

EVALUATION_BATCH = 4096
"""At least this many rows per batch when metrics and validation scores are computed."""


class Trainer:
    """The training verbs of :class:`~xpnet.Network`: :meth:`fit` and :meth:`train_step`."""

    backend: Backend
    history: History
    epoch: int
    stop_training: bool
    communicator: Any
    _classification: bool

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: Any = None,
        validation_split: float = 0.0,
        sample_weight: Any = None,
        class_weight: Any = None,
        metrics: Sequence[Any] | None = None,
        device_data: bool = True,
        distributed: Any = None,
        callbacks: Iterable[Any] = (),
        verbose: int = 1,
        preprocess: str | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``(X, y)`` in mini-batches.

        Parameters
        ----------
        X : array_like, memmap, batch source or iterable of batches
            NumPy, list, pandas or any backend's array (never modified); a
            NumPy memmap or an :mod:`xpnet.data.streams` source, streamed
            from the host; or batches ``(X_b, y_b)`` / ``(X_b, y_b, w_b)``
            re-iterated every epoch (a list, a torch ``DataLoader``, a
            function returning a fresh iterator), with ``y`` left out.
        y : array_like, optional
            ``(samples,)`` or ``(samples, outputs)``; integer labels or one-hot
            for categorical cross-entropy, 0/1 for binary cross-entropy.
        epochs, batch_size : int
            Passes over the data, and samples per optimizer step.
        shuffle : bool
            Reshuffle (with the network's host generator) before each epoch.
        validation_data : (X_val, y_val), batches or batch source, optional
            Evaluated after each epoch as ``val_loss`` (and ``val_accuracy``).
            A memmap ``X_val``, batches ``(X_b, y_b[, w_b])`` or a batch source
            are streamed as ``X`` is (batch weights weigh the loss).
        validation_split : float
            Fraction of rows to validate on instead: the last ``n - floor(n * (1 - s))``
            rows, taken before any shuffling (not with ``validation_data``).
            Arrays and memmaps only: batches and file readers have no rows to
            set aside before training.
        sample_weight : array_like, shape (samples,), optional
            Non-negative weights: each batch's loss is ``sum(w_i * l_i) / sum(w_i)``
            (0, with 0 gradients, for a batch whose rows all weigh 0);
            accuracy judges the rows of non-zero weight. A memmap (read in
            chunks) with a memmap ``X``; batches carry theirs as ``w_b``.
        class_weight : dict or "balanced", optional
            ``{label: weight}`` multiplied into the sample weights (labels not
            named weigh 1); ``"balanced"`` as scikit-learn's. With categorical
            cross-entropy this is torch's ``CrossEntropyLoss(weight=...)``.
            Streamed batches are weighted by their labels as they are read;
            ``"balanced"`` counts the labels first, so it needs arrays or a memmap.
        metrics : list, optional
            Names (``"accuracy"``, ``"precision"``, ``"recall"``, ``"f1"``,
            ``"auc"``, ``"mae"``, ``"mse"``) or callables ``f(y_true, y_pred)``,
            logged per epoch under their names (and ``val_`` ones). They are
            measured on the training rows with the epoch's final weights (no
            dropout, running statistics), unweighted, on the device, and read
            once per epoch; streamed training data are read a second time for
            them (a one-shot iterator cannot be).
        device_data : bool
            False streams in-memory arrays from the host batch by batch, as
            memmaps always are (the next batch is prepared in the background
            while the current one trains), instead of copying them whole to
            the device. The numbers are the same.
        distributed : Communicator, optional
            From :func:`xpnet.distributed.init`: every rank passes the same
            data; each global batch of ``batch_size`` rows is split across
            ranks and the gradients averaged in one allreduce per step, which
            gives the single-process result. The initial weights and the host
            generator come from rank 0; only rank 0 prints and writes
            checkpoints (``ModelCheckpoint``, ``CSVLogger``, :meth:`save`).
            Metrics and validation are scored the same way, each rank on its
            rows, and every rank logs the single-process values.
        callbacks : iterable of Callback
            See :mod:`xpnet.callbacks`. A :class:`~xpnet.callbacks.TerminateOnNaN`
            is added unless one is given.
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        preprocess : {None, "auto", "always"}
            ``"auto"``: a DataFrame with text, categorical, boolean columns or
            gaps is encoded by a fitted :func:`~xpnet.data.encoders.default_encoder`
            (above 1,000 rows robust scaling, smooth clipping, quantile bins;
            one-hot; ``"always"``: every DataFrame), and a regression target is
            standardized, ``predict`` answering in its units. Both are saved
            with the network (see :mod:`xpnet.train.inputs`).

        Returns
        -------
        History
            The epochs of this call. ``net.history`` accumulates every call's
            epochs (and is saved and restored with checkpoints); both keep the
            epoch that stopped training on a non-finite loss.

        Raises
        ------
        FloatingPointError
            When the training loss or a parameter becomes NaN or infinite (names the epoch),
            unless ``TerminateOnNaN(raise_error=False)`` is among the callbacks.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        epochs, batch_size = int(epochs), inputs.positive_int("batch_size", batch_size)
        with self.backend.scope():  # CuPy: every array on the network's device
            self.communicator = comm = feed.check_communicator(distributed)
            inference.metric_list(self, metrics)  # refuse bad names before any work
            train, val = adapter.for_fit(
                self,
                X,
                y,
                device_data=device_data,
                distributed=comm is not None and comm.size > 1,
                preprocess=preprocess,
                sample_weight=sample_weight,
                class_weight=class_weight,
                validation_data=validation_data,
                validation_split=validation_split,
            )
            data = _feed(self, train, batch_size, shuffle, comm, metrics)
            streams.check_epochs(getattr(data, "source", None), epochs)
            streams.check_epochs(getattr(val, "source", None), epochs, "validation_data")
            callbacks = _callbacks(callbacks, comm)
            check_logs(callbacks, val is not None)
            history = History()  # this call's epochs; self.history keeps every call's
            self.stop_training = False
            _call(callbacks, "on_train_begin", self, {})
            quiet = comm is not None and not comm.is_root
            progress = Progress(0 if quiet else verbose, data.steps, epochs, self.epoch)
            # Epochs fuse into one compiled call when nothing needs to run between them.
            fuse = isinstance(data, feed.DeviceFeed) and verbose == 0 and val is None
            fuse = fuse and not metrics and all(type(c) is TerminateOnNaN for c in callbacks)
            done = data.fit_fused(self, epochs, callbacks, (history, self.history)) if fuse else 0
            while done < epochs and not self.stop_training:
                epoch = self.epoch
                _call(callbacks, "on_epoch_begin", self, epoch, {})
                progress.start_epoch(epoch)
                logs = data.epoch(self, progress).logs(self._classification)
                done += 1
                self.epoch += 1
                _score(self, logs, data, val, metrics, batch_size, comm)
                _record(self, history, epoch, logs, progress, callbacks)
            progress.close()
            _call(callbacks, "on_train_end", self, {})
        return history

    def train_step(self, x: Array, y: Array) -> tuple[Array, Array]:
        """One optimizer step on a batch already on the device; returns (loss, correct count)."""
        n = int(x.shape[0])
        result = feed.DeviceFeed(self, x, y, n, False).epoch(self, None)
        return result.total / n, result.correct


def _feed(net: Any, train: adapter.Data, batch_size: int, shuffle: bool, comm: Any, metrics: Any) -> Any:
    """The feed that trains each epoch from what the adapter made of ``X``."""
    if isinstance(train, adapter.InMemory):
        return feed.DeviceFeed(net, train.x, train.t, batch_size, shuffle, train.weight)
    source = train.source
    if metrics and isinstance(source, streams.IterableSource) and not source.reiterable:
        raise ValueError(
            "metrics are measured on a second pass over the training batches after each epoch, and "
            "a one-shot iterator gives one pass: pass a list, a re-iterable such as a torch "
            "DataLoader, or a function returning a fresh iterator"
        )
    return feed.plan(net, source, batch_size=batch_size, shuffle=shuffle, comm=comm, classes=train.classes)


def _score(
    net: Any, logs: dict[str, float], data: Any, val: Any, metrics: Any, batch_size: int, comm: Any
) -> None:
    """Add the epoch's ``metrics`` on the training rows and its validation scores to ``logs``."""
    if not math.isfinite(logs["loss"]):
        return
    size = max(batch_size, EVALUATION_BATCH)
    if metrics:
        if isinstance(data, feed.DeviceFeed):
            train: adapter.Data = adapter.InMemory(data.x, data.t)
        else:
            train = adapter.Streamed(data.source)
        scores = inference.score(net, train, size, inference.metric_list(net, metrics), comm)
        logs.update({k: v for k, v in scores.items() if k not in logs})
    if val is not None:
        scores = inference.score(net, val, size, inference.metric_list(net, metrics), comm)
        logs.update({f"val_{k}": v for k, v in scores.items()})


def _record(
    net: Any, history: History, epoch: int, logs: dict[str, float], progress: Progress, callbacks: list[Any]
) -> None:
    """Log the epoch in both histories and the display, then let the callbacks see (and extend) it."""
    history.append(epoch, logs)
    net.history.append(epoch, logs)
    progress.end_epoch(logs)
    recorded = len(logs)
    _call(callbacks, "on_epoch_end", net, epoch, logs)
    if len(logs) != recorded:
        history.update_last(logs)
        net.history.update_last(logs)


def _callbacks(given: Iterable[Any], comm: Any) -> list[Any]:
    """The callbacks this rank runs, with a :class:`TerminateOnNaN` first unless one is given."""
    callbacks = feed.root_callbacks(list(given), comm)
    if not any(isinstance(c, TerminateOnNaN) for c in callbacks):
        callbacks.insert(0, TerminateOnNaN())
    return callbacks


def _call(callbacks: list[Any], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)
