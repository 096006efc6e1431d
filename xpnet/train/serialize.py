"""A network as checkpoint contents: tensors and metadata strings, and back.

:func:`state_of` turns a network into what :func:`xpnet.checkpoint.write`
stores; :func:`restore` rebuilds one from what :func:`xpnet.checkpoint.read`
returns. The network class is passed in, so this module never imports it.

:func:`check` validates every metadata entry and the declared tensor shapes
against the architecture before anything the size of the model is allocated;
:func:`xpnet.checkpoint.read` runs it between the header and the tensors.
Whatever is wrong, the error is a ValueError.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import owning, to_numpy
from ..checkpoint import TensorSpecs, loads_json
from ..data import labels
from ..data.encoders import encoder_from_state
from ..nn.layers import LAYERS, Layer
from ..nn.losses import Loss, get_loss
from ..nn.shapes import parameter_shapes, state_shapes
from ..optim import loss_scaling
from ..optim.loss_scaling import LossScaler
from ..optim.optimizers import OPTIMIZERS, Optimizer
from .history import History
from .policy import POLICIES, DTypePolicy, check_matmul_precision, get_policy

REQUIRED = (
    "layers",
    "in_features",
    "loss",
    "optimizer",
    "dtype",
    "epoch",
    "rng_state",
    "input_scaling",
    "metadata",
    "history",
)
FLOAT_TENSORS = {"float32": "F32", "float64": "F64"}
_BAD_CONFIG = (TypeError, ValueError, KeyError, AttributeError, OverflowError)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _host(value: Any) -> np.ndarray:
    """``value`` as a C-contiguous host array of its own shape (``np.ascontiguousarray`` makes 0-d 1-d)."""
    host = to_numpy(value)
    return host if host.flags.c_contiguous else np.ascontiguousarray(host)


def state_of(net: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (parameters, optimizer state) and metadata (everything else) of ``net``."""
    if not net.built:
        raise ValueError("the network is not built yet: fit it or give in_features first")
    tensors: dict[str, np.ndarray] = {}
    for index, layer in enumerate(net.layers):
        for name, value in layer.params.items():
            tensors[f"layers.{index}.{name}"] = _host(value)
        for name, value in layer.state.items():
            tensors[f"state.{index}.{name}"] = _host(value)
    for key, state in net.optimizer.state.items():
        for name, value in state.items():
            tensors[f"optimizer.{key}.{name}"] = _host(value)
    layers = [{"class": type(layer).__name__, "config": layer.get_config()} for layer in net.layers]
    optimizer = {
        "name": net.optimizer.name,
        "config": net.optimizer.get_config(),
        "iterations": net.optimizer.iterations,
    }
    metadata = {
        "layers": json.dumps(layers),
        "in_features": str(net.in_features),
        "loss": net.loss.name,
        "loss_config": json.dumps(net.loss.get_config()),
        "optimizer": json.dumps(optimizer),
        "dtype": net.dtype,
        "dtype_policy": net.policy.name,
        "matmul_precision": net.matmul_precision,
        "epoch": str(net.epoch),
        "rng_state": json.dumps(_jsonable(net.rng.bit_generator.state)),
        "input_scaling": json.dumps(_jsonable(net.input_scaling)),
        "metadata": json.dumps(_jsonable(net.metadata)),
        "history": json.dumps({"epoch": net.history.epoch, "history": net.history.history}),
    }
    if net.loss_scaler is not None:
        metadata["loss_scaler"] = json.dumps(net.loss_scaler.get_config())
    return tensors, metadata


def picklable(state: dict[str, Any]) -> dict[str, Any]:
    """A network's ``__dict__`` as it pickles: layers and optimizer whose arrays are views into a
    larger buffer (the torch engine's flat buffers) replaced by copies owning their arrays
    (:func:`~xpnet.backend.owning`), so that a pickle holds each element once."""
    state = dict(state)
    state["layers"] = [_owning_layer(layer) for layer in state["layers"]]
    optimizer = state["optimizer"]
    entries = {key: {k: owning(v) for k, v in entry.items()} for key, entry in optimizer.state.items()}
    if any(a is not optimizer.state[key][k] for key, entry in entries.items() for k, a in entry.items()):
        state["optimizer"] = copy.copy(optimizer)
        state["optimizer"].state = entries
    return state


def _owning_layer(layer: Layer) -> Layer:
    params = {k: owning(v) for k, v in layer.params.items()}
    if all(a is layer.params[k] for k, a in params.items()):
        return layer
    twin = copy.copy(layer)
    twin.params = params
    return twin


def check_finite(tensors: dict[str, np.ndarray], path: Any) -> None:
    """ValueError naming the tensors of ``tensors`` that hold NaN or infinity (not saved to ``path``)."""
    bad = [name for name, t in tensors.items() if t.dtype.kind == "f" and not bool(np.isfinite(t).all())]
    if bad:
        raise ValueError(
            f"not saving {path}: the network's {', '.join(bad[:5])}{' and more' if len(bad) > 5 else ''} "
            "hold NaN or infinity (the old file, if any, is unchanged); pass allow_nonfinite=True "
            "to save it anyway"
        )


@dataclass
class Contents:
    """Checked checkpoint metadata, ready to rebuild a network from."""

    layers: list[Layer]
    in_features: int
    loss: Loss
    optimizer: Optimizer
    dtype: str
    policy: DTypePolicy
    matmul_precision: str
    loss_scaler: LossScaler | None
    epoch: int
    rng_state: dict[str, Any]
    input_scaling: dict[str, Any] | None
    metadata: dict[str, Any]
    history: History


def check(meta: dict[str, str], specs: TensorSpecs) -> Contents:
    """Validate checkpoint metadata and declared tensors; ValueError naming the first problem.

    Nothing here allocates more than the metadata's own size: the parameter
    shapes the architecture implies are computed, not built, and must equal
    the shapes the file declares.
    """
    if not isinstance(meta, dict):
        raise ValueError("the model metadata is not a mapping")
    missing = [key for key in REQUIRED if not isinstance(meta.get(key), str)]
    if missing:
        raise ValueError(f"the model file lacks the metadata entries {missing}")
    dtype = meta["dtype"]
    if dtype not in FLOAT_TENSORS:
        raise ValueError(f"the model's dtype is {dtype!r}; expected 'float32' or 'float64'")
    in_features = _natural(meta["in_features"], "in_features", positive=True)
    layers = _layers(loads_json(meta["layers"], "the model's layers"))
    named = POLICIES.get(meta.get("dtype_policy", dtype))
    _check_tensors(
        layers, in_features, FLOAT_TENSORS[dtype], specs, scaled=bool(named and named.loss_scaling)
    )
    policy, precision, scaler = _arithmetic(meta, dtype)
    loss_config = _mapping(
        loads_json(meta.get("loss_config", "{}"), "the model's loss_config"), "loss_config"
    )
    try:
        loss = get_loss(meta["loss"], **loss_config)
    except _BAD_CONFIG as exc:
        raise ValueError(f"the model's loss {meta['loss']!r} is invalid: {exc}") from None
    out_features = _out_features(layers, in_features)
    return Contents(
        layers=layers,
        in_features=in_features,
        loss=loss,
        optimizer=_optimizer(loads_json(meta["optimizer"], "the model's optimizer")),
        dtype=dtype,
        policy=policy,
        matmul_precision=precision,
        loss_scaler=scaler,
        epoch=_natural(meta["epoch"], "epoch"),
        rng_state=_rng_state(loads_json(meta["rng_state"], "the model's rng_state")),
        input_scaling=_scaling(
            loads_json(meta["input_scaling"], "the model's input_scaling"),
            in_features,
            dtype,
            "input_scaling",
        ),
        metadata=_metadata(
            loads_json(meta["metadata"], "the model's metadata"), in_features, out_features, loss, dtype
        ),
        history=_history(loads_json(meta["history"], "the model's history")),
    )


def _out_features(layers: list[Layer], in_features: int) -> int:
    n = in_features
    for layer in layers:
        n = layer.output_features(n)
    return n


def _arithmetic(meta: dict[str, str], dtype: str) -> tuple[DTypePolicy, str, LossScaler | None]:
    """The dtype policy, matmul precision and loss scaler a checkpoint names (files written before
    policies existed hold none: their dtype is the policy, at the highest precision)."""
    name = meta.get("dtype_policy", dtype)
    try:
        policy = get_policy(name)
    except ValueError:
        raise ValueError(f"the model's dtype_policy is {name!r}; expected one of {list(POLICIES)}") from None
    if policy.variable_dtype != dtype:
        raise ValueError(
            f"the model's dtype_policy {policy.name!r} keeps {policy.variable_dtype} parameters, "
            f"but its dtype is {dtype!r}"
        )
    try:
        precision = check_matmul_precision(meta.get("matmul_precision", "highest"), policy)
    except ValueError as exc:
        raise ValueError(f"the model's matmul_precision is invalid: {exc}") from None
    text = meta.get("loss_scaler")
    if text is None:
        return policy, precision, LossScaler() if policy.loss_scaling else None
    if not policy.loss_scaling:
        raise ValueError(
            f"the model holds a loss_scaler, which its dtype_policy {policy.name!r} has no use for"
        )
    config = _mapping(loads_json(text, "the model's loss_scaler"), "loss_scaler")
    try:
        return policy, precision, LossScaler(**config)
    except _BAD_CONFIG as exc:
        raise ValueError(f"the model's loss_scaler {config!r} is invalid: {exc}") from None


def _natural(value: Any, what: str, positive: bool = False) -> int:
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 18:
            raise ValueError(f"the model's {what} is {value[:40]!r}; expected a non-negative integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < int(positive) or value >= 2**63:
        raise ValueError(
            f"the model's {what} is {value!r}; expected a {'positive' if positive else 'natural'} integer"
        )
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"the model's {what} is {type(value).__name__}; expected a JSON object")
    return value


def _layers(specs: Any) -> list[Layer]:
    if not isinstance(specs, list) or not specs:
        raise ValueError("the model's layers must be a non-empty list")
    layers = []
    for index, spec in enumerate(specs):
        spec = _mapping(spec, f"layer {index}")
        kind = spec.get("class")
        cls = LAYERS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"unknown layer class {spec.get('class')!r} in the model file")
        config = _mapping(spec.get("config"), f"layer {index} config")
        try:
            layers.append(cls(**config))
        except _BAD_CONFIG as exc:
            raise ValueError(
                f"layer {index} ({cls.__name__}) has an invalid config {config!r}: {exc}"
            ) from None
    return layers


def _check_tensors(
    layers: list[Layer], in_features: int, dtype: str, specs: TensorSpecs, *, scaled: bool = False
) -> None:
    """Every tensor the architecture implies, with its shape, and nothing else (a loss scaler's
    0-d state when ``scaled``)."""
    expected: dict[str, tuple[int, ...]] = {}
    states: dict[str, tuple[int, ...]] = {}
    n = in_features
    for index, layer in enumerate(layers):
        fixed = layer.in_features
        if fixed is not None and fixed != n:
            raise ValueError(f"layer {index} expects {fixed} input features, but gets {n}")
        shapes = parameter_shapes(layer, n)
        if shapes is None:  # a layer kind without declared shapes: bounded by what the file holds
            declared = {k: s for k, (_, s) in specs.items() if k.startswith(f"layers.{index}.")}
            if n > max((math.prod(s) for s in declared.values()), default=n):
                raise ValueError(f"layer {index} has {n} input features, more than its parameters hold")
            shapes = {k.split(".", 2)[2]: s for k, s in declared.items()}
        for name, shape in shapes.items():
            expected[f"layers.{index}.{name}"] = shape
        states.update({f"state.{index}.{name}": shape for name, shape in state_shapes(layer, n).items()})
        n = layer.output_features(n)
    params = dict(expected)
    expected.update(states)
    if scaled:
        expected.update(
            {f"optimizer.{loss_scaling.STATE_KEY}.{name}": () for name in loss_scaling.STATE_NAMES}
        )
    for key, (code, shape) in specs.items():
        if key.startswith("optimizer.") and key not in expected:
            slot, _, _ = key[len("optimizer.") :].rpartition(".")
            want = params.get(f"layers.{slot}")
            if want is None:
                raise ValueError(f"the model file holds optimizer state {key!r} for no parameter")
            expected[key] = want
        if key not in expected:
            raise ValueError(f"the model file holds a tensor {key!r} that the architecture has no place for")
        if code != dtype:
            raise ValueError(f"tensor {key!r} has dtype {code}, the model's dtype needs {dtype}")
        if shape != expected[key]:
            raise ValueError(
                f"tensor {key!r} has shape {shape} in the file, but the architecture needs {expected[key]}"
            )
    absent = [key for key in params if key not in specs]
    if absent:
        raise ValueError(f"the model file lacks the parameters {absent[:5]}")
    absent = [key for key in states if key not in specs]
    if absent:
        raise ValueError(f"the model file lacks the layer state {absent[:5]}")


def _optimizer(spec: Any) -> Optimizer:
    spec = _mapping(spec, "optimizer")
    name = spec.get("name")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} in the model file")
    config = _mapping(spec.get("config"), "optimizer config")
    try:
        optimizer = OPTIMIZERS[name](**config)
    except _BAD_CONFIG as exc:
        raise ValueError(f"the model's optimizer config {config!r} is invalid: {exc}") from None
    iterations = spec.get("iterations")
    if isinstance(iterations, str):  # a JSON number is expected here, not text
        raise ValueError(f"the model's optimizer iterations is {iterations!r}; expected an integer")
    optimizer.iterations = _natural(iterations, "optimizer iterations")
    return optimizer


def _rng_state(state: Any) -> dict[str, Any]:
    state = _mapping(state, "rng_state")
    try:
        np.random.default_rng(0).bit_generator.state = state
    except _BAD_CONFIG as exc:
        raise ValueError(f"the model's rng_state is invalid: {exc}") from None
    return state


def _scaling(scaling: Any, width: int, dtype: str, what: str) -> dict[str, Any] | None:
    """``{"mean", "scale"}``: ``width`` numbers each, finite in ``dtype``, scales of normal size there."""
    if scaling is None:
        return None
    scaling = _mapping(scaling, what)
    info = np.finfo(dtype)
    top, tiny = float(info.max), float(info.tiny)
    for key in ("mean", "scale"):
        values = scaling.get(key)
        if (
            not isinstance(values, list)
            or len(values) != width
            or not all(_finite_number(v) and abs(v) <= top for v in values)
        ):
            raise ValueError(
                f"the model's {what} {key!r} must be {width} finite numbers (within {dtype}'s range), "
                f"one per {'feature' if what == 'input_scaling' else 'output'}"
            )
    if not all(v != 0 for v in scaling["scale"]):
        raise ValueError(f"the model's {what} 'scale' holds a zero")
    if not all(abs(v) >= tiny for v in scaling["scale"]):
        raise ValueError(
            f"the model's {what} 'scale' holds a value below {dtype}'s smallest normal number "
            f"({tiny:.3g}): dividing by it would overflow"
        )
    return scaling


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metadata(value: Any, in_features: int, out_features: int, loss: Loss, dtype: str) -> dict[str, Any]:
    """The ``metadata`` object, its keys that change what the network does checked against it.

    See :mod:`xpnet.train.inputs` for what ``feature_names``, ``encoder``,
    ``target_scaling`` and ``classes`` do; ``task`` and ``target_name`` are
    the ``xpnet`` command's. Other keys are kept as they are.
    """
    meta = _mapping(value, "metadata")
    names = meta.get("feature_names")
    if names is not None:
        if not isinstance(names, list):
            raise ValueError("the model's feature_names must be a list of column labels")
        try:
            labels.stored([labels.restored(n) for n in names])
        except ValueError:
            raise ValueError("the model's feature_names are repeated or not column labels") from None
    if meta.get("encoder") is not None:
        _encoder(meta["encoder"], names, in_features)
    elif names is not None and len(names) != in_features:
        raise ValueError(f"the model has {len(names)} feature_names, but the network takes {in_features}")
    if meta.get("target_scaling") is not None:
        if loss.classification:
            raise ValueError("the model has a target_scaling, but its loss is a classification loss")
        _scaling(meta["target_scaling"], out_features, dtype, "target_scaling")
    _task(meta, out_features, loss)
    return meta


def _encoder(state: Any, names: list[Any] | None, in_features: int) -> None:
    try:
        encoder = encoder_from_state(state)
    except ValueError as exc:
        raise ValueError(f"the model's encoder is invalid: {exc}") from None
    if encoder.width != in_features:
        raise ValueError(
            f"the model's encoder makes {encoder.width} features, but the network takes {in_features}"
        )
    if names is not None and [labels.key(n) for n in names] != [labels.key(n) for n in encoder.names]:
        raise ValueError("the model's encoder columns are not its feature_names")


def _task(meta: dict[str, Any], out_features: int, loss: Loss) -> None:
    """``classes`` (one label per output, two for one sigmoid output), ``task`` and ``target_name``."""
    task = meta.get("task")
    if task is not None and task != ("classification" if loss.classification else "regression"):
        raise ValueError(f"the model's task is {task!r}, but its loss {loss.name!r} does not fit it")
    if "target_name" in meta and not _label(meta["target_name"]):
        raise ValueError(f"the model's target_name {meta['target_name']!r:.40} is not a column label")
    classes = meta.get("classes")
    if classes is None:
        return
    if not isinstance(classes, list) or not all(
        isinstance(c, (str, int, float)) and _label(c) for c in classes
    ):
        raise ValueError("the model's classes must be a list of labels (text, numbers or booleans)")
    if len({labels.key(c) for c in classes}) != len(classes):
        raise ValueError("the model's classes name a label more than once")
    want = (2 if out_features == 1 else out_features) if loss.classification else 0
    if len(classes) != want:
        raise ValueError(
            f"the model lists {len(classes)} classes, but its {out_features} output(s) and "
            f"{loss.name} loss need {want}"
        )


def _label(value: Any) -> bool:
    try:
        labels.stored([labels.restored(value)])
    except ValueError:
        return False
    return True


def _history(recorded: Any) -> History:
    recorded = _mapping(recorded, "history")
    epochs, metrics = recorded.get("epoch"), _mapping(recorded.get("history"), "history metrics")
    if not isinstance(epochs, list) or not all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs
    ):
        raise ValueError("the model's history epochs must be a list of non-negative integers")
    for key, values in metrics.items():
        if not isinstance(values, list) or len(values) != len(epochs):
            raise ValueError(f"the model's history of {key!r} does not have one value per epoch")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"the model's history of {key!r} holds values that are not numbers")
    history = History()
    history.epoch = list(epochs)
    history.history = {k: [float(v) for v in values] for k, values in metrics.items()}
    return history


def restore(
    network_cls: Any,
    meta: dict[str, str],
    tensors: dict[str, np.ndarray],
    backend: Any,
    device: Any,
    dtype: Any = None,
) -> Any:
    """A ``network_cls`` network rebuilt from checkpoint contents (ValueError if they do not fit).

    ``dtype`` (a policy name) replaces the saved policy when it keeps the same
    variable dtype: a ``"mixed_bfloat16"`` model loads as ``"float32"`` (on
    array_api_strict, say) and back; a loss scaler's state goes only to a
    policy that scales.
    """
    specs = {key: (_code(key, value), tuple(np.shape(value))) for key, value in tensors.items()}
    contents = check(meta, specs)
    policy, precision, scaler = contents.policy, contents.matmul_precision, contents.loss_scaler
    if dtype is not None and get_policy(dtype) != policy:
        policy = get_policy(dtype)
        if policy.variable_dtype != contents.dtype:
            raise ValueError(
                f"dtype={policy.name!r} keeps {policy.variable_dtype} parameters, and the file holds "
                f"{contents.dtype} ones; load it with a policy that keeps {contents.dtype}"
            )
        precision = precision if policy.name == "float32" else "highest"
        scaler = (scaler or LossScaler()) if policy.loss_scaling else None
    net = network_cls(
        contents.layers,
        loss=contents.loss,
        optimizer=contents.optimizer,
        backend=backend,
        device=device,
        dtype=policy,
        matmul_precision=precision,
        loss_scaler=scaler,
    )
    net.build(contents.in_features)
    for index, layer in enumerate(net.layers):
        for name in list(layer.params):
            layer.params[name] = net.backend.asarray(tensors[f"layers.{index}.{name}"], net.dtype, copy=True)
        for name in list(layer.state):
            layer.state[name] = net.backend.asarray(tensors[f"state.{index}.{name}"], net.dtype, copy=True)
    prefix = "optimizer."
    for key, value in tensors.items():
        if key.startswith(prefix):
            slot, _, name = key[len(prefix) :].rpartition(".")
            if slot == loss_scaling.STATE_KEY and net.loss_scaler is None:
                continue  # a float16 model loaded under a policy without scaling
            net.optimizer.state.setdefault(slot, {})[name] = net.backend.asarray(value, net.dtype, copy=True)
    net.epoch = contents.epoch
    net.rng.bit_generator.state = contents.rng_state
    net.input_scaling = contents.input_scaling
    net.metadata = contents.metadata
    net.history = contents.history
    return net


def _code(key: str, value: Any) -> str:
    dtype = np.asarray(value).dtype if not hasattr(value, "dtype") else np.dtype(value.dtype)
    for name, code in FLOAT_TENSORS.items():
        if dtype == np.dtype(name):
            return code
    raise ValueError(f"tensor {key!r} has dtype {dtype}; expected float32 or float64")
