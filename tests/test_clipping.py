"""Gradient clipping against torch.nn.utils, and the optimizers' clip_norm / clip_value options."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.optim.clipping import clip_by_global_norm, clip_by_value, clip_gradients, global_norm

RNG = np.random.default_rng(3)
GRADS = [RNG.normal(size=(4, 3)), RNG.normal(size=3), RNG.normal(size=(3, 2))]
TOTAL = float(np.sqrt(sum((g * g).sum() for g in GRADS)))


def _torch_clipped(grads, clip_norm=None, clip_value=None):
    """Gradients after torch's clip_grad_value_ then clip_grad_norm_, and torch's returned norm."""
    torch = pytest.importorskip("torch")
    params = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.as_tensor(g.copy())
    norm = None
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_norm).item()
    return [p.grad.numpy() for p in params], norm


def _assert_all_close(got, expected):
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(xn.to_numpy(g), e, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("clip_norm", [0.5, TOTAL - 1e-7, TOTAL, 10.0])
def test_global_norm_clipping_matches_torch(backend, f64, clip_norm):
    grads = [f64(g) for g in GRADS]
    clipped, total = clip_by_global_norm(grads, clip_norm)
    expected, torch_norm = _torch_clipped(GRADS, clip_norm=clip_norm)
    _assert_all_close(clipped, expected)
    assert float(total) == pytest.approx(torch_norm, rel=1e-13)
    for g, original in zip(grads, GRADS, strict=True):
        np.testing.assert_array_equal(xn.to_numpy(g), original)


def test_global_norm_is_the_norm_of_everything_together(backend, f64):
    assert float(global_norm([f64(g) for g in GRADS])) == pytest.approx(TOTAL, rel=1e-14)


@pytest.mark.parametrize("clip_value", [0.1, 0.8, 100.0])
def test_value_clipping_matches_torch(backend, f64, clip_value):
    clipped = clip_by_value([f64(g) for g in GRADS], clip_value)
    _assert_all_close(clipped, _torch_clipped(GRADS, clip_value=clip_value)[0])


@pytest.mark.parametrize(("clip_norm", "clip_value"), [(None, None), (0.7, None), (None, 0.3), (0.7, 0.3)])
def test_an_optimizers_clipping_is_value_then_norm(backend, f64, clip_norm, clip_value):
    clipped = clip_gradients([f64(g) for g in GRADS], clip_norm, clip_value)
    _assert_all_close(clipped, _torch_clipped(GRADS, clip_norm, clip_value)[0])


def test_clip_by_global_norm_needs_a_gradient():
    with pytest.raises(ValueError, match="at least one gradient"):
        clip_by_global_norm([], 1.0)


OPTIMIZERS = [xn.SGD, xn.Adam, xn.AdamW, xn.RMSprop]


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_every_optimizer_takes_clipping_options_into_its_config(cls):
    opt = cls(clip_norm=1.5, clip_value=0.25)
    assert (opt.clip_norm, opt.clip_value) == (1.5, 0.25)
    config = opt.get_config()
    assert config["clip_norm"] == 1.5 and config["clip_value"] == 0.25
    assert type(opt)(**config).get_config() == config
    assert "clip_norm=1.5, clip_value=0.25" in repr(opt)
    plain = cls()
    assert plain.get_config()["clip_norm"] is None and "clip" not in repr(plain)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_clipping_options_survive_a_checkpoint(backend, tmp_path, cls):
    net = xn.Network(
        [xn.Dense(2, in_features=3)],
        optimizer=cls(clip_norm=2.0, clip_value=0.5),
        backend=backend,
        dtype="float64",
        seed=0,
    )
    net.save(tmp_path / "net.safetensors")
    back = xn.load(tmp_path / "net.safetensors", backend=backend.name, device=backend.device)
    assert type(back.optimizer) is cls
    assert back.optimizer.get_config() == net.optimizer.get_config()


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "1", True])
@pytest.mark.parametrize("option", ["clip_norm", "clip_value"])
def test_bad_clipping_options_are_refused(option, bad):
    with pytest.raises(ValueError, match=f"{option} must be None or a positive finite number"):
        xn.SGD(**{option: bad})
