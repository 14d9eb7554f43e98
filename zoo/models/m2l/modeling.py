"""The M2L 2022 tutorial's Transformer encoder, in Flax NNX.

Numerics follow ``shared/design/haiku-original.md`` exactly (post-LN blocks, LayerNorm
eps 1e-5 with the exact two-pass variance, -1e9 key-padding mask, embeddings scaled by
sqrt(d_model), no weight tying), so a converted Haiku checkpoint gives the same logits.

One deliberate difference from the tutorial: its sinusoidal table was all zeros (a
discarded ``.at[].set()``), so ``positional`` is a switch: ``"none"`` reproduces the
published checkpoint, ``"sinusoidal"`` is what new models should use.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import nn
from zoo.nn import Dropout

Positional = Literal["sinusoidal", "none"]

MASK_VALUE = -1e9  # the original's fill value for padded keys
LAYER_NORM_EPS = 1e-5  # Haiku's LayerNorm default; NNX defaults to 1e-6


@dataclasses.dataclass(frozen=True)
class M2LConfig:
    """Hyper-parameters of an M2L-style post-LN encoder."""

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    max_len: int = 128
    dropout: float = 0.1
    positional: Positional = "sinusoidal"
    # The original draws embeddings from N(0, 1) and multiplies them by sqrt(d_model): the
    # scaled vectors are ~11x larger than the positions and move slowly at Adam's step
    # sizes. New presets draw from N(0, 1/d_model), so scaled vectors have unit scale.
    embed_init_stddev: float = 1.0

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
            )
        if self.positional not in ("sinusoidal", "none"):
            raise ValueError(
                f"positional={self.positional!r}: expected 'sinusoidal' or 'none'"
            )

    @property
    def hidden_size(self) -> int:
        """Width of the features the encoder hands to a head (architecture-neutral name)."""
        return self.d_model

    # What the architecture-neutral heads read (see zoo/heads.py).
    layer_norm_eps = LAYER_NORM_EPS
    classifier_style = "relu-norm"
    mlm_activation = "relu"

    @property
    def classifier_dropout(self) -> float:
        return self.dropout

    # How parameters split over the ``model`` axis of a device mesh (zoo/sharding.py): the
    # embedding by vocabulary rows, Q/K/V and the inner feed-forward layer by output
    # features, the attention output and outer feed-forward layer by input features.
    # Everything else is replicated; with ``model=1`` everything is.
    partition_rules = (
        (r"embed/embedding$", ("model", None)),
        (r"attention/(query|key|value)/kernel$", (None, "model")),
        (r"attention/(query|key|value)/bias$", ("model",)),
        (r"attention/output/kernel$", ("model", None)),
        (r"feed_forward/inner/kernel$", (None, "model")),
        (r"feed_forward/inner/bias$", ("model",)),
        (r"feed_forward/outer/kernel$", ("model", None)),
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def layer_norm(num_features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """A LayerNorm with Haiku's numerics (eps 1e-5, exact variance)."""
    return nn.layer_norm(num_features, LAYER_NORM_EPS, rngs)


@functools.lru_cache(maxsize=8)
def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """The Vaswani et al. position table, computed once in NumPy (no parameters)."""
    position = np.arange(max_len, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * -(math.log(10000.0) / d_model))
    table = np.zeros((max_len, d_model), dtype=np.float32)
    table[:, 0::2] = np.sin(position * div_term)
    table[:, 1::2] = np.cos(position * div_term)[:, : d_model // 2]
    table.flags.writeable = False  # shared through the cache
    return table


class MultiHeadAttention(nnx.Module):
    """Self-attention with separate Q/K/V/output projections and a key-padding mask."""

    def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.query = nnx.Linear(d_model, d_model, rngs=rngs)
        self.key = nnx.Linear(d_model, d_model, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, rngs=rngs)
        self.output = nnx.Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array, queries=None) -> jax.Array:
        """``x``: tokens flattened to (B*S, d_model); ``key_mask``: (B, S), 1 = real token;
        ``queries``: (B*Q, d_model), the positions to compute (default: all of ``x``)."""
        batch, length = key_mask.shape
        d_model = x.shape[-1]
        d_head = d_model // self.num_heads
        queries = x if queries is None else queries
        count = queries.shape[0] // batch

        def heads(t, n):  # (B*n, D) -> (B, H, n, d_head); head h owns features h*d_head...
            # One axis split per reshape: jax's explicit sharding mode allows no more.
            t = t.reshape(batch, n, -1)
            return t.reshape(batch, n, self.num_heads, d_head).transpose(0, 2, 1, 3)

        q = heads(self.query(queries), count)
        k, v = heads(self.key(x), length), heads(self.value(x), length)
        dtype = self.query.dtype  # the compute dtype (set_precision)
        scores = nn.einsum("bhqd,bhkd->bhqk", q, k, dtype=dtype) / math.sqrt(d_head)
        scores = jnp.where(key_mask[:, None, None, :] == 0, MASK_VALUE, scores)
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        context = nn.einsum("bhqk,bhkd->bhqd", weights, v, dtype=dtype)
        context = context.transpose(0, 2, 1, 3).reshape(batch, count, d_model)
        return self.output(context.reshape(batch * count, d_model))


class FeedForward(nnx.Module):
    """Linear(d_ff) -> ReLU -> Dropout -> Linear(d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, *, rngs: nnx.Rngs):
        self.inner = nnx.Linear(d_model, d_ff, rngs=rngs)
        self.outer = nnx.Linear(d_ff, d_model, rngs=rngs)
        self.dropout = Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.outer(self.dropout(jax.nn.relu(self.inner(x)), rngs=rngs))


class EncoderBlock(nnx.Module):
    """Post-LN block: x = LN1(x + Drop(MHA(x))); x = LN2(x + Drop(FF(x)))."""

    def __init__(self, config: M2LConfig, *, rngs: nnx.Rngs):
        self.attention = MultiHeadAttention(config.d_model, config.num_heads, rngs=rngs)
        self.attention_norm = layer_norm(config.d_model, rngs)
        self.feed_forward = FeedForward(config.d_model, config.d_ff, config.dropout, rngs=rngs)
        self.feed_forward_norm = layer_norm(config.d_model, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, x, key_mask, *, rngs: nnx.Rngs | None = None,
                 first_token_only: bool = False):
        """(B*S, D) -> (B*S, D); with ``first_token_only``, position 0's row alone, (B, D)."""
        queries = x.reshape(*key_mask.shape, -1)[:, 0] if first_token_only else None
        residual = x if queries is None else queries
        x = self.attention_norm(residual + self.dropout(self.attention(x, key_mask, queries),
                                                        rngs=rngs))
        return self.feed_forward_norm(
            x + self.dropout(self.feed_forward(x, rngs=rngs), rngs=rngs)
        )


class M2LEncoder(nnx.Module):
    """Token ids (B, S) and a padding mask (B, S) -> hidden states (B, S, d_model);
    (B, 1, d_model) with ``first_token_only``: the last block computes position 0 alone
    (``zoo.nn.run_layers``)."""

    FIRST_TOKEN_ONLY = True  # accepts first_token_only= (zoo.model.Model.__call__)

    def __init__(self, config: M2LConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = nn.Embed(
            config.vocab_size,
            config.d_model,
            embedding_init=nnx.initializers.truncated_normal(stddev=config.embed_init_stddev),
            rngs=rngs,
        )
        self.dropout = Dropout(config.dropout)
        self.blocks = nnx.List([EncoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])

    def token_embeddings(self) -> nnx.Param:
        """The (vocab_size, d_model) token-embedding table (read and written by
        ``zoo.distill.transfer_embeddings``)."""
        return self.embed.embedding

    def embeddings(self, input_ids: jax.Array) -> jax.Array:
        """Scaled token embeddings plus positions, (B, S, d_model), before dropout."""
        length = input_ids.shape[-1]
        if length > self.config.max_len:
            raise ValueError(
                f"sequence length {length} exceeds the model's max_len {self.config.max_len}; "
                "truncate when tokenising"
            )
        x = self.embed(input_ids) * math.sqrt(self.config.d_model)
        if self.config.positional == "sinusoidal":
            # A trace-time constant, not a parameter: never in a checkpoint or the optimizer.
            table = sinusoidal_table(self.config.max_len, self.config.d_model)
            # a symbolic length (shape-polymorphic traces: the ONNX export) slices in the graph
            x = x + (table[:length] if isinstance(length, int) else jnp.asarray(table)[:length])
        return x

    def __call__(self, input_ids, attention_mask, *, rngs: nnx.Rngs | None = None,
                 first_token_only: bool = False):
        x = self.dropout(self.embeddings(input_ids), rngs=rngs)
        # Blocks see tokens flattened to (B*S, D): on CPU, XLA's weight gradients of 3-D
        # contractions are about twice as slow as the same matmuls in 2-D.
        batch, length, d_model = x.shape
        x = x.reshape(batch * length, d_model)
        last = len(self.blocks) - 1 if first_token_only else -1
        for i, block in enumerate(self.blocks):
            x = block(x, attention_mask, rngs=rngs, first_token_only=i == last)
        return x.reshape(batch, -1, d_model)
