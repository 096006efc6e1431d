"""Normalization layers and blocks (Residual, Parallel): vs torch and finite differences, every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import numerical_gradient

import xpnet as xn


def _built(layer, backend, in_features, seed=0):
    layer.build(in_features, backend, "float64", np.random.default_rng(seed))
    return layer


def _host(d):
    return {k: xn.to_numpy(v) for k, v in d.items()}


def _check_gradients(layer, backend, f64, x, noise=None):
    """``vjp`` of ``sum(apply(x) * r)`` against central differences, for x and every parameter."""
    xp = backend.xp
    r = np.random.default_rng(1).normal(size=(x.shape[0], layer.output_features(x.shape[1])))
    params, state = _host(layer.params), _host(layer.state)
    dev_noise = None if noise is None else f64(noise)

    def value(name):
        def f(v):
            parts = {**params, "x": x, name: v}
            p = {k: f64(parts[k]) for k in params}
            y, _, _ = layer.apply(p, {k: f64(s) for k, s in state.items()}, f64(parts["x"]),
                                  training=True, noise=dev_noise, xp=xp)  # fmt: skip
            return float(xp.sum(y * f64(r)))

        return f

    p = {k: f64(v) for k, v in params.items()}
    _, cache, _ = layer.apply(p, {k: f64(s) for k, s in state.items()}, f64(x),
                              training=True, noise=dev_noise, xp=xp)  # fmt: skip
    grads, dx = layer.vjp(p, cache, f64(r), xp=xp)
    np.testing.assert_allclose(xn.to_numpy(dx), numerical_gradient(value("x"), x), rtol=1e-6, atol=1e-8)
    assert set(grads) == set(params)
    for name in params:
        want = numerical_gradient(value(name), params[name])
        np.testing.assert_allclose(xn.to_numpy(grads[name]), want, rtol=1e-6, atol=1e-8)


def _randomized(layer, backend, f64, seed=3):
    rng = np.random.default_rng(seed)
    layer.params = {k: f64(rng.normal(size=v.shape)) for k, v in layer.params.items()}
    return layer


def test_batch_norm_gradients_match_finite_differences(backend, f64):
    x = np.random.default_rng(0).normal(size=(6, 3)) * 2 + 1
    layer = _randomized(_built(xn.BatchNormalization(), backend, 3), backend, f64)
    _check_gradients(layer, backend, f64, x)
    mask = np.array([[1.0], [1.0], [0.0], [1.0], [1.0], [0.0]])  # padded rows of a compiled epoch
    _check_gradients(layer, backend, f64, x, noise=mask)


def test_batch_norm_padding_rows_change_nothing(backend, f64):
    xp = backend.xp
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3))
    layer = _randomized(_built(xn.BatchNormalization(), backend, 3), backend, f64)
    padded = np.concatenate([x, rng.normal(size=(2, 3)) * 100])
    mask = np.concatenate([np.ones((5, 1)), np.zeros((2, 1))])
    y, _, state = layer.apply(layer.params, layer.state, f64(x), training=True, xp=xp)
    yp, _, state_p = layer.apply(
        layer.params, layer.state, f64(padded), training=True, noise=f64(mask), xp=xp
    )
    np.testing.assert_allclose(xn.to_numpy(yp)[:5], xn.to_numpy(y), rtol=1e-12, atol=1e-12)
    for key in state:
        np.testing.assert_allclose(xn.to_numpy(state_p[key]), xn.to_numpy(state[key]), rtol=1e-12)


def test_layer_norm_gradients_match_finite_differences(backend, f64):
    x = np.random.default_rng(0).normal(size=(4, 5))
    _check_gradients(_randomized(_built(xn.LayerNormalization(), backend, 5), backend, f64), backend, f64, x)


def test_residual_gradients_match_finite_differences(backend, f64):
    block = xn.Residual([xn.Dense(4, "tanh"), xn.BatchNormalization(), xn.Dropout(0.3), xn.Dense(3)])
    layer = _built(block, backend, 3)
    assert set(layer.params) == {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}
    assert set(layer.state) == {"1.running_mean", "1.running_var"}
    x = np.random.default_rng(0).normal(size=(5, 3))
    noise = layer.draw(np.random.default_rng(4), (5, 3), "float64")
    assert noise.shape == (5, 1 + 4)  # BatchNormalization's column, then the dropout mask
    _check_gradients(layer, backend, f64, x, noise=noise)


def test_linear_shortcut_gradients_match_finite_differences(backend, f64):
    block = xn.Residual([xn.Dense(4, "tanh"), xn.Dropout(0.3), xn.Dense(2)], shortcut="linear")
    layer = _built(block, backend, 3)
    assert set(layer.params) == {"0.weight", "0.bias", "2.weight", "2.bias", "shortcut"}
    assert tuple(layer.params["shortcut"].shape) == (3, 2) and not xn.to_numpy(layer.params["shortcut"]).any()
    x = np.random.default_rng(0).normal(size=(5, 3))
    _check_gradients(layer, backend, f64, x, noise=layer.draw(np.random.default_rng(4), (5, 3), "float64"))


def _parallel():
    return xn.Parallel(
        [
            [xn.Dense(4, "tanh"), xn.BatchNormalization(), xn.Dropout(0.3), xn.Dense(2)],
            [xn.Residual([xn.Dense(3, "relu"), xn.Dropout(0.5), xn.Dense(2)], shortcut="linear")],
            [xn.Dense(2)],
        ]
    )


def test_parallel_gradients_match_finite_differences(backend, f64):
    layer = _built(_parallel(), backend, 3)
    assert {"0.1.weight", "1.0.0.weight", "1.0.shortcut", "2.0.bias"} <= set(layer.params)
    assert set(layer.state) == {"0.1.running_mean", "0.1.running_var"}
    x = np.random.default_rng(0).normal(size=(5, 3))
    noise = layer.draw(np.random.default_rng(4), (5, 3), "float64")
    assert noise.shape == (5, 1 + 4 + 3)  # branch 0: BatchNormalization's column, its mask; branch 1: a mask
    _check_gradients(layer, backend, f64, x, noise=noise)


def test_parallel_sum_and_mean_of_wide_and_deep_branches_match_torch(backend, f64):
    rng = np.random.default_rng(0)
    x, r = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    for merge in ("mean", "sum"):
        branches = [[xn.Residual([xn.Dense(4, "tanh"), xn.Dense(2)], shortcut="linear")] for _ in range(2)]
        layer = _randomized(_built(xn.Parallel(branches, merge=merge), backend, 3), backend, f64)
        host = _host(layer.params)
        torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in host.items()}
        xt = torch.tensor(x, requires_grad=True)
        outs = []
        for b in ("0", "1"):
            p = {k[len(b) + 1 :]: v for k, v in torch_params.items() if k.startswith(b + ".")}
            hidden = torch.tanh(xt @ p["0.0.weight"] + p["0.0.bias"])
            outs.append(hidden @ p["0.1.weight"] + p["0.1.bias"] + xt @ p["0.shortcut"])
        yt = (outs[0] + outs[1]) / (2 if merge == "mean" else 1)
        (yt * torch.tensor(r)).sum().backward()
        y = layer.forward(f64(x), training=True)
        dx = layer.backward(f64(r))
        np.testing.assert_allclose(xn.to_numpy(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(xn.to_numpy(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        for key, value in torch_params.items():
            np.testing.assert_allclose(
                xn.to_numpy(layer.grads[key]), value.grad.numpy(), rtol=1e-10, atol=1e-12
            )


def test_layer_norm_matches_torch(backend, f64):
    rng = np.random.default_rng(0)
    x, w, b, r = rng.normal(size=(4, 5)), rng.normal(size=5), rng.normal(size=5), rng.normal(size=(4, 5))
    layer = _built(xn.LayerNormalization(eps=1e-3), backend, 5)
    layer.params = {"weight": f64(w), "bias": f64(b)}
    ref = torch.nn.LayerNorm(5, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(w))
        ref.bias.copy_(torch.tensor(b))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    (yt * torch.tensor(r)).sum().backward()
    y = layer.forward(f64(x), training=True)
    dx = layer.backward(f64(r))
    np.testing.assert_allclose(xn.to_numpy(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xn.to_numpy(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xn.to_numpy(layer.grads["weight"]), ref.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(xn.to_numpy(layer.grads["bias"]), ref.bias.grad.numpy(), rtol=1e-10)


def _torch_copy(net):
    """torch modules with ``net``'s weights: Dense -> Linear, BatchNormalization -> BatchNorm1d."""
    modules = []
    for layer in net.layers:
        if isinstance(layer, xn.Dense):
            m = torch.nn.Linear(layer.in_features, layer.units, dtype=torch.float64)
            with torch.no_grad():
                m.weight.copy_(torch.tensor(xn.to_numpy(layer.weight)).T)
                m.bias.copy_(torch.tensor(xn.to_numpy(layer.bias)))
            modules.append(m)
            modules.append(torch.nn.Tanh() if layer.activation.name == "tanh" else torch.nn.Identity())
        else:
            modules.append(
                torch.nn.BatchNorm1d(layer.in_features, momentum=layer.momentum, dtype=torch.float64)
            )
    return torch.nn.Sequential(*modules)


def test_batch_norm_training_and_running_statistics_match_torch(backend):
    """Forward, backward and running statistics over several SGD steps, then eval outputs."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(22, 4)) * 3 + 1, rng.normal(size=(22, 1))
    layers = [xn.Dense(5, "tanh", in_features=4), xn.BatchNormalization(momentum=0.3), xn.Dense(1)]
    net = xn.Network(layers, loss="mse", optimizer=xn.SGD(0.1, momentum=0.9), backend=backend,
                     dtype="float64", seed=0)  # fmt: skip
    ref = _torch_copy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    net.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)  # 3 batches an epoch, the last of 6
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(3):
        for start in range(0, 22, 8):
            opt.zero_grad()
            torch.nn.functional.mse_loss(ref(xt[start : start + 8]), yt[start : start + 8]).backward()
            opt.step()
    bn, ref_bn = net.layers[1], ref[2]
    np.testing.assert_allclose(xn.to_numpy(bn.state["running_mean"]), ref_bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(xn.to_numpy(bn.state["running_var"]), ref_bn.running_var.numpy(), rtol=1e-10)
    np.testing.assert_allclose(xn.to_numpy(bn.params["weight"]), ref_bn.weight.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(
        xn.to_numpy(net.layers[0].weight), ref[0].weight.detach().numpy().T, rtol=1e-10
    )
    ref.eval()
    with torch.no_grad():
        want = ref(xt).numpy()
    np.testing.assert_allclose(xn.to_numpy(net.predict(x)), want, rtol=1e-10, atol=1e-12)
    assert net.evaluate(x, y)["loss"] == pytest.approx(float(((want - y) ** 2).mean()), rel=1e-10)


def _deep(backend, compile=None, seed=0):
    layers = [
        xn.Dense(6, "relu", in_features=4),
        xn.BatchNormalization(),
        xn.Residual([xn.Dense(6, "tanh"), xn.Dropout(0.2), xn.LayerNormalization(), xn.Dense(6)]),
        xn.Residual([xn.BatchNormalization(momentum=0.5), xn.Dense(6, "relu")]),
        xn.Dense(3, "softmax"),
    ]
    return xn.Network(layers, loss="categorical_crossentropy", optimizer=xn.Adam(0.01), backend=backend,
                      dtype="float64", seed=seed, compile=compile)  # fmt: skip


def _data(n=30):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def test_compiled_equals_eager_with_the_new_layers(backend):
    x, y = _data()
    nets = [_deep(backend, compile) for compile in (None, False)]
    for net in nets:
        net.fit(x, y, epochs=3, batch_size=8, verbose=0)  # shuffled, dropout, a partial last batch
    for a, b in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(nets[0].layers, nets[1].layers):
        for key in a.state:
            np.testing.assert_allclose(xn.to_numpy(a.state[key]), xn.to_numpy(b.state[key]), rtol=1e-10)
    np.testing.assert_allclose(xn.to_numpy(nets[0].predict(x)), xn.to_numpy(nets[1].predict(x)), rtol=1e-10)


def test_save_load_and_to_round_trip_parameters_and_state(backend, tmp_path):
    x, y = _data()
    net = _deep(backend)
    net.fit(x, y, epochs=2, batch_size=8, verbose=0)
    want = xn.to_numpy(net.predict(x))
    path = tmp_path / "deep.safetensors"
    net.save(path)
    loaded = xn.load(path, backend=backend)
    np.testing.assert_allclose(xn.to_numpy(loaded.predict(x)), want, rtol=1e-12)
    for a, b in zip(net.layers, loaded.layers):
        assert set(a.state) == set(b.state)
        for key in a.state:
            np.testing.assert_array_equal(xn.to_numpy(a.state[key]), xn.to_numpy(b.state[key]))
    moved = xn.load(path, backend="numpy").to(backend)
    np.testing.assert_allclose(xn.to_numpy(moved.predict(x)), want, rtol=1e-12)
    assert all(type(v) is type(net.layers[1].state["running_mean"]) for v in moved.layers[1].state.values())
    # training goes on the same way from the checkpoint and from the moved network
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    net.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(net.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def _wide(backend, compile=None):
    layers = [_parallel(), xn.Activation("softmax")]
    return xn.Network(layers, loss="categorical_crossentropy", optimizer=xn.Adam(0.01), backend=backend,
                      dtype="float64", seed=0, compile=compile)  # fmt: skip


def test_parallel_trains_compiled_as_eager_and_round_trips(backend, tmp_path):
    x, y = _data()
    y = y % 2
    nets = [_wide(backend, compile) for compile in (None, False)]
    for net in nets:
        net.fit(x, y, epochs=2, batch_size=8, verbose=0)  # shuffled, dropout, a partial last batch
    for a, b in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    want = xn.to_numpy(nets[0].predict(x))
    nets[0].save(tmp_path / "wide.safetensors")
    loaded = xn.load(tmp_path / "wide.safetensors", backend=backend)
    np.testing.assert_allclose(xn.to_numpy(loaded.predict(x)), want, rtol=1e-12)
    np.testing.assert_array_equal(
        xn.to_numpy(loaded.layers[0].state["0.1.running_var"]),
        xn.to_numpy(nets[0].layers[0].state["0.1.running_var"]),
    )
    moved = xn.load(tmp_path / "wide.safetensors", backend="numpy").to(backend)
    np.testing.assert_allclose(xn.to_numpy(moved.predict(x)), want, rtol=1e-12)
    assert "Parallel([[Dense" in nets[0].summary(print_fn=None)


def test_checkpoint_with_wrong_state_shape_is_refused(tmp_path):
    net = _deep("numpy")
    tensors, meta = net.state()
    assert "state.1.running_var" in tensors and "state.3.0.running_mean" in tensors
    tensors["state.1.running_var"] = np.ones(5)
    with pytest.raises(ValueError, match=r"state\.1\.running_var.*shape"):
        xn.Network.from_state(meta, tensors, backend="numpy")
    del tensors["state.1.running_var"]
    with pytest.raises(ValueError, match="lacks the layer state"):
        xn.Network.from_state(meta, tensors, backend="numpy")


def test_residual_must_keep_the_feature_count():
    with pytest.raises(ValueError, match="input has 4, the layers end with 3"):
        xn.Network([xn.Dense(4, in_features=2), xn.Residual([xn.Dense(3)])], backend="numpy")
    with pytest.raises(ValueError, match="non-empty list of layers"):
        xn.Residual([])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: xn.BatchNormalization(momentum=0), "momentum"),
        (lambda: xn.BatchNormalization(momentum=1.5), "momentum"),
        (lambda: xn.LayerNormalization(eps=-1), "eps"),
        (lambda: xn.Residual(["dense"]), "Layer objects"),
        (lambda: xn.Residual([xn.Dense(2)], shortcut="projection"), "shortcut must be one of"),
        (lambda: xn.Parallel([]), "non-empty list of branches"),
        (lambda: xn.Parallel([[]]), "non-empty list of layers"),
        (lambda: xn.Parallel([[xn.Dense(2)]], merge="max"), "merge must be one of"),
        (lambda: xn.Parallel([[xn.Dense(2)], [xn.Dense(3)]]).output_features(4), "same number"),
    ],
)
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
