"""fit(..., distributed=comm) equals one process with the same batch_size (shuffling and dropout included).

Every rank also trains the single-process reference itself (``distributed=None``), so each rank
checks its own result against it; at size 1 the distributed path is the ordinary one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import xpnet as xn

TOLERANCE = 1e-10


def make_net(backend, seed=1, dropout=0.3, optimizer="adam"):
    layers = [xn.Dense(8, "tanh", in_features=5), xn.Dropout(dropout), xn.Dense(3, "softmax")]
    return xn.Network(
        layers,
        loss="categorical_crossentropy",
        optimizer=optimizer,
        backend=backend,
        dtype="float64",
        seed=seed,
    )


def data(rows=41):
    rng = np.random.default_rng(7)
    return rng.normal(size=(rows, 5)), rng.integers(0, 3, rows)


def largest_difference(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.get_weights(), b.get_weights()))


def assert_same_history(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=TOLERANCE)


# 41 rows in batches of 8 leave a last batch of 1 row: ranks beyond the first have none.
@pytest.mark.parametrize(("batch_size", "shuffle"), [(8, True), (8, False), (6, True), (41, True)])
def test_distributed_fit_equals_one_process(comm, backend, batch_size, shuffle):
    X, y = data()
    alone = make_net(backend)
    want = alone.fit(X, y, epochs=3, batch_size=batch_size, shuffle=shuffle, verbose=0).history
    net = make_net(backend)
    got = net.fit(X, y, epochs=3, batch_size=batch_size, shuffle=shuffle, distributed=comm, verbose=0).history
    assert largest_difference(net, alone) < TOLERANCE
    assert_same_history(got, want)
    # every rank holds the same weights
    for w in net.get_weights():
        np.testing.assert_array_equal(comm.allreduce_sum(w), comm.size * w)


def test_a_second_distributed_fit_continues_like_one_process(comm, backend):
    X, y = data()
    alone, net = make_net(backend), make_net(backend)
    for _ in range(2):  # the second call starts from trained weights and optimizer state
        alone.fit(X, y, epochs=1, batch_size=8, verbose=0)
        net.fit(X, y, epochs=1, batch_size=8, distributed=comm, verbose=0)
    assert largest_difference(net, alone) < TOLERANCE
    assert net.optimizer.iterations == alone.optimizer.iterations


def test_clipping_acts_on_the_averaged_gradients(comm, backend):
    X, y = data()
    alone = make_net(backend, optimizer=xn.SGD(0.5, clip_norm=0.05))
    alone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    net = make_net(backend, optimizer=xn.SGD(0.5, clip_norm=0.05))
    net.fit(X, y, epochs=2, batch_size=8, distributed=comm, verbose=0)
    assert largest_difference(net, alone) < TOLERANCE


def test_distributed_fit_with_sample_weights_from_batches(comm, backend):
    X, y = data(30)
    w = np.random.default_rng(3).uniform(0.0, 2.0, 30)
    w[:4] = 0.0  # rows of weight 0: a rank may have only those in a batch
    batches = [(X[i : i + 7], y[i : i + 7], w[i : i + 7]) for i in range(0, 30, 7)]
    alone = make_net(backend, optimizer=xn.SGD(0.1, momentum=0.9))
    want = alone.fit(batches, epochs=2, verbose=0).history
    net = make_net(backend, optimizer=xn.SGD(0.1, momentum=0.9))
    got = net.fit(batches, epochs=2, distributed=comm, verbose=0).history
    assert largest_difference(net, alone) < TOLERANCE
    assert_same_history(got, want)


@pytest.mark.parametrize("class_weight", [None, {0: 2.0, 2: 0.0}, "balanced"])
def test_distributed_fit_with_sample_and_class_weights_equals_one_process(comm, backend, class_weight):
    X, y = data(40)  # no batch of one row, which could weigh 0 alone (a NaN loss, as torch's)
    w = np.random.default_rng(4).uniform(0.0, 2.0, len(y))
    w[:5] = 0.0
    options = {"sample_weight": w, "class_weight": class_weight, "epochs": 2, "batch_size": 8, "verbose": 0}
    alone, net = make_net(backend), make_net(backend)
    want = alone.fit(X, y, **options).history
    got = net.fit(X, y, distributed=comm, **options).history
    assert largest_difference(net, alone) < TOLERANCE
    assert_same_history(got, want)


def true_class_probability(y_true, y_pred):
    return float(np.mean(y_pred[np.arange(len(y_true)), y_true]))


@pytest.mark.parametrize("validation", ["data", "split"])
def test_distributed_metrics_and_validation_equal_one_process(comm, backend, validation):
    X, y = data()
    Xv, yv = data(13)
    options = {"metrics": ["f1", "auc", true_class_probability], "epochs": 2, "batch_size": 6, "verbose": 0}
    options.update({"validation_data": (Xv, yv)} if validation == "data" else {"validation_split": 0.3})
    alone, net = make_net(backend), make_net(backend)
    want = alone.fit(X, y, **options).history
    got = net.fit(X, y, distributed=comm, **options).history
    assert {"f1", "auc", "val_loss", "val_auc", "val_true_class_probability"} <= want.keys()
    assert largest_difference(net, alone) < TOLERANCE
    assert_same_history(got, want)


def test_distributed_fit_from_batches_with_class_weight_metrics_and_streamed_validation(comm, backend):
    X, y = data()
    w = np.random.default_rng(5).uniform(0.5, 1.5, len(y))
    train = [(X[i : i + 7], y[i : i + 7], w[i : i + 7]) for i in range(0, len(y), 7)]
    wv = np.ones(12)
    wv[[1, 2, 5]] = 0.0  # with 2 or 3 ranks, some rank's rows of a batch all weigh 0
    val = [(X[i : i + 4], y[i : i + 4], wv[i : i + 4]) for i in range(0, 12, 4)]
    options = {"class_weight": {1: 0.5}, "metrics": ["recall", "auc"], "validation_data": val, "verbose": 0}
    alone, net = make_net(backend), make_net(backend)
    want = alone.fit(train, epochs=2, **options).history
    got = net.fit(train, epochs=2, distributed=comm, **options).history
    assert {"recall", "val_auc"} <= want.keys()
    assert largest_difference(net, alone) < TOLERANCE
    assert_same_history(got, want)


def test_distributed_fit_from_a_memmap(comm, backend, tmp_path):
    X, y = data()
    path = Path(comm.bcast_object(str(tmp_path))) / "x.npy"
    if comm.is_root:
        np.save(path, X)
    comm.barrier()
    alone = make_net(backend)
    alone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    net = make_net(backend)
    net.fit(np.load(path, mmap_mode="r"), y, epochs=2, batch_size=8, distributed=comm, verbose=0)
    assert largest_difference(net, alone) < TOLERANCE
    comm.barrier()


def test_initial_weights_and_generator_come_from_rank_0(comm, backend):
    X, y = data()
    net = make_net(backend, seed=None)  # each rank draws its own weights and shuffling
    net.fit(X, y, epochs=1, batch_size=8, distributed=comm, verbose=0)
    for w in net.get_weights():
        np.testing.assert_array_equal(comm.allreduce_sum(w), comm.size * w)


def test_only_rank_0_writes_checkpoints(comm, backend, tmp_path, capsys):
    X, y = data()
    checkpoint = xn.ModelCheckpoint(tmp_path / "epoch-{epoch}.safetensors", monitor="loss")
    net = make_net(backend)
    net.fit(X, y, epochs=2, batch_size=8, distributed=comm, callbacks=[checkpoint], verbose=2)
    net.save(tmp_path / "final.safetensors")
    printed = capsys.readouterr()
    written = sorted(p.name for p in tmp_path.iterdir())
    if comm.is_root:
        assert checkpoint.saved and written == [
            "epoch-1.safetensors",
            "epoch-2.safetensors",
            "final.safetensors",
        ]
        assert "Epoch 2/2" in printed.err
    else:
        assert checkpoint.saved == [] and written == []
        assert printed.err == "" and printed.out == ""


def test_distributed_must_be_a_communicator(backend):
    X, y = data()
    with pytest.raises(TypeError, match="distributed must be a communicator"):
        make_net(backend).fit(X, y, distributed="mpi", verbose=0)


def test_mixed_float16_skips_the_same_steps_on_every_rank(comm, backend):
    """The loss scaler decides on the summed gradients, so every rank skips the same steps (a scale of
    2**30 overflows float16 until it has halved enough) and keeps the same scale and weights. (Where
    float16 overflows is not one process's: each rank's gradients are of its own rows' mean loss,
    scaled by its share after the backward pass, as with DDP and GradScaler.)"""
    try:
        backend.compute_dtype("float16")
    except ValueError as exc:
        pytest.skip(str(exc))
    X, y = data()
    layers = [xn.Dense(8, "tanh", in_features=5), xn.Dense(3, "softmax")]
    scaler = xn.LossScaler(2.0**30, growth_interval=2)
    net = xn.Network(
        layers,
        loss="cross_entropy",
        optimizer="adam",
        backend=backend,
        dtype="mixed_float16",
        seed=1,
        loss_scaler=scaler,
    )
    start = net.get_weights()
    history = net.fit(X, y, epochs=4, batch_size=8, distributed=comm, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    state = np.array([float(xn.to_numpy(v)) for v in net.optimizer.state["loss_scale"].values()])
    np.testing.assert_array_equal(comm.allreduce_sum(state), comm.size * state)
    assert 0 < state[2] < 4 * 6  # some steps skipped, some applied
    assert largest_difference_to(net, start) > 1e-3
    for w in net.get_weights():
        np.testing.assert_array_equal(comm.allreduce_sum(w), comm.size * w)


def largest_difference_to(net, weights):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(net.get_weights(), weights))
