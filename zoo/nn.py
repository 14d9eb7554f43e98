"""Building blocks shared by every family: dropout, LayerNorm, training-mode helpers.

Family code (``zoo/models/<family>/``) builds on these; nothing here knows a family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def layer_norm(num_features: int, epsilon: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """A LayerNorm with the given epsilon and the exact two-pass variance."""
    return nnx.LayerNorm(num_features, epsilon=epsilon, use_fast_variance=False, rngs=rngs)


class Dropout(nnx.Module):
    """Inverted dropout that draws 16 random bits per element instead of a float.

    ``nnx.Dropout`` turns 32 random bits into a uniform float per element; here each
    32-bit word yields two 16-bit draws compared with ``round(rate * 2**16)``, which
    halves the PRNG work (the costliest part of dropout on CPU) and keeps the rate exact
    to 1e-5. Like ``nnx.Dropout`` it is active only in training mode
    (``model.train()``) and then needs ``rngs`` with a ``dropout`` stream.
    """

    def __init__(self, rate: float):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.deterministic = False  # flipped by model.train() / model.eval()

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        if rngs is None:
            raise ValueError("dropout is active (training mode) but no `rngs` were given: "
                             "call model(..., rngs=nnx.Rngs(dropout=key)) or model.eval()")
        n = x.size
        words = jax.random.bits(rngs.dropout(), ((n + 1) // 2,), jnp.uint32)
        draws = jnp.concatenate([words & 0xFFFF, words >> 16])[:n].reshape(x.shape)
        keep = draws >= jnp.uint32(round(self.rate * 65536))
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


def in_training_mode(model: nnx.Module) -> bool:
    """True when some dropout layer is active (after ``model.train()``)."""
    return any(getattr(m, "deterministic", True) is False for _, m in model.iter_modules())


def set_dropout_rate(model: nnx.Module, rate: float) -> None:
    """Set every dropout layer's rate (a fine-tuning override of the preset's)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    for _, module in model.iter_modules():
        if hasattr(module, "deterministic") and hasattr(module, "rate"):
            module.rate = rate


def count_params(module: nnx.Module) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))
