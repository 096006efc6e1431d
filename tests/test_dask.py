"""``dask_ml.wrappers.Incremental`` trains XPNetClassifier by ``partial_fit`` on a Dask array
larger than the worker's memory limit, block by block, as a hand-written loop would."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
wrappers = pytest.importorskip("dask_ml.wrappers")

from xpnet.sklearn import XPNetClassifier  # noqa: E402

MEMORY_LIMIT = 60_000_000  # bytes the one worker may hold (60 MB)
ROWS, FEATURES, CHUNK_ROWS = 480_000, 25, 40_000  # float64: 96 MB in 12 blocks of 8 MB


def _data() -> tuple[da.Array, da.Array]:
    """A lazy seeded array (built block by block, never whole) and a learnable 0/1 target."""
    X = da.random.RandomState(0).standard_normal((ROWS, FEATURES), chunks=(CHUNK_ROWS, FEATURES))
    y = (X[:, 0] - 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def _estimator(backend_name: str) -> XPNetClassifier:
    return XPNetClassifier(
        hidden_layer_sizes=(8,), batch_size=4096, learning_rate=1e-2, backend=backend_name, random_state=0
    )


@pytest.mark.skip_backends("array_api_strict", "jax", reason="numpy and torch cover the wrapper")
def test_incremental_on_array_larger_than_worker_memory(backend_name: str) -> None:
    X, y = _data()
    assert X.nbytes > 1.5 * MEMORY_LIMIT
    # In-process worker: its RSS measure would count the whole test process, so dask's
    # pause/spill thresholds are off; tracemalloc measures instead what the process
    # allocated at its peak (NumPy reports every array to it), workers' threads included.
    quiet = {f"distributed.worker.memory.{key}": False for key in ("target", "spill", "pause", "terminate")}
    quiet["distributed.worker.profile.enabled"] = False  # its stack samples read source files
    with (
        dask.config.set(quiet),
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            memory_limit=MEMORY_LIMIT,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
    ):
        model = wrappers.Incremental(_estimator(backend_name), shuffle_blocks=False)
        _estimator(backend_name).partial_fit(np.zeros((8, FEATURES)), np.arange(8) % 2, classes=[0, 1])
        tracemalloc.start()  # after a warm-up, so the backend's imports are not counted
        try:
            model.fit(X, y, classes=[0, 1])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT < X.nbytes, f"peak {peak / 1e6:.0f} MB while fitting"
        proba = model.predict_proba(X[:CHUNK_ROWS])
        predicted = model.predict(X[:CHUNK_ROWS])
        assert isinstance(predicted, da.Array)
        predicted, proba, truth = da.compute(predicted, proba, y[:CHUNK_ROWS])

    assert np.mean(predicted == truth) > 0.95
    by_hand = _estimator(backend_name)
    for X_block, y_block in zip(X.to_delayed().ravel(), y.to_delayed().ravel()):
        X_block, y_block = X_block.compute(), y_block.compute()
        by_hand.partial_fit(X_block, y_block, classes=[0, 1])
    head = X[:CHUNK_ROWS].compute()
    np.testing.assert_array_equal(proba, np.asarray(by_hand.predict_proba(head)))
