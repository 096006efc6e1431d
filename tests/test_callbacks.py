"""Callbacks: early stopping, checkpoints, schedules, NaN handling, CSV logs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import xpnet as xn

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def _net(backend, lr=0.05, seed=0):
    return xn.Network(
        [xn.Dense(8, "tanh", in_features=3), xn.Dense(1, "sigmoid")],
        loss="logloss",
        optimizer=xn.SGD(lr),
        backend=backend,
        dtype="float64",
        seed=seed,
    )


class Scripted(xn.Callback):
    """Feeds a fixed sequence of values as ``val_loss``."""

    def __init__(self, values):
        self.values = list(values)

    def on_epoch_end(self, net, epoch, logs):
        logs["val_loss"] = self.values[epoch]


@pytest.mark.parametrize(("patience", "stops_after"), [(0, 3), (2, 4)])
def test_early_stopping_waits_patience_epochs(backend, patience, stops_after):
    values = [3.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.5, 0.4]
    stopper = xn.EarlyStopping(patience=patience)
    history = _net(backend).fit(X, Y, epochs=8, callbacks=[Scripted(values), stopper], verbose=0)
    assert len(history.epoch) == stops_after + 1
    assert stopper.best == 1.0 and stopper.stopped_epoch == stops_after


def test_early_stopping_min_delta_and_max_mode(backend):
    stopper = xn.EarlyStopping(monitor="val_loss", min_delta=0.5)
    history = _net(backend).fit(
        X, Y, epochs=5, callbacks=[Scripted([3.0, 2.8, 1.0, 0.9, 0.1]), stopper], verbose=0
    )
    assert len(history.epoch) == 2
    assert xn.EarlyStopping(monitor="val_accuracy").mode == "max"


def test_early_stopping_restores_best_weights(backend):
    net = _net(backend)
    recorder = []

    class Record(xn.Callback):
        def on_epoch_end(self, net, epoch, logs):
            recorder.append(net.get_weights())

    values = [1.0, 0.5, 0.9, 0.8]
    net.fit(
        X,
        Y,
        epochs=4,
        callbacks=[
            Scripted(values),
            Record(),
            xn.EarlyStopping(patience=5, restore_best_weights=True),
        ],
        verbose=0,
    )
    for got, want in zip(net.get_weights(), recorder[1]):
        np.testing.assert_array_equal(got, want)


def test_monitoring_an_unlogged_metric_says_what_to_do(backend):
    with pytest.raises(
        ValueError, match=r"monitors 'val_loss', which fit does not log \(pass validation_data"
    ):
        _net(backend).fit(X, Y, epochs=1, callbacks=[xn.EarlyStopping()], verbose=0)


@pytest.mark.parametrize(
    "callback, message",
    [
        (
            lambda p: xn.ModelCheckpoint(p / "m-{val_loss:.3f}.safetensors"),
            r"path '.*m-\{val_loss:.3f\}.*' names \['val_loss'\]",
        ),
        (
            lambda p: xn.ModelCheckpoint(p / "m.safetensors", save_best_only=True),
            r"save_best_only=True\) monitors 'val_loss'",
        ),
        (lambda p: xn.EarlyStopping(patience=5), "EarlyStopping monitors 'val_loss'"),
        (lambda p: xn.ReduceLROnPlateau(), "ReduceLROnPlateau monitors 'val_loss'"),
    ],
)
def test_val_logs_without_validation_data_are_refused_before_training(backend, tmp_path, callback, message):
    """``ModelCheckpoint("m-{val_loss}")`` without validation data raised only after epoch 1 had trained."""
    net = _net(backend)
    before = net.get_weights()
    with pytest.raises(ValueError, match=message + ".*nothing was trained"):
        net.fit(X, Y, epochs=3, callbacks=[xn.CSVLogger(tmp_path / "log.csv"), callback(tmp_path)], verbose=0)
    assert net.epoch == 0 and not list(tmp_path.glob("m*"))
    for got, want in zip(net.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    net.fit(
        X, Y, epochs=1, validation_split=0.25, callbacks=[callback(tmp_path)], verbose=0
    )  # with validation
    net.fit(
        X, Y, epochs=1, callbacks=[Scripted([1.0, 0.5]), callback(tmp_path)], verbose=0
    )  # a callback logs it


def test_model_checkpoint_saves_the_best_only(backend, tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "best.safetensors"
    saver = xn.ModelCheckpoint(path, save_best_only=True)
    net = _net(backend)
    net.fit(X, Y, epochs=4, callbacks=[Scripted([2.0, 1.0, 3.0, 4.0]), saver], verbose=0)
    assert saver.saved == [str(path), str(path)]
    assert xn.load(path, backend="numpy").epoch == 2


def test_model_checkpoint_formats_the_path_per_epoch(backend, tmp_path):
    pytest.importorskip("safetensors")
    saver = xn.ModelCheckpoint(tmp_path / "e{epoch:02d}-{loss:.2f}.safetensors")
    _net(backend).fit(X, Y, epochs=2, callbacks=[saver], verbose=0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("e01-") and names[1].startswith("e02-")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (xn.step_decay(0.1, drop=0.5, every=2), [0.1, 0.1, 0.05, 0.05, 0.025]),
        (xn.exponential_decay(0.1, rate=0.5), [0.1, 0.05, 0.025, 0.0125, 0.00625]),
        (
            xn.cosine_decay(0.1, epochs=4),
            [
                0.1,
                0.1 * (1 + math.cos(math.pi / 4)) / 2,
                0.05,
                0.1 * (1 + math.cos(3 * math.pi / 4)) / 2,
                0.0,
            ],
        ),
        (lambda epoch, lr: lr * 0.9, [0.09, 0.081, 0.0729, 0.06561, 0.059049]),
    ],
)
def test_learning_rate_scheduler(backend, schedule, expected):
    net = _net(backend, lr=0.1)
    history = net.fit(X, Y, epochs=5, callbacks=[xn.LearningRateScheduler(schedule)], verbose=0)
    np.testing.assert_allclose(history.history["lr"], expected, rtol=1e-12, atol=1e-15)
    assert net.optimizer.learning_rate == pytest.approx(expected[-1])


def test_scheduled_rate_changes_the_updates(backend):
    plain, halved = _net(backend, lr=0.1), _net(backend, lr=0.1)
    plain.fit(X, Y, epochs=1, shuffle=False, batch_size=64, verbose=0)
    halved.fit(
        X,
        Y,
        epochs=1,
        shuffle=False,
        batch_size=64,
        callbacks=[xn.LearningRateScheduler(lambda e: 0.0)],
        verbose=0,
    )
    start = _net(backend, lr=0.1).get_weights()
    for got, want in zip(halved.get_weights(), start):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(plain.get_weights()[0], start[0])


def test_terminate_on_nan_can_stop_quietly(backend):
    Xb = np.linspace(-50, 50, 40).reshape(-1, 1)
    net = xn.Network([xn.Dense(1, in_features=1)], optimizer=xn.SGD(10.0), backend=backend, seed=0)
    with np.errstate(all="ignore"):
        history = net.fit(
            Xb,
            Xb * 3,
            epochs=50,
            batch_size=8,
            callbacks=[xn.TerminateOnNaN(raise_error=False)],
            verbose=0,
        )
    assert len(history.epoch) < 50 and not math.isfinite(history.history["loss"][-1])


def test_csv_logger_writes_a_row_per_epoch(backend, tmp_path):
    path = tmp_path / "log.csv"
    _net(backend).fit(X, Y, epochs=3, validation_data=(X, Y), callbacks=[xn.CSVLogger(path)], verbose=0)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert all(math.isfinite(float(v)) for r in rows[1:] for v in r)


def test_callback_hooks_run_in_order(backend):
    calls = []

    class Spy(xn.Callback):
        def on_train_begin(self, net, logs):
            calls.append("train_begin")

        def on_epoch_begin(self, net, epoch, logs):
            calls.append(f"begin{epoch}")

        def on_epoch_end(self, net, epoch, logs):
            calls.append(f"end{epoch}")

        def on_train_end(self, net, logs):
            calls.append("train_end")

    _net(backend).fit(X, Y, epochs=2, callbacks=[Spy()], verbose=0)
    assert calls == ["train_begin", "begin0", "end0", "begin1", "end1", "train_end"]


# -- ReduceLROnPlateau (Keras's timing) and warmup -------------------------------------


def _plateau_run(values, lr=1.0, **options):
    """Drive the callback epoch by epoch; returns (rate logged per epoch, rate after each epoch)."""
    net = type("FakeNet", (), {})()
    net.optimizer = xn.SGD(lr)
    callback = xn.ReduceLROnPlateau(monitor="val_loss", **options)
    callback.on_train_begin(net, {})
    logged, after = [], []
    for epoch, value in enumerate(values):
        logs = {"val_loss": value}
        callback.on_epoch_end(net, epoch, logs)
        logged.append(logs["lr"])
        after.append(net.optimizer.learning_rate)
    return logged, after


def _reductions(after, lr=1.0):
    """Epochs at the end of which the rate changed."""
    return [e for e, rate in enumerate(after) if rate != (after[e - 1] if e else lr)]


def test_plateau_reduces_when_the_wait_reaches_patience():
    # best: 1.0 (e0), 0.9 (e1); no improvement e2, e3 -> reduce at the end of e3;
    # e4, e5 -> reduce at e5; 0.5 improves at e6; e7, e8 -> reduce at e8.
    values = [1.0, 0.9, 0.95, 0.92, 0.91, 0.95, 0.5, 0.6, 0.6]
    logged, after = _plateau_run(values, factor=0.5, patience=2)
    assert _reductions(after) == [3, 5, 8]
    assert after == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    # The log holds the rate the epoch trained with, before its reduction.
    assert logged == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25]


@pytest.mark.parametrize(
    ("patience", "cooldown", "reduced_at"),
    [
        (1, 0, [1, 2, 3, 4, 5, 6, 7]),
        # Cooldown 2: epoch r+1 is cooling; at r+2 the cooldown ends and that epoch
        # already counts towards the wait (Keras), so patience 1 reduces again there.
        (1, 2, [1, 3, 5, 7]),
        (2, 1, [2, 4, 6]),
        # Patience 3, cooldown 2: e4 cools, the cooldown ends at e5 (wait 1), e6 (2), e7 (3).
        (3, 2, [3, 7]),
    ],
)
def test_plateau_cooldown_timing_is_keras(patience, cooldown, reduced_at):
    _, after = _plateau_run([1.0] * 8, factor=0.5, patience=patience, cooldown=cooldown)
    assert _reductions(after) == reduced_at


def test_plateau_min_delta_decides_what_improves():
    # With min_delta 0.25, 0.8 is no improvement on 1.0 but 0.7 is.
    _, after = _plateau_run([1.0, 0.8, 0.7, 0.6, 0.5], factor=0.5, patience=2, min_delta=0.25)
    assert _reductions(after) == [4]


def test_plateau_stops_at_min_lr():
    _, after = _plateau_run([1.0] * 5, lr=1.0, factor=0.1, patience=1, min_lr=0.05)
    assert after == [1.0, 0.1, 0.05, 0.05, 0.05]


def test_plateau_maximizes_scores_in_auto_mode():
    net = type("FakeNet", (), {})()
    net.optimizer = xn.SGD(1.0)
    callback = xn.ReduceLROnPlateau(monitor="val_auc", factor=0.5, patience=1)
    callback.on_train_begin(net, {})
    for epoch, auc in enumerate([0.6, 0.7, 0.8, 0.8]):
        callback.on_epoch_end(net, epoch, {"val_auc": auc})
        assert net.optimizer.learning_rate == (0.5 if epoch == 3 else 1.0)
    assert xn.EarlyStopping("val_f1").mode == "max" and xn.EarlyStopping("mae").mode == "min"


def test_plateau_in_fit_logs_each_epochs_rate(backend):
    net = _net(backend, lr=0.1)
    plateau = xn.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    values = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    history = net.fit(X, Y, epochs=8, callbacks=[Scripted(values), plateau], verbose=0)
    # Reductions at the end of epochs 3 and 5 (cooldown 1 ends at epoch 4, which counts).
    np.testing.assert_allclose(history.history["lr"], [0.1] * 4 + [0.05] * 2 + [0.025] * 2, rtol=1e-15)
    assert net.optimizer.learning_rate == pytest.approx(0.0125)


def test_plateau_counters_restart_with_each_fit(backend):
    net = _net(backend, lr=0.1)
    plateau = xn.ReduceLROnPlateau(factor=0.5, patience=2)
    net.fit(X, Y, epochs=2, callbacks=[Scripted([1.0, 1.0]), plateau], verbose=0)
    assert plateau.wait == 1
    net.fit(X, Y, epochs=1, callbacks=[Scripted([0, 0, 5.0]), plateau], verbose=0)
    assert plateau.wait == 0 and plateau.best == 5.0 and net.optimizer.learning_rate == 0.1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"factor": 1.0}, r"factor must be in \(0, 1\)"),
        ({"factor": 0.0}, r"factor must be in \(0, 1\)"),
        ({"patience": -1}, "patience must be a non-negative integer"),
        ({"cooldown": 1.5}, "cooldown must be a non-negative integer"),
        ({"min_lr": -1.0}, "min_delta and min_lr must be >= 0"),
        ({"mode": "up"}, "mode must be 'auto', 'min' or 'max'"),
    ],
)
def test_bad_plateau_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        xn.ReduceLROnPlateau(**options)


def test_plateau_needs_its_metric_logged():
    with pytest.raises(ValueError, match="ReduceLROnPlateau monitors 'val_loss'.*validation_data"):
        xn.ReduceLROnPlateau().on_epoch_end(type("N", (), {"optimizer": xn.SGD(0.1)})(), 0, {"loss": 1.0})


@pytest.mark.parametrize("after", [xn.step_decay(0.2, drop=0.5, every=3), 0.2])
def test_warmup_is_linear_then_the_schedule(after):
    rates = xn.schedules.warmup(after, epochs=4)
    then = after if callable(after) else (lambda epoch: 0.2)
    for epoch in range(4):
        assert rates(epoch) == pytest.approx(0.2 * (epoch + 1) / 4, rel=1e-15)
    for epoch in range(4, 12):
        assert rates(epoch) == then(epoch)


def test_warmup_of_one_epoch_is_the_schedule():
    rates = xn.warmup(xn.exponential_decay(0.1, 0.5), epochs=1)
    assert [rates(e) for e in range(4)] == [xn.exponential_decay(0.1, 0.5)(e) for e in range(4)]


def test_warmup_in_fit(backend):
    net = _net(backend, lr=1.0)
    schedule = xn.schedules.warmup(xn.cosine_decay(0.1, epochs=6), epochs=3)
    history = net.fit(X, Y, epochs=5, callbacks=[xn.LearningRateScheduler(schedule)], verbose=0)
    cosine = xn.cosine_decay(0.1, epochs=6)
    expected = [0.1 / 3, 0.2 / 3, 0.1, cosine(3), cosine(4)]
    np.testing.assert_allclose(history.history["lr"], expected, rtol=1e-14)


@pytest.mark.parametrize(("schedule", "epochs"), [(0.1, 0), (0.1, 2.0), (0.1, True), ("fast", 3)])
def test_bad_warmup_arguments_are_refused(schedule, epochs):
    with pytest.raises(ValueError, match="warmup"):
        xn.schedules.warmup(schedule, epochs=epochs)
