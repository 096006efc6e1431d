"""``Network``: a stack of layers with a loss and an optimizer, trained by ``fit``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .. import checkpoint
from ..backend import Array, Backend, get_backend, to_numpy
from ..backend.compile import Epoch
from ..nn.activations import get_activation
from ..nn.layers import Layer
from ..nn.losses import CategoricalCrossentropy, Loss, get_loss
from ..nn.metrics import Metric, correct_count, get_metric, prediction_count
from ..optim.clipping import gradient_transform
from ..optim.optimizers import Optimizer, get_optimizer
from . import feed, inputs, serialize, step, weighting
from .callbacks import TerminateOnNaN
from .history import History
from .progress import Progress
from .summary import summary_text


class Network:
    """A feed-forward network: layers, a loss and an optimizer on one backend.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order. The first layer's ``in_features`` may be left out;
        it is then inferred from the data on first use.
    loss : str or Loss
        ``"mse"``, ``"binary_crossentropy"`` (``"logloss"``) or
        ``"categorical_crossentropy"`` (``"cross_entropy"``). A final sigmoid
        (softmax) fuses with binary (categorical) cross-entropy; after any
        other final activation the outputs are taken as logits.
    optimizer : str or Optimizer
        ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` (with default
        hyper-parameters) or an optimizer object.
    backend : str or Backend, optional
        See :func:`xpnet.get_backend`; ``None`` reads ``$XPNET_BACKEND``, else auto.
    device : object, optional
        Backend-specific device (``"cuda:0"``, ``0``, ``"device1"``, ...).
    dtype : {"float32", "float64"}
        Floating dtype of parameters and computations.
    seed : int, optional
        Seeds the host generator that draws initial weights, shuffling order
        and dropout masks; the same seed gives the same run on every backend.
        ``None`` draws fresh entropy.
    compile : bool or None
        How ``fit`` runs the training step: None the backend's best (JAX: a
        compiled epoch; NumPy, torch, CuPy: eager with in-place updates),
        False plain eager code with pure updates (for debugging). Both give
        the same numbers to rounding. A runtime choice: not saved.

    Examples
    --------
    >>> import xpnet as xn
    >>> net = xn.Network([xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
    ...                  loss="logloss", optimizer=xn.SGD(0.5), backend="numpy", seed=0)
    >>> history = net.fit([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0],
    ...                   epochs=5, batch_size=4, verbose=0)
    >>> len(history.history["loss"])
    5
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        loss: str | Loss = "mse",
        optimizer: str | Optimizer = "sgd",
        backend: str | Backend | None = None,
        device: Any = None,
        dtype: str = "float32",
        seed: int | None = None,
        compile: bool | None = None,
    ) -> None:
        layers = list(layers) if not isinstance(layers, Layer) else [layers]
        if not layers:
            raise ValueError("a Network needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Network layers must be xpnet Layer objects, got {layer!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.layers: list[Layer] = layers
        self.loss: Loss = get_loss(loss)
        self.optimizer: Optimizer = get_optimizer(optimizer)
        self.backend: Backend = get_backend(backend, device)
        self.dtype = dtype
        self.backend.dtype(dtype)
        self.seed = seed
        self.rng = np.random.default_rng(inputs.seed(seed))
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        self.input_scaling: dict[str, Any] | None = None
        """``{"mean": [...], "scale": [...]}`` applied to every input as ``(x - mean) / scale``."""
        self.metadata: dict[str, Any] = {}
        """JSON-able facts saved with the network; the keys ``feature_names``, ``encoder``,
        ``target_scaling`` and ``classes`` change what it does (see :mod:`xpnet.train.inputs`)."""
        self._classification = self.loss.classification
        self.compile = compile
        self._runners: dict[Any, Any] = {}
        self.communicator: Any = None
        """The ``distributed=`` communicator of the last ``fit`` (only its rank 0 saves)."""
        if self.layers[0].in_features is not None:
            self.build(self.layers[0].in_features)

    # -- structure -----------------------------------------------------------------

    @property
    def in_features(self) -> int | None:
        """Number of input features, or None before the network is built."""
        return self.layers[0].in_features if self.built else None

    @property
    def built(self) -> bool:
        """Whether every layer has its parameters."""
        return all(layer.built for layer in self.layers)

    @property
    def out_features(self) -> int:
        """Number of outputs (the last layer's units)."""
        n: Any = self.layers[0].in_features
        for layer in self.layers:
            n = layer.output_features(n)
        if n is None:
            raise ValueError("the network's output size is unknown before it is built")
        return n

    def build(self, in_features: int) -> None:
        """Create every layer's parameters for ``in_features`` inputs (seeded)."""
        n = inputs.positive_int("in_features", in_features)
        inputs.check_size([layer for layer in self.layers if not layer.built], n, self.dtype)
        for layer in self.layers:
            if not layer.built:
                layer.build(n, self.backend, self.dtype, self.rng)
            elif layer.in_features != n:
                raise ValueError(f"{layer!r} expects {layer.in_features} input features, but gets {n}")
            n = layer.output_features(n)

    def _model(self) -> step.Model:
        transform = gradient_transform(self.optimizer.clip_norm, self.optimizer.clip_value)
        return step.Model(tuple(self.layers), self.loss, self.optimizer, transform=transform)

    def parameter_count(self) -> int:
        """Total number of trainable scalars."""
        return sum(math.prod(p.shape) for layer in self.layers for p in layer.params.values())

    def get_weights(self) -> list[np.ndarray]:
        """All parameters as NumPy arrays, layer by layer (weight before bias)."""
        return [to_numpy(p).copy() for layer in self.layers for p in layer.params.values()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assign parameters in the order of :meth:`get_weights` (shapes must match)."""
        slots = [(layer, name) for layer in self.layers for name in layer.params]
        if len(weights) != len(slots):
            raise ValueError(f"expected {len(slots)} weight arrays, got {len(weights)}")
        for (layer, name), value in zip(slots, weights):
            current = layer.params[name]
            shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
            if shape != tuple(current.shape):
                raise ValueError(
                    f"{type(layer).__name__} {name} must have shape {tuple(current.shape)}, got {shape}"
                )
            layer.params[name] = self.backend.asarray(value, self.dtype, copy=True)

    def to(self, backend: str | Backend, device: Any = None) -> Network:
        """Move parameters and optimizer state to another backend or device; returns self."""
        target = get_backend(backend, device)
        target.dtype(self.dtype)
        for layer in self.layers:
            if layer.built:
                layer.to(target)
        self.optimizer.to(target)
        self.backend = target
        return self

    def summary(self, print_fn: Any = print) -> str:
        """Print (and return) layers, output shapes, parameter counts, backend, device, dtype."""
        text = summary_text(self)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- training ----------------------------------------------------------------------

    def _arrays(self) -> tuple[step.Params, step.OptState, step.LayerState]:
        return (
            [layer.params for layer in self.layers],
            self.optimizer.state,
            [layer.state for layer in self.layers],
        )

    def _publish(self, params: step.Params, opt_state: step.OptState, layer_state: step.LayerState) -> None:
        for layer, p, s in zip(self.layers, params, layer_state):
            # JAX returns dicts with sorted keys: keep each layer's own order (weight, bias)
            layer.params = {name: p[name] for name in layer.params}
            layer.state = {name: s[name] for name in layer.state}
        self.optimizer.state = opt_state

    def _draw(self) -> Any:
        """Each layer's host noise for a batch, or None when no layer draws."""
        if all(type(layer).draw is Layer.draw for layer in self.layers):
            return None
        layers, rng, dtype = self.layers, self.rng, self.dtype
        return lambda rows: step.draw_noise(layers, rng, rows, dtype)

    def _runner(self) -> Any:
        model = self._model()
        key = (self.backend, self.compile, self.dtype, step.signature(model))
        if key not in self._runners:
            self._runners[key] = step.runner(model, self.backend, self.compile)
        return self._runners[key]

    def train_step(self, x: Array, y: Array) -> tuple[Array, Array]:
        """One optimizer step on a batch already on the device; returns (loss, correct count)."""
        n = int(x.shape[0])
        total, correct = self._train_epoch(self._runner(), x, y, n, False, None)
        return total / n, correct

    def _train_epoch(
        self,
        run: Any,
        x: Array,
        t: Array,
        size: int,
        shuffle: bool,
        progress: Progress | None,
        weight: Array | None = None,
    ) -> Any:
        order = self.rng.permutation(int(x.shape[0])) if shuffle else None
        opt = self.optimizer
        epoch = Epoch(x, t, order, size, self._draw(), opt.iterations + 1, opt.learning_rate, weight)
        report = None
        if progress is not None and progress.active:

            def report(done: int, total: Any, seen: int) -> None:
                progress.step(done, _running_loss(total, seen))

        carry, total, correct = run.run(self._arrays(), epoch, report)
        self.optimizer.iterations += epoch.steps
        self._publish(*carry)
        return total, correct

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
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
        validation_data : (X_val, y_val), optional
            Evaluated after each epoch as ``val_loss`` (and ``val_accuracy``).
        validation_split : float
            Fraction of rows to validate on instead: the last ``n - floor(n * (1 - s))``
            rows, taken before any shuffling (not with ``validation_data``).
        sample_weight : array_like, shape (samples,), optional
            Non-negative weights: each batch's loss is ``sum(w_i * l_i) / sum(w_i)``.
        class_weight : dict or "balanced", optional
            ``{label: weight}`` multiplied into the sample weights (labels not
            named weigh 1); ``"balanced"`` as scikit-learn's. With categorical
            cross-entropy this is torch's ``CrossEntropyLoss(weight=...)``.
        metrics : list, optional
            Names (``"accuracy"``, ``"precision"``, ``"recall"``, ``"f1"``,
            ``"auc"``, ``"mae"``, ``"mse"``) or callables ``f(y_true, y_pred)``,
            logged per epoch under their names (and ``val_`` ones). They are
            measured on the training rows with the epoch's final weights (no
            dropout, running statistics), on the device, and read once per epoch.
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
        callbacks : iterable of Callback
            See :mod:`xpnet.callbacks`. A :class:`~xpnet.callbacks.TerminateOnNaN`
            is added unless one is given.
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        preprocess : {None, "auto", "always"}
            ``"auto"``: a DataFrame with text, categorical, boolean columns or
            gaps is encoded by a fitted :class:`~xpnet.data.tabular.TabularEncoder`
            (``"always"``: every DataFrame), and a regression target is
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
        with self.backend.scope():  # CuPy: every array on the network's device
            return self._fit(
                X,
                y,
                epochs=epochs,
                batch_size=batch_size,
                shuffle=shuffle,
                validation_data=validation_data,
                validation_split=validation_split,
                sample_weight=sample_weight,
                class_weight=class_weight,
                metrics=metrics,
                device_data=device_data,
                distributed=distributed,
                callbacks=callbacks,
                verbose=verbose,
                preprocess=preprocess,
            )

    def _fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool,
        validation_data: Any,
        validation_split: float,
        sample_weight: Any,
        class_weight: Any,
        metrics: Sequence[Any] | None,
        device_data: bool,
        distributed: Any,
        callbacks: Iterable[Any],
        verbose: int,
        preprocess: str | None,
    ) -> History:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        batch_size = inputs.positive_int("batch_size", batch_size)
        comm = feed.check_communicator(distributed)
        self.communicator = comm
        streamed = (comm is not None and comm.size > 1) or feed.streamed(X, device_data)
        if not streamed:
            inputs.prepare(self, X, y, preprocess, sample_weight)
        val = _validation(self, validation_data)
        self._metric_list(metrics)  # refuse bad names before any work
        if streamed:
            extras = {
                "validation_split": validation_split,
                "sample_weight": sample_weight,
                "class_weight": class_weight,
                "metrics": metrics,
            }
            feed.refuse_in_memory_options(extras)
            data: Any = feed.plan(
                self, X, y, batch_size=batch_size, shuffle=shuffle, device_data=device_data, comm=comm
            )
        else:
            x = inputs.features(self, X)
            t = inputs.targets(self, y, int(x.shape[0]))
            x, t, weight, val = self._fit_data(x, t, val, validation_split, sample_weight, class_weight)
            data = feed.DeviceFeed(self, x, t, batch_size, shuffle, weight)
        callbacks = feed.root_callbacks(list(callbacks), comm)
        if not any(isinstance(c, TerminateOnNaN) for c in callbacks):
            callbacks.insert(0, TerminateOnNaN())
        history = History()  # this call's epochs; self.history keeps every call's
        self.stop_training = False
        _call(callbacks, "on_train_begin", self, {})
        quiet = comm is not None and not comm.is_root
        progress = Progress(0 if quiet else verbose, data.steps, int(epochs), self.epoch)  # type: ignore[arg-type]
        # Epochs fuse into one compiled call when nothing needs to run between them.
        fuse = isinstance(data, feed.DeviceFeed) and data.fusable and verbose == 0 and val is None
        fuse = fuse and not metrics and all(type(c) is TerminateOnNaN for c in callbacks)
        done = data.fit_fused(self, int(epochs), callbacks, (history, self.history)) if fuse else 0
        while done < int(epochs) and not self.stop_training:
            epoch = self.epoch
            _call(callbacks, "on_epoch_begin", self, epoch, {})
            progress.start_epoch(epoch)
            logs = data.epoch(self, progress).logs(self._classification)
            done += 1
            self.epoch += 1
            if metrics and math.isfinite(logs["loss"]):
                scores = self._evaluate(data.x, data.t, max(batch_size, 4096), self._metric_list(metrics))
                logs.update({k: v for k, v in scores.items() if k not in logs})
            if val is not None and math.isfinite(logs["loss"]):
                scores = self._evaluate(val[0], val[1], max(batch_size, 4096), self._metric_list(metrics))
                logs.update({f"val_{k}": v for k, v in scores.items()})
            history.append(epoch, logs)
            self.history.append(epoch, logs)
            progress.end_epoch(logs)
            recorded = len(logs)
            _call(callbacks, "on_epoch_end", self, epoch, logs)
            if len(logs) != recorded:
                history.update_last(logs)
                self.history.update_last(logs)
        progress.close()
        _call(callbacks, "on_train_end", self, {})
        return history

    def _fit_data(
        self, x: Array, t: Array, val: Any, split: Any, sample_weight: Any, class_weight: Any
    ) -> tuple[Array, Array, Array | None, Any]:
        """Training rows, targets and device weights after ``validation_split``; the validation pair."""
        n = int(x.shape[0])
        weight = weighting.combined(sample_weight, class_weight, t, n, binary=self._model().binary)
        train = weighting.split_rows(n, split)
        if split:
            if val is not None:
                raise ValueError("give validation_data or validation_split, not both")
            val = (x[train:, ...], t[train:, ...])
            x, t = x[:train, ...], t[:train, ...]
            weight = None if weight is None else weight[:train]
            if weight is not None and not weight.any():
                raise ValueError("every training sample has weight 0 after validation_split")
        if weight is not None:
            weight = self.backend.asarray(weight, self.dtype)
        return x, t, weight, val

    def _metric_list(self, metrics: Sequence[Any] | None) -> list[Metric]:
        if metrics is None:
            return []
        if isinstance(metrics, (str, Metric)) or callable(metrics):
            metrics = [metrics]
        if isinstance(self.loss, CategoricalCrossentropy):
            task = "multiclass"
        else:
            task = "binary" if self._classification else "regression"
        return [get_metric(m, task) for m in metrics]

    # -- inference -----------------------------------------------------------------------

    def _infer(self, x: Array, keep_cache: bool = True) -> tuple[Array, Any]:
        """Output and last cache (None without ``keep_cache``) of the pure forward pass, compiled
        on JAX (see :func:`xpnet.train.step.inference`); nothing is kept anywhere."""
        params, _, states = self._arrays()
        key = ("inference", self.backend, self.compile, self.dtype, tuple(map(repr, self.layers)))
        if key not in self._runners:
            self._runners[key] = step.inference(self.layers, self.backend, self.compile)
        return self._runners[key](params, states, x, keep_cache=keep_cache)

    def predict(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Outputs after the final activation, on the network's backend.

        With a final sigmoid/softmax these are probabilities; with a linear
        output and a cross-entropy loss they are logits. A network with a
        ``target_scaling`` (see :mod:`xpnet.train.inputs`) answers in the
        target's units. Safe to call from several threads, also while another
        thread runs ``fit``.
        """
        with self.backend.scope():  # CuPy: every array on the network's device
            if feed.streamed(X, True):
                parts = [out for _, out, _ in feed.stream_outputs(self, X, batch_size)]
                return parts[0] if len(parts) == 1 else self.backend.xp.concat(parts, axis=0)
            x = inputs.features(self, X)
            return inputs.owned(inputs.outputs(self, self._predict(x, batch_size)), x, self.backend.xp)

    def _predict(self, x: Array, batch_size: int | None) -> Array:
        if batch_size is None:
            return self._infer(x, keep_cache=False)[0]
        batch_size = inputs.positive_int("batch_size", batch_size)
        n = int(x.shape[0])
        parts = [self._infer(x[i : min(i + batch_size, n), ...], False)[0] for i in range(0, n, batch_size)]
        return self.backend.xp.concat(parts, axis=0)

    def predict_proba(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Class probabilities for classification losses (applies sigmoid/softmax to logits)."""
        if not self._classification:
            raise ValueError(f"predict_proba needs a classification loss, not {self.loss.name!r}")
        out = self.predict(X, batch_size=batch_size)
        if self._model().fused:
            return out
        return get_activation(self.loss.output_activation).forward(out, self.backend.xp)

    def evaluate(
        self, X: Any, y: Any = None, *, batch_size: int | None = None, metrics: Sequence[Any] | None = None
    ) -> dict[str, float]:
        """Loss (and accuracy for classification losses) on ``(X, y)``, without training.

        ``metrics`` as in :meth:`fit` adds their values under their names.
        ``X`` may be streamed as in :meth:`fit` (a memmap, a batch source, or
        batches ``(X_b, y_b[, w_b])`` with ``y`` left out); the loss is then
        weighted by the batches' sample weights (metrics need in-memory data).
        """
        if feed.streamed(X, True):
            feed.refuse_in_memory_options({"metrics": metrics})
            with self.backend.scope():
                return feed.evaluate_stream(self, X, y, batch_size)
        chosen = self._metric_list(metrics)
        with self.backend.scope():
            x = inputs.features(self, X)
            return self._evaluate(x, inputs.targets(self, y, int(x.shape[0])), batch_size, chosen)

    def _evaluate(
        self, x: Array, t: Array, batch_size: int | None, metrics: Sequence[Metric] = ()
    ) -> dict[str, float]:
        xp = self.backend.xp
        model = self._model()
        n = int(x.shape[0])
        size = n if batch_size is None else inputs.positive_int("batch_size", batch_size)
        total = xp.zeros((), dtype=x.dtype, device=self.backend.device)
        correct = xp.zeros((), dtype=x.dtype, device=self.backend.device)
        for metric in metrics:
            metric.reset()
        for i in range(0, n, size):
            xb, tb = x[i : min(i + size, n), ...], t[i : min(i + size, n), ...]
            value, _, prob, _ = step.loss_terms(model, *self._infer(xb), tb, None, xp)
            total = total + value * xb.shape[0]
            if self._classification:
                correct = correct + correct_count(prob, tb, xp, binary=model.binary)
            for metric in metrics:
                metric.update(prob, tb)
        result = {"loss": float(total) / n}
        if self._classification:
            result["accuracy"] = float(correct) / prediction_count(t, binary=model.binary)
        for metric in metrics:
            result.setdefault(metric.name, metric.result())
        return result

    def save(self, path: Any) -> None:
        """Write the network to a safetensors checkpoint, atomically (see :func:`load`).

        After ``fit(..., distributed=comm)`` only rank 0 writes; the other ranks return.
        """
        if self.communicator is not None and not self.communicator.is_root:
            return
        checkpoint.write(path, *self.state())

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Everything a checkpoint holds: tensors by name and metadata strings."""
        return serialize.state_of(self)

    @classmethod
    def from_state(
        cls,
        metadata: dict[str, str],
        tensors: dict[str, np.ndarray],
        *,
        backend: Any = None,
        device: Any = None,
    ) -> Network:
        """Rebuild a network from :meth:`state`'s output on ``backend`` (ValueError if inconsistent)."""
        return serialize.restore(cls, metadata, tensors, backend, device)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runners"] = {}  # compiled functions do not pickle; they are rebuilt on use
        state["communicator"] = None  # an MPI communicator belongs to its processes
        return state

    def __repr__(self) -> str:
        return (
            f"Network({self.layers!r}, loss={self.loss.name!r}, optimizer={self.optimizer!r}, "
            f"backend={self.backend.name!r}, dtype={self.dtype!r})"
        )


def _running_loss(total: Array, seen: int) -> Any:
    """The progress bar's reader of the mean loss so far (a device read, so called rarely)."""
    return lambda: {"loss": float(total) / seen}


def _validation(net: Network, data: Any) -> tuple[Array, Array] | None:
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    xv = inputs.features(net, data[0], "validation X")
    return xv, inputs.targets(net, data[1], int(xv.shape[0]), "validation y")


def _call(callbacks: list[Any], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


def load(path: Any, *, backend: Any = None, device: Any = None, max_bytes: int | None = None) -> Network:
    """Read a network written by :meth:`Network.save`, onto any backend.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    backend, device : optional
        Where to put the network; ``None`` uses the default selection
        (``$XPNET_BACKEND``, else auto), not the backend it was saved from.
    max_bytes : int, optional
        Refuse files larger than this.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt, truncated, oversized or not an xpnet model.
    """
    metadata, tensors = checkpoint.read(path, max_bytes=max_bytes, check=serialize.check)
    try:
        return Network.from_state(metadata, tensors, backend=backend, device=device)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
