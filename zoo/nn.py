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
        # Words are drawn in x's own shape (last axis halved): with jax's partitionable
        # threefry, each device then draws just the bits of its shard of a sharded x, and the
        # values do not depend on the sharding. (A flat draw reshaped to x.shape made XLA
        # gather the full random array on every device.)
        last = x.shape[-1] if x.ndim else 1
        words = jax.random.bits(rngs.dropout(), (*x.shape[:-1], (last + 1) // 2), jnp.uint32)
        draws = jnp.concatenate([words & 0xFFFF, words >> 16], axis=-1)[..., :last]
        keep = draws.reshape(x.shape) >= jnp.uint32(round(self.rate * 65536))
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


class Embed(nnx.Embed):
    """``nnx.Embed`` whose lookup also works under jax's explicit sharding mode.

    With explicit mesh axes, a gather from a table by batch-sharded ids has no sharding jax
    can infer (``ShardingTypeError``); the output here is sharded like the ids, with the
    feature axis whole. Parameters and numerics are ``nnx.Embed``'s.
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if out_sharding is None and _explicit_sharding(inputs):
            spec = jax.typeof(inputs).sharding.spec
            out_sharding = jax.sharding.PartitionSpec(*spec, *([None] * (inputs.ndim - len(spec))),
                                                      None)
            table = self.embedding[...]
            if self.dtype is not None:
                table = table.astype(self.dtype)
            return table.at[inputs].get(out_sharding=out_sharding)
        return super().__call__(inputs, out_sharding=out_sharding)


def _explicit_sharding(x: jax.Array) -> bool:
    """True when ``x`` is traced under a mesh with explicit axes."""
    try:
        sharding = jax.typeof(x).sharding
    except (AttributeError, TypeError):
        return False
    mesh = getattr(sharding, "mesh", None)
    return bool(mesh is not None and not mesh.empty
                and any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types))


# Compute dtypes a run may ask for (``--precision``); parameters always stay float32.
PRECISIONS = {"float32": None, "bf16": jnp.bfloat16}


def set_precision(model: nnx.Module, precision: str) -> None:
    """Mixed precision in place: layers compute in ``precision``, parameters stay float32.

    Every layer with a ``dtype`` attribute (Linear, Embed, LayerNorm) casts its float32
    parameters and inputs to the compute dtype; LayerNorm statistics stay float32 (Flax
    computes them in at least float32), attention softmax runs in float32 in both families
    and the tasks cast logits to float32 before the loss. ``"float32"`` restores full
    precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for _, module in model.iter_modules():
        if isinstance(module, (nnx.Linear, nnx.Embed, nnx.LayerNorm)):
            module.dtype = PRECISIONS[precision]


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
