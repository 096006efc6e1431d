"""Nothing lost, nothing silently wrong (issue 11): each reported defect, and properties that keep them out.

Property tests use hypothesis with a fixed budget (``derandomize=True``: the
same examples on every run), so CI time stays small and failures reproduce.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpnet as xn
from xpnet.train import inputs

pd = pytest.importorskip("pandas")
pytest.importorskip("safetensors")

PROPERTIES = settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RNG = np.random.default_rng(0)


def _host(array):
    return np.asarray(xn.to_numpy(array))


# -- labels ----------------------------------------------------------------------------------

INTEGER_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_labels_of_any_integer_dtype_equal_int64_labels_even_past_256_classes(backend, dtype):
    X = RNG.normal(size=(24, 3))
    top = 127 if dtype == "int8" else 255
    labels = np.array([0, top, 1, top - 1] * 6)  # with 300 classes: uint8 used to mark class 256 too

    def trained(y):
        net = xn.Network(
            [xn.Dense(300, "softmax", in_features=3)],
            loss="cross_entropy",
            optimizer=xn.SGD(0.5),
            backend=backend,
            dtype="float64",
            seed=0,
        )
        before = net.evaluate(X, y)["loss"]
        net.fit(X, y, epochs=1, batch_size=8, verbose=0)
        return before, net.get_weights()

    want_loss, want = trained(labels.astype(np.int64))
    got_loss, got = trained(labels.astype(dtype))
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int16"])
def test_labels_in_the_backends_own_integer_arrays_equal_int64_labels(backend, dtype):
    """torch cannot reduce uint16 and wider: its tensors are converted like NumPy arrays are."""
    X = RNG.normal(size=(12, 3))
    labels = np.array([0, 2, 1, 2] * 3)

    def trained(y):
        net = xn.Network([xn.Dense(3, "softmax", in_features=3)], loss="cross_entropy", optimizer=xn.SGD(0.5),
                         backend=backend, dtype="float64", seed=0)  # fmt: skip
        before = net.evaluate(X, y)["loss"]
        net.fit(X, y, epochs=1, batch_size=4, verbose=0)
        return before, net.get_weights()

    want_loss, want = trained(labels)
    got_loss, got = trained(backend.xp.asarray(labels.astype(dtype), device=backend.device))
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# -- what X may hold ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, message",
    [
        (np.ones((4, 2)) + 1j, "holds complex numbers"),
        (np.arange(8).reshape(4, 2).astype("datetime64[s]"), "holds dates or times"),
        (np.arange(8).reshape(4, 2).astype("timedelta64[s]"), "holds dates or times"),
        (np.array([["1", "2"], ["3", "4"]]), "holds text"),
        (np.array([[b"1", b"2"]]), "holds text"),
        (np.array([[1.0, "2"]], dtype=object), "holds '2' of type str"),
        ([[1.0, None, 2.0]], "holds None"),
        (pd.DataFrame({"a": pd.array([1, None], dtype="Int64"), "b": [1.0, 2.0]}), "missing values"),
        (pd.DataFrame({"a": [1.0, np.nan]}), "column 'a' at row 1"),
        (pd.DataFrame({"a": ["x", "y"]}), r"non-numeric columns \['a'\]"),
        (np.array([[1e300, 1.0]]), "beyond float32's range"),
        ([[1, 2], [3]], "rectangular"),
    ],
)
def test_inputs_that_are_not_real_numbers_are_refused_alike_on_every_backend(backend, X, message):
    net = xn.Network([xn.Dense(1)], backend=backend, seed=0)
    with pytest.raises(ValueError, match=message):
        net.predict(X)


def test_complex_targets_and_text_labels_are_refused(backend):
    net = xn.Network([xn.Dense(1, in_features=2)], backend=backend, seed=0)
    with pytest.raises(ValueError, match="y holds complex numbers"):
        net.fit(np.ones((3, 2)), np.ones(3) + 1j, verbose=0)
    clf = xn.Network([xn.Dense(2, "softmax", in_features=2)], loss="cross_entropy", backend=backend)
    with pytest.raises(ValueError, match="y holds text"):
        clf.fit(np.ones((2, 2)), np.array(["0", "1"]), verbose=0)


def test_float64_data_beyond_float32_is_fine_in_float64(backend):
    net = xn.Network([xn.Activation(None)], backend=backend, dtype="float64")
    np.testing.assert_array_equal(_host(net.predict(np.array([[1e300, -1e300]]))), [[1e300, -1e300]])


@pytest.mark.parametrize(
    "make",
    [
        lambda X: np.flip(X, 0),
        lambda X: X[::-2, ::-1],
        lambda X: np.asfortranarray(X),
        lambda X: pd.DataFrame({"a": X[:, 0].astype(np.float32), "b": (X[:, 1] > 0), "c": X[:, 2]}),
        lambda X: pd.DataFrame({"a": (X[:, 0] * 100).astype(np.int16), "b": X[:, 1], "c": X[:, 2]}),
    ],
    ids=["flip", "negative-steps", "fortran", "float32-bool-float64 frame", "int16-float frame"],
)
def test_views_and_mixed_dtype_frames_are_converted_on_every_backend(backend, make):
    X = RNG.normal(size=(12, 3))
    data = make(X)
    net = xn.Network([xn.Dense(2, "tanh", in_features=3)], backend=backend, dtype="float64", seed=0)
    reference = xn.Network([xn.Dense(2, "tanh", in_features=3)], backend="numpy", dtype="float64", seed=0)
    plain = np.asarray(
        data.to_numpy(dtype=np.float64) if hasattr(data, "columns") else data, dtype=np.float64
    )
    np.testing.assert_allclose(_host(net.predict(data)), _host(reference.predict(plain)), rtol=1e-12)


@pytest.mark.parametrize("layers", [[xn.Activation(None)], [xn.Dropout(0.5)], [xn.Activation("linear")]])
def test_a_network_without_parameters_never_returns_the_callers_array(backend, layers):
    X = np.arange(6.0).reshape(3, 2)
    original = X.copy()
    net = xn.Network(layers, backend=backend, dtype="float64")
    out = net.predict(X)
    assert out is not X
    if backend.mutable:
        out[...] = -1.0
    np.testing.assert_array_equal(X, original)
    mine = backend.asarray(X, "float64")
    assert net.predict(mine) is not mine


# -- non-finite runs -----------------------------------------------------------------------------


def _exploding(backend):
    """One float32 step whose loss is finite and whose update overflows every weight."""
    net = xn.Network([xn.Dense(1, in_features=1)], optimizer=xn.SGD(1e38), backend=backend, seed=0)
    X = np.array([[1.0], [2.0]])
    return net, X, np.array([3.0, 5.0])


def test_parameters_that_blow_up_in_the_last_step_raise_like_a_non_finite_loss(backend):
    net, X, y = _exploding(backend)
    with (
        pytest.raises(FloatingPointError, match="parameters became NaN or infinite in epoch 1"),
        np.errstate(all="ignore"),
    ):
        net.fit(X, y, epochs=1, batch_size=2, verbose=0)
    assert math.isfinite(net.history.history["loss"][-1]) and len(net.history.epoch) == 1
    quiet, X, y = _exploding(backend)
    with np.errstate(all="ignore"):
        quiet.fit(X, y, epochs=3, batch_size=2, verbose=0, callbacks=[xn.TerminateOnNaN(raise_error=False)])
    assert quiet.epoch == 1 and quiet.stop_training


def _diverging(backend):
    """Two finite epochs, then an infinite loss in the third."""
    X = np.linspace(-5, 5, 40).reshape(-1, 1)
    net = xn.Network([xn.Dense(1, in_features=1)], optimizer=xn.SGD(3.0), backend=backend, seed=0)
    return net, X, X * 3


@pytest.mark.parametrize("terminate", [True, False], ids=["raising", "quiet"])
def test_a_checkpoint_with_non_finite_loss_or_weights_is_never_written(backend, tmp_path, terminate):
    path = tmp_path / "last.safetensors"
    net, X, y = _diverging(backend)
    # ModelCheckpoint before TerminateOnNaN: it sees the non-finite epoch first.
    callbacks = [xn.ModelCheckpoint(path), xn.TerminateOnNaN(raise_error=terminate)]
    with np.errstate(all="ignore"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            net.fit(X, y, epochs=50, batch_size=8, verbose=0, callbacks=callbacks)
        except FloatingPointError:
            assert terminate
    assert any("did not save epoch 3" in str(w.message) for w in caught)
    saved = xn.load(path, backend="numpy")
    assert saved.epoch == 2
    assert all(np.isfinite(w).all() for w in saved.get_weights())
    assert all(math.isfinite(v) for v in saved.history.history["loss"])
    exploding, X, y = _exploding(backend)  # finite loss, infinite weights
    target = tmp_path / "boom.safetensors"
    callbacks = [xn.ModelCheckpoint(target), xn.TerminateOnNaN(raise_error=terminate)]
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="parameters"):
        try:
            exploding.fit(X, y, epochs=1, batch_size=2, verbose=0, callbacks=callbacks)
        except FloatingPointError:
            assert terminate
    assert not target.exists()


# -- history ---------------------------------------------------------------------------------------


def test_history_accumulates_across_fit_calls_and_checkpoints(backend, tmp_path):
    X, y = RNG.normal(size=(16, 2)), RNG.integers(0, 2, 16)
    net = xn.Network([xn.Dense(1, "sigmoid", in_features=2)], loss="logloss", backend=backend, seed=0)
    first = net.fit(X, y, epochs=3, verbose=0)
    second = net.fit(X, y, epochs=2, verbose=0, callbacks=[xn.LearningRateScheduler(lambda e: 0.01)])
    assert first.epoch == [0, 1, 2] and second.epoch == [3, 4]
    assert net.history.epoch == [0, 1, 2, 3, 4]
    assert net.history.history["loss"] == first.history["loss"] + second.history["loss"]
    assert np.isnan(net.history.history["lr"][:3]).all() and net.history.history["lr"][3:] == [0.01] * 2
    net.save(tmp_path / "m.safetensors")
    resumed = xn.load(tmp_path / "m.safetensors", backend=backend)
    third = resumed.fit(X, y, epochs=1, verbose=0)
    assert third.epoch == [5] and resumed.history.epoch == [0, 1, 2, 3, 4, 5]
    assert resumed.history.history["loss"][:5] == net.history.history["loss"]


# -- clear messages, before training ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [1.5, "1", -1, True])
def test_a_bad_seed_is_named(seed):
    with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
        xn.Network([xn.Dense(1)], backend="numpy", seed=seed)


def test_model_checkpoint_names_a_key_fit_does_not_log(backend, tmp_path):
    net, X, y = _diverging(backend)
    callback = xn.ModelCheckpoint(tmp_path / "m-{epoch}-{val_loss:.3f}.safetensors")
    with pytest.raises(ValueError, match=r"names \['val_loss'\].*pass validation_data"):
        net.fit(X, y, epochs=1, verbose=0, callbacks=[callback])
    assert list(tmp_path.iterdir()) == []
    for template in ["m-{epoch", "m-{}.safetensors", "m-{0}"]:
        with pytest.raises(ValueError, match="ModelCheckpoint path"):
            xn.ModelCheckpoint(template)


def test_a_schedule_that_raises_type_error_inside_shows_its_own_error(backend):
    def schedule(epoch):
        return "0.1" + epoch  # a bug in the user's schedule

    net, X, y = _diverging(backend)
    with pytest.raises(TypeError, match="can only concatenate str"):
        net.fit(X, y, epochs=1, verbose=0, callbacks=[xn.LearningRateScheduler(schedule)])
    with pytest.raises(ValueError, match="must take the epoch"):
        xn.LearningRateScheduler(lambda: 0.1)
    with pytest.raises(ValueError, match="expected a number"):
        net.fit(X, y, epochs=1, verbose=0, callbacks=[xn.LearningRateScheduler(lambda e: "fast")])


def test_a_network_too_large_for_memory_is_refused_before_allocating(backend, monkeypatch):
    monkeypatch.setattr(inputs, "available_memory", lambda: 10_000)
    net = xn.Network([xn.Dense(1000), xn.Dense(1)], backend=backend)
    with pytest.raises(ValueError, match=r"has 4,001 parameters and needs about 46.9 KiB .* 9.8 KiB"):
        net.fit(np.ones((2, 2)), np.ones(2), verbose=0)
    assert not net.built


# -- properties ---------------------------------------------------------------------------------------

LAYOUTS = ["c", "fortran", "reversed", "strided", "readonly", "list", "float32", "int"]


def _layout(X, layout):
    if layout == "fortran":
        return np.asfortranarray(X)
    if layout == "reversed":
        return np.ascontiguousarray(X[::-1])[::-1]
    if layout == "strided":
        wide = np.repeat(X, 2, axis=1)
        return wide[:, ::2]
    if layout == "readonly":
        X = X.copy()
        X.flags.writeable = False
        return X
    if layout == "list":
        return X.tolist()
    if layout == "float32":
        return X.astype(np.float32)
    if layout == "int":
        return np.round(X * 3).astype(np.int16)
    return X


@st.composite
def problems(draw, shapes=True):
    """A small classification problem; ``shapes=False`` keeps one shape (JAX compiles each anew)."""
    n = draw(st.integers(1, 12)) if shapes else 8
    features = draw(st.integers(1, 4)) if shapes else 3
    classes = draw(st.integers(2, 4)) if shapes else 3
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    labels = rng.integers(0, classes, n)
    form = draw(st.sampled_from(["int64", "uint8", "int8", "float", "onehot", "list"]))
    if form == "onehot":
        y = np.eye(classes)[labels]
    elif form == "float":
        y = labels.astype(np.float64)
    elif form == "list":
        y = labels.tolist()
    else:
        y = labels.astype(form)
    return {
        "X": X,
        "layout": draw(st.sampled_from(LAYOUTS)),
        "y": y,
        "classes": classes,
        "batch_size": draw(st.integers(1, n + 3) if shapes else st.sampled_from([4, 8])),
        "shuffle": draw(st.booleans()),
        "dropout": draw(st.sampled_from([0.0, 0.3])),
    }


def _classifier(backend, p, seed=3):
    return xn.Network(
        [xn.Dense(5, "relu"), xn.Dropout(p["dropout"]), xn.Dense(p["classes"], "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=seed,
    )


def _run(backend, p):
    X = _layout(p["X"], p["layout"])
    y = p["y"]
    X_before, y_before = np.array(X, copy=True), np.array(y, copy=True)
    net = _classifier(backend, p)
    try:
        with np.errstate(all="ignore"):
            history = net.fit(X, y, epochs=2, batch_size=p["batch_size"], shuffle=p["shuffle"], verbose=0)
            out = _host(net.predict(X))
    except FloatingPointError:
        return None
    finally:  # the caller's data are never written, whatever happened
        np.testing.assert_array_equal(np.array(X), X_before)
        np.testing.assert_array_equal(np.array(y), y_before)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert np.isfinite(out).all() and out.shape == (len(X_before), p["classes"])
    return [*net.get_weights(), out]


def _budget(backend):
    """Examples per property: JAX compiles each new shape eagerly, so it gets fewer."""
    return settings(PROPERTIES, max_examples=3 if backend.name == "jax" else 15)


def test_fit_is_finite_leaves_inputs_alone_is_seeded_and_agrees_with_numpy(backend):
    @_budget(backend)
    @given(p=problems(shapes=backend.name != "jax"))
    def check(p):
        first = _run(backend, p)
        again = _run(backend, p)
        reference = _run(xn.get_backend("numpy"), p)
        if first is None:
            assert again is None
            return
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(first, reference):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    check()


INPUTS = st.one_of(
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=2), max_size=4),
    st.lists(st.text(max_size=3), max_size=3),
    st.lists(st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.text(max_size=1)), max_size=4),
    st.builds(
        lambda shape, kind: np.zeros(shape, dtype=kind),
        st.sampled_from([(0, 2), (3,), (2, 2, 2), (), (3, 2)]),
        st.sampled_from(["float64", "complex64", "U2", "datetime64[D]", "bool", "uint8", "object"]),
    ),
)


def test_any_input_gives_a_prediction_or_one_clear_value_error(backend):
    net = xn.Network([xn.Dense(1, in_features=2)], backend=backend, dtype="float64", seed=0)

    @_budget(backend)
    @given(data=INPUTS)
    def check(data):
        try:
            out = _host(net.predict(data))
        except ValueError as exc:
            assert "X" in str(exc)
            return
        assert out.shape[1] == 1 and np.isfinite(out).all()

    check()
