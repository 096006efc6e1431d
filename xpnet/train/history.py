"""``History``: the per-epoch record that ``Network.fit`` returns."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class History:
    """Metrics per epoch: ``history.history["loss"]``, ``["val_loss"]``, ``["accuracy"]``, ...

    Attributes
    ----------
    epoch : list[int]
        Index of each recorded epoch (continuing across ``fit`` calls).
    history : dict[str, list[float]]
        One list per metric, aligned with ``epoch``.
    """

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={list(self.history)})"

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the metrics ``logs`` of ``epoch``."""
        self.epoch.append(epoch)
        count, history = len(self.epoch), self.history
        for key, value in logs.items():
            values = history.get(key)
            if values is None:  # a new metric: earlier epochs lack it
                values = history[key] = [math.nan] * (count - 1)
            values.append(float(value))
        if len(history) != len(logs):  # metrics this epoch lacks
            for values in history.values():
                if len(values) < count:
                    values.append(math.nan)

    def extend(self, epochs: Iterable[int], logs: dict[str, list[float]]) -> None:
        """Record several epochs at once, as :meth:`append` for each: ``logs[key][i]`` is of the ``i``-th."""
        before = len(self.epoch)
        self.epoch.extend(epochs)
        for key, values in logs.items():
            self.history.setdefault(key, [math.nan] * before).extend(map(float, values))
        for values in self.history.values():
            values.extend([math.nan] * (len(self.epoch) - len(values)))

    def update_last(self, logs: dict[str, float]) -> None:
        """Record keys that callbacks added to the latest epoch's ``logs`` (e.g. ``"lr"``)."""
        for key, value in logs.items():
            values = self.history.setdefault(key, [math.nan] * len(self.epoch))
            values[-1] = float(value)

    def plot(self, path: str | Path | None = None) -> Any:
        """Draw loss and metric curves per epoch with matplotlib.

        Training and validation curves of one metric share a panel. With
        ``path`` the figure is saved as a PNG (and closed); the figure is returned.
        """
        return plot_histories([self], path=path)


def plot_histories(
    histories: list[History], labels: list[str] | None = None, path: str | Path | None = None
) -> Any:
    """Draw the curves of several histories (e.g. the networks of an ensemble), a panel per metric.

    Training curves are solid and validation curves dashed; ``labels`` name
    each history in the legends. With ``path`` the figure is saved as a PNG
    (and closed); the figure is returned.
    """
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("History.plot needs matplotlib: pip install matplotlib") from exc
    if not histories or not all(h.epoch for h in histories):
        raise ValueError("the history is empty: train with fit() before plotting")
    labels = labels or [""] * len(histories)
    keys = [k for h in histories for k in h.history]
    names = list(dict.fromkeys(k for k in keys if not k.startswith("val_") and k != "lr"))
    names += list(dict.fromkeys(k[4:] for k in keys if k.startswith("val_") and k[4:] not in names))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, (history, label) in enumerate(zip(histories, labels)):
            epochs = [e + 1 for e in history.epoch]
            color = f"C{i % 10}" if len(histories) > 1 else None
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                if key in history.history:
                    ax.plot(epochs, history.history[key], style, color=color, marker="o", markersize=3,
                            label=f"{key} {label}".strip())  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small" if len(histories) > 1 else None)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
