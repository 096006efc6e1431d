"""Batch sources give exactly their rows, in order or permuted, on every backend; memmaps are never
copied whole; one-shot iterators are refused on a second epoch; the prefetch thread always stops."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import xpnet as xn
from xpnet.data import streams
from xpnet.data.streams import (
    ArraySource,
    Batch,
    CSVSource,
    IterableSource,
    ParquetSource,
    Prefetcher,
    as_source,
    device_converter,
    from_npy,
)


def table(n: int = 23, features: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose first feature is the row number, so any order can be read back."""
    rng = np.random.default_rng(5)
    X = np.column_stack([np.arange(n, dtype=np.float64), rng.normal(size=(n, features - 1))])
    return X, np.arange(n) % 4, rng.uniform(0.5, 2.0, n)


def read_all(source, backend, batch_size=5, rng=None, dtype="float64"):
    """Every batch of one epoch through the prefetch thread onto ``backend``, back on the host."""
    parts = []
    with Prefetcher(source.batches(batch_size, rng), device_converter(backend, dtype)) as ready:
        for b in ready:
            parts.append(Batch(*(None if a is None else xn.to_numpy(a) for a in b)))
    return parts


def runs(labels):
    """The label of each run of equal consecutive labels."""
    return [int(label) for label, _ in itertools.groupby(labels)]


def joined(parts, i):
    return np.concatenate([p[i] for p in parts])


@pytest.fixture
def npy_files(tmp_path):
    X, y, w = table()
    paths = [tmp_path / f"{name}.npy" for name in ("x", "y", "w")]
    for path, a in zip(paths, (X, y, w)):
        np.save(path, a)
    return paths


# -- arrays and memmaps ----------------------------------------------------------------------


def test_arrays_give_every_row_in_order(backend):
    X, y, w = table()
    parts = read_all(ArraySource(X, y, w), backend)
    assert [len(p.x) for p in parts] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(joined(parts, 0), X)
    np.testing.assert_array_equal(joined(parts, 1), y)
    np.testing.assert_array_equal(joined(parts, 2), w)


def test_shuffled_arrays_follow_the_fit_order_of_the_same_generator(backend):
    X, y, w = table()
    parts = read_all(ArraySource(X, y, w), backend, rng=np.random.default_rng(3))
    order = np.random.default_rng(3).permutation(len(X))
    np.testing.assert_array_equal(joined(parts, 0), X[order])
    np.testing.assert_array_equal(joined(parts, 1), y[order])
    np.testing.assert_array_equal(joined(parts, 2), w[order])


def test_targets_keep_integer_labels_and_features_take_the_dtype(backend):
    X, y, _ = table()
    batch = next(iter(Prefetcher(ArraySource(X, y).batches(4), device_converter(backend, "float32"))))
    assert backend.owns(batch.x) and backend.owns(batch.y)
    assert batch.x.dtype == backend.xp.float32
    assert backend.xp.isdtype(batch.y.dtype, "integral")


def test_npy_files_open_as_memmaps_and_unshuffled_batches_are_views(npy_files):
    source = from_npy(*npy_files)
    assert isinstance(source.X, np.memmap) and not source.X.flags.writeable
    batch = next(source.batches(4))
    assert isinstance(batch.x, np.memmap) and np.shares_memory(batch.x, source.X)


def test_memmap_gives_every_row_in_order(npy_files, backend):
    X, y, w = table()
    parts = read_all(from_npy(*npy_files), backend, batch_size=6)
    np.testing.assert_array_equal(joined(parts, 0), X)
    np.testing.assert_array_equal(joined(parts, 1), y)
    np.testing.assert_array_equal(joined(parts, 2), w)


def test_memmap_shuffles_by_blocks_of_rows(npy_files, backend):
    X, y, w = table()
    parts = read_all(from_npy(*npy_files, block_rows=4), backend, rng=np.random.default_rng(0))
    rows = joined(parts, 0)[:, 0].astype(int)
    assert sorted(rows) == list(range(len(X)))
    assert list(rows) != list(range(len(X)))
    np.testing.assert_array_equal(joined(parts, 0), X[rows])
    np.testing.assert_array_equal(joined(parts, 1), y[rows])
    np.testing.assert_array_equal(joined(parts, 2), w[rows])
    # each block of 4 rows arrives whole, as one run
    blocks = rows // 4
    assert sorted(runs(blocks)) == list(range(6))


def test_memmap_shuffle_is_seeded(npy_files):
    def order(seed):
        parts = list(from_npy(*npy_files, block_rows=4).batches(5, np.random.default_rng(seed)))
        return joined(parts, 0)[:, 0].tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_memmap_in_one_block_shuffles_as_in_memory_arrays(npy_files):
    X, _, _ = table()
    on_disk = joined(list(from_npy(npy_files[0]).batches(5, np.random.default_rng(9))), 0)
    in_memory = joined(list(ArraySource(X).batches(5, np.random.default_rng(9))), 0)
    np.testing.assert_array_equal(on_disk, in_memory)


@pytest.mark.parametrize("shuffle", [False, True])
def test_memmap_is_never_copied_whole(tmp_path, shuffle):
    rows, features = 16_384, 64  # a 4 MiB float32 file
    path = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    mm[:] = 1.0
    mm.flush()
    del mm
    source = from_npy(path, block_rows=4096)
    rng = np.random.default_rng(0) if shuffle else None
    tracemalloc.start()
    try:
        count = 0
        for batch in source.batches(128, rng):
            count += len(batch.x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    # one 32 KiB batch and a block's 32 KiB of indices; the whole file is 4 MiB
    assert peak < 400 * 2**10


def test_arrays_check_their_rows():
    X, y, _ = table()
    with pytest.raises(ValueError, match="X has 23 rows but y has 22"):
        ArraySource(X, y[:-1])
    with pytest.raises(ValueError, match="X must be 2-D"):
        ArraySource(X[:, 0])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(ArraySource(X).batches(0))


# -- iterables of batches ----------------------------------------------------------------------


def pairs(with_weights=False):
    X, y, w = table()
    cuts = [0, 4, 11, 12, 23]
    return [(X[a:b], y[a:b], w[a:b])[: 3 if with_weights else 2] for a, b in itertools.pairwise(cuts)]


def test_a_list_of_batches_is_read_every_epoch(backend):
    X, y, w = table()
    source = IterableSource(pairs(with_weights=True))
    assert source.num_batches() == 4 and source.n_rows is None
    for _ in range(2):
        parts = read_all(source, backend)
        assert [len(p.x) for p in parts] == [4, 7, 1, 11]
        np.testing.assert_array_equal(joined(parts, 0), X)
        np.testing.assert_array_equal(joined(parts, 1), y)
        np.testing.assert_array_equal(joined(parts, 2), w)


def test_a_function_returning_a_generator_is_called_every_epoch(backend):
    X, y, _ = table()
    calls = []

    def make():
        calls.append(1)
        yield from pairs()

    source = IterableSource(make)
    for _ in range(3):
        parts = read_all(source, backend)
        np.testing.assert_array_equal(joined(parts, 0), X)
        np.testing.assert_array_equal(joined(parts, 1), y)
        assert parts[0].w is None
    assert len(calls) == 3


def test_features_alone_are_a_batch():
    X, _, _ = table()
    parts = list(IterableSource([X[:10], X[10:]]).batches())
    np.testing.assert_array_equal(joined(parts, 0), X)
    assert parts[0].y is None


def test_a_torch_data_loader_is_re_iterated():
    torch = pytest.importorskip("torch")
    X, y, _ = table()
    dataset = torch.utils.data.TensorDataset(torch.asarray(X), torch.asarray(y))
    source = IterableSource(torch.utils.data.DataLoader(dataset, batch_size=5))
    assert source.num_batches() == 5
    for _ in range(2):
        parts = list(source.batches())
        np.testing.assert_array_equal(joined(parts, 0), X)
        np.testing.assert_array_equal(joined(parts, 1), y)


def test_a_generator_serves_one_epoch_then_says_what_to_pass():
    X, _, _ = table()
    source = IterableSource(pair for pair in pairs())
    np.testing.assert_array_equal(joined(list(source.batches()), 0), X)
    with pytest.raises(ValueError, match="only once.*function returning a fresh iterator"):
        source.batches()


def test_bad_batches_are_named():
    X, y, _ = table()
    with pytest.raises(ValueError, match="batch 1: X_b has 3 rows but y_b has shape"):
        list(IterableSource([(X[:2], y[:2]), (X[:3], y[:2])]).batches())
    with pytest.raises(ValueError, match="batch 0: X_b must be 2-D"):
        list(IterableSource([(X[:, 0], y)]).batches())
    with pytest.raises(ValueError, match="batch 0 has 4 parts"):
        list(IterableSource([(X, y, y, y)]).batches())
    with pytest.raises(TypeError, match="iterable of"):
        IterableSource(3)


def test_as_source_tells_arrays_from_batches():
    X, y, _ = table()
    assert isinstance(as_source(X, y), ArraySource)
    assert isinstance(as_source(X.tolist(), y), ArraySource)
    assert isinstance(as_source(pairs()), IterableSource)
    assert isinstance(as_source(lambda: iter(pairs())), IterableSource)
    source = ArraySource(X)
    assert as_source(source) is source
    with pytest.raises(ValueError, match="left out when X is an iterable"):
        as_source(pairs(), y)


# -- files in pieces -------------------------------------------------------------------------


@pytest.fixture
def frame():
    pd = pytest.importorskip("pandas")
    X, y, w = table()
    return pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y, "weight": w})


@pytest.fixture
def parquet(tmp_path, frame):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    return path


def test_parquet_gives_every_row_in_order_across_row_groups(parquet, backend):
    X, y, w = table()
    source = ParquetSource(parquet, target="label", weight="weight")
    assert source.n_rows == 23 and source.num_batches(5) == 5 and source.features == ["a", "b", "c"]
    parts = read_all(source, backend)
    assert [len(p.x) for p in parts] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(joined(parts, 0), X)
    np.testing.assert_array_equal(joined(parts, 1), y)
    np.testing.assert_array_equal(joined(parts, 2), w)


def test_parquet_shuffles_by_row_groups(parquet, backend):
    X, y, _ = table()
    source = ParquetSource(parquet, features=["a", "c"], target="label")
    parts = read_all(source, backend, rng=np.random.default_rng(4))
    rows = joined(parts, 0)[:, 0].astype(int)
    assert sorted(rows) == list(range(23)) and list(rows) != list(range(23))
    np.testing.assert_array_equal(joined(parts, 0), X[rows][:, [0, 2]])
    np.testing.assert_array_equal(joined(parts, 1), y[rows])
    groups = rows // 7
    assert sorted(runs(groups)) == [0, 1, 2, 3]


def test_csv_gives_every_row_in_order_across_chunks(tmp_path, frame, backend):
    X, y, w = table()
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    source = CSVSource(path, target="label", weight="weight", chunk_rows=6)
    assert source.n_rows is None
    parts = read_all(source, backend, batch_size=4)
    assert source.n_rows == 23 and source.num_batches(4) == 6
    np.testing.assert_allclose(joined(parts, 0), X, rtol=1e-15)
    np.testing.assert_array_equal(joined(parts, 1), y)
    np.testing.assert_allclose(joined(parts, 2), w, rtol=1e-15)


def test_csv_shuffles_inside_each_chunk(tmp_path, frame):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    source = CSVSource(path, target="label", chunk_rows=6)
    rows = joined(list(source.batches(5, np.random.default_rng(1))), 0)[:, 0].astype(int)
    assert sorted(rows) == list(range(23)) and list(rows) != list(range(23))
    assert [sorted(rows[i : i + 6]) for i in range(0, 23, 6)] == [
        list(range(i, min(i + 6, 23))) for i in range(0, 23, 6)
    ]


def test_table_columns_are_checked(tmp_path, frame, parquet):
    frame.assign(text="x").to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in the file"):
        ParquetSource(parquet, target="nope")
    with pytest.raises(ValueError, match=r"feature columns \['text'\] are not numeric"):
        next(CSVSource(tmp_path / "t.csv", target="label").batches(4))


# -- the prefetch thread ---------------------------------------------------------------------------


def counting(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise OSError(f"disk error at {i}")
        yield np.full((2, 1), float(i))


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "xpnet-prefetch"]


def test_prefetch_keeps_order_and_stops_at_the_end():
    prefetcher = Prefetcher(counting(6), lambda b: float(b[0, 0]))
    assert list(prefetcher) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert not prefetcher.running


def test_prefetch_thread_stops_on_break_inside_with():
    with Prefetcher(counting(1000), depth=1) as ready:
        for i, _ in enumerate(ready):
            if i == 2:
                break
    assert prefetch_threads() == []


def test_prefetch_thread_stops_on_a_plain_break():
    prefetcher = Prefetcher(counting(1000), depth=1)
    for i, _ in enumerate(prefetcher):
        if i == 1:
            break
    assert not prefetcher.running


def test_prefetch_reraises_a_reading_error_and_stops():
    prefetcher = Prefetcher(counting(10, fail_at=3))
    seen = []
    with pytest.raises(OSError, match="disk error at 3"):
        for b in prefetcher:
            seen.append(float(b[0, 0]))
    assert seen == [0.0, 1.0, 2.0]
    assert not prefetcher.running


def test_prefetch_stops_when_the_consumer_raises():
    def convert(b):
        return b

    prefetcher = Prefetcher(counting(1000), convert, depth=2)
    with pytest.raises(KeyError), prefetcher as ready:
        for _ in ready:
            raise KeyError("step failed")
    assert not prefetcher.running


def test_prefetch_closes_the_source_generator_it_abandons():
    closed = []

    def source():
        try:
            yield from counting(1000)
        finally:
            closed.append(True)

    with Prefetcher(source(), depth=1) as ready:
        next(ready)
    assert closed == [True]


def test_conversion_errors_reach_the_consumer():
    def convert(b):
        raise TypeError("cannot convert")

    with pytest.raises(TypeError, match="cannot convert"), Prefetcher(counting(3), convert) as ready:
        list(ready)
    assert prefetch_threads() == []


def test_every_source_meets_the_protocol(tmp_path, npy_files, parquet):
    X, y, _ = table()
    for source in (ArraySource(X, y), from_npy(*npy_files), IterableSource(pairs()), ParquetSource(parquet)):
        assert isinstance(source, streams.BatchSource)


# -- a memmap whose file is cut under it (issue 22, defect 4) -------------------------------------

TRUNCATE_SCRIPT = """
import os, sys
import numpy as np
import xpnet as xn
path, when, backend, device = sys.argv[1:5]
X = np.load(path, mmap_mode="r")
y = np.zeros(len(X))
net = xn.Network([xn.Dense(1, in_features=X.shape[1])], backend=backend, device=device or None, seed=0)

class Cut(xn.Callback):
    def on_epoch_end(self, net, epoch, logs):
        os.truncate(path, 4096)

try:
    if when == "before fit":
        os.truncate(path, 4096)
        net.fit(X, y, epochs=1, batch_size=256, verbose=0)
    elif when == "between epochs":
        net.fit(X, y, epochs=3, batch_size=256, verbose=0, callbacks=[Cut()], shuffle=True)
    else:
        os.truncate(path, 4096)
        net.predict(X)
except ValueError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(os, "truncate"), reason="POSIX truncate")
@pytest.mark.parametrize("when", ["before fit", "between epochs", "before predict"])
def test_a_memmap_truncated_under_fit_is_a_value_error_naming_the_file(tmp_path, backend, when):
    """Reading past the end of a cut file used to kill the process with SIGBUS (exit 135)."""
    path = tmp_path / "x.npy"
    np.save(path, np.ones((40_000, 8)))
    device = re.sub(r"^.*Device\('(.*)'\)$", r"\1", str(backend.device))
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATE_SCRIPT, str(path), when, backend.name, device],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith(f"X: the file {path} behind this memmap now has 4096 bytes, but the array")
    assert "truncated while in use" in done.stdout


def test_a_source_checks_its_files_before_each_batch(tmp_path):
    X, y, w = table(4000, 4)
    for name, a in (("x", X), ("y", y), ("w", w)):
        np.save(tmp_path / f"{name}.npy", a)
    source = from_npy(tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "w.npy", block_rows=1000)
    for rng in (None, np.random.default_rng(0)):
        batches = source.batches(100, rng)
        next(batches)
        os.truncate(tmp_path / "w.npy", 1000)
        with pytest.raises(
            ValueError, match=r"^sample_weight: the file .*w\.npy behind this memmap now has 1000"
        ):
            next(batches)
        np.save(tmp_path / "new.npy", w)
        os.replace(tmp_path / "new.npy", tmp_path / "w.npy")  # a new file: the old mapping sees the cut one
        with pytest.raises(ValueError, match="sample_weight: the file"):
            ArraySource(source.X, source.y, source.sample_weight)
        source = from_npy(tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "w.npy", block_rows=1000)
    view = source.X[100:200]  # views of a memmap map the same file
    os.truncate(tmp_path / "x.npy", 2000)
    with pytest.raises(ValueError, match="X: the file"):
        ArraySource(view)


def _mapped_rss(path) -> int:
    """Bytes of ``path``'s memory mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:  # a mapping's header line
                inside = len(parts) >= 6 and parts[5] == str(path)
            elif inside and parts[0] == "Rss:":
                total += int(parts[1]) * 1024
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux /proc")
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1000, 4096])
def test_a_memmap_epoch_keeps_about_one_block_resident(tmp_path, batch_size, shuffle):
    """Batches that straddle two blocks read the first again after its pages were let go, and a
    read maps back the whole page-cache folio around it (fault-around), into neighbouring blocks
    too: an epoch left most of the file resident, 1.2 GB for a 1.2 GB file. Pages now go once the
    last batch of a block is gathered, with a margin for the folios around it."""
    path = tmp_path / "x.npy"
    block = 4096 * 256 * 4  # 4 MiB of rows
    np.save(path, np.ones((16 * 4096 + 1000, 256), dtype=np.float32))  # 68 MiB, a short last block
    source = ArraySource(np.load(path, mmap_mode="r"), block_rows=4096)
    peak = 0
    for b in source.batches(batch_size, np.random.default_rng(0) if shuffle else None):
        float(np.asarray(b.x).sum())  # read the rows, as the copy to the device does
        peak = max(peak, _mapped_rss(path))
    assert peak < 2.5 * block, f"{peak / 2**20:.0f} MiB of the 68 MiB file resident"
    assert _mapped_rss(path) < 2**20  # and let go at the end
