"""Engines: one per backend, chosen in one place; JAX compiles nothing new for a new epoch count and
keeps its programs on disk; every engine gives the eager engine's numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import EagerEngine, engine_for, jax_epochs

RNG = np.random.default_rng(2)
X = RNG.normal(size=(30, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def _net(backend, compile=None, dropout=0.0):
    layers = [xn.Dense(4, "tanh", in_features=3)]
    if dropout:
        layers.append(xn.Dropout(dropout))
    layers.append(xn.Dense(1, "sigmoid"))
    return xn.Network(
        layers,
        loss="logloss",
        optimizer=xn.SGD(0.3),
        backend=backend,
        dtype="float64",
        seed=4,
        compile=compile,
    )


def test_each_backend_gets_its_engine(backend):
    expected = {"numpy": "NumpyEngine", "jax": "JaxEngine", "cupy": "CupyEngine", "torch": "TorchEngine"}
    engine = engine_for(backend)
    assert type(engine).__name__ == expected.get(backend.name, "EagerEngine")
    assert engine.inplace == backend.mutable
    plain = engine_for(backend, compile=False)
    assert type(plain) is EagerEngine and not plain.inplace


def test_the_network_keeps_one_engine_per_backend_and_compile_setting(backend):
    net = _net(backend)
    assert net._engine() is net._engine()
    net.compile = False
    assert type(net._engine()) is EagerEngine


def test_finite_sees_one_bad_element(backend, f64):
    engine = engine_for(backend)
    good = [f64(np.ones((2, 3))), f64(np.zeros(4))]
    assert engine.finite(good)
    bad = np.ones((2, 3))
    bad[1, 2] = np.inf
    assert not engine.finite([good[1], f64(bad)])
    assert engine.finite([])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_epochs_fused_across_several_calls_equal_the_eager_loop(backend, monkeypatch, dropout):
    monkeypatch.setattr(jax_epochs, "SPANS", (1, 4))  # 10 epochs: calls of 4, 4 and 2 (of a span of 4)
    fused, eager = _net(backend, dropout=dropout), _net(backend, compile=False, dropout=dropout)
    hf = fused.fit(X, Y, epochs=10, batch_size=7, verbose=0).history
    he = eager.fit(X, Y, epochs=10, batch_size=7, verbose=0).history
    for p, q in zip(fused.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hf["loss"], he["loss"], rtol=1e-12)
    assert fused.optimizer.iterations == eager.optimizer.iterations == 50
    assert fused.epoch == 10


@pytest.mark.skip_backends("numpy", "torch", "array_api_strict", "cupy", reason="only JAX compiles epochs")
def test_a_new_epoch_count_compiles_nothing_new(backend):
    net = _net(backend)
    net.fit(X, Y, epochs=200, batch_size=8, verbose=0)
    compiled = net._runner()._epochs
    shapes = compiled._cache_size()
    for count in (500, 201, 1025, 64, 9, 2, 1):  # all held by the span that 200 compiled (1024)
        net.fit(X, Y, epochs=count, batch_size=8, verbose=0)
    assert compiled._cache_size() == shapes
    assert net.epoch == 200 + 500 + 201 + 1025 + 64 + 9 + 2 + 1


def test_spans_fit_their_inputs():
    assert jax_epochs.span_for(1, 10) == 1
    assert jax_epochs.span_for(200, 10) == 1024
    assert jax_epochs.span_for(5000, 10) == 1024  # the caller asks again for the rest
    big = jax_epochs.INPUT_LIMIT // 100  # per-epoch inputs for which only spans of 1 and 32 fit
    assert jax_epochs.span_for(60, big) == 32


def _child(cache: str, code: str) -> str:
    env = dict(os.environ, XPNET_CACHE_DIR=cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


FIT_TINY = """
import numpy as np, xpnet as xn, jax
net = xn.Network([xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")], loss="logloss",
                 backend="jax", seed=0)
net.fit(np.eye(2), np.array([0, 1]), epochs=3, verbose=0)
print(jax.config.jax_compilation_cache_dir)
"""


@pytest.mark.skip_backends("numpy", "torch", "array_api_strict", "cupy", reason="JAX's compilation cache")
def test_jax_keeps_its_compiled_programs_where_xpnet_cache_dir_says(backend, tmp_path):
    assert _child(str(tmp_path), FIT_TINY) == str(tmp_path)
    assert any(tmp_path.iterdir())  # the compiled programs, for the next process
    assert _child("off", FIT_TINY) == "None"
