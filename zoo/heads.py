"""Task heads: they read an encoder's hidden states (B, S, hidden_size).

Heads know nothing about a particular architecture: they take ``hidden_size`` (and
``vocab_size`` for the MLM head) so a BERT-family encoder can reuse them.
"""

from __future__ import annotations

import jax
from flax import nnx

from zoo.models.m2l import layer_norm


class MLMHead(nnx.Module):
    """Linear -> ReLU -> LayerNorm -> Linear(vocab) at each position (no weight tying)."""

    def __init__(self, hidden_size: int, vocab_size: int, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.norm = layer_norm(hidden_size, rngs)
        self.decoder = nnx.Linear(hidden_size, vocab_size, rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """(..., hidden) -> (..., vocab). Pass only masked positions to save the 25k-way matmul."""
        return self.decoder(self.norm(jax.nn.relu(self.dense(hidden))))


class ClassificationHead(nnx.Module):
    """The original's ``[CLS]`` head: Linear -> ReLU -> LayerNorm at position 0 -> Linear(num_classes).

    The original ran the first three layers on every position and then took position 0;
    they act position-wise, so running them on position 0 alone gives identical numbers.
    """

    def __init__(self, hidden_size: int, num_classes: int, *, rngs: nnx.Rngs):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.dense = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.norm = layer_norm(hidden_size, rngs)
        self.classifier = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        cls = hidden[:, 0]
        return self.classifier(self.norm(jax.nn.relu(self.dense(cls))))
