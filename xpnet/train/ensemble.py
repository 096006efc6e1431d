"""K-fold ensembles: one network per fold, each stopped on its own fold, averaged into one network.

On a small table a held-back tenth is a few dozen rows: too few to judge when
to stop, and a tenth of the data that never trains. Splitting the rows into
``K`` folds and training one network per fold, each on the other folds and
stopped (best weights kept) on its own, judges every row once and trains on
every row ``K - 1`` times; averaging the ``K`` networks removes much of the
variance of one small-data fit. Beside it, the mean held-back loss over the
folds is a cross-validated score, used here to choose the weight decay
(scikit-learn's ``GridSearchCV`` and AutoGluon's k-fold bagging work the same
way). The result is one :class:`~xpnet.Network` whose first layer is a
:class:`~xpnet.Parallel` block of the members: it saves, loads, predicts and
moves like any other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..data.datasets import kfold
from ..nn.layers import Activation
from ..nn.residual import Parallel
from . import inputs
from .callbacks import EarlyStopping
from .history import History
from .network import Network


@dataclass(frozen=True)
class Member:
    """One network trained by :func:`kfold_ensemble`.

    Attributes
    ----------
    fold : int
        The fold it was stopped on (0-based); it trained on the others.
    weight_decay : float
        Its optimizer's weight decay.
    loss : float
        Its loss on its own fold with the kept weights (the training loss's
        units: a regression target standardized).
    best_epoch : int
        The epoch whose weights it kept (1-based).
    epochs : int
        Epochs it trained before stopping.
    history : History
        Its losses and metrics per epoch (``val_``: on its own fold).
    """

    fold: int
    weight_decay: float
    loss: float
    best_epoch: int
    epochs: int
    history: History = field(default_factory=History, repr=False, compare=False)


@dataclass
class KFoldEnsemble:
    """What :func:`kfold_ensemble` returns.

    Attributes
    ----------
    network : Network
        The chosen weight decay's members averaged (``Parallel``, then the
        members' final ``Activation``, if any).
    weight_decay : float
        The weight decay with the lowest mean loss over the folds.
    members : list of Member
        Every network trained, for every weight decay tried, in training order.
    """

    network: Network
    weight_decay: float
    members: list[Member] = field(default_factory=list)

    def chosen(self) -> list[Member]:
        """The members the network averages (those of the chosen weight decay), by fold."""
        return [m for m in self.members if m.weight_decay == self.weight_decay]

    def scores(self) -> dict[float, float]:
        """Mean held-back loss over the folds, by weight decay (the choice's criterion)."""
        losses: dict[float, list[float]] = {}
        for member in self.members:
            losses.setdefault(member.weight_decay, []).append(member.loss)
        return {decay: float(np.mean(values)) for decay, values in losses.items()}


def kfold_ensemble(
    make: Callable[[float, int], Network],
    X: Any,
    y: Any,
    *,
    folds: int = 5,
    weight_decays: Sequence[float] = (0.0,),
    stratify: bool = False,
    seed: int = 0,
    epochs: int = 500,
    batch_size: int = 32,
    patience: int = 20,
    preprocess: str | None = None,
    class_weight: Any = None,
    report: Callable[[Member], None] | None = None,
) -> KFoldEnsemble:
    """Train one network per fold and weight decay; average the best weight decay's networks.

    Parameters
    ----------
    make : callable ``(weight_decay, seed) -> Network``
        A new, unfitted member. Members must be alike (same layers, loss,
        backend and dtype); if they end with an :class:`~xpnet.Activation`
        layer, the ensemble averages what comes before it (the logits) and
        applies it once.
    X, y : array-like or DataFrame
        All the training rows, as ``Network.fit`` takes them (in memory).
    folds : int
        Number of folds and of members per weight decay (at least 2).
    weight_decays : sequence of float
        Weight decays to try; the one with the lowest mean held-back loss wins
        (the first of equals).
    stratify : bool
        Spread each class evenly over the folds (classification).
    seed : int
        Seeds the folds and the members (member ``i`` of every weight decay
        starts from the same weights and shuffles the same way).
    epochs, batch_size, patience :
        Each member trains at most ``epochs`` epochs and stops after
        ``patience`` epochs without a lower loss on its fold, keeping its best
        weights.
    preprocess : {None, "auto", "always"}
        As in ``Network.fit``; the encoder and target scaling are fitted once
        on all the rows, so every member (and the ensemble) shares them.
    class_weight : dict, "balanced" or None
        As in ``Network.fit``.
    report : callable, optional
        Called with each :class:`Member` when it has trained.

    Returns
    -------
    KFoldEnsemble
    """
    decays = _decays(weight_decays)
    inputs.positive_int("patience", patience)
    template = make(decays[0], seed)
    inputs.prepare(template, X, y, preprocess)
    x = np.asarray(to_numpy(inputs.numeric(template, inputs.table(template, X, "X"), "X")))
    t = np.asarray(to_numpy(inputs.numeric(template, y, "y")))
    if len(t) != len(x):
        raise ValueError(f"X has {len(x)} rows but y has {len(t)}")
    parts = kfold(t, folds, seed, stratify)
    seeds = [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(parts))]
    scaling = template.metadata.get("target_scaling")
    members: list[Member] = []
    trained: dict[float, list[Network]] = {}
    for decay in decays:
        for i, back in enumerate(parts):
            net = make(decay, seeds[i])
            if scaling is not None:
                net.metadata["target_scaling"] = copy.deepcopy(scaling)
            member = _train(net, x, t, back, i, decay, epochs, batch_size, patience, class_weight)
            trained.setdefault(decay, []).append(net)
            members.append(member)
            if report is not None:
                report(member)
    result = KFoldEnsemble(template, decays[0], members)
    scores = result.scores()
    best = min(decays, key=lambda d: (scores[d], decays.index(d)))
    result.weight_decay = best
    result.network = _average(trained[best], make(best, seed), template.metadata)
    return result


def _decays(weight_decays: Sequence[float]) -> list[float]:
    decays = [weight_decays] if isinstance(weight_decays, (int, float)) else list(weight_decays)
    if not decays or any(
        isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0 or not math.isfinite(d)
        for d in decays
    ):
        raise ValueError(
            f"weight_decays must be a non-empty list of finite numbers >= 0, got {weight_decays!r}"
        )
    return [float(d) for d in decays]


def _train(
    net: Network,
    x: np.ndarray,
    t: np.ndarray,
    back: np.ndarray,
    fold: int,
    decay: float,
    epochs: int,
    batch_size: int,
    patience: int,
    class_weight: Any,
) -> Member:
    keep = np.ones(len(t), dtype=bool)
    keep[back] = False
    stopper = EarlyStopping(patience=patience, restore_best_weights=True)
    history = net.fit(
        x[keep],
        t[keep],
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x[back], t[back]),
        class_weight=class_weight,
        callbacks=[stopper],
        verbose=0,
    )
    best = stopper.best_epoch if stopper.best_epoch is not None else net.epoch - 1
    return Member(fold, decay, float(stopper.best), best + 1, net.epoch, history)


def average_networks(members: Sequence[Network], metadata: dict[str, Any] | None = None) -> Network:
    """One network averaging trained ``members`` (alike: same layers, loss, backend and dtype).

    The members' layers are taken over (not copied) into a
    :class:`~xpnet.Parallel` block; a final :class:`~xpnet.Activation` they
    share is applied once, after the average of their logits. The result has
    the first member's loss, optimizer settings and seed, and ``metadata``
    (default: the first member's).
    """
    if not members:
        raise ValueError("average_networks needs at least one network")
    first = members[0]
    return _average(list(members), first, first.metadata if metadata is None else metadata)


def _average(members: list[Network], blank: Network, metadata: dict[str, Any]) -> Network:
    """One network averaging ``members`` (their trained layers, taken over) with ``blank``'s settings."""
    final = members[0].layers[-1]
    head = isinstance(final, Activation)
    if not head and final.output_activation not in (None, "linear"):
        raise ValueError(
            f"kfold_ensemble members end with a {final.output_activation} inside {type(final).__name__}; "
            f"end them with a separate Activation({final.output_activation!r}) layer, so the ensemble "
            "averages logits"
        )
    branches = [net.layers[:-1] if head else net.layers for net in members]
    layers: list[Any] = [Parallel(branches)]
    if head:
        layers.append(Activation(final.activation.name))  # type: ignore[attr-defined]
    net = Network(
        layers,
        loss=blank.loss,
        optimizer=blank.optimizer.detached(),
        backend=blank.backend,
        dtype=blank.policy,
        seed=blank.seed,
        compile=blank.compile,
        matmul_precision=blank.matmul_precision,
        loss_scaler=blank.loss_scaler,
    )
    net.build(int(members[0].in_features or 0))
    net.metadata = copy.deepcopy(metadata)
    return net
