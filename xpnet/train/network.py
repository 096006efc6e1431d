"""``Network``: a stack of layers with a loss and an optimizer on one backend, and ``load``.

The network is the composition: its layers, loss, optimizer, backend and host
generator, the arrays the pure step reads and writes back, and checkpoints.
Its verbs come from the modules that own them: ``fit`` and ``train_step`` from
:class:`~xpnet.train.fitting.Trainer`, ``predict``, ``predict_proba`` and
``evaluate`` from :class:`~xpnet.train.inference.Predictor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import checkpoint
from ..backend import Backend, get_backend, to_numpy
from ..engine import EagerEngine, engine_for, step
from ..nn.layers import Layer
from ..nn.losses import Loss, get_loss
from ..optim.clipping import gradient_transform
from ..optim.loss_scaling import LossScaler
from ..optim.optimizers import Optimizer, get_optimizer
from . import copies, inputs, serialize
from .fitting import Trainer
from .history import History
from .inference import Predictor
from .policy import DTypePolicy, check_matmul_precision, get_policy
from .summary import summary_text


class Network(Trainer, Predictor):
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
    dtype : {"float32", "float64", "mixed_bfloat16", "mixed_float16"} or DTypePolicy
        The dtype policy (:mod:`xpnet.train.policy`). ``"float32"`` and
        ``"float64"``: parameters and computations in that dtype. The mixed
        policies keep parameters, optimizer state and the loss in float32
        (:attr:`dtype` says ``"float32"``) and run matrix multiplies and
        activations in bfloat16 or float16 (:attr:`compute_dtype`); softmax,
        sigmoid outputs and normalization statistics stay float32, and
        ``"mixed_float16"`` scales the loss dynamically (``loss_scaler``).
        They run on numpy (bfloat16 through the ``ml_dtypes`` package),
        torch, jax and cupy; array_api_strict has no 16-bit floats.
    matmul_precision : {"highest", "tf32"}
        Float32 matrix multiplies in full float32 (the default), or on TF32
        tensor cores where the hardware has them (CUDA on torch and cupy, GPUs
        on jax; a no-op on CPUs, numpy and array_api_strict included). A
        float32 option: ValueError with another ``dtype``. Saved in checkpoints.
    loss_scaler : LossScaler, optional
        The loss-scaling rules of ``"mixed_float16"`` (default:
        ``LossScaler()``, GradScaler's); ValueError with another ``dtype``.
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
        dtype: str | DTypePolicy = "float32",
        seed: int | None = None,
        compile: bool | None = None,
        matmul_precision: str = "highest",
        loss_scaler: LossScaler | None = None,
    ) -> None:
        layers = list(layers) if not isinstance(layers, Layer) else [layers]
        if not layers:
            raise ValueError("a Network needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Network layers must be xpnet Layer objects, got {layer!r}")
        self.policy: DTypePolicy = get_policy(dtype)
        self.matmul_precision = check_matmul_precision(matmul_precision, self.policy)
        self.loss_scaler = _loss_scaler(self.policy, loss_scaler)
        self.layers: list[Layer] = layers
        self.loss: Loss = get_loss(loss)
        self.optimizer: Optimizer = get_optimizer(optimizer)
        self.backend: Backend = get_backend(backend, device)
        self.dtype = self.policy.variable_dtype
        """The dtype of parameters, optimizer state and inputs (a mixed policy's variables: float32)."""
        _check_policy(self.backend, self.policy)
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
        self._engines: dict[Any, EagerEngine] = {}
        self._copies = copies.Kept()
        self.communicator: Any = None
        """The ``distributed=`` communicator of the last ``fit`` (only its rank 0 saves)."""
        if self.layers[0].in_features is not None:
            self.build(self.layers[0].in_features)

    # -- structure -----------------------------------------------------------------

    @property
    def compute_dtype(self) -> str:
        """The dtype matrix multiplies and activations run in: ``"bfloat16"`` / ``"float16"`` under
        a mixed policy, else :attr:`dtype`."""
        return self.policy.compute_dtype

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
        return step.Model(
            tuple(self.layers),
            self.loss,
            self.optimizer,
            transform=transform,
            compute_dtype=self._compute(),
            loss_scaler=self.loss_scaler,
            matmul_precision=self.matmul_precision,
        )

    def _compute(self) -> str | None:
        """The compute dtype the step casts to, or None when it computes in the variables' dtype."""
        return self.policy.compute_dtype if self.policy.mixed else None

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
        _check_policy(target, self.policy)
        for layer in self.layers:
            if layer.built:
                layer.to(target)
        self.optimizer.to(target)
        self.backend = target
        self._engines = {}  # an engine may hold the old arrays (torch's and CuPy's flat buffers)
        return self

    def summary(self, print_fn: Any = print) -> str:
        """Print (and return) layers, output shapes, parameter counts, backend, device, dtype."""
        text = summary_text(self)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- what the pure step reads and writes back ----------------------------------------

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

    def _engine(self) -> EagerEngine:
        """How this network's backend runs its steps (one engine per backend and ``compile``)."""
        key = (self.backend, self.compile)
        if key not in self._engines:
            self._engines[key] = engine_for(self.backend, self.compile)
        return self._engines[key]

    def _runner(self) -> Any:
        return self._engine().runner(self._model())

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, path: Any, *, allow_nonfinite: bool = False) -> None:
        """Write the network to a safetensors checkpoint, atomically (see :func:`load`).

        After ``fit(..., distributed=comm)`` only rank 0 writes; the other ranks return.

        Parameters
        ----------
        path : str or Path
            The file; an existing one is replaced only once the new one is complete.
        allow_nonfinite : bool
            Write parameters, layer state or optimizer state that hold NaN or
            infinity (to inspect a run that diverged). By default such a
            network is refused and ``path`` is left as it was.

        Raises
        ------
        ValueError
            If a tensor holds NaN or infinity and ``allow_nonfinite`` is False.
        """
        if self.communicator is not None and not self.communicator.is_root:
            return
        tensors, metadata = self.state()
        if not allow_nonfinite:
            serialize.check_finite(tensors, path)
        checkpoint.write(path, tensors, metadata)

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
        dtype: Any = None,
    ) -> Network:
        """Rebuild a network from :meth:`state`'s output on ``backend`` (ValueError if inconsistent);
        ``dtype`` as in :func:`load`."""
        return serialize.restore(cls, metadata, tensors, backend, device, dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = serialize.picklable(self.__dict__)  # torch views of flat buffers: their own copies
        state["_engines"] = {}  # compiled functions do not pickle; they are rebuilt on use
        state["_copies"] = copies.Kept()
        state["communicator"] = None  # an MPI communicator belongs to its processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("_runners", None)  # pickled before engines kept them
        state.setdefault("_engines", {})
        state.setdefault("_copies", copies.Kept())
        state.setdefault("policy", get_policy(state.get("dtype", "float32")))  # pickled before policies
        state.setdefault("matmul_precision", "highest")
        state.setdefault("loss_scaler", None)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"Network({self.layers!r}, loss={self.loss.name!r}, optimizer={self.optimizer!r}, "
            f"backend={self.backend.name!r}, dtype={self.policy.name!r})"
        )


def _check_policy(backend: Backend, policy: DTypePolicy) -> None:
    """Raise the backend's one clear error when it cannot run ``policy`` (nothing otherwise)."""
    backend.dtype(policy.variable_dtype)
    if policy.mixed:
        try:
            backend.compute_dtype(policy.compute_dtype)
        except ValueError as exc:
            raise ValueError(
                f"dtype={policy.name!r} cannot run here: {exc} (a saved mixed model loads here as "
                "float32 with xn.load(path, dtype='float32'))"
            ) from None


def _loss_scaler(policy: DTypePolicy, given: LossScaler | None) -> LossScaler | None:
    if given is not None and not isinstance(given, LossScaler):
        raise TypeError(f"loss_scaler must be an xpnet LossScaler, got {type(given).__name__}")
    if given is not None and not policy.loss_scaling:
        raise ValueError(
            f"loss_scaler is for dtype='mixed_float16' (float16 gradients need scaling), not {policy.name!r}"
        )
    return (given or LossScaler()) if policy.loss_scaling else None


def load(
    path: Any, *, backend: Any = None, device: Any = None, max_bytes: int | None = None, dtype: Any = None
) -> Network:
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
    dtype : str, optional
        Another dtype policy keeping the same parameter dtype: a
        ``"mixed_bfloat16"`` or ``"mixed_float16"`` model loads as ``"float32"``
        (on array_api_strict, which has no 16-bit floats, say) and a float32
        one as mixed. None (the default) keeps the saved policy, matmul
        precision and loss-scaler state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt, truncated, oversized or not an xpnet model.
    """
    metadata, tensors = checkpoint.read(path, max_bytes=max_bytes, check=serialize.check)
    try:
        return Network.from_state(metadata, tensors, backend=backend, device=device, dtype=dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
