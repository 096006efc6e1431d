"""``Network``: a stack of layers with a loss and an optimizer, trained by ``fit``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np

from .. import checkpoint
from ..backend import Array, Backend, get_backend, to_numpy
from ..nn.activations import get_activation
from ..nn.layers import Activation, Dense, Layer
from ..nn.losses import CategoricalCrossentropy, CrossEntropy, Loss, get_loss
from ..nn.metrics import correct_count, prediction_count
from ..optim.optimizers import Optimizer, get_optimizer
from . import inputs, serialize
from .callbacks import TerminateOnNaN
from .history import History
from .progress import Progress


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
        self.rng = np.random.default_rng(seed)
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        self.input_scaling: dict[str, Any] | None = None
        """``{"mean": [...], "scale": [...]}`` applied to every input as ``(x - mean) / scale``."""
        self.metadata: dict[str, Any] = {}
        """JSON-able facts saved with the network; the keys ``feature_names``, ``encoder``,
        ``target_scaling`` and ``classes`` change what it does (see :mod:`xpnet.train.inputs`)."""
        self._classification = self.loss.classification
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
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                return layer.units
        n = self.layers[0].in_features
        if n is None:
            raise ValueError("the network's output size is unknown before it is built")
        return n

    def build(self, in_features: int) -> None:
        """Create every layer's parameters for ``in_features`` inputs (seeded)."""
        n = inputs.positive_int("in_features", in_features)
        for layer in self.layers:
            if not layer.built:
                layer.build(n, self.backend, self.dtype, self.rng)
            elif layer.in_features != n:
                raise ValueError(f"{layer!r} expects {layer.in_features} input features, but gets {n}")
            n = layer.output_features(n)

    def _fused_output(self) -> bool:
        """Whether the final activation fuses with the loss (sigmoid+BCE, softmax+CE)."""
        last = self.layers[-1]
        if self.loss.output_activation is None or not isinstance(last, (Dense, Activation)):
            return False
        return last.activation.name == self.loss.output_activation

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
        rows = [("Layer", "Output shape", "Params")]
        n = self.layers[0].in_features
        for layer in self.layers:
            count = sum(math.prod(p.shape) for p in layer.params.values())
            if n is not None:
                n = layer.output_features(n)
            shape = f"(None, {n if n is not None else '?'})"
            rows.append((repr(layer), shape, f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        rule = "-" * (sum(widths) + 4)
        lines = [
            f"Network on {self.backend.name} ({self.backend.device}), dtype {self.dtype}",
            rule,
        ]
        for i, row in enumerate(rows):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
            if i == 0:
                lines.append(rule)
        lines += [
            rule,
            f"Total params: {self.parameter_count():,}",
            f"Loss: {self.loss.name}   Optimizer: {self.optimizer!r}",
        ]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- training ----------------------------------------------------------------------

    def _forward(self, x: Array, training: bool) -> Array:
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def _loss_and_output_grad(self, out: Array, y: Array) -> tuple[Array, Array, Array, bool]:
        """Loss, its gradient, class probabilities, and whether the gradient is w.r.t. logits."""
        xp = self.backend.xp
        loss = self.loss
        if not isinstance(loss, CrossEntropy):
            value, grad = loss.value_and_gradient(out, y, xp=xp)
            return value, grad, out, False
        if self._fused_output():
            logits = cast("Dense | Activation", self.layers[-1]).pre_activation
            value, grad = loss.fused(logits, out, y, xp=xp)
            return value, grad, out, True
        # Any other final activation: the outputs are logits, as torch takes them.
        prob = get_activation(loss.output_activation).forward(out, xp)
        value, grad = loss.fused(out, prob, y, xp=xp)
        return value, grad, prob, False

    def _backward_and_update(self, grad: Array, fused: bool) -> None:
        """Backpropagate ``grad`` and update each layer as soon as its gradients exist.

        A layer's input gradient is computed before its weights change, so the
        result equals a full backward pass followed by ``optimizer.step``.
        """
        optimizer = self.optimizer
        optimizer.start_step()
        first = next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        i = len(self.layers) - 1
        if fused:
            last = self.layers[i]
            if isinstance(last, Dense):
                grad = last.backward(grad, need_input_grad=i > first, through_activation=False)
                optimizer.update_layer(i, last)
            i -= 1
        for j in range(i, first - 1, -1):
            layer = self.layers[j]
            if isinstance(layer, Dense):
                grad = layer.backward(grad, need_input_grad=j > first, overwrite_dy=True)
            else:
                grad = layer.backward(grad, need_input_grad=j > first)
            optimizer.update_layer(j, layer)

    def train_step(self, x: Array, y: Array) -> tuple[Array, Array]:
        """One optimizer step on a batch already on the device; returns (loss, probabilities)."""
        out = self._forward(x, training=True)
        value, grad, prob, fused = self._loss_and_output_grad(out, y)
        self._backward_and_update(grad, fused)
        return value, prob

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        callbacks: Iterable[Any] = (),
        verbose: int = 1,
        preprocess: str | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``(X, y)`` in mini-batches.

        Parameters
        ----------
        X : array_like, shape (samples, features)
            NumPy, list, pandas or any backend's array; never modified.
        y : array_like
            ``(samples,)`` or ``(samples, outputs)``; integer labels or one-hot
            for categorical cross-entropy, 0/1 for binary cross-entropy.
        epochs, batch_size : int
            Passes over the data, and samples per optimizer step.
        shuffle : bool
            Reshuffle (with the network's host generator) before each epoch.
        validation_data : (X_val, y_val), optional
            Evaluated after each epoch as ``val_loss`` (and ``val_accuracy``).
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
            Also kept as ``net.history`` (across calls), even when training stops
            on a non-finite loss.

        Raises
        ------
        FloatingPointError
            When the training loss becomes NaN or infinite (names the epoch),
            unless ``TerminateOnNaN(raise_error=False)`` is among the callbacks.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        batch_size = inputs.positive_int("batch_size", batch_size)
        inputs.prepare(self, X, y, preprocess)
        x = inputs.features(self, X)
        t = inputs.targets(self, y, int(x.shape[0]))
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            xv = inputs.features(self, validation_data[0], "validation X")
            val = (xv, inputs.targets(self, validation_data[1], int(xv.shape[0]), "validation y"))
        callbacks = list(callbacks)
        if not any(isinstance(c, TerminateOnNaN) for c in callbacks):
            callbacks.insert(0, TerminateOnNaN())
        history = History()
        self.history = history
        self.stop_training = False
        _call(callbacks, "on_train_begin", self, {})
        n = int(x.shape[0])
        steps = -(-n // batch_size)
        xp = self.backend.xp
        progress = Progress(verbose, steps, int(epochs), self.epoch)
        device = self.backend.device
        binary = self._binary
        judged = prediction_count(t, binary=binary)
        for _ in range(int(epochs)):
            epoch = self.epoch
            _call(callbacks, "on_epoch_begin", self, epoch, {})
            order = xp.asarray(self.rng.permutation(n), device=device) if shuffle else None
            total: Array = 0.0
            correct: Array = 0
            progress.start_epoch(epoch)
            for step, start in enumerate(range(0, n, batch_size)):
                stop = min(start + batch_size, n)
                if order is None:
                    xb, tb = x[start:stop, ...], t[start:stop, ...]
                else:  # gathering per batch keeps no shuffled copy of the whole data
                    index = order[start:stop, ...]
                    xb, tb = xp.take(x, index, axis=0), xp.take(t, index, axis=0)
                value, prob = self.train_step(xb, tb)
                total = total + value * (stop - start)
                if self._classification:
                    correct = correct + correct_count(prob, tb, xp, binary=binary)
                if progress.active:
                    progress.step(step + 1, _running_loss(total, stop))
            logs = {"loss": float(total) / n}
            if self._classification:
                logs["accuracy"] = float(correct) / judged
            self.epoch += 1
            if val is not None and math.isfinite(logs["loss"]):
                scores = self._evaluate(*val, batch_size=max(batch_size, 4096))
                logs.update({f"val_{k}": v for k, v in scores.items()})
            history.append(epoch, logs)
            progress.end_epoch(logs)
            recorded = len(logs)
            _call(callbacks, "on_epoch_end", self, epoch, logs)
            if len(logs) != recorded:
                history.update_last(logs)
            if self.stop_training:
                break
        progress.close()
        _call(callbacks, "on_train_end", self, {})
        return history

    @property
    def _binary(self) -> bool:
        return not isinstance(self.loss, CategoricalCrossentropy)

    # -- inference -----------------------------------------------------------------------

    def predict(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Outputs after the final activation, on the network's backend.

        With a final sigmoid/softmax these are probabilities; with a linear
        output and a cross-entropy loss they are logits. A network with a
        ``target_scaling`` (see :mod:`xpnet.train.inputs`) answers in the
        target's units.
        """
        x = inputs.features(self, X)
        return inputs.outputs(self, self._predict(x, batch_size))

    def _predict(self, x: Array, batch_size: int | None) -> Array:
        if batch_size is None:
            return self._forward(x, training=False)
        batch_size = inputs.positive_int("batch_size", batch_size)
        n = int(x.shape[0])
        parts = [
            self._forward(x[i : min(i + batch_size, n), ...], training=False) for i in range(0, n, batch_size)
        ]
        return self.backend.xp.concat(parts, axis=0)

    def predict_proba(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Class probabilities for classification losses (applies sigmoid/softmax to logits)."""
        if not self._classification:
            raise ValueError(f"predict_proba needs a classification loss, not {self.loss.name!r}")
        out = self.predict(X, batch_size=batch_size)
        if self._fused_output():
            return out
        return get_activation(self.loss.output_activation).forward(out, self.backend.xp)

    def evaluate(self, X: Any, y: Any, *, batch_size: int | None = None) -> dict[str, float]:
        """Loss (and accuracy for classification losses) on ``(X, y)``, without training."""
        x = inputs.features(self, X)
        return self._evaluate(x, inputs.targets(self, y, int(x.shape[0])), batch_size)

    def _evaluate(self, x: Array, t: Array, batch_size: int | None) -> dict[str, float]:
        xp = self.backend.xp
        n = int(x.shape[0])
        size = n if batch_size is None else inputs.positive_int("batch_size", batch_size)
        total = xp.zeros((), dtype=x.dtype, device=self.backend.device)
        correct = xp.zeros((), dtype=x.dtype, device=self.backend.device)
        for i in range(0, n, size):
            stop = min(i + size, n)
            xb, tb = x[i:stop, ...], t[i:stop, ...]
            value, _, prob, _ = self._loss_and_output_grad(self._forward(xb, training=False), tb)
            total = total + value * xb.shape[0]
            if self._classification:
                correct = correct + correct_count(prob, tb, xp, binary=self._binary)
        result = {"loss": float(total) / n}
        if self._classification:
            result["accuracy"] = float(correct) / prediction_count(t, binary=self._binary)
        return result

    def save(self, path: Any) -> None:
        """Write the network to a safetensors checkpoint, atomically (see :func:`load`)."""
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

    def __repr__(self) -> str:
        return (
            f"Network({self.layers!r}, loss={self.loss.name!r}, optimizer={self.optimizer!r}, "
            f"backend={self.backend.name!r}, dtype={self.dtype!r})"
        )


def _running_loss(total: Array, seen: int) -> Any:
    """The progress bar's reader of the mean loss so far (a device read, so called rarely)."""
    return lambda: {"loss": float(total) / seen}


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
    metadata, tensors = checkpoint.read(path, max_bytes=max_bytes)
    try:
        return Network.from_state(metadata, tensors, backend=backend, device=device)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
