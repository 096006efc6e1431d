"""How ``fit`` feeds its batches: from the device, streamed from the host, or split across processes.

``Network.fit`` asks :func:`plan` for a feed and calls its ``epoch`` once per epoch:

- :class:`DeviceFeed`: in-memory data, whole on the device, one batch gathered
  at a time by the backend's runner (today's fast path, unchanged numbers).
- :class:`StreamFeed`: a :class:`~xpnet.data.streams.BatchSource` (a NumPy
  memmap, arrays with ``device_data=False``, an iterable of batches, Parquet or
  CSV readers), read batch by batch on the host; a background
  :class:`~xpnet.data.streams.Prefetcher` reads and copies the next batch to the
  device, and draws its dropout masks, while the current one trains. Every use
  of the network's host generator (the shuffle and the masks) therefore happens
  in that one thread, in the order the in-memory path uses it: an unshuffled
  stream, or a shuffled one whose source shuffles in one block, trains exactly
  as the in-memory path does.
- Data parallelism (``distributed=comm``) is a :class:`StreamFeed` whose step
  carries a gradient transform: each rank trains on its rows
  (:meth:`~xpnet.distributed.Communicator.rows`) of every global batch, with the
  global batch's dropout masks sliced to its rows; its gradients are scaled by
  its share of the batch's weight and summed over ranks in one flat buffer, so
  every rank applies the single-process batch mean. A rank left without rows
  (a global batch smaller than the ranks) steps on one row with share 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.compile import EpochPlan
from ..data import streams
from ..distributed import Communicator, flatten, unflatten
from ..nn.losses import CategoricalCrossentropy
from ..nn.metrics import correct_count, prediction_count
from . import inputs, step
from .history import History

Array = Any

_FUSED_INDICES = 1 << 22
"""At most this many row indices (16 MiB) are prepared for one call of fused epochs."""


@dataclass
class EpochResult:
    """One epoch's sums: loss x rows, correct predictions, rows and judged predictions."""

    total: Any
    correct: Any
    rows: int
    judged: int

    def logs(self, classification: bool) -> dict[str, float]:
        logs = {"loss": float(self.total) / max(self.rows, 1)}
        if classification:
            logs["accuracy"] = float(self.correct) / max(self.judged, 1)
        return logs


def streamed(X: Any, device_data: bool) -> bool:
    """Whether ``fit`` streams ``X`` from the host rather than copying it whole to the device."""
    if not device_data or isinstance(X, np.memmap):
        return True
    return isinstance(X, streams.BatchSource) or streams._looks_like_batches(X)


def source_of(net: Any, X: Any, y: Any, *, need_y: bool = False) -> streams.BatchSource:
    """``X`` (with ``y``) as a batch source on the host; the network is built for its width if known."""
    if X is None:
        raise ValueError("X is None; expected an array, a memmap or an iterable of batches")
    if not isinstance(X, (np.ndarray, streams.BatchSource)) and not streams._looks_like_batches(X):
        X = inputs.numeric(net, X, "X")
        y = None if y is None else inputs.numeric(net, y, "y")
    source = streams.as_source(X, y)
    width = _width(source)
    if width is not None and not net.built:
        net.build(width)
    if isinstance(source, streams.ArraySource):
        if source.n_rows == 0:
            raise ValueError("X is empty: it has no samples")
        if need_y and source.y is None:
            raise ValueError("y is None; expected one target per sample (or pass X as batches)")
    return source


def _width(source: Any) -> int | None:
    if isinstance(source, streams.ArraySource):
        return int(source.X.shape[1])
    features = getattr(source, "features", None)
    return None if features is None else len(features)


# -- host batch -> device batch ----------------------------------------------------------------------


def host_features(net: Any, x: np.ndarray, index: int) -> np.ndarray:
    """A batch's features in the network's dtype, checked (on the host: no device sync)."""
    x = np.asarray(x, dtype=net.dtype)
    if not net.built:
        net.build(int(x.shape[1]))
    if x.shape[1] != net.in_features:
        raise ValueError(
            f"batch {index}: X_b has {x.shape[1]} features, but the network expects {net.in_features}"
        )
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(x.sum()))
    if not finite and not bool(np.isfinite(x).all()):
        raise ValueError(f"batch {index}: X_b contains NaN or infinity; remove or impute those values")
    return x


def host_targets(net: Any, y: Any, rows: int, index: int) -> np.ndarray:
    """A batch's targets as ``inputs.targets`` makes them, on the host."""
    if y is None:
        raise ValueError(f"batch {index} has no targets; expected (X_b, y_b) or (X_b, y_b, w_b)")
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"batch {index}: y_b has dtype {y.dtype}; expected numbers")
    k = net.out_features
    if isinstance(net.loss, CategoricalCrossentropy) and y.ndim == 1:
        if y.dtype.kind == "f" and not bool(np.all(y == np.round(y))):
            raise ValueError(f"batch {index}: y_b must hold integer class labels 0..{k - 1}")
        if y.size and (y.min() < 0 or y.max() >= k):
            bad = y.min() if y.min() < 0 else y.max()
            raise ValueError(f"batch {index}: y_b has label {bad}, but the network has {k} outputs")
        return y.astype(np.int32)
    y = y.astype(net.dtype).reshape(rows, -1)
    if y.shape[1] != k:
        raise ValueError(f"batch {index}: y_b must have shape ({rows},) or ({rows}, {k}), got {y.shape}")
    if not bool(np.isfinite(y).all()):
        raise ValueError(f"batch {index}: y_b contains NaN or infinity")
    if net._classification and not bool(np.all((y >= 0) & (y <= 1))):
        raise ValueError(f"batch {index}: y_b must hold targets in [0, 1] for {net.loss.name}")
    return y


@dataclass
class Ready:
    """A batch on the device, with what the step needs beside it.

    ``share`` is this rank's fraction of the global batch's weight (1 alone);
    ``rows`` the global batch's rows; ``empty`` marks a stand-in row of a rank
    the batch left without rows; ``judged`` counts the predictions accuracy
    judges here (those of rows with a non-zero weight).
    """

    x: Array
    y: Array
    w: Array | None
    noise: list[Any] | None
    rows: int
    local_rows: int
    share: float
    empty: bool
    judged: int = 0


class Preparer:
    """Turns host batches into :class:`Ready` device batches (run in the prefetch thread)."""

    def __init__(self, net: Any, comm: Communicator | None, train: bool) -> None:
        self.net = net
        self.comm = comm
        self.draw = net._draw() if train else None
        self.index = 0

    def __call__(self, batch: streams.Batch) -> Ready:
        with self.net.backend.scope():  # this thread's arrays on the network's device (CuPy)
            return self._prepare(batch)

    def _prepare(self, batch: streams.Batch) -> Ready:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        y = host_targets(net, batch.y, n, index)
        w = None if batch.w is None else np.asarray(batch.w, dtype=net.dtype)
        noise = None if self.draw is None else self.draw(n)
        share, part, empty = 1.0, slice(0, n), False
        if self.comm is not None and self.comm.size > 1:
            share, part, empty = _part(self.comm, n, w)
        take = slice(0, 1) if empty else part
        if noise is not None:
            noise = [None if m is None else m[take] for m in noise]
        if empty:
            w = None
        elif w is not None:
            w = w[take]
        to = net.backend.asarray
        judged = 0 if empty else _judged(net, y[take], w)
        return Ready(
            inputs.scaled(net, to(x[take])),
            to(y[take]),
            None if w is None else to(w),
            None if noise is None else [None if m is None else to(m) for m in noise],
            n,
            0 if empty else part.stop - part.start,
            share,
            empty,
            judged,
        )


def _judged(net: Any, y: np.ndarray, w: np.ndarray | None) -> int:
    rows = int(y.shape[0]) if w is None else int(np.count_nonzero(w))
    binary = not isinstance(net.loss, CategoricalCrossentropy)
    return rows * (int(y.shape[1]) if binary and y.ndim > 1 else 1)


def _part(comm: Communicator, n: int, w: np.ndarray | None) -> tuple[float, slice, bool]:
    """This rank's share of the batch weight, its rows, and whether it has none (or none weighted)."""
    part = comm.rows(n)
    if w is None:
        mine, whole = float(part.stop - part.start), float(n)
    else:
        mine, whole = float(w[part].sum()), float(w.sum())
    if mine == 0.0:
        return 0.0, part, True
    return mine / whole, part, False


# -- the epoch loops -----------------------------------------------------------------------------------


class DeviceFeed:
    """Whole arrays on the device, gathered per batch by the backend's runner (the fast path)."""

    def __init__(
        self, net: Any, x: Array, t: Array, batch_size: int, shuffle: bool, weight: Any = None
    ) -> None:
        self.x, self.t, self.weight = x, t, weight
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rows = int(self.x.shape[0])
        self.steps: int | None = -(-self.rows // batch_size)
        self.judged = prediction_count(self.t, binary=net._model().binary)
        self.run = net._runner()

    @property
    def fusable(self) -> bool:
        """Whether the runner can train several epochs in one call (JAX)."""
        return hasattr(self.run, "run_epochs")

    def epoch(self, net: Any, progress: Any) -> EpochResult:
        total, correct = net._train_epoch(
            self.run, self.x, self.t, self.batch_size, self.shuffle, progress, self.weight
        )
        return EpochResult(total, correct, self.rows, self.judged)

    def fit_fused(self, net: Any, epochs: int, callbacks: list[Any], histories: Sequence[History]) -> int:
        """Train up to ``epochs`` epochs, many per runner call; how many ran.

        For ``fit`` when nothing runs between epochs but
        :class:`~xpnet.callbacks.TerminateOnNaN`: the runner stops after the
        first epoch whose loss or parameters are not finite, so that callback
        can act only on the last epoch that ran, and its ``on_epoch_end`` (its
        one per-epoch hook) runs there. Every epoch's logs are the ones the
        epoch-by-epoch loop records, added to ``histories`` in one go.
        """
        done = 0
        while done < epochs and not net.stop_training:
            totals, corrects = self._epochs(net, epochs - done)
            logs = {"loss": (np.array([float(v) for v in totals]) / max(self.rows, 1)).tolist()}
            if net._classification:
                logs["accuracy"] = (np.array([float(v) for v in corrects]) / max(self.judged, 1)).tolist()
            first, ran = net.epoch, len(totals)
            net.epoch += ran
            done += ran
            for history in histories:
                history.extend(range(first, first + ran), logs)
            last = {key: values[-1] for key, values in logs.items()}
            for callback in callbacks:
                callback.on_epoch_end(net, net.epoch - 1, last)
            if len(last) != len(logs):
                for history in histories:
                    history.update_last(last)
        return done

    def _epochs(self, net: Any, count: int) -> tuple[Sequence[Any], Sequence[Any]]:
        """Up to ``count`` epochs in one runner call; summed losses x rows and correct counts of those run.

        The host draws (shuffles, masks) of the whole call are taken first, in
        the eager order; after a non-finite epoch the later ones do not run
        (their draws are spent).
        """
        n, size, opt = self.rows, self.batch_size, net.optimizer
        steps = -(-n // size)
        count = max(1, min(count, _FUSED_INDICES // (steps * min(size, n))))
        plan = EpochPlan(
            self.x,
            self.t,
            self.weight,
            size,
            self.shuffle,
            net.rng,
            net._draw(),
            opt.iterations + 1,
            opt.learning_rate,
        )
        carry, totals, corrects, ran = self.run.run_epochs(net._arrays(), plan, count)
        opt.iterations += ran * steps
        net._publish(*carry)
        return totals[:ran], corrects[:ran]


class StreamFeed:
    """Batches read on the host and copied to the device in the background (see the module docstring)."""

    def __init__(
        self,
        net: Any,
        source: streams.BatchSource,
        batch_size: int,
        shuffle: bool,
        comm: Communicator | None = None,
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.steps = source.num_batches(batch_size)
        self.share = 1.0
        model = net._model()
        if self.comm is not None:
            clip = model.transform  # clipping, if any, acts on the averaged gradients

            def transform(grads: step.Params, xp: Any) -> step.Params:
                summed = self._allreduce(grads, xp)
                return summed if clip is None else clip(summed, xp)

            model = step.Model(model.layers, model.loss, model.optimizer, transform=transform)
        self.model = model
        self.step = _step_function(net, model, distributed=self.comm is not None)

    def _allreduce(self, grads: step.Params, xp: Any) -> step.Params:
        """Sum every rank's gradients, each scaled by its share, in one flat buffer."""
        assert self.comm is not None
        flat, layout = flatten(grads)
        total: Any = unflatten(self.comm.allreduce_sum(flat * self.share), layout)
        return total

    def epoch(self, net: Any, progress: Any) -> EpochResult:
        batches = _built(net, self.source.batches(self.batch_size, net.rng if self.shuffle else None))
        params, opt, states = net._arrays()
        xp = net.backend.xp
        number, lr = net.optimizer.iterations + 1, net.optimizer.learning_rate
        total: Any = 0.0
        correct: Any = 0
        rows = judged = steps = 0
        with net.backend.scope(), streams.Prefetcher(batches, Preparer(net, self.comm, True)) as ready:
            for b in ready:
                self.share = b.share
                params, opt, states, value, hit = self.step(
                    params, opt, states, b.x, b.y, b.w, b.noise, number + steps, lr, xp=xp
                )
                total = total + value * (b.share * b.rows if self.comm is not None else b.rows)
                if hit is not None and not b.empty:
                    correct = correct + hit
                    judged += b.judged
                rows += b.rows
                steps += 1
                if progress is not None and progress.active:
                    progress.step(steps, _running(total, rows))
        if steps == 0:
            raise ValueError(
                "X gave no batches this epoch; an exhausted iterator (a generator already read) gives "
                "none: pass a list, a re-iterable such as a torch DataLoader, or a function returning "
                "a fresh iterator"
            )
        net.optimizer.iterations += steps
        net._publish(params, opt, states)
        if self.comm is not None:
            total, correct, judged = _reduce(self.comm, total, correct, judged)
        return EpochResult(total, correct, rows, judged)


def _running(total: Any, rows: int) -> Any:
    return lambda: {"loss": float(total) / max(rows, 1)}


def _reduce(comm: Communicator, total: Any, correct: Any, judged: int) -> tuple[float, float, int]:
    """The loss, correct and judged predictions summed over ranks, in one collective."""
    sums = comm.allreduce_sum(np.array([float(total), float(correct), float(judged)]))
    return float(sums[0]), float(sums[1]), int(sums[2])


def _built(net: Any, batches: Iterator[streams.Batch]) -> Iterator[streams.Batch]:
    """``batches``, building the network from the first batch's width when it is not built yet."""
    if net.built:
        return batches
    first = next(iter(batches), None)
    if first is None:
        raise ValueError("the batches are empty: the iterable gave no batch")
    net.build(int(np.asarray(first.x).shape[1]))

    def chained() -> Iterator[streams.Batch]:
        yield first
        yield from batches

    return chained()


def _step_function(net: Any, model: step.Model, *, distributed: bool) -> Any:
    """``step(params, opt, states, x, y, w, noise, number, lr, xp=xp)`` for streamed batches.

    JAX compiles one step (a ``jax.jit`` per batch shape) unless ``compile=False``
    or the step holds an MPI collective; other backends run it eagerly, in place
    where the arrays are writeable and ``compile`` is not False.
    """
    backend = net.backend
    if backend.name == "jax" and net.compile is not False and not distributed:
        key = ("stream", net.dtype, step.signature(model))
        if key not in net._runners:
            net._runners[key] = _jax_step(model, net)
        return net._runners[key]
    inplace = backend.mutable and net.compile is not False

    def eager(params: Any, opt: Any, states: Any, *args: Any, xp: Any) -> Any:
        return step.train_step(model, params, opt, states, *args, xp=xp, inplace=inplace)

    return eager


def _jax_step(model: step.Model, net: Any) -> Any:
    import jax
    import jax.numpy as jnp

    dtype = np.dtype(net.dtype)

    def pure(
        params: Any, opt: Any, states: Any, x: Any, y: Any, w: Any, noise: Any, number: Any, lr: Any
    ) -> Any:
        return tuple(step.train_step(model, params, opt, states, x, y, w, noise, number, lr, xp=jnp))

    compiled = jax.jit(pure)

    def run(
        params: Any,
        opt: Any,
        states: Any,
        x: Any,
        y: Any,
        w: Any,
        noise: Any,
        number: Any,
        lr: Any,
        *,
        xp: Any,
    ) -> Any:
        opt = step.initial_opt_state(model, params, opt, jnp)
        return compiled(params, opt, states, x, y, w, noise, np.asarray(number, dtype), np.asarray(lr, dtype))

    return run


# -- distributed setup -----------------------------------------------------------------------------------


def synchronize(net: Any, comm: Communicator) -> None:
    """Give every rank rank 0's parameters, layer state, optimizer state and host generator."""
    if comm.size == 1:
        return
    net.rng.bit_generator.state = comm.bcast_object(net.rng.bit_generator.state)
    params, opt, states = net._arrays()
    tree = {"params": params, "states": states, "opt": opt}
    arrays: list[Any] = []
    _collect(tree, arrays)
    if arrays:
        flat, layout = flatten(tree)
        got = unflatten(comm.bcast(flat), layout)
        xp = net.backend.xp
        copy = {k: _copied(v, xp) for k, v in got.items()}
        net._publish(copy["params"], copy["opt"], copy["states"])
    net.optimizer.iterations = int(comm.bcast_object(net.optimizer.iterations))


def _collect(tree: Any, arrays: list[Any]) -> None:
    if isinstance(tree, dict):
        for v in tree.values():
            _collect(v, arrays)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _collect(v, arrays)
    elif hasattr(tree, "shape"):
        arrays.append(tree)


def _copied(tree: Any, xp: Any) -> Any:
    """Own copies of the arrays (the views of one flat buffer would share its memory)."""
    if isinstance(tree, dict):
        return {k: _copied(v, xp) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_copied(v, xp) for v in tree)
    return xp.asarray(tree, copy=True)


def root_callbacks(callbacks: list[Any], comm: Communicator | None) -> list[Any]:
    """``callbacks`` without those that write files, on every rank but rank 0."""
    if comm is None or comm.is_root:
        return callbacks
    from .callbacks import CSVLogger, ModelCheckpoint

    return [c for c in callbacks if not isinstance(c, (ModelCheckpoint, CSVLogger))]


def check_communicator(comm: Any) -> Communicator | None:
    """``comm`` when it is a :class:`~xpnet.distributed.Communicator` (or None), else TypeError."""
    if comm is None or isinstance(comm, Communicator):
        return comm
    raise TypeError(
        f"distributed must be a communicator from xn.distributed.init(), got {type(comm).__name__}"
    )


def refuse_in_memory_options(options: dict[str, Any]) -> None:
    """ValueError naming the options given that need in-memory data on one process."""
    given = [
        k
        for k, v in options.items()
        if v is not None and not (isinstance(v, (float, int, list, tuple, dict)) and not v)
    ]
    if given:
        raise ValueError(
            f"{given} need in-memory arrays on one process; with streamed or distributed data give "
            "sample weights as (X_b, y_b, w_b) batches and validation data as validation_data"
        )


def plan(
    net: Any,
    X: Any,
    y: Any,
    *,
    batch_size: int,
    shuffle: bool,
    device_data: bool,
    comm: Communicator | None,
) -> StreamFeed:
    """The streamed feed ``fit`` trains from (in-memory data on one process: :class:`DeviceFeed`)."""
    if comm is None or comm.size == 1:
        return StreamFeed(net, source_of(net, X, y, need_y=True), batch_size, shuffle)
    source = source_of(net, X, y, need_y=True)
    if not net.built:
        raise ValueError(
            "distributed training needs the network built first: give in_features to its first layer"
        )
    synchronize(net, comm)
    return StreamFeed(net, source, batch_size, shuffle, comm)


# -- inference on streamed data ------------------------------------------------------------------------------


def stream_outputs(net: Any, X: Any, batch_size: int | None) -> Iterator[tuple[Ready, Array, Any]]:
    """``(batch, outputs, last cache)`` for each batch of streamed ``X`` (no training, no masks)."""
    source = source_of(net, X, None) if not isinstance(X, streams.BatchSource) else X
    size = batch_size or 4096
    preparer = _InferencePreparer(net)
    with streams.Prefetcher(source.batches(size), preparer) as ready:
        for b in ready:
            out, cache = net._infer(b.x)
            yield b, out, cache


class _InferencePreparer(Preparer):
    def __init__(self, net: Any) -> None:
        super().__init__(net, None, False)

    def _prepare(self, batch: streams.Batch) -> Ready:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        y = None if batch.y is None else net.backend.asarray(host_targets(net, batch.y, n, index))
        w = None if batch.w is None else net.backend.asarray(np.asarray(batch.w, dtype=net.dtype))
        return Ready(inputs.scaled(net, net.backend.asarray(x)), y, w, None, n, n, 1.0, False)


def evaluate_stream(net: Any, X: Any, y: Any, batch_size: int | None) -> dict[str, float]:
    """Loss (weighted by the batches' weights) and accuracy over streamed data."""
    if y is not None:
        X = source_of(net, X, y)
    model = net._model()
    xp = net.backend.xp
    total: Any = 0.0
    correct: Any = 0
    weight = 0.0
    judged = 0
    for b, out, cache in stream_outputs(net, X, batch_size):
        if b.y is None:
            raise ValueError("evaluate needs targets: pass y, or batches (X_b, y_b[, w_b])")
        value, _, prob, _ = step.loss_terms(model, out, cache, b.y, b.w, xp)
        mass = float(b.rows) if b.w is None else float(xp.sum(b.w))
        total = total + value * mass
        weight += mass
        if net._classification:
            correct = correct + correct_count(prob, b.y, xp, binary=model.binary, sample_weight=b.w)
            judged += prediction_count(b.y, binary=model.binary)
    result = {"loss": float(total) / max(weight, 1e-300)}
    if net._classification:
        result["accuracy"] = float(correct) / max(judged, 1)
    return result
