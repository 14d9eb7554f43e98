"""The original M2L 2022 tutorial encoder in dm-haiku, for parity tests and the benchmark.

Written from ``shared/design/haiku-original.md`` so that its parameter names come out
exactly as in the published checkpoint. This module imports ``haiku`` when it is imported:
only the tests and ``zoo.bench`` import it, never the converter or the ``zoo`` package
(dm-haiku is the ``test`` / ``bench`` extra, not a dependency).
"""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.models.m2l.modeling import LAYER_NORM_EPS, MASK_VALUE, sinusoidal_table


# Like the tutorial, every module creates its sub-modules in ``__init__``: Haiku then
# names them ``parent/~/child`` (``parent/child`` for ones created in ``__call__``).


class Embeddings(hk.Module):
    """Token embedding scaled by sqrt(d_model) (``embeddings/~/embed``)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.embed = hk.Embed(vocab_size, d_model,
                              w_init=hk.initializers.TruncatedNormal(stddev=1.0))

    def __call__(self, ids):
        return self.embed(ids) * math.sqrt(self.d_model)


def positional_encoding(x, positional: str, max_len: int):
    """``"none"`` reproduces the tutorial's discarded (all-zero) table."""
    if positional == "none":
        return x + jnp.zeros((max_len, x.shape[-1]), x.dtype)[: x.shape[1]]
    return x + sinusoidal_table(max_len, x.shape[-1])[: x.shape[1]]


def layer_norm(name=None):
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=LAYER_NORM_EPS,
                        name=name)


def dropout(x, rate: float, is_training: bool):
    return hk.dropout(hk.next_rng_key(), rate, x) if is_training else x


class MultiheadAttention(hk.Module):
    """The tutorial's own attention: Linear Q (``linear``), K, V, output (``linear_3``)."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.query, self.key, self.value, self.output = (hk.Linear(d_model) for _ in range(4))

    def __call__(self, x, mask):
        batch, length, _ = x.shape
        d_k = self.d_model // self.num_heads

        def heads(t):
            return t.reshape(batch, length, self.num_heads, d_k).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d_k)
        mask = jnp.expand_dims(mask, 1)  # (B, 1, S) -> (B, 1, 1, S)
        scores = jnp.where(mask == 0, MASK_VALUE, scores)
        context = jax.nn.softmax(scores, axis=-1) @ v
        return self.output(context.transpose(0, 2, 1, 3).reshape(batch, length, self.d_model))


class PositionwiseFeedForward(hk.Module):
    def __init__(self, d_model: int, d_ff: int, rate: float):
        super().__init__()
        self.inner, self.outer, self.rate = hk.Linear(d_ff), hk.Linear(d_model), rate

    def __call__(self, x, is_training: bool):
        return self.outer(dropout(jax.nn.relu(self.inner(x)), self.rate, is_training))


class EncoderBlock(hk.Module):
    """Post-LN: x = LN1(x + Drop(MHA(x))); x = LN2(x + Drop(FF(x)))."""

    def __init__(self, config):
        super().__init__()
        self.rate = config.dropout
        self.attention = MultiheadAttention(config.d_model, config.num_heads)
        self.attention_norm = layer_norm()
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.dropout)
        self.feed_forward_norm = layer_norm()

    def __call__(self, x, mask, is_training: bool):
        x = self.attention_norm(x + dropout(self.attention(x, mask), self.rate, is_training))
        ff = self.feed_forward(x, is_training)
        return self.feed_forward_norm(x + dropout(ff, self.rate, is_training))


class TransformerEncoder(hk.Module):
    def __init__(self, config, num_blocks: int):
        super().__init__()
        self.blocks = [EncoderBlock(config) for _ in range(num_blocks)]

    def __call__(self, x, mask, is_training: bool):
        for block in self.blocks:
            x = block(x, mask, is_training)
        return x


def mlm_head(config, hidden):
    x = jax.nn.relu(hk.Linear(config.d_model, name="dec_lin_1")(hidden))
    return hk.Linear(config.vocab_size, name="dec_lin_2")(layer_norm("dec_norm")(x))


def classifier_head(config, hidden, num_classes: int):
    x = layer_norm()(jax.nn.relu(hk.Linear(config.d_model)(hidden)))
    return hk.Linear(num_classes)(x[:, 0])


def build_haiku_model(config, head: str = "mlm", num_classes: int = 2):
    """``hk.transform``ed (logits_fn, hidden_fn); ``head`` is ``"mlm"`` or ``"classifier"``.

    Both take ``(params, rng, ids, mask)`` with mask (B, 1, S). ``hidden_fn`` also takes
    ``num_blocks`` (0 = embeddings only) for per-layer checks: blocks are named in creation
    order, so its block ``i`` has the same parameter names as in the full model.
    """

    def hidden(ids, mask, num_blocks, is_training):
        x = Embeddings(config.vocab_size, config.d_model)(ids)
        x = dropout(positional_encoding(x, config.positional, config.max_len),
                    config.dropout, is_training)
        return TransformerEncoder(config, num_blocks)(x, mask, is_training)

    def logits_fn(ids, mask, is_training=False):
        x = hidden(ids, mask, config.num_layers, is_training)
        return mlm_head(config, x) if head == "mlm" else classifier_head(config, x, num_classes)

    def hidden_fn(ids, mask, num_blocks=None):
        return hidden(ids, mask, config.num_layers if num_blocks is None else num_blocks, False)

    return hk.transform(logits_fn), hk.transform(hidden_fn)


# ------------------------------------------------------------------- training state


class TrainingState(NamedTuple):
    """The tutorial notebook's state (pickled as ``__main__.TrainingState``)."""

    params: Any
    opt_state: Any


def make_training_state(params, learning_rate: float = 1e-3, *, step: int = 1):
    """``TrainingState(params, opt_state)`` with the tutorial's optimizer state.

    ``optax.chain(clip_by_global_norm(1), adam(lr)).init`` gives the exact structure; its
    Adam moments are then set as after ``step`` steps of a constant gradient (NumPy, so
    nothing is compiled), so ``mu``/``nu``/``count`` are not trivially zero.
    """
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    clip_state, (adam_state, scale_state) = optimizer.init(params)
    b1, b2 = 0.9, 0.999
    adam_state = adam_state._replace(
        count=np.asarray(step, np.int32),
        mu=jax.tree.map(lambda p: np.full_like(p, 0.01 * (1 - b1**step)), params),
        nu=jax.tree.map(lambda p: np.full_like(p, 1e-4 * (1 - b2**step)), params),
    )
    return TrainingState(params, (clip_state, (adam_state, scale_state)))


def mask_3d(attention_mask) -> np.ndarray:
    """(B, S) -> the tutorial's (B, 1, S) batch mask."""
    return np.asarray(attention_mask)[:, None, :]


_MISSING = object()


def random_params(config, head: str = "mlm", *, num_classes: int = 2, seed: int = 0) -> dict:
    """Haiku-named NumPy parameters at Haiku's init scales (shapes by ``eval_shape``).

    Nothing is compiled; biases and LayerNorm offsets are non-zero and scales != 1, so a
    swapped or dropped parameter shows in the outputs.
    """
    logits_fn, _ = build_haiku_model(config, head, num_classes)
    ids = np.ones((1, 4), np.int32)
    shapes = jax.eval_shape(logits_fn.init, jax.random.PRNGKey(seed), ids,
                            np.ones((1, 1, 4), np.int32))
    rng = np.random.default_rng(seed)

    def draw(name, shape):
        stddev = {"w": 1 / math.sqrt(shape.shape[0]), "embeddings": 1.0}.get(name, 0.1)
        centre = 1.0 if name == "scale" else 0.0
        return (centre + stddev * rng.standard_normal(shape.shape)).astype(np.float32)

    return {module: {name: draw(name, shape) for name, shape in sorted(leaves.items())}
            for module, leaves in sorted(shapes.items())}


def write_training_state(path: str | Path, state: TrainingState, protocol: int = 4) -> Path:
    """Pickle ``state`` as a notebook with plain-NumPy arrays would (``__main__.TrainingState``).

    The simplest 2022 format (jax <= 0.3.13 wrote plain NumPy arrays); the other formats
    are written by ``zoo_tests.haiku_reference.write_2022_pickle``.
    """
    state = jax.tree.map(np.asarray, state)
    main = sys.modules["__main__"]
    saved_attr = getattr(main, "TrainingState", _MISSING)
    saved = (TrainingState.__module__, TrainingState.__qualname__)
    TrainingState.__module__ = "__main__"
    main.TrainingState = TrainingState
    try:
        data = pickle.dumps(TrainingState(*state), protocol)
    finally:
        TrainingState.__module__, TrainingState.__qualname__ = saved
        if saved_attr is _MISSING:
            del main.TrainingState
        else:
            main.TrainingState = saved_attr
    path = Path(path)
    path.write_bytes(data)
    return path
