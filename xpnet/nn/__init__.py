"""Floors 2 and 3: the math of a network (activations, losses, metrics, initializers, layers).

Pure functions of arrays and ``xp``; layers hold parameters but no per-call state.
"""

from . import normalization, residual  # noqa: F401  (they register their layers in LAYERS)
