"""A network as checkpoint contents: tensors and metadata strings, and back.

:func:`state_of` turns a network into what :func:`xpnet.checkpoint.write`
stores; :func:`restore` rebuilds one from what :func:`xpnet.checkpoint.read`
returns. The network class is passed in, so this module never imports it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..nn.layers import LAYERS
from ..nn.losses import get_loss
from ..optim.optimizers import OPTIMIZERS
from .history import History


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


def state_of(net: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (parameters, optimizer state) and metadata (everything else) of ``net``."""
    if not net.built:
        raise ValueError("the network is not built yet: fit it or give in_features first")
    tensors: dict[str, np.ndarray] = {}
    for index, layer in enumerate(net.layers):
        for name, value in layer.params.items():
            tensors[f"layers.{index}.{name}"] = np.ascontiguousarray(to_numpy(value))
    for key, state in net.optimizer.state.items():
        for name, value in state.items():
            tensors[f"optimizer.{key}.{name}"] = np.ascontiguousarray(to_numpy(value))
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
        "epoch": str(net.epoch),
        "rng_state": json.dumps(_jsonable(net.rng.bit_generator.state)),
        "input_scaling": json.dumps(_jsonable(net.input_scaling)),
        "metadata": json.dumps(_jsonable(net.metadata)),
        "history": json.dumps({"epoch": net.history.epoch, "history": net.history.history}),
    }
    return tensors, metadata


def restore(
    network_cls: Any, meta: dict[str, str], tensors: dict[str, np.ndarray], backend: Any, device: Any
) -> Any:
    """A ``network_cls`` network rebuilt from checkpoint contents (ValueError if they do not fit)."""
    try:
        return _rebuild(network_cls, meta, tensors, backend, device)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a valid xpnet model: {exc!r}") from exc


def _rebuild(
    network_cls: Any, meta: dict[str, str], tensors: dict[str, np.ndarray], backend: Any, device: Any
) -> Any:
    layers = []
    for spec in json.loads(meta["layers"]):
        cls = LAYERS.get(spec["class"])
        if cls is None:
            raise ValueError(f"unknown layer class {spec['class']!r} in the model file")
        layers.append(cls(**spec["config"]))
    opt = json.loads(meta["optimizer"])
    if opt["name"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt['name']!r} in the model file")
    optimizer = OPTIMIZERS[opt["name"]](**opt["config"])
    net = network_cls(
        layers,
        loss=get_loss(meta["loss"], **json.loads(meta.get("loss_config", "{}"))),
        optimizer=optimizer,
        backend=backend,
        device=device,
        dtype=meta["dtype"],
    )
    net.build(int(meta["in_features"]))
    for index, layer in enumerate(net.layers):
        for name in list(layer.params):
            value = tensors[f"layers.{index}.{name}"]
            if tuple(value.shape) != tuple(layer.params[name].shape):
                raise ValueError(
                    f"layer {index} {name} has shape {value.shape} in the file, "
                    f"but the architecture needs {tuple(layer.params[name].shape)}"
                )
            layer.params[name] = net.backend.asarray(value, net.dtype, copy=True)
    prefix = "optimizer."
    for key, value in tensors.items():
        if key.startswith(prefix):
            slot, _, name = key[len(prefix) :].rpartition(".")
            net.optimizer.state.setdefault(slot, {})[name] = net.backend.asarray(value, net.dtype, copy=True)
    net.optimizer.iterations = int(opt["iterations"])
    net.epoch = int(meta["epoch"])
    net.rng.bit_generator.state = json.loads(meta["rng_state"])
    net.input_scaling = json.loads(meta["input_scaling"])
    net.metadata = json.loads(meta["metadata"])
    recorded = json.loads(meta["history"])
    net.history = History()
    net.history.epoch = list(recorded["epoch"])
    net.history.history = {k: list(v) for k, v in recorded["history"].items()}
    return net
