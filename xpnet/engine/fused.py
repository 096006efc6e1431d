"""A fused plan run from flat buffers with every input on the device: the GPU runner's loop.

:class:`FusedRunner` runs what a :class:`~xpnet.engine.plan.Plan` covers
(Dense, Dropout, Activation and normalization layers, the common losses,
SGD, Adam, AdamW or RMSprop)
with a set of kernels (:class:`Kernels`): CuPy's (:mod:`xpnet.engine.fused_cupy`)
on a GPU, NumPy's (:mod:`xpnet.engine.fused_numpy`) as the reference the CPU
tests run. Everything else runs the generic step (its base,
:class:`~xpnet.engine.eager.EagerRunner`), so callers never choose.

One network's call state is a :class:`Session`, kept while its parameters
live:

- parameters, gradients and optimizer state each in one flat buffer
  (:class:`~xpnet.engine.flat.Packing`); the carry handed back holds views
  into them, so the layers do too, and one update reaches every parameter;
- every work array made once per batch size: the gathered batch, each
  layer's output and input gradient, each step's loss scales;
- the epoch's row order as a device index buffer, padded to whole batches
  with row 0, and those rows weighted 0 (the loss is ``sum(w_i l_i) /
  sum(w_i)``, so they change nothing); a normalization is told how many of a
  batch's rows are real, so padding never enters batch statistics; dropout
  masks, drawn on the host in the eager order, in one device buffer per layer;
- batch normalization's running statistics in device arrays of the
  session's, moved by every step and handed back in the carry (values the
  caller assigned since are copied in first);
- the learning rate and the epoch's first step number in device memory, the loss sum and
  correct count accumulated there, read once per epoch with a finiteness
  flag of every parameter.

So no step needs the host: the kernels' :meth:`Kernels.capture` records a
whole epoch's steps once (a CUDA graph on the GPU) and each later epoch is
one replay.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..backend import Array, Backend, device_of, to_numpy
from .eager import EagerRunner
from .epochs import Carry, Epoch, Report, StepFunction
from .flat import Packing
from .fused_steps import Steps
from .plan import PARAMETERS, DenseSpec, NormSpec, Plan


class Kernels(Protocol):
    """What :class:`FusedRunner` asks of a device; every result goes into a given array."""

    xp: Any

    def matmul(self, a: Array, b: Array, out: Array, *, ta: bool = False, tb: bool = False) -> None:
        """``out = op(a) @ op(b)``, ``op`` transposing where asked."""

    def gather(self, source: Array, index: Array, out: Array) -> None:
        """``out = source[index]`` (rows)."""

    def bias_act(self, z: Array, bias: Array | None, activation: str) -> None:
        """``z = activation(z + bias)`` in place."""

    def act_grad(self, grad: Array, y: Array, activation: str, bias_grad: Array | None) -> None:
        """``grad *= activation'`` in place, from the activation's output ``y`` (nothing for
        ``"linear"``), then ``bias_grad = grad.sum(axis=0)`` when one is given."""

    def activate(self, x: Array, out: Array, activation: str) -> None:
        """``out = activation(x)`` (an ``Activation`` layer)."""

    def normalize(
        self,
        spec: NormSpec,
        x: Array,
        rows: int,
        weight: Array,
        bias: Array,
        stats: tuple[Array, Array],
        state: dict[str, Array] | None,
        out: Array,
    ) -> None:
        """``spec``'s normalization of ``x`` in training, into ``out``: only the first ``rows`` rows
        are real (the rest are padding, never in a statistic, and get 0). Each statistic's mean and
        ``1 / sqrt(var + eps)`` go into ``stats`` (per feature for a batch norm, per row for a layer
        norm); a batch norm moves ``state``'s running statistics."""

    def normalize_grad(
        self,
        spec: NormSpec,
        x: Array,
        dy: Array,
        rows: int,
        weight: Array,
        stats: tuple[Array, Array],
        dweight: Array,
        dbias: Array,
        dx: Array | None,
    ) -> None:
        """The gradients of :meth:`normalize` from ``dy`` over the first ``rows`` rows: into
        ``dweight`` and ``dbias``, and into ``dx`` (0 on the padding) unless it is None."""

    def multiply(self, a: Array, b: Array, out: Array) -> None:
        """``out = a * b`` (a dropout mask already scaled by ``1 / (1 - rate)``)."""

    def row_scale(self, w: Array, per_sample: int, out: Array) -> None:
        """Each step's loss scales: ``out[s, i, 0] = w[s, i] / (per_sample * sum(w[s]))`` for row
        weights ``w`` of shape ``(steps, batch)`` (0 for a step whose weights sum to 0)."""

    def loss(
        self,
        kind: str,
        z: Array,
        t: Array,
        scale: Array,
        smoothing: float,
        grad: Array,
        rows: int,
        sums: Array,
    ) -> None:
        """The loss of logits (or outputs, for MSE) ``z``: the gradient with respect to ``z`` into
        ``grad``; ``sums[0] += rows * (the batch loss)`` (the rows' terms weighted by ``scale``) and
        ``sums[1] +=`` the correct predictions of the rows whose ``scale`` is not 0."""

    def update(self, packing: Packing, optimizer: Any, lr: Array, step: Array, offset: int) -> None:
        """One optimizer step on every parameter, the rate read from the device and the step
        number ``step[0] + offset`` (the epoch's first step on the device, this step's place in
        the epoch recorded with it)."""

    def check(self, buffer: Array, sums: Array) -> None:
        """``sums[2] = 1`` if every element of ``buffer`` is finite, else 0."""

    def capture(self, run: Callable[[], None]) -> Callable[[], None]:
        """``run``'s device work recorded and done once, returned as a replay."""

    def scope(self) -> Any:
        """A context every call of a session runs in (the GPU's stream of the session)."""


class FusedRunner(EagerRunner):
    """The fused loop for what ``plan`` covers, the generic step for the rest (module docstring).

    Parameters
    ----------
    backend : Backend
    step : callable
        The generic step, for what the plan or the arrays do not cover.
    plan : Plan or None
    kernels : callable
        ``kernels(dtype) -> Kernels`` for the device; None: the generic step always.
    capture : bool
        Record each epoch's steps once and replay them (the second epoch of a
        session on records, later ones replay).
    """

    def __init__(
        self,
        backend: Backend,
        step: StepFunction,
        plan: Plan | None,
        kernels: Callable[[Any], Kernels] | None,
        *,
        capture: bool = True,
    ) -> None:
        super().__init__(backend, step, inplace=True)
        self.plan = plan if plan is not None and plan.optimizer is not None else None
        self.kernels = kernels
        self.capture = capture
        self._sessions: dict[int, Session] = {}
        self._lock = threading.Lock()

    def run(self, carry: Carry, epoch: Epoch, report: Report | None = None) -> tuple[Carry, Array, Array]:
        with self.backend.scope():
            session = self._session(carry, epoch)
            if session is None:
                return self._run(carry, epoch, report)
            total, correct, _ = session.epoch(epoch)
            if report is not None:
                report(epoch.steps, total, epoch.rows)
            return session.carry(carry), total, correct

    def run_epochs(
        self, carry: Carry, make: Callable[[int], Epoch], count: int
    ) -> tuple[Carry, list[Array], list[Array], int]:
        with self.backend.scope():
            first = make(0)
            session = self._session(carry, first)
            if session is None:
                return super().run_epochs(carry, lambda i: first if i == 0 else make(i), count)
            totals: list[Array] = []
            corrects: list[Array] = []
            for i in range(count):
                total, correct, finite = session.epoch(first if i == 0 else make(i))
                totals.append(total)
                corrects.append(correct)
                if not finite:
                    break
            return session.carry(carry), totals, corrects, len(totals)

    def _session(self, carry: Carry, epoch: Epoch) -> Session | None:
        """This network's session, made when it has none, or None when the plan does not cover the call."""
        if self.plan is None or self.kernels is None or not covered(self.plan, carry[0], epoch, carry[2]):
            return None
        params, opt_state, states = carry
        with self._lock:
            for session in self._sessions.values():
                if session.packing.holds(params, opt_state):
                    session.adopt(states)
                    return session
            try:
                kernels = self.kernels(epoch.x.dtype)
            except Exception as exc:  # no compiler, no cuBLAS: the generic step, said once
                warnings.warn(
                    f"xpnet's fused GPU kernels are unavailable ({exc}); training runs the generic step",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self.kernels = None
                return None
            session = Session(self.plan, kernels, carry, capture=self.capture)
            self._sessions[id(session)] = session
            while len(self._sessions) > SESSIONS:  # weights assigned since: their old buffers go
                self._sessions.pop(next(iter(self._sessions)))
            return session


SESSIONS = 4
"""Sessions a runner keeps: the CuPy engine makes one runner per network, so the newest few
(weights assigned to the layers start a new one) are all it needs."""


def covered(
    plan: Plan, params: Sequence[dict[str, Array]], epoch: Epoch, states: Sequence[dict[str, Array]]
) -> bool:
    """Whether ``epoch``'s arrays, ``params`` and the layer ``states`` suit the fused loop: one
    floating dtype, every layer's parameters (and a batch norm's running statistics) as its spec
    says, targets as the loss takes them."""
    x, t, w = epoch.x, epoch.t, epoch.weight
    if x.ndim != 2 or len(params) != len(plan.layers) or len(states) != len(plan.layers) or not _floating(x):
        return False
    if w is not None and (w.dtype != x.dtype or w.ndim != 1):
        return False
    for spec, p, state in zip(plan.layers, params, states):
        names: tuple[str, ...] = ("weight", "bias") if isinstance(spec, PARAMETERS) else ()
        if isinstance(spec, DenseSpec) and not spec.bias:
            names = ("weight",)
        if tuple(p) != names or any(a.dtype != x.dtype for a in p.values()):
            return False
        kept = RUNNING if _running(spec) else ()
        if tuple(sorted(state)) != kept or any(a.dtype != x.dtype for a in state.values()):
            return False
    first = params[plan.first]["weight"]
    if first.shape[0] != x.shape[1]:
        return False
    k = params[-1]["weight"].shape[1]
    if plan.loss == "categorical_crossentropy" and t.ndim == 1:  # labels, checked in range at the boundary
        return str(t.dtype) == "int32" and t.shape[0] == x.shape[0]
    return t.dtype == x.dtype and tuple(t.shape) == (x.shape[0], k)


RUNNING = ("running_mean", "running_var")
"""A batch norm's layer state."""


def _running(spec: Any) -> bool:
    """Whether a layer of ``spec`` keeps running statistics (a batch norm)."""
    return isinstance(spec, NormSpec) and spec.kind == "batch"


def _floating(x: Array) -> bool:
    return str(x.dtype) in ("float32", "float64")


class Session:
    """One network's fused state: its flat buffers, and the work arrays of its recent data sets."""

    WORKS = 2
    """Data sets (say training, then a refit on other rows) whose work arrays and replay are kept."""

    def __init__(self, plan: Plan, kernels: Kernels, carry: Carry, *, capture: bool) -> None:
        params, opt_state, states = carry
        self.plan = plan
        self.kernels = kernels
        self.xp = kernels.xp
        self.packing = Packing(params, opt_state, _state_keys(plan.optimizer))
        self.states: list[dict[str, Array] | None] = [
            {key: self._copy(state[key]) for key in RUNNING} if _running(spec) else None
            for spec, state in zip(plan.layers, states)
        ]
        self.capture = capture
        self._works: dict[tuple[int, int], Steps] = {}

    def _copy(self, value: Array) -> Array:
        own = self.xp.zeros(tuple(value.shape), dtype=value.dtype, device=device_of(value))
        own[...] = value
        return own

    def adopt(self, states: Sequence[dict[str, Array]]) -> None:
        """Copy in the running statistics the caller holds where they are not this session's own
        arrays (assigned or loaded since)."""
        for own, given in zip(self.states, states):
            if own is None:
                continue
            for key, array in own.items():
                if given[key] is not array:
                    array[...] = given[key]

    def carry(self, carry: Carry) -> Carry:
        """The carry after the epochs trained: views into the flat buffers, the session's running
        statistics."""
        states = [given if own is None else own for own, given in zip(self.states, carry[2])]
        return self.packing.params, self.packing.opt_state, states

    def epoch(self, epoch: Epoch) -> tuple[float, float, bool]:
        """Train one epoch; the summed batch losses x rows, the correct count, and whether every
        parameter is finite after it (one read of three numbers)."""
        with self.kernels.scope():
            work = self._work(epoch)
            work.load(epoch)
            if work.replay is not None:
                work.replay()
            elif self.capture and work.epochs > 0:  # the first epoch ran (and compiled) every kernel
                work.replay = self._record(work)
            else:
                work.steps()
            work.epochs += 1
            sums = to_numpy(work.sums)
        return float(sums[0]), float(sums[1]), bool(sums[2])

    def _record(self, work: Steps) -> Callable[[], None] | None:
        """Record ``work``'s epoch and run it; if the device cannot record it, run it as it is."""
        try:
            return self.kernels.capture(work.steps)
        except Exception as exc:  # a driver or library that refuses capture: eager kernels from now on
            warnings.warn(
                f"recording an epoch as a CUDA graph failed ({exc}); the fused kernels run "
                "one by one instead",
                RuntimeWarning,
                stacklevel=4,
            )
            self.capture = False
            work.steps()
            return None

    def _work(self, epoch: Epoch) -> Steps:
        key = (id(epoch.x), min(epoch.batch_size, epoch.rows))
        work = self._works.get(key)
        if work is None or work.x is not epoch.x or not work.fits(epoch):
            work = self._works[key] = Steps(self, epoch)
            while len(self._works) > self.WORKS:
                self._works.pop(next(iter(self._works)))
        return work


def _state_keys(spec: Any) -> tuple[str, ...]:
    from .fused_updates import state_keys

    return state_keys(spec)
