"""The JAX engine: compiled epochs, a compiled step for streamed batches, jitted inference.

- :meth:`JaxEngine.runner`: whole epochs as one compiled call
  (:class:`~xpnet.engine.jax_epochs.JaxEpochRunner`);
- :meth:`JaxEngine.step`: the step under ``jax.jit`` (one compilation per batch
  shape); around an allreduce, two compiled halves with the host collective
  between them, since an MPI call cannot run inside ``jax.jit``;
- :meth:`JaxEngine.inference`: the forward pass under ``jax.jit``
  (:class:`JaxInference`).

Everything is compiled once per structure for the process (:mod:`xpnet.engine.cache`),
and compiled programs are kept on disk between processes (:func:`persistent_cache`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import Array, Backend
from . import step as pure
from .eager import Allreduce, EagerEngine, Forward, _forward
from .epochs import StepFunction
from .jax_epochs import JaxEpochRunner

CACHE_VARIABLE = "XPNET_CACHE_DIR"
"""Where compiled programs are kept; empty, ``0`` or ``off`` keeps none."""


class JaxEngine(EagerEngine):
    """:class:`~xpnet.engine.eager.EagerEngine` with everything compiled (see the module docstring)."""

    compiles = True
    separate_memory = True

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend, inplace=False)
        persistent_cache()

    def _runner(self, model: pure.Model) -> Any:
        xp = self.backend.xp

        def prepare(carry: Any) -> Any:
            params, opt_state, states = carry
            return params, pure.initial_opt_state(model, params, opt_state, xp), states

        return JaxEpochRunner(self.backend, self._step_function(model), prepare)

    def step(self, model: pure.Model, allreduce: Allreduce | None = None) -> StepFunction:
        if allreduce is None:
            jitted = self.cache.model("step", self, model, _jitted_step)
            return lambda params, opt, states, *batch, share=1.0: jitted(params, opt, states, *batch)
        gradients, update = self.cache.model("halves", self, model, _halves)

        def run(
            params: Any,
            opt: Any,
            states: Any,
            x: Any,
            y: Any,
            w: Any,
            noise: Any,
            number: Any,
            lr: Any,
            share: float = 1.0,
        ) -> Any:
            import jax.numpy as jnp

            dtype = np.dtype(str(x.dtype))
            opt = pure.initial_opt_state(model, params, opt, jnp)
            flat, states, value, correct = gradients(params, states, x, y, w, noise, np.asarray(share, dtype))
            params, opt = update(
                params, opt, allreduce(flat), np.asarray(number, dtype), np.asarray(lr, dtype)
            )
            return params, opt, states, value, correct

        return run

    def finite(self, arrays: Sequence[Array]) -> bool:
        """One compiled reduction over every array (eager JAX would compile one small program per op)."""
        return bool(_all_finite(tuple(arrays))) if arrays else True

    def _inference(self, layers: tuple[Any, ...]) -> Forward:
        return JaxInference(
            lambda params, states, x, *, keep_cache: _jnp_forward(layers, params, states, x, keep_cache)
        )


def _all_finite(arrays: tuple[Any, ...]) -> Any:
    global _ALL_FINITE
    if _ALL_FINITE is None:
        import jax
        import jax.numpy as jnp

        def check(values: tuple[Any, ...]) -> Any:
            return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in values]))

        _ALL_FINITE = jax.jit(check)
    return _ALL_FINITE(arrays)


_ALL_FINITE: Any = None


def _jnp_forward(layers: Sequence[Any], params: Any, states: Any, x: Array, keep_cache: bool) -> Any:
    import jax.numpy as jnp

    return _forward(layers, params, states, x, jnp, keep_cache)


def _jitted_step(model: pure.Model) -> Any:
    """``run(params, opt, states, x, y, w, noise, number, lr)`` under ``jax.jit``."""
    import jax
    import jax.numpy as jnp

    def traced(
        params: Any, opt: Any, states: Any, x: Any, y: Any, w: Any, noise: Any, number: Any, lr: Any
    ) -> Any:
        return tuple(pure.train_step(model, params, opt, states, x, y, w, noise, number, lr, xp=jnp))

    jitted = jax.jit(traced)

    def run(
        params: Any, opt: Any, states: Any, x: Any, y: Any, w: Any, noise: Any, number: Any, lr: Any
    ) -> Any:
        dtype = np.dtype(str(x.dtype))
        opt = pure.initial_opt_state(model, params, opt, jnp)
        return jitted(params, opt, states, x, y, w, noise, np.asarray(number, dtype), np.asarray(lr, dtype))

    return run


def _halves(model: pure.Model) -> tuple[Any, Any]:
    """``gradients(params, states, x, y, w, noise, share) -> (flat, states, loss, correct)`` (this
    rank's gradients, flattened and scaled by its share) and ``update(params, opt, flat, number,
    lr) -> (params, opt)`` (unflattened, clipped, applied), each under ``jax.jit``."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    def gradients(params: Any, states: Any, x: Any, y: Any, w: Any, noise: Any, share: Any) -> Any:
        grads, states, value, correct = pure.gradients(model, params, states, x, y, w, noise, xp=jnp)
        flat, _ = ravel_pytree(grads)  # gradients have the parameters' structure
        return flat * share, states, value, correct

    def update(params: Any, opt: Any, flat: Any, number: Any, lr: Any) -> Any:
        grads = ravel_pytree(params)[1](flat)
        if model.transform is not None:
            grads = model.transform(grads, jnp)
        return pure.apply_gradients(model, params, opt, grads, number, lr, xp=jnp)

    return jax.jit(gradients), jax.jit(update)


class JaxInference:
    """The pure forward pass under ``jax.jit``, for ``predict`` and ``evaluate``.

    Compiled once per network structure (the engine's cache keeps this
    object) and input shape. Without the cache (``predict``) the rows are
    padded up to one of a few sizes per power of two (:func:`padded_rows`),
    so calls with changing row counts reuse a few compilations; the outputs
    of the padding rows are dropped. With the cache (``evaluate``) the shape
    is the caller's, as a cache's arrays need not be per row. Safe to call
    from several threads at once; nothing is kept between calls.
    """

    def __init__(self, forward: Forward) -> None:
        import jax

        self._compiled = {
            keep: jax.jit(lambda p, s, x, keep=keep: forward(p, s, x, keep_cache=keep))
            for keep in (False, True)
        }

    def __call__(self, params: Any, states: Any, x: Array, *, keep_cache: bool) -> tuple[Array, Any]:
        if keep_cache:
            return self._compiled[True](params, states, x)  # type: ignore[no-any-return]
        import jax.numpy as jnp

        n = int(x.shape[0])
        rows = padded_rows(n)
        if rows == n:
            return self._compiled[False](params, states, x)  # type: ignore[no-any-return]
        padding = [(0, rows - n)] + [(0, 0)] * (x.ndim - 1)
        out, _ = self._compiled[False](params, states, jnp.pad(x, padding))
        return out[:n, ...], None


def padded_rows(n: int) -> int:
    """``n`` rounded up to a multiple of an eighth of the power of two at or above it (< 1.25 ``n``)."""
    step = 1 << max((n - 1).bit_length() - 3, 0)
    return -(-n // step) * step


def persistent_cache() -> Path | None:
    """Keep JAX's compiled programs on disk, so a new process does not compile them again.

    The directory is ``$XPNET_CACHE_DIR`` if set (empty, ``0`` or ``off``:
    none), else ``jax`` under the user's cache directory
    (``$XDG_CACHE_HOME/xpnet``, by default ``~/.cache/xpnet``). A cache
    directory JAX was already given (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) is left as it is, and so are JAX's own thresholds then.
    Returns the directory in use, or None.
    """
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current:
        return Path(current)
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen is not None and chosen.strip().lower() in ("", "0", "off", "false", "none"):
        return None
    if chosen is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        chosen = os.path.join(base, "xpnet", "jax")
    try:
        os.makedirs(chosen, exist_ok=True)
    except OSError:  # a read-only home: compile in every process, as without a cache
        return None
    jax.config.update("jax_compilation_cache_dir", chosen)
    # xpnet's programs compile in well under JAX's default threshold of a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return Path(chosen)
