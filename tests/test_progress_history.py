"""Progress reporting and History: what fit shows and records."""

from __future__ import annotations

import io

import numpy as np
import pytest
from xpnet.progress import Progress, format_logs

import xpnet as xn

X = np.random.default_rng(0).normal(size=(40, 2))
Y = (X[:, 0] > 0).astype(int)


def _net(backend):
    return xn.Network(
        [xn.Dense(4, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
        loss="logloss",
        backend=backend,
        seed=0,
    )


def test_verbose_2_prints_one_line_per_epoch(backend, capsys):
    _net(backend).fit(X, Y, epochs=3, batch_size=8, validation_data=(X, Y), verbose=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3 - ") and "loss: " in lines[0] and "val_accuracy: " in lines[0]


def test_verbose_0_is_silent(backend, capsys):
    _net(backend).fit(X, Y, epochs=2, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_1_without_a_terminal_falls_back_to_lines(backend, capsys):
    _net(backend).fit(X, Y, epochs=2, verbose=1)
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_reads_the_loss_only_when_it_redraws():
    pytest.importorskip("tqdm")
    stream = FakeTerminal()
    progress = Progress(1, steps=5000, epochs=1, file=stream)
    reads = []
    progress.start_epoch(0)
    for step in range(1, 5001):
        progress.step(step, lambda: reads.append(1) or {"loss": 0.5})
    progress.end_epoch({"loss": 0.25, "accuracy": 0.9})
    text = stream.getvalue()
    assert "Epoch 1/1" in text and "5000/5000" in text and "loss: 0.2500 - accuracy: 0.900" in text
    assert len(reads) < 50


def test_format_logs():
    assert format_logs({"loss": 0.123456, "val_accuracy": 0.94712}) == "loss: 0.1235 - val_accuracy: 0.947"


def test_history_plot_writes_a_png(backend, tmp_path):
    pytest.importorskip("matplotlib")
    history = _net(backend).fit(X, Y, epochs=4, validation_data=(X, Y), verbose=0)
    path = tmp_path / "curves.png"
    figure = history.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert len(figure.axes) == 2
    assert [line.get_label() for line in figure.axes[0].lines] == ["loss", "val_loss"]


def test_empty_history_cannot_be_plotted():
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="empty"):
        xn.History().plot()


def test_history_epochs_continue_across_fit_calls(backend):
    net = _net(backend)
    net.fit(X, Y, epochs=2, verbose=0)
    history = net.fit(X, Y, epochs=2, verbose=0)
    assert history.epoch == [2, 3] and net.epoch == 4


def test_history_extend_records_as_one_append_per_epoch():
    one, many = xn.History(), xn.History()
    for h in (one, many):
        h.append(0, {"loss": 1.0})
    one.append(1, {"loss": 0.5, "accuracy": 0.25})
    one.append(2, {"loss": 0.25, "accuracy": 0.5})
    many.extend([1, 2], {"loss": [0.5, 0.25], "accuracy": [0.25, 0.5]})
    assert many.epoch == one.epoch == [0, 1, 2]
    np.testing.assert_equal(many.history, one.history)  # accuracy starts with NaN in both
    one.append(3, {"accuracy": 1.0})
    many.extend([3], {"accuracy": [1.0]})
    np.testing.assert_equal(many.history, one.history)  # the loss is NaN where it was not given
