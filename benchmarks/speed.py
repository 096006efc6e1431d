"""Training speed of xpnet beside its peers, in one process, on the same data and weights.

Configurations (float32, softmax cross-entropy unless noted):
  mnist  784-256-128-10 ReLU, SGD lr 0.1, batch 128, 60,000 samples from a fixed linear teacher
  wide   1024-4096-4096-10 ReLU, batch 512, 16,384 samples (matrix-multiply bound)
  tiny   XOR 2-3-1 tanh/sigmoid with log-loss, batch 4, 2,000 steps (per-step overhead)
  adam   mnist with Adam (lr 1e-3)
  gpu    4096-4096-4096-10 ReLU, batch 4096, 65,536 samples (GPU-sized; slow on a CPU)

Peers: a hand-written NumPy loop with preallocated buffers (the practical ceiling
for NumPy code), PyTorch eager, scikit-learn's MLPClassifier (mnist), and JAX jit
when installed; on a GPU, PyTorch with the whole step captured in a CUDA graph
(torch-cudagraph) and JAX with a whole pass in one jitted scan (jax-scan).
Repeats are interleaved (A B C A B C ...) and medians reported, since a small
machine drifts. Prints one JSON line per timed run, then a Markdown table.

    python benchmarks/speed.py                         # CPU: numpy backend and CPU peers
    python benchmarks/speed.py --configs mnist tiny --repeats 7
    python benchmarks/speed.py --backend cupy jax      # GPU: cupy and jax beside torch (eager and
                                                       # CUDA-graph) and jax-scan, all on the GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import xpnet as xn


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    samples: int
    batch: int
    optimizer: str
    lr: float
    hidden: str = "relu"
    epochs: int = 1  # timed passes per repeat (tiny: steps are epochs of one batch)


CONFIGS = {
    "mnist": Config("mnist", (784, 256, 128, 10), 60_000, 128, "sgd", 0.1),
    "wide": Config("wide", (1024, 4096, 4096, 10), 16_384, 512, "sgd", 0.01),
    "tiny": Config("tiny", (2, 3, 1), 4, 4, "sgd", 0.5, hidden="tanh", epochs=2000),
    "adam": Config("adam", (784, 256, 128, 10), 60_000, 128, "adam", 1e-3),
    "gpu": Config("gpu", (4096, 4096, 4096, 10), 65_536, 4096, "sgd", 0.01),
}


def make_data(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    if cfg.name == "tiny":
        return np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), np.array([0, 1, 1, 0])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(cfg.samples, cfg.sizes[0])).astype(np.float32)
    teacher = rng.normal(size=(cfg.sizes[0], cfg.sizes[-1])).astype(np.float32)
    return X, np.argmax(X @ teacher, axis=1)


def initial_weights(cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    weights = []
    for fan_in, fan_out in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        limit = np.sqrt(6.0 / fan_in)
        weights.append(
            (rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, np.float32))
        )
    return weights


def flops_per_sample(cfg: Config) -> float:
    """Forward 2*in*out per layer, backward 2*in*out for weights and (except layer 1) inputs."""
    pairs = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
    forward = sum(2 * i * o for i, o in pairs)
    backward = sum(2 * i * o for i, o in pairs) + sum(2 * i * o for i, o in pairs[1:])
    return float(forward + backward)


def _array_module(xp_name: str) -> tuple[Any, Callable[[], None]]:
    """The array module that times matrix multiplies, and its synchronize."""
    if xp_name == "cupy":
        import cupy

        return cupy, cupy.cuda.Device().synchronize
    return np, lambda: None


def _median_seconds(run: Callable[[], None], sync: Callable[[], None], repeats: int) -> float:
    run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(xp_name: str = "numpy", size: int = 2048, repeats: int = 7) -> float:
    """Measured float32 square matrix-multiply throughput in GFLOP/s (median)."""
    mod, sync = _array_module(xp_name)
    a = mod.asarray(np.random.default_rng(0).normal(size=(size, size)).astype(np.float32))
    b, out = a.copy(), mod.empty_like(a)
    seconds = _median_seconds(lambda: mod.matmul(a, b, out=out), sync, repeats)
    return 2 * size**3 / seconds / 1e9


def matmul_shapes(cfg: Config) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix multiply in one training step: forward, weight and input gradients."""
    shapes = []
    for layer, (fan_in, fan_out) in enumerate(zip(cfg.sizes[:-1], cfg.sizes[1:])):
        shapes.append((cfg.batch, fan_in, fan_out))  # x @ W
        shapes.append((fan_in, cfg.batch, fan_out))  # x.T @ dy
        if layer:
            shapes.append((cfg.batch, fan_out, fan_in))  # dy @ W.T
    return shapes


def step_matmul_seconds(cfg: Config, xp_name: str = "numpy", repeats: int = 7) -> float:
    """Median time of one step's matrix multiplies alone, at this machine's rate for those shapes."""
    mod, sync = _array_module(xp_name)
    rng = np.random.default_rng(0)
    operands = []
    for m, k, n in matmul_shapes(cfg):
        a = mod.asarray(rng.normal(size=(m, k)).astype(np.float32))
        b = mod.asarray(rng.normal(size=(k, n)).astype(np.float32))
        operands.append((a, b, mod.empty((m, n), dtype=mod.float32)))

    def run() -> None:
        for a, b, out in operands:
            mod.matmul(a, b, out=out)

    return _median_seconds(run, sync, repeats)


# -- the runners: each returns a function that trains one timed repeat -----------------


USER_TINY_EPOCHS = (200, 500)
"""``--as-user`` on tiny: the warm-up ``fit``'s epochs, then the timed fits' (a new count each repeat)."""


def run_xpnet(
    cfg: Config, X: np.ndarray, y: np.ndarray, backend: str, as_user: bool = False
) -> Callable[[], None]:
    """xpnet's ``fit``: on device arrays, one call per repeat; ``as_user``, as a user calls it: from
    the NumPy arrays, tiny as ``fit(epochs=500 + k)`` (a count never seen before) after a warm-up
    ``fit(epochs=200)``, the others as one ``fit(epochs=1)`` per epoch."""
    binary = cfg.name == "tiny"
    layers = [xn.Dense(n, cfg.hidden) for n in cfg.sizes[1:-1]]
    layers.append(xn.Dense(cfg.sizes[-1], "sigmoid" if binary else "softmax"))
    opt = xn.SGD(cfg.lr) if cfg.optimizer == "sgd" else xn.Adam(cfg.lr)
    for layer, (w, b) in zip(layers, initial_weights(cfg)):
        layer.weight, layer.bias = w, b  # kept when the network builds
    net = xn.Network(
        layers, loss="logloss" if binary else "cross_entropy", optimizer=opt, backend=backend, seed=0
    )
    net.build(cfg.sizes[0])
    if as_user:
        return _as_user(cfg, net, X, y)
    Xd, yd = net.backend.asarray(X), net.backend.asarray(y)
    net.fit(Xd, yd, epochs=1, batch_size=cfg.batch, verbose=0)  # warm-up

    def repeat() -> None:
        net.fit(Xd, yd, epochs=cfg.epochs, batch_size=cfg.batch, verbose=0)
        _wait(net)

    return repeat


def _wait(net: xn.Network) -> None:
    net.backend.synchronize(net.layers[0].weight)


def _as_user(cfg: Config, net: xn.Network, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    if cfg.name == "tiny":
        warm, timed = USER_TINY_EPOCHS
        net.fit(X, y, epochs=warm, batch_size=cfg.batch, verbose=0)
        counts = iter(range(timed, timed + 10_000))

        def repeat() -> None:
            net.fit(X, y, epochs=next(counts), batch_size=cfg.batch, verbose=0)
            _wait(net)

        return repeat
    net.fit(X, y, epochs=1, batch_size=cfg.batch, verbose=0)

    def epochs() -> None:
        for _ in range(cfg.epochs):
            net.fit(X, y, epochs=1, batch_size=cfg.batch, verbose=0)
        _wait(net)

    return epochs


class HandwrittenNumpy:
    """A minimal NumPy training loop with preallocated buffers and in-place updates."""

    def __init__(self, cfg: Config, X: np.ndarray, y: np.ndarray) -> None:
        self.cfg, self.X = cfg, X
        self.binary = cfg.name == "tiny"
        k = cfg.sizes[-1]
        self.Y = y.reshape(-1, 1).astype(np.float32) if self.binary else np.eye(k, dtype=np.float32)[y]
        self.params = [(w.copy(), b.copy()) for w, b in initial_weights(cfg)]
        self.adam = (
            [[np.zeros_like(p) for p in (w, b, w, b)] for w, b in self.params]
            if cfg.optimizer == "adam"
            else None
        )
        self.t = 0
        self.rng = np.random.default_rng(0)
        self.buffers: dict[int, list[np.ndarray]] = {}

    def _buffers(self, n: int) -> list[np.ndarray]:
        if n not in self.buffers:
            sizes = self.cfg.sizes
            self.buffers[n] = [np.empty((n, s), np.float32) for s in sizes[1:]] + [
                np.empty((n, s), np.float32) for s in sizes[1:-1]
            ]
        return self.buffers[n]

    def step(self, x: np.ndarray, t: np.ndarray) -> None:
        n = len(x)
        bufs = self._buffers(n)
        layers = len(self.params)
        acts, grads_in = bufs[:layers], bufs[layers:]
        h = x
        for i, (w, b) in enumerate(self.params):
            out = acts[i]
            np.matmul(h, w, out=out)
            out += b
            if i < layers - 1:
                if self.cfg.hidden == "relu":
                    np.maximum(out, 0, out=out)
                else:
                    np.tanh(out, out=out)
            h = out
        if self.binary:
            np.negative(h, out=h)
            np.exp(h, out=h)
            h += 1
            np.reciprocal(h, out=h)
        else:
            h -= h.max(axis=1, keepdims=True)
            np.exp(h, out=h)
            h /= h.sum(axis=1, keepdims=True)
        d = h
        d -= t
        d *= 1.0 / (n * (1 if not self.binary else t.shape[1]))
        self.t += 1
        for i in range(layers - 1, -1, -1):
            w, b = self.params[i]
            prev = x if i == 0 else acts[i - 1]
            gw = prev.T @ d
            gb = d.sum(axis=0)
            if i > 0:
                dprev = grads_in[i - 1]
                np.matmul(d, w.T, out=dprev)
                if self.cfg.hidden == "relu":
                    dprev *= prev > 0
                else:
                    dprev *= 1 - prev * prev
            self._update(i, w, b, gw, gb)
            if i > 0:
                d = dprev

    def _update(self, i: int, w: np.ndarray, b: np.ndarray, gw: np.ndarray, gb: np.ndarray) -> None:
        lr = self.cfg.lr
        if self.adam is None:
            gw *= lr
            w -= gw
            gb *= lr
            b -= gb
            return
        mw, mb, vw, vb = self.adam[i]
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for p, g, m, v in ((w, gw, mw, vw), (b, gb, mb, vb)):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            g *= g
            g *= 0.001
            v += g
            denom = np.sqrt(v)
            denom *= 1 / np.sqrt(c2)
            denom += 1e-8
            np.divide(m, denom, out=denom)
            denom *= lr / c1
            p -= denom

    def epoch(self) -> None:
        n = len(self.X)
        order = self.rng.permutation(n)
        for start in range(0, n, self.cfg.batch):
            idx = order[start : start + self.cfg.batch]
            self.step(self.X[idx], self.Y[idx])


def run_handwritten(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    loop = HandwrittenNumpy(cfg, X, y)
    loop.epoch()

    def repeat() -> None:
        for _ in range(cfg.epochs):
            loop.epoch()

    return repeat


def _torch_setup(cfg: Config, X: np.ndarray, y: np.ndarray, device: str) -> tuple[Any, Any, Any, Any]:
    """The torch model with the shared initial weights, its loss, and the data on ``device``."""
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for (w, b), last in zip(initial_weights(cfg), [False] * (len(cfg.sizes) - 2) + [True]):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if not last:
            layers.append(torch.nn.ReLU() if cfg.hidden == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).to(device)
    binary = cfg.name == "tiny"
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X).to(device)
    yt = torch.from_numpy(y.astype(np.float32).reshape(-1, 1) if binary else y).to(device)
    return model, loss_fn, Xt, yt


def run_torch(cfg: Config, X: np.ndarray, y: np.ndarray, device: str) -> Callable[[], None]:
    import torch

    model, loss_fn, Xt, yt = _torch_setup(cfg, X, y, device)
    opt = (torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)

    def epoch() -> None:
        order = torch.from_numpy(rng.permutation(len(X))).to(device)
        for start in range(0, len(X), cfg.batch):
            idx = order[start : start + cfg.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()

    epoch()

    def repeat() -> None:
        for _ in range(cfg.epochs):
            epoch()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return repeat


def run_torch_cudagraph(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    """PyTorch at its best on a GPU: the whole step (gather, forward, loss, backward, update) captured
    in one CUDA graph and replayed per batch, as PyTorch's "whole network capture" recipe does; the
    batch indices are copied into the graph's static index tensor; a ragged last batch is one eager step.
    Adam is ``capturable=True``."""
    import torch

    device = "cuda"
    model, loss_fn, Xt, yt = _torch_setup(cfg, X, y, device)
    if cfg.optimizer == "sgd":
        opt: Any = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, capturable=True)
    n, batch = len(X), min(cfg.batch, len(X))
    index = torch.zeros(batch, dtype=torch.long, device=device)

    def step(idx: Any) -> None:
        loss = loss_fn(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture wants
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step(index)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step(index)
    rng = np.random.default_rng(0)
    full = n - n % batch

    def epoch() -> None:
        order = torch.from_numpy(rng.permutation(n)).to(device)
        for start in range(0, full, batch):
            index.copy_(order[start : start + batch])
            graph.replay()
        if full < n:  # the ragged last batch, eagerly, into the graph's gradients (zeroed: backward adds)
            opt.zero_grad(set_to_none=False)
            step(order[full:])

    epoch()

    def repeat() -> None:
        for _ in range(cfg.epochs):
            epoch()
        torch.cuda.synchronize()

    return repeat


def run_sklearn(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    import warnings

    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=cfg.sizes[1:-1],
        solver="sgd" if cfg.optimizer == "sgd" else "adam",
        learning_rate_init=cfg.lr,
        batch_size=cfg.batch,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        shuffle=True,
        random_state=0,
    )
    classes = np.arange(cfg.sizes[-1])
    warnings.filterwarnings("ignore")
    model.partial_fit(X, y, classes=classes)
    return lambda: model.partial_fit(X, y)


def _jax_update(cfg: Config) -> Callable:
    """The pure training step a JAX user writes: gather, forward, loss, jax.grad, SGD or Adam."""
    import jax
    import jax.numpy as jnp

    binary = cfg.name == "tiny"
    act = jax.nn.relu if cfg.hidden == "relu" else jnp.tanh

    def loss_fn(params, x, t):
        h = x
        for w, b in params[:-1]:
            h = act(h @ w + b)
        z = h @ params[-1][0] + params[-1][1]
        if binary:
            return jnp.mean(jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z))))
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z), axis=1))

    def update(state, X, T, idx):
        x, t = X[idx], T[idx]  # the batch gather runs inside the compiled step
        if cfg.optimizer == "sgd":
            grads = jax.grad(loss_fn)(state, x, t)
            return jax.tree_util.tree_map(lambda p, g: p - cfg.lr * g, state, grads)
        p, m, v, k = state
        g = jax.grad(loss_fn)(p, x, t)
        k = k + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        c1, c2 = 1 - 0.9**k, 1 - 0.999**k
        p = jax.tree_util.tree_map(
            lambda p, m, v: p - cfg.lr / c1 * m / (jnp.sqrt(v) / jnp.sqrt(c2) + 1e-8), p, m, v
        )
        return p, m, v, k

    return update


def run_jax(cfg: Config, X: np.ndarray, y: np.ndarray, scan: bool) -> Callable[[], None]:
    """JAX as its users write it: the whole update under jax.jit with donated state.

    ``scan=False`` (jax-step) calls the jitted step once per batch with the batch's
    indices; ``scan=True`` (jax-scan) runs every full batch of a timed pass in one
    jitted ``lax.scan`` (a ragged last batch is one more step call), so no Python runs
    per step. Either way the data set and labels live on the device and only index
    arrays travel.
    """
    import jax
    import jax.numpy as jnp

    update = _jax_update(cfg)
    step = jax.jit(update, donate_argnums=0)

    @functools.partial(jax.jit, donate_argnums=0)
    def steps(state, X, T, batches):
        return jax.lax.scan(lambda s, idx: (update(s, X, T, idx), None), state, batches)[0]

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in initial_weights(cfg)]
    state = params
    if cfg.optimizer == "adam":
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.asarray(0, jnp.int32))
    binary = cfg.name == "tiny"
    T = y.reshape(-1, 1).astype(np.float32) if binary else np.eye(cfg.sizes[-1], dtype=np.float32)[y]
    Xj, Tj = jnp.asarray(X), jnp.asarray(T)
    n, batch = len(X), cfg.batch
    full = n - n % batch
    rng = np.random.default_rng(0)
    holder = [state]

    def train(epochs: int) -> None:
        s = holder[0]
        orders = [rng.permutation(n).astype(np.int32) for _ in range(epochs)]
        if not scan:
            for order in orders:
                for start in range(0, n, batch):
                    s = step(s, Xj, Tj, order[start : start + batch])
        elif full == n:  # no ragged batch: every epoch of the pass in one scan
            s = steps(s, Xj, Tj, np.concatenate(orders).reshape(-1, batch))
        else:
            for order in orders:
                s = steps(s, Xj, Tj, order[:full].reshape(-1, batch))
                s = step(s, Xj, Tj, order[full:])
        holder[0] = jax.block_until_ready(s)

    train(cfg.epochs)  # warm-up: compiles every shape the timed passes use
    return functools.partial(train, cfg.epochs)


def peak_memory(make: Callable[[], Callable[[], None]]) -> float:
    """Peak traced host memory (MiB) of building a trainer and running one repeat.

    Counts everything each approach allocates beyond the shared data set:
    weights, optimizer state, preallocated buffers, labels and temporaries.
    """
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    make()()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2**20


PEERS = {
    "numpy": ("numpy-loop",),
    "jax": ("jax-scan", "jax-step"),
    "torch": ("torch-cpu",),
    "cupy": ("torch-cudagraph", "torch-cuda"),
}
"""Each xpnet backend's own hand-written code; the ratio column divides by the fastest in the run."""

TARGETS = [  # (config, numerator, denominator, target speed ratio)
    ("mnist", "xpnet[numpy]", "numpy-loop", 1.0),
    ("mnist", "xpnet[jax]", "jax peer", 0.9),
    ("mnist", "xpnet[torch]", "torch-cpu", 0.95),
    ("tiny", "xpnet[numpy]", "numpy-loop", 0.7),
    ("tiny", "xpnet[jax]", "numpy-loop", 5.0),
    ("mnist", "fastest xpnet", "torch-cpu", 1.5),
    # issue 19, on one GPU, every peer on the same card
    ("mnist", "xpnet[cupy]", "torch-cudagraph", 2.0),
    ("mnist", "xpnet[cupy]", "jax-scan", 1.0),
    ("adam", "xpnet[cupy]", "torch-cudagraph", 2.0),
    ("tiny", "xpnet[cupy]", "torch-cudagraph", 2.0),
    ("wide", "xpnet[cupy]", "torch-cuda", 1.0),
    ("gpu", "xpnet[cupy]", "torch-cuda", 1.0),
    ("mnist", "xpnet[jax]", "jax-scan", 0.9),
]
MATMUL_SHARE_TARGETS = [("gpu", "xpnet[cupy]", 0.95)]
"""(config, framework, least share of the step's time that its matrix multiplies alone would take)."""


def runners(
    cfg: Config, backends: list[str], peers: list[str], as_user: bool = False
) -> dict[str, Callable[[], Callable[[], None]]]:
    """Labelled makers, xpnet on each backend, each beside its peer, so repeats interleave them."""
    X, y = make_data(cfg)
    gpu = "cupy" in backends
    makers: dict[str, Callable[[], Callable[[], None]]] = {}
    for backend in backends:
        makers[f"xpnet[{backend}]"] = functools.partial(run_xpnet, cfg, X, y, backend, as_user)
        if backend == "numpy" and "numpy-loop" in peers:
            makers["numpy-loop"] = functools.partial(run_handwritten, cfg, X, y)
        if backend == "jax" and "jax" in peers:
            makers["jax-scan"] = functools.partial(run_jax, cfg, X, y, True)
            makers["jax-step"] = functools.partial(run_jax, cfg, X, y, False)
        if backend in ("torch", "cupy") and "torch" in peers:
            device = "cuda" if gpu else "cpu"
            makers[f"torch-{device}"] = functools.partial(run_torch, cfg, X, y, device)
        if backend == "cupy" and "torch" in peers:
            makers["torch-cudagraph"] = functools.partial(run_torch_cudagraph, cfg, X, y)
    if "numpy-loop" in peers and not gpu:
        makers.setdefault("numpy-loop", functools.partial(run_handwritten, cfg, X, y))
    if "torch" in peers:
        device = "cuda" if gpu else "cpu"
        makers.setdefault(f"torch-{device}", functools.partial(run_torch, cfg, X, y, device))
    if "jax" in peers and "jax-scan" not in makers:
        try:
            import jax  # noqa: F401

            makers["jax-scan"] = functools.partial(run_jax, cfg, X, y, True)
        except ImportError:
            pass
    if "sklearn" in peers and not gpu and cfg.name in ("mnist", "adam"):
        makers["sklearn"] = functools.partial(run_sklearn, cfg, X, y)
    return makers


def measure(
    cfg: Config, backends: list[str], peers: list[str], repeats: int, as_user: bool = False
) -> list[dict]:
    """Interleaved timed repeats of every runner of one configuration; one row per runner."""
    name = cfg.name
    device_name = "cupy" if "cupy" in backends else "numpy"
    makers = runners(cfg, backends, peers, as_user)
    runs = {label: make() for label, make in makers.items()}
    times: dict[str, list[float]] = {label: [] for label in runs}
    peaks = []  # the machine drifts: sample the matmul peak between repeats too
    for _ in range(repeats):
        peaks.append(matmul_peak(device_name, repeats=3))
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            times[label].append(seconds)
            print(json.dumps({"config": name, "framework": label, "seconds": round(seconds, 5)}), flush=True)
    memory = {}
    if "cupy" not in backends and name != "tiny":  # tracemalloc sees NumPy's allocations only
        for label in ("xpnet[numpy]", "numpy-loop"):
            if label in makers:
                memory[label] = peak_memory(makers[label])
    work = cfg.epochs * (cfg.samples if name != "tiny" else 1)
    steps = cfg.epochs if name == "tiny" else -(-cfg.samples // cfg.batch)
    peak = statistics.median(peaks)
    print(json.dumps({"config": name, "matmul_peak_gflops": round(peak, 1)}))
    matmul_seconds = step_matmul_seconds(cfg, device_name) * steps if name != "tiny" else None
    medians = {label: statistics.median(values) for label, values in times.items()}
    rows = []
    for label, values in times.items():
        med = medians[label]
        rate = work / med
        gflops = rate * flops_per_sample(cfg) * (cfg.batch if name == "tiny" else 1) / 1e9
        mine = [p for p in PEERS.get(label[6:-1], ()) if p in medians] if label.startswith("xpnet[") else []
        peer = min(mine, key=medians.__getitem__) if mine else ""
        rows.append(
            {
                "config": name,
                "framework": label,
                "rate": rate,
                "unit": "steps/s" if name == "tiny" else "samples/s",
                "median_s": med,
                "spread": f"{min(values):.3f}-{max(values):.3f}",
                "peer": peer,
                "vs_peer": medians[peer] / med if peer else None,
                "peak_fraction": gflops / peak,
                "mem_mib": memory.get(label),
                "peak_gflops": peak,
                "us_per_step": med / steps * 1e6,
                "matmul_share": matmul_seconds / med if matmul_seconds else None,
            }
        )
        print(json.dumps({"config": name, "framework": label, "median_rate": rate, "unit": rows[-1]["unit"]}))
    return rows


def print_table(table: list[dict], repeats: int) -> None:
    print()
    print(f"float32; medians of {repeats} interleaved repeats; matmul peak sampled with each config")
    print()
    print(
        "| config | framework | rate | µs/step | peer | xpnet / peer (speed) | % of matmul peak (GFLOP/s) "
        "| matmul share | peak MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in table:
        mem = f"{row['mem_mib']:.1f}" if row["mem_mib"] is not None else ""
        ratio = f"{row['vs_peer']:.2f}x" if row["vs_peer"] is not None else ""
        peak_share = f"{100 * row['peak_fraction']:.0f}% ({row['peak_gflops']:.0f})"
        share = f"{100 * row['matmul_share']:.0f}%" if row["matmul_share"] is not None else ""
        print(
            f"| {row['config']} | {row['framework']} | {row['rate']:,.0f} {row['unit']} "
            f"| {row['us_per_step']:.0f} | {row['peer']} | {ratio} | {peak_share} | {share} | {mem} |"
        )


def print_ratios(table: list[dict]) -> None:
    """The cross ratios the targets of issue 9 name, each A / B as speed (B's time over A's)."""
    rows = {(r["config"], r["framework"]): r for r in table}
    lines = []
    for config, ours, peer, target in TARGETS:
        if ours == "fastest xpnet":
            mine = [r for (c, f), r in rows.items() if c == config and f.startswith("xpnet[")]
            if not mine:
                continue
            best = min(mine, key=lambda r: r["median_s"])
            ours, a = f"fastest xpnet ({best['framework']})", best
        elif (config, ours) in rows:
            a = rows[(config, ours)]
        else:
            continue
        if peer == "jax peer":
            jax_rows = [rows[(config, p)] for p in PEERS["jax"] if (config, p) in rows]
            peer = min(jax_rows, key=lambda r: r["median_s"])["framework"] if jax_rows else peer
        b = rows.get((config, peer))
        if b is not None:
            ratio = b["median_s"] / a["median_s"]
            met = "yes" if ratio >= target else "no"
            lines.append(f"| {config} | {ours} / {peer} | {ratio:.2f}x | ≥ {target}x | {met} |")
    for config in ("mnist", "adam", "wide"):
        a, b = rows.get((config, "xpnet[numpy]")), rows.get((config, "numpy-loop"))
        if a and b and a["mem_mib"] is not None and b["mem_mib"] is not None:
            ratio = a["mem_mib"] / b["mem_mib"]
            met = "yes" if ratio <= 1.2 else "no"
            lines.append(
                f"| {config} | peak MiB xpnet[numpy] / numpy-loop | {ratio:.2f}x "
                f"({a['mem_mib']:.1f} / {b['mem_mib']:.1f}) | ≤ 1.2x | {met} |"
            )
    for config, framework, target in MATMUL_SHARE_TARGETS:
        row = rows.get((config, framework))
        if row and row["matmul_share"] is not None:
            met = "yes" if row["matmul_share"] >= target else "no"
            lines.append(
                f"| {config} | {framework}: its matmuls' time at the measured rate for their shapes / "
                f"its step time | {row['matmul_share']:.2f} | ≥ {target} | {met} |"
            )
    if lines:
        print()
        print("| config | ratio | measured | target | met? |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="*", default=["mnist", "wide", "tiny", "adam"], choices=list(CONFIGS)
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        action="extend",
        help="xpnet backends, each beside its own peer (default numpy; cupy on a GPU)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peers", nargs="*", default=["numpy-loop", "torch", "sklearn", "jax"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: its own)")
    parser.add_argument(
        "--as-user",
        action="store_true",
        help="xpnet's fit from NumPy arrays as a user calls it: tiny fit(epochs=500+k) after a warm-up "
        "fit(epochs=200) (the peers train 500 steps), the others one fit(epochs=1) per epoch",
    )
    args = parser.parse_args()
    backends = list(dict.fromkeys(args.backend or ["numpy"]))
    if "cupy" in backends and set(backends) - {"cupy", "jax"}:
        parser.error("--backend cupy runs alone or beside jax (on the GPU), its peers on the same card")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = []
    for name in args.configs:
        cfg = CONFIGS[name]
        if args.as_user and name == "tiny":
            cfg = dataclasses.replace(cfg, epochs=USER_TINY_EPOCHS[1])
        table.extend(measure(cfg, backends, args.peers, args.repeats, args.as_user))
    print_table(table, args.repeats)
    print_ratios(table)


if __name__ == "__main__":
    main()
