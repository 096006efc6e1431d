"""Dtype policies and matmul precision: what runs in 16 bits, against torch.autocast and GradScaler.

References: ``torch.autocast("cpu", dtype=...)`` for the forward pass and one
step (an independent implementation of the same casting points), and
``torch.amp.GradScaler("cpu")`` for loss scaling's scale and skipped steps.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import registry
from xpnet.engine.plan import plan_of
from xpnet.optim.loss_scaling import LossScaler

MIXED = ("mixed_bfloat16", "mixed_float16")
RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 20)).astype(np.float32)
Y = RNG.integers(0, 5, 64)


def _runnable(backend, policy="mixed_bfloat16"):
    """Skip where the backend cannot run the policy (array_api_strict has no 16-bit floats)."""
    try:
        backend.compute_dtype(xn.POLICIES[policy].compute_dtype)
    except (ValueError, xn.BackendUnavailableError) as exc:
        pytest.skip(f"{backend.name} cannot run {policy}: {exc}")


def _net(backend, dtype, *, optimizer=None, hidden="tanh", seed=1, **options):
    return xn.Network(
        [xn.Dense(32, hidden, in_features=20), xn.Dense(5, "softmax")],
        loss="cross_entropy",
        optimizer=optimizer or xn.SGD(0.1),
        backend=backend,
        dtype=dtype,
        seed=seed,
        **options,
    )


def _torch_copy(weights):
    torch = pytest.importorskip("torch")
    sizes = [(w.shape[0], w.shape[1]) for w in weights[::2]]
    layers = [torch.nn.Linear(i, o) for i, o in sizes]
    with torch.no_grad():
        for layer, w, b in zip(layers, weights[::2], weights[1::2]):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
    return layers


def _autocast(layers, x, dtype, activation="tanh"):
    torch = pytest.importorskip("torch")
    act = getattr(torch, activation)
    with torch.autocast("cpu", dtype=getattr(torch, dtype)):
        return layers[1](act(layers[0](torch.from_numpy(x))))


# -- policies: names, dtypes, where they run ------------------------------------------------------------


def test_a_policy_names_its_variable_and_compute_dtypes():
    assert xn.POLICIES["mixed_bfloat16"] == xn.DTypePolicy("mixed_bfloat16", "float32", "bfloat16")
    assert xn.POLICIES["mixed_float16"].loss_scaling and not xn.POLICIES["mixed_bfloat16"].loss_scaling
    assert not xn.POLICIES["float64"].mixed
    net = xn.Network([xn.Dense(2, in_features=3)], backend="numpy", dtype="mixed_float16")
    assert (net.dtype, net.compute_dtype, net.policy.name) == ("float32", "float16", "mixed_float16")
    assert isinstance(net.loss_scaler, LossScaler)
    plain = xn.Network([xn.Dense(2, in_features=3)], backend="numpy", dtype="float64")
    assert (plain.dtype, plain.compute_dtype, plain.loss_scaler) == ("float64", "float64", None)
    with pytest.raises(ValueError, match="dtype='mixed_bfloat16'"):
        xn.Network([xn.Dense(1)], dtype="bfloat16")


@pytest.mark.parametrize("policy", MIXED)
def test_mixed_policies_run_where_the_backend_has_16_bit_floats(backend, policy):
    if backend.name == "array_api_strict":
        with pytest.raises(ValueError, match="runs on numpy, cupy, torch, jax") as info:
            _net(backend, policy)
        assert "load(path, dtype='float32')" in str(info.value)
        return
    _runnable(backend, policy)
    net = _net(backend, policy)
    assert net.layers[0].weight.dtype == backend.dtype("float32")  # the masters
    out = net.predict(X)
    assert out.dtype == backend.dtype("float32")


def test_bfloat16_on_numpy_without_ml_dtypes_names_the_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now fails
    registry.float_dtype.cache_clear()
    try:
        with pytest.raises(xn.BackendUnavailableError, match="pip install ml_dtypes"):
            xn.Network([xn.Dense(2, in_features=3)], backend="numpy", dtype="mixed_bfloat16")
        xn.Network([xn.Dense(2, in_features=3)], backend="numpy", dtype="mixed_float16")  # native float16
    finally:
        registry.float_dtype.cache_clear()


class _Spy(xn.Layer):
    """Records the dtypes of what the step hands it."""

    seen: ClassVar[list[str]] = []

    def apply(self, params, state, x, *, training=False, noise=None, xp):
        _Spy.seen.append(str(x.dtype))
        return x, None, state


def test_layers_compute_in_the_compute_dtype_and_normalization_in_float32(backend):
    _runnable(backend)
    _Spy.seen = []
    norm = xn.BatchNormalization()
    net = xn.Network(
        [xn.Dense(16, "relu", in_features=20), _Spy(), norm, _Spy(), xn.Dense(5, "softmax")],
        loss="cross_entropy",
        optimizer="adam",
        backend=backend,
        dtype="mixed_bfloat16",
        seed=0,
    )
    net.fit(X, Y, epochs=1, batch_size=64, verbose=0)
    assert _Spy.seen and all("bfloat16" in s for s in _Spy.seen)
    f32 = backend.dtype("float32")
    assert norm.state["running_mean"].dtype == f32 and norm.params["weight"].dtype == f32
    assert all(p.dtype == np.float32 for p in net.get_weights())
    moments = [v for entry in net.optimizer.state.values() for v in entry.values()]
    assert moments and all(v.dtype == f32 for v in moments)


# -- against torch.autocast ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", MIXED)
def test_forward_equals_torch_autocast(backend, policy):
    _runnable(backend, policy)
    torch = pytest.importorskip("torch")
    net = _net(backend, policy)
    reference = _autocast(_torch_copy(net.get_weights()), X, xn.POLICIES[policy].compute_dtype)
    want = torch.softmax(reference.float(), -1).detach().numpy()
    got = xn.to_numpy(net.predict(X))
    full = xn.to_numpy(_net(backend, "float32").predict(X))
    # The same rounding points as autocast: far closer to it than float32 is.
    assert np.abs(got - want).max() < 0.25 * np.abs(full - want).max()
    np.testing.assert_allclose(got, want, atol=2e-3)


@pytest.mark.parametrize("policy", MIXED)
def test_one_training_step_equals_torch_autocast(backend, policy):
    _runnable(backend, policy)
    torch = pytest.importorskip("torch")
    net = _net(backend, policy, optimizer=xn.SGD(1.0))
    before = net.get_weights()
    layers = _torch_copy(before)
    logits = _autocast(layers, X, xn.POLICIES[policy].compute_dtype)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.from_numpy(Y))
    loss.backward()
    want = [g for layer in layers for g in (layer.weight.grad.numpy().T, layer.bias.grad.numpy())]
    history = net.fit(X, Y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    got = [b - a for b, a in zip(before, net.get_weights())]  # lr 1: the gradients
    assert history.history["loss"][0] == pytest.approx(loss.item(), rel=1e-2)
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 3e-3
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= tolerance * np.abs(w).max()


# -- float16 loss scaling against GradScaler -----------------------------------------------------------


def test_loss_scaler_rules_equal_gradscaler():
    torch = pytest.importorskip("torch")
    finite = [False, True, True, True, False, True, True, True, True, True, True, True]
    for start, interval in ((2.0**10, 3), (2.0**126, 1)):  # the second grows past float32's range
        scaler = LossScaler(start, growth_interval=interval)
        state = scaler.init_state(np.zeros(3, np.float32), np)
        theirs = torch.amp.GradScaler("cpu", init_scale=start, growth_interval=interval)
        p = torch.zeros(2, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1)
        for ok in finite:
            opt.zero_grad()
            theirs.scale((p * (1.0 if ok else float("inf"))).sum()).backward()
            theirs.step(opt)
            theirs.update()
            with np.errstate(over="ignore"):  # 2**127 * 2 overflows: the scale stays
                state = scaler.update(state, np.asarray(ok), np)
            assert float(state["scale"]) == theirs.get_scale()
            assert float(state["growth_tracker"]) == theirs._get_growth_tracker()
        assert float(state["skipped"]) == finite.count(False)


def _gradscaler_run(weights, steps, start, interval):
    torch = pytest.importorskip("torch")
    layers = _torch_copy(weights)
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=start, growth_interval=interval)
    trace = []
    for _ in range(steps):
        opt.zero_grad()
        logits = _autocast(layers, X, "float16", activation="relu")
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.from_numpy(Y))
        scaler.scale(loss).backward()
        before = params[0].detach().clone()
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), bool(torch.equal(before, params[0].detach()))))
    ordered = (
        [layer.weight.detach().numpy().T for layer in layers],
        [layer.bias.detach().numpy() for layer in layers],
    )
    return trace, [a for pair in zip(*ordered) for a in pair]


def test_float16_loss_scaling_skips_and_recovers_as_gradscaler(backend):
    """A scale of 2**30 overflows float16 until it has halved enough; then steps apply, and the
    scale grows after ``growth_interval`` finite steps: the same scales and skips as GradScaler,
    and Adam's parameters (skipped steps are no steps for its bias correction)."""
    _runnable(backend, "mixed_float16")
    steps, start, interval = 24, 2.0**30, 3
    net = _net(
        backend,
        "mixed_float16",
        optimizer=xn.Adam(1e-2),
        hidden="relu",
        seed=3,
        loss_scaler=LossScaler(start, growth_interval=interval),
    )
    want, final = _gradscaler_run(net.get_weights(), steps, start, interval)
    got = []
    for _ in range(steps):
        before = net.get_weights()[0]
        history = net.fit(X, Y, epochs=1, batch_size=64, shuffle=False, verbose=0)  # TerminateOnNaN on
        assert np.isfinite(history.history["loss"][0])
        scale = float(xn.to_numpy(net.optimizer.state["loss_scale"]["scale"]))
        got.append((scale, bool(np.array_equal(before, net.get_weights()[0]))))
    assert got == want
    assert sum(skipped for _, skipped in got) == float(
        xn.to_numpy(net.optimizer.state["loss_scale"]["skipped"])
    )
    assert 0 < sum(skipped for _, skipped in got) < steps
    start = _net(backend, "float32", seed=3, hidden="relu").get_weights()
    for g, w, s0 in zip(net.get_weights(), final, start):
        assert np.abs(w - s0).max() > 0.05  # the applied steps moved the weights well beyond the tolerance
        np.testing.assert_allclose(g, w, atol=2e-3)


def test_a_skipped_step_changes_nothing_and_terminate_on_nan_stays_quiet(backend):
    _runnable(backend, "mixed_float16")
    net = _net(backend, "mixed_float16", optimizer=xn.Adam(1e-2), loss_scaler=LossScaler(2.0**40))
    before = net.get_weights()
    history = net.fit(X, Y, epochs=2, batch_size=32, verbose=0)  # 4 steps, every one overflows
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][0] == pytest.approx(
        float(_net(backend, "float32").evaluate(X, Y)["loss"]), rel=1e-2
    )
    for got, want in zip(net.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    state = {k: float(xn.to_numpy(v)) for k, v in net.optimizer.state["loss_scale"].items()}
    assert state == {"scale": 2.0**36, "growth_tracker": 0.0, "skipped": 4.0}
    moments = [
        xn.to_numpy(v)
        for key, entry in net.optimizer.state.items()
        if key != "loss_scale"
        for v in entry.values()
    ]
    assert moments and all(not m.any() for m in moments)


def test_a_float16_forward_overflow_stops_with_a_hint(backend):
    _runnable(backend, "mixed_float16")
    net = _net(backend, "mixed_float16")
    with pytest.raises(FloatingPointError, match="mixed_bfloat16"):
        net.fit(X * 1e5, Y, epochs=1, verbose=0)  # 1e5 is beyond float16's 65504


# -- engines: plans, compiled = eager ----------------------------------------------------------------


def test_the_fused_numpy_plan_refuses_mixed_policies():
    net = _net("numpy", "float32")
    assert plan_of(net._model()) is not None
    for policy in MIXED:
        assert plan_of(_net("numpy", policy)._model()) is None


@pytest.mark.parametrize("policy", MIXED)
def test_the_engine_equals_plain_eager_code(backend, policy):
    """JAX's compiled epochs (NumPy's and torch's in-place steps) against ``compile=False``."""
    _runnable(backend, policy)
    nets = [
        _net(
            backend,
            policy,
            optimizer=xn.Adam(1e-2),
            compile=c,
            loss_scaler=LossScaler(2.0**20, growth_interval=2) if policy == "mixed_float16" else None,
        )
        for c in (None, False)
    ]
    for net in nets:
        net.fit(X, Y, epochs=3, batch_size=16, verbose=0)
    for got, want in zip(*(net.get_weights() for net in nets)):
        np.testing.assert_allclose(got, want, atol=2e-2 if policy == "mixed_bfloat16" else 2e-3)
    if policy == "mixed_float16":
        states = [
            {k: float(xn.to_numpy(v)) for k, v in n.optimizer.state["loss_scale"].items()} for n in nets
        ]
        assert states[0] == states[1] and states[0]["skipped"] > 0


# -- checkpoints and to() -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", MIXED)
def test_resuming_a_mixed_checkpoint_equals_an_uninterrupted_run(backend, policy, tmp_path):
    _runnable(backend, policy)
    scaler = LossScaler(2.0**20, growth_interval=3) if policy == "mixed_float16" else None
    straight = _net(backend, policy, optimizer=xn.Adam(1e-2), loss_scaler=scaler)
    straight.fit(X, Y, epochs=4, batch_size=16, verbose=0)
    first = _net(backend, policy, optimizer=xn.Adam(1e-2), loss_scaler=scaler)
    first.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "half.safetensors"
    first.save(path)
    resumed = xn.load(path, backend=backend)
    assert (resumed.policy.name, resumed.loss_scaler) == (policy, scaler)
    resumed.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(got, want)
    if scaler is not None:
        for name, value in straight.optimizer.state["loss_scale"].items():
            assert float(xn.to_numpy(resumed.optimizer.state["loss_scale"][name])) == float(
                xn.to_numpy(value)
            )


def test_a_mixed_checkpoint_loads_on_every_backend_and_as_float32(backend, tmp_path):
    source = _net("numpy", "mixed_float16", matmul_precision="highest")
    source.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "m.safetensors"
    source.save(path)
    if backend.name == "array_api_strict":
        with pytest.raises(ValueError, match="dtype='float32'"):
            xn.load(path, backend=backend)
    else:
        there = xn.load(path, backend=backend)
        assert there.policy.name == "mixed_float16" and "loss_scale" in there.optimizer.state
        np.testing.assert_allclose(xn.to_numpy(there.predict(X)), xn.to_numpy(source.predict(X)), atol=1e-3)
    plain = xn.load(path, backend=backend, dtype="float32")
    assert plain.policy.name == "float32" and "loss_scale" not in plain.optimizer.state
    for got, want in zip(plain.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(got, want)  # the float32 masters, as saved


def test_to_moves_a_mixed_network_with_its_scaler_state(backend):
    _runnable(backend, "mixed_float16")
    net = _net("numpy", "mixed_float16", optimizer=xn.Adam(1e-2))
    net.fit(X, Y, epochs=1, verbose=0)
    state = {k: float(v) for k, v in net.optimizer.state["loss_scale"].items()}
    expected = xn.to_numpy(net.predict(X))
    net.to(backend)
    assert net.backend == backend and net.policy.name == "mixed_float16"
    assert {k: float(xn.to_numpy(v)) for k, v in net.optimizer.state["loss_scale"].items()} == state
    np.testing.assert_allclose(xn.to_numpy(net.predict(X)), expected, atol=1e-3)
    net.fit(X, Y, epochs=1, verbose=0)  # trains there
    with pytest.raises(ValueError, match="array_api_strict backend has no float16"):
        net.to("array_api_strict")


# -- matmul precision -----------------------------------------------------------------------------------


def test_matmul_precision_is_a_float32_option():
    assert _net("numpy", "float32", matmul_precision="tf32").matmul_precision == "tf32"
    for dtype in ("float64", *MIXED):
        with pytest.raises(ValueError, match="float32 option"):
            _net("numpy", dtype, matmul_precision="tf32")
    with pytest.raises(ValueError, match="matmul_precision must be one of"):
        _net("numpy", "float32", matmul_precision="medium")


def test_tf32_is_a_no_op_on_the_cpu(backend, tmp_path):
    if str(backend.device).startswith(("cuda", "gpu")) or backend.name == "cupy":
        pytest.skip("TF32 changes results on a GPU (tests/test_precision_gpu.py)")
    fast, exact = (_net(backend, "float32", matmul_precision=p) for p in ("tf32", "highest"))
    for net in (fast, exact):
        net.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    for got, want in zip(fast.get_weights(), exact.get_weights()):
        np.testing.assert_array_equal(got, want)
    fast.save(tmp_path / "tf32.safetensors")
    assert xn.load(tmp_path / "tf32.safetensors", backend=backend).matmul_precision == "tf32"


def test_jax_traces_the_networks_matmul_precision():
    pytest.importorskip("jax")
    for precision, hlo in (("tf32", "HIGH,HIGH"), ("highest", "HIGHEST,HIGHEST")):
        net = _net("jax", "float32", matmul_precision=precision)
        params, _, states = net._arrays()
        forward = net._engine().inference(net.layers, None, precision)
        text = forward._compiled[True].lower(params, states, net.backend.asarray(X)).as_text()
        assert f"precision=[{hlo}]" in text.replace(" ", "")


def test_torch_cuda_precision_is_set_inside_and_restored_after():
    torch = pytest.importorskip("torch")
    flags = torch.backends.cuda.matmul
    before = flags.fp32_precision
    with registry._torch_cuda_precision("tf32"):
        assert flags.fp32_precision == "tf32"
        with registry._torch_cuda_precision("highest"):
            assert flags.fp32_precision == "ieee"
        assert flags.fp32_precision == "tf32"
    assert flags.fp32_precision == before


# -- real data and the other faces --------------------------------------------------------------------


def test_digits_in_mixed_bfloat16_are_within_a_point_of_float32(backend):
    _runnable(backend)
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    X_all, y_all = datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = selection.train_test_split(
        X_all / 16.0, y_all, test_size=0.25, stratify=y_all, random_state=0
    )
    accuracy = {}
    for policy in ("float32", "mixed_bfloat16"):
        net = xn.Network(
            [xn.Dense(64, "relu"), xn.Dense(10, "softmax")],
            loss="cross_entropy",
            optimizer=xn.Adam(0.005),
            backend=backend,
            dtype=policy,
            seed=0,
        )
        net.fit(X_train, y_train, epochs=10, batch_size=64, verbose=0)
        accuracy[policy] = net.evaluate(X_test, y_test)["accuracy"]
    assert accuracy["float32"] >= 0.95
    assert abs(accuracy["mixed_bfloat16"] - accuracy["float32"]) <= 0.01


def test_the_estimators_and_the_command_line_take_the_policy_names(tmp_path):
    pytest.importorskip("sklearn")
    from xpnet.cli import main
    from xpnet.sklearn import XPNetClassifier

    clf = XPNetClassifier(
        hidden_layer_sizes=(16,), epochs=3, backend="numpy", dtype="mixed_bfloat16", random_state=0
    )
    clf.fit(X, Y)
    assert clf.network_.policy.name == "mixed_bfloat16" and clf.predict(X).shape == (64,)
    out = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "xor",
                "--epochs",
                "2",
                "--dtype",
                "mixed_float16",
                "--backend",
                "numpy",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert xn.load(out).policy.name == "mixed_float16"
    assert (
        main(
            [
                "train",
                "xor",
                "--dtype",
                "mixed_bfloat16",
                "--matmul-precision",
                "tf32",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )


def test_the_summary_names_the_policy():
    text = _net("numpy", "mixed_bfloat16").summary(print_fn=None)
    assert "mixed_bfloat16 (variables float32, compute bfloat16)" in text.splitlines()[0]


def test_the_step_around_an_allreduce_skips_as_the_plain_step(backend):
    """The halves of data parallelism (eager; JAX's two compiled halves) with a loss scaler, against
    the plain step, with an allreduce that returns its input (one rank)."""
    _runnable(backend, "mixed_float16")
    net = _net(backend, "mixed_float16", optimizer=xn.Adam(1e-2), loss_scaler=LossScaler(2.0**22))
    engine, model = net._engine(), net._model()
    x, t = net.backend.asarray(X), net.backend.asarray(Y)
    results = []
    for step in (engine.step(model), engine.step(model, allreduce=lambda flat: flat)):
        params, opt, states = net._arrays()
        for number in range(1, 9):
            params, opt, states, _, _ = step(params, opt, states, x, t, None, None, number, 1e-2)
        results.append((params, opt))
    (p1, o1), (p2, o2) = results
    scales = [{k: float(xn.to_numpy(v)) for k, v in o["loss_scale"].items()} for o in (o1, o2)]
    assert scales[0] == scales[1] and 0 < scales[0]["skipped"] < 8
    for a, b in zip(p1, p2):
        for name in a:
            np.testing.assert_allclose(xn.to_numpy(a[name]), xn.to_numpy(b[name]), atol=1e-3)


def test_the_finiteness_check_comes_before_clipping(backend):
    """Clipping by value turns an inf gradient into a finite one: the loss scaler must look first."""
    _runnable(backend, "mixed_float16")
    from xpnet.engine import step as pure

    net = _net(backend, "mixed_float16", optimizer=xn.SGD(0.1, clip_value=0.5))
    model, xp = net._model(), net.backend.xp
    params, opt, _ = net._arrays()
    grads = [{name: xp.zeros_like(p) for name, p in layer.items()} for layer in params]
    weight = grads[0]["weight"]
    grads[0]["weight"] = weight + float("inf")  # +inf everywhere: clipped to 0.5, no NaN to betray it
    new, new_opt = pure.update(
        model, params, pure.initial_opt_state(model, params, opt, xp), grads, 1, 0.1, xp=xp
    )
    for got, want in zip(new, params):
        for name in want:
            np.testing.assert_array_equal(xn.to_numpy(got[name]), xn.to_numpy(want[name]))
    assert float(xn.to_numpy(new_opt["loss_scale"]["skipped"])) == 1.0
