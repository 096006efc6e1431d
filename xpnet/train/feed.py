"""How ``fit`` feeds its batches: from the device, streamed from the host, or split across processes.

``Network.fit`` asks :func:`plan` for a feed and calls its ``epoch`` once per epoch:

- :class:`DeviceFeed`: in-memory data, whole on the device, one batch gathered
  at a time by the runner of the network's engine (:mod:`xpnet.engine`), one
  epoch per call, or several when nothing runs between them (on JAX, fused
  into one compiled call).
- :class:`StreamFeed`: a :class:`~xpnet.data.streams.BatchSource` (a NumPy
  memmap, arrays with ``device_data=False``, an iterable of batches, Parquet or
  CSV readers), read batch by batch on the host; a background
  :class:`~xpnet.data.streams.Prefetcher` reads and copies the next batch to the
  device, and draws its dropout masks, while the current one trains
  (:mod:`xpnet.train.batches`). Every use
  of the network's host generator (the shuffle and the masks) therefore happens
  in that one thread, in the order the in-memory path uses it: an unshuffled
  stream, or a shuffled one whose source shuffles in one block, trains exactly
  as the in-memory path does.
- Data parallelism (``distributed=comm``) is a :class:`StreamFeed` whose step
  the engine makes around an allreduce: each rank trains on its rows
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

from ..data import streams
from ..distributed import Communicator
from ..engine.epochs import Epoch, EpochPlan
from ..engine.flat import flatten, unflatten
from ..nn.metrics import prediction_count
from .batches import Preparer
from .history import History

Array = Any


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
        if weight is not None:  # accuracy judges the rows that weigh (the step counts their hits only)
            self.judged = self.judged // self.rows * int(net.backend.xp.count_nonzero(weight))
        self.run = net._runner()

    def _epoch(self, net: Any, first_step: int) -> Epoch:
        """The next epoch's inputs; draws its shuffle from the network's generator."""
        order = net.rng.permutation(self.rows) if self.shuffle else None
        lr = net.optimizer.learning_rate
        return Epoch(self.x, self.t, order, self.batch_size, net._draw(), first_step, lr, self.weight)

    def epoch(self, net: Any, progress: Any) -> EpochResult:
        """Train one epoch; its sums stay on the device."""
        epoch = self._epoch(net, net.optimizer.iterations + 1)
        report = None
        if progress is not None and progress.active:

            def report(done: int, total: Any, seen: int) -> None:
                progress.step(done, _running(total, seen))

        carry, total, correct = self.run.run(net._arrays(), epoch, report)
        net.optimizer.iterations += epoch.steps
        net._publish(*carry)
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
            logs = {"loss": (_floats(totals) / max(self.rows, 1)).tolist()}
            if net._classification:
                logs["accuracy"] = (_floats(corrects) / max(self.judged, 1)).tolist()
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

        The host draws (shuffles, masks) of the call's epochs are taken first,
        in the eager order; after a non-finite epoch the later ones do not run
        (their draws are spent). A runner may run fewer epochs than asked
        (JAX: as many as one call holds); the caller asks again.
        """
        n, size, opt = self.rows, self.batch_size, net.optimizer
        steps = -(-n // size)
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
        classes: dict[int, float] | None = None,
    ) -> None:
        self.source = source
        self.classes = classes
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.steps = source.num_batches(batch_size)
        allreduce = None if self.comm is None else self.comm.allreduce_sum
        self.step = net._engine().step(net._model(), allreduce)

    def epoch(self, net: Any, progress: Any) -> EpochResult:
        batches = _built(net, self.source.batches(self.batch_size, net.rng if self.shuffle else None))
        params, opt, states = net._arrays()
        number, lr = net.optimizer.iterations + 1, net.optimizer.learning_rate
        total: Any = 0.0
        correct: Any = 0
        rows = judged = steps = 0
        with (
            net.backend.scope(),
            streams.Prefetcher(batches, Preparer(net, self.comm, self.classes)) as ready,
        ):
            for b in ready:
                params, opt, states, value, hit = self.step(
                    params, opt, states, b.x, b.y, b.w, b.noise, number + steps, lr, share=b.share
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


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Per-epoch sums as float64: a host array as it is, device scalars read one by one."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64)
    return np.array([float(v) for v in values])


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


def plan(
    net: Any,
    source: streams.BatchSource,
    *,
    batch_size: int,
    shuffle: bool,
    comm: Communicator | None,
    classes: dict[int, float] | None = None,
) -> StreamFeed:
    """The streamed feed ``fit`` trains from (in-memory data on one process: :class:`DeviceFeed`).

    ``classes`` is ``class_weight`` as a ``{label: weight}`` table, applied to
    each batch's labels.
    """
    if comm is None or comm.size == 1:
        return StreamFeed(net, source, batch_size, shuffle, classes=classes)
    if not net.built:
        raise ValueError(
            "distributed training needs the network built first: give in_features to its first layer"
        )
    synchronize(net, comm)
    return StreamFeed(net, source, batch_size, shuffle, comm, classes)
