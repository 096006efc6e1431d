"""Collectives of xpnet.distributed on every backend, at whatever size the run has (1, 2, 3 ranks)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpnet as xn
from xpnet.distributed import Communicator, flatten, shard, unflatten


def launcher_size() -> int:
    return int(os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or 1)


def test_size_and_rank_match_the_launcher(comm):
    assert comm.size == launcher_size()
    assert 0 <= comm.rank < comm.size
    assert comm.is_root == (comm.rank == 0)
    assert 0 <= comm.local_rank < comm.size


def test_a_single_process_needs_no_mpi(monkeypatch):
    for name in xn.distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    alone = xn.distributed.init()
    assert (alone.rank, alone.size, alone.is_root, alone.mpi) == (0, 1, True, None)
    buffer = np.arange(3.0)
    assert alone.allreduce_sum(buffer) is buffer
    assert alone.bcast(buffer) is buffer
    assert alone.rows(7) == slice(0, 7)


def test_allreduce_sums_over_ranks_on_the_backend(comm, backend, f64):
    mine = f64(np.arange(6.0) * (comm.rank + 1))
    total = comm.allreduce_sum(mine)
    assert backend.owns(total) and total.dtype == mine.dtype
    ranks = comm.size * (comm.size + 1) // 2
    np.testing.assert_array_equal(xn.to_numpy(total), np.arange(6.0) * ranks)
    np.testing.assert_array_equal(xn.to_numpy(mine), np.arange(6.0) * (comm.rank + 1))


def test_bcast_gives_every_rank_the_root_values(comm, backend, f64):
    mine = np.random.default_rng(comm.rank).normal(size=(4, 3))
    got = comm.bcast(f64(mine))
    assert backend.owns(got)
    root = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(xn.to_numpy(got), root)
    np.testing.assert_array_equal(xn.to_numpy(comm.allreduce_sum(got)), comm.size * root)


def test_bcast_refuses_different_shapes_on_every_rank(comm):
    if comm.size == 1:
        pytest.skip("needs 2 ranks or more: one process has no other shape to differ from")
    shape = (3,) if comm.rank == 0 else (4,)
    with pytest.raises(ValueError, match="same shape and dtype on every rank"):
        comm.bcast(np.zeros(shape))


def test_bcast_object_sends_the_root_value(comm):
    assert comm.bcast_object({"seed": 100 + comm.rank}) == {"seed": 100}


def test_rows_of_a_batch_go_to_exactly_one_rank(comm):
    for n in (0, 1, 2, 10, 11):
        mark = np.zeros(n)
        mark[comm.rows(n)] = 1.0
        np.testing.assert_array_equal(comm.allreduce_sum(mark), np.ones(n))


def test_shard_splits_evenly_first_ranks_take_the_rest():
    assert [shard(10, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert [shard(2, r, 3) for r in range(3)] == [slice(0, 1), slice(1, 2), slice(2, 2)]
    for n in range(13):
        for size in range(1, 6):
            rows = np.concatenate([np.arange(n)[shard(n, r, size)] for r in range(size)])
            np.testing.assert_array_equal(rows, np.arange(n))
    with pytest.raises(ValueError, match="rank must be in"):
        shard(4, 2, 2)


def test_flatten_and_unflatten_round_trip(backend, f64):
    rng = np.random.default_rng(0)
    host = [{"weight": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)}, {}, (rng.normal(size=(2, 1)),)]
    tree = [{k: f64(v) for k, v in host[0].items()}, {}, (f64(host[2][0]),)]
    flat, layout = flatten(tree)
    assert backend.owns(flat) and tuple(flat.shape) == (layout.size,) == (10,)
    expected = np.concatenate([host[0]["weight"].ravel(), host[0]["bias"], host[2][0].ravel()])
    np.testing.assert_array_equal(xn.to_numpy(flat), expected)
    back = unflatten(flat * 2.0, layout)
    assert isinstance(back, list) and back[1] == {} and isinstance(back[2], tuple)
    np.testing.assert_array_equal(xn.to_numpy(back[0]["weight"]), 2 * host[0]["weight"])
    np.testing.assert_array_equal(xn.to_numpy(back[0]["bias"]), 2 * host[0]["bias"])
    np.testing.assert_array_equal(xn.to_numpy(back[2][0]), 2 * host[2][0])


def test_flatten_refuses_what_it_cannot_pack():
    with pytest.raises(ValueError, match="no arrays"):
        flatten([{}, {}])
    with pytest.raises(ValueError, match="one dtype"):
        flatten([np.zeros(2), np.zeros(2, dtype=np.float32)])
    with pytest.raises(TypeError, match="got str"):
        flatten({"weight": "w"})
    _, layout = flatten([np.zeros(2)])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        unflatten(np.zeros(3), layout)


def two_layers(backend, seed):
    layers = [xn.Dense(5, "tanh", in_features=4), xn.Dense(2)]
    return xn.Network(layers, backend=backend, dtype="float64", seed=seed)


def local_gradients(layers, x, y, xp):
    """Gradients of the mean squared error over the rows given (by the layers' own backward)."""
    out = x
    for layer in layers:
        out = layer.forward(out, training=True)
    _, grad = xn.MeanSquaredError().value_and_gradient(out, y, xp=xp)
    for layer in reversed(layers):
        grad = layer.backward(grad)
    return [dict(layer.grads) for layer in layers]


def test_rows_split_across_ranks_give_the_full_batch_gradient(comm, backend, f64):
    """bcast of the weights, each rank's rows, one allreduce of the flattened gradients weighted by
    rows: the single-process gradient of the whole batch, also when the batch does not divide."""
    xp = backend.xp
    # each rank starts from different weights; rank 0's are broadcast
    net = two_layers(backend, seed=comm.rank)
    flat, layout = flatten([layer.params for layer in net.layers])
    for layer, params in zip(net.layers, unflatten(comm.bcast(flat), layout)):
        layer.params = dict(params)
    rng = np.random.default_rng(7)
    n = 10  # 3 ranks: 4, 3 and 3 rows
    X, Y = f64(rng.normal(size=(n, 4))), f64(rng.normal(size=(n, 2)))
    mine = comm.rows(n)
    grads = local_gradients(net.layers, X[mine, ...], Y[mine, ...], xp)
    rows = mine.stop - mine.start
    packed, grad_layout = flatten(grads)
    total = comm.allreduce_sum(packed * (rows / n))
    merged = unflatten(total, grad_layout)
    full = local_gradients(net.layers, X, Y, xp)
    for got, want in zip(merged, full):
        for name in want:
            np.testing.assert_allclose(
                xn.to_numpy(got[name]), xn.to_numpy(want[name]), rtol=1e-12, atol=1e-14
            )
    # and every rank trained from rank 0's weights
    reference = xn.Network(
        [xn.Dense(5, "tanh", in_features=4), xn.Dense(2)], backend=backend, dtype="float64", seed=0
    )
    for layer, ref in zip(net.layers, reference.layers):
        np.testing.assert_array_equal(xn.to_numpy(layer.params["weight"]), xn.to_numpy(ref.params["weight"]))


def test_init_wraps_a_given_mpi_communicator():
    MPI = pytest.importorskip("mpi4py.MPI")
    wrapped = xn.distributed.init(MPI.COMM_WORLD)
    assert isinstance(wrapped, Communicator)
    assert (wrapped.rank, wrapped.size) == (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
