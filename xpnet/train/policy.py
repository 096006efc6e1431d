"""Dtype policies: the dtype a network keeps its variables in, and the dtype it computes in.

A :class:`DTypePolicy` is Keras's ``DTypePolicy`` reduced to what xpnet
needs: ``"mixed_bfloat16"`` is only a name for (variables float32, compute
bfloat16). Parameters, optimizer state, layer state, the loss, a final
softmax or sigmoid and normalization statistics stay in the variable dtype;
matrix multiplies and activations run in the compute dtype; gradients are
applied to the float32 masters. ``"mixed_float16"`` adds dynamic loss
scaling (:class:`~xpnet.optim.loss_scaling.LossScaler`), since float16's
range (up to 65504, normal down to 6e-5) loses small gradients.

``matmul_precision`` is the other knob of a network's arithmetic: ``"tf32"``
lets float32 matrix multiplies run on TF32 tensor cores where the hardware
has them (see :meth:`xpnet.Backend.matmul_scope`); it is a float32 option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import MATMUL_PRECISIONS


@dataclass(frozen=True)
class DTypePolicy:
    """A name for a pair of dtypes: what a network stores, and what it computes in.

    Attributes
    ----------
    name : str
        ``"float32"``, ``"float64"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.
    variable_dtype : str
        Parameters, optimizer and layer state, losses: ``"float32"`` or ``"float64"``.
    compute_dtype : str
        Matrix multiplies and activations: the variable dtype, ``"bfloat16"`` or ``"float16"``.
    """

    name: str
    variable_dtype: str
    compute_dtype: str

    @property
    def mixed(self) -> bool:
        """Whether the network computes in another dtype than it stores."""
        return self.compute_dtype != self.variable_dtype

    @property
    def loss_scaling(self) -> bool:
        """Whether the policy needs dynamic loss scaling (float16 compute)."""
        return self.compute_dtype == "float16"


POLICIES: dict[str, DTypePolicy] = {
    "float32": DTypePolicy("float32", "float32", "float32"),
    "float64": DTypePolicy("float64", "float64", "float64"),
    "mixed_bfloat16": DTypePolicy("mixed_bfloat16", "float32", "bfloat16"),
    "mixed_float16": DTypePolicy("mixed_float16", "float32", "float16"),
}
"""The policies by name: what ``Network(dtype=...)``, the estimators and ``xpnet train --dtype`` take."""


def get_policy(name: str | DTypePolicy) -> DTypePolicy:
    """The policy called ``name`` (a :class:`DTypePolicy` is returned as it is).

    Raises
    ------
    ValueError
        For another name, listing the valid ones.
    """
    if isinstance(name, DTypePolicy):
        return name
    if not isinstance(name, str) or name not in POLICIES:
        hint = ""
        if name in ("bfloat16", "float16"):  # Keras's pure 16-bit policies: xpnet keeps float32 masters
            hint = f" (16-bit training keeps float32 parameters: dtype='mixed_{name}')"
        raise ValueError(f"dtype must be one of {list(POLICIES)}, got {name!r}{hint}")
    return POLICIES[name]


def check_matmul_precision(precision: Any, policy: DTypePolicy) -> str:
    """``precision`` when it is one of ``"highest"``, ``"tf32"`` and suits ``policy``, else ValueError.

    TF32 rounds float32 inputs: it means nothing for float64, and a mixed
    policy's matrix multiplies are 16-bit already.
    """
    if not isinstance(precision, str) or precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and policy.name != "float32":
        raise ValueError(
            f"matmul_precision='tf32' is a float32 option (TF32 rounds float32 matrix inputs), and "
            f"dtype is {policy.name!r}: use dtype='float32' with it, or leave matmul_precision='highest'"
        )
    return precision
