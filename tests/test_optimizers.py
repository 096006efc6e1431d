"""Optimizers: several steps against torch.optim in float64, and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

CONFIGS = [
    ("sgd", {"learning_rate": 0.1}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.5, "dampening": 0.1}),
    ("adam", {}),
    (
        "adam",
        {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
    ),
    ("adamw", {"learning_rate": 0.01}),
    ("adamw", {"learning_rate": 0.02, "weight_decay": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    ("rmsprop", {"learning_rate": 0.01, "centered": True, "alpha": 0.9}),
]


def _torch_optimizer(torch, name, params, config):
    lr = config.get("learning_rate", {"sgd": 0.01, "rmsprop": 0.01}.get(name, 1e-3))
    if name == "sgd":
        keys = ("momentum", "nesterov", "weight_decay", "dampening")
        return torch.optim.SGD(params, lr=lr, **{k: config[k] for k in keys if k in config})
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        kwargs = {"betas": (config.get("beta1", 0.9), config.get("beta2", 0.999))}
        kwargs.update({k: config[k] for k in ("eps", "weight_decay") if k in config})
        return cls(params, lr=lr, **kwargs)
    keys = ("alpha", "eps", "momentum", "weight_decay", "centered")
    return torch.optim.RMSprop(params, lr=lr, **{k: config[k] for k in keys if k in config})


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_steps_match_torch(backend, name, config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=3)
    batches = [(rng.normal(size=(8, 4)), rng.normal(size=(8, 3))) for _ in range(6)]

    net = xn.Network(
        [xn.Dense(3, in_features=4)],
        loss="mse",
        optimizer=xn.get_optimizer(name, **config),
        backend=backend,
        dtype="float64",
        seed=0,
    )
    net.layers[0].weight, net.layers[0].bias = w0, b0

    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    opt = _torch_optimizer(torch, name, [w, b], config)
    for x, y in batches:
        net.train_step(backend.asarray(x, "float64"), backend.asarray(y, "float64"))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch.as_tensor(x) @ w + b, torch.as_tensor(y))
        loss.backward()
        opt.step()
    np.testing.assert_allclose(xn.to_numpy(net.layers[0].weight), w.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xn.to_numpy(net.layers[0].bias), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_optimizers_by_name():
    assert isinstance(xn.get_optimizer("SGD"), xn.SGD)
    assert isinstance(xn.get_optimizer("adamw"), xn.AdamW)
    assert xn.AdamW().weight_decay == 0.01
    assert xn.RMSprop().learning_rate == 0.01 and xn.RMSprop().alpha == 0.99
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'.*sgd.*adam"):
        xn.get_optimizer("adagrad")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: xn.SGD(learning_rate=-0.1), "learning_rate must be >= 0"),
        (lambda: xn.SGD(momentum=-1), "momentum must be >= 0"),
        (lambda: xn.SGD(nesterov=True), "nesterov=True needs momentum > 0"),
        (lambda: xn.Adam(beta1=1.0), r"beta1 must be in \[0.0, 1.0\)"),
        (lambda: xn.Adam(eps=float("nan")), "eps must be a finite number"),
        (lambda: xn.AdamW(weight_decay=-0.5), "weight_decay must be >= 0"),
        (lambda: xn.RMSprop(alpha=2), r"alpha must be in \[0.0, 1.0\)"),
        (lambda: xn.SGD(learning_rate="fast"), "learning_rate must be a finite number"),
    ],
)
def test_invalid_hyper_parameters_are_refused(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_update_is_pure(backend, f64):
    param, grad = f64(np.ones(3)), f64(np.full(3, 0.5))
    opt = xn.Adam(learning_rate=0.1)
    opt.iterations = 1
    new, state = opt.update(param, grad, {}, backend.xp)
    np.testing.assert_array_equal(xn.to_numpy(param), np.ones(3))
    assert np.all(xn.to_numpy(new) < 1.0) and set(state) == {"exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_in_place_and_pure_updates_agree(backend, f64, name, config):
    xp = backend.xp
    if not backend.mutable:
        pytest.skip(f"{backend.name} arrays are immutable: only the pure path exists")
    rng = np.random.default_rng(1)
    pure, fast = xn.get_optimizer(name, **config), xn.get_optimizer(name, **config)
    p_pure = f64(rng.normal(size=(3, 2)))
    p_fast = backend.asarray(p_pure, copy=True)
    s_pure, s_fast = {}, {}
    for _ in range(4):
        grad_host = rng.normal(size=(3, 2))
        grad = f64(grad_host)
        pure.iterations += 1
        fast.iterations += 1
        p_pure, s_pure = pure.update(p_pure, grad, s_pure, xp)
        p_fast, s_fast = fast.update(p_fast, grad, s_fast, xp, inplace=True)
        np.testing.assert_array_equal(xn.to_numpy(grad), grad_host)
    np.testing.assert_allclose(xn.to_numpy(p_fast), xn.to_numpy(p_pure), rtol=1e-14, atol=1e-15)
    for key in s_pure:
        np.testing.assert_allclose(xn.to_numpy(s_fast[key]), xn.to_numpy(s_pure[key]), rtol=1e-14, atol=1e-15)
