"""ModernBERT encoders (Warner et al. 2024) in Flax NNX.

Numerics follow transformers' ``modeling_modernbert.py`` on its padded attention path, so a
converted checkpoint gives the same hidden states:

- embeddings: token embeddings (no positions, no token types) -> LayerNorm -> dropout;
- pre-LN blocks: ``x + Attn(attention_norm(x))`` then ``x + MLP(mlp_norm(x))``; layer 0 has no
  attention norm (the embeddings' LayerNorm already normalised its input);
- attention: one fused Q/K/V projection (H -> 3H, laid out as [3][heads][head_dim]), rotary
  position embeddings on queries and keys (the ``rotate_half`` convention, computed in
  float32), a float32 softmax with the dtype's most negative value at hidden keys; *global*
  layers see every real token, *local* (sliding) layers only keys with
  ``|i - j| <= local_attention // 2``; each kind has its own rotary base
  (``global_rope_theta``, ``local_rope_theta``). A query that sees no key at all (a padded
  position far from every real token) gets a zero attention output, as transformers'
  default (SDPA) attention gives;
- MLP: a gated linear unit, ``Wo(act(input) * gate)`` with ``[input | gate] = Wi(x)``;
- a final LayerNorm after the last block. LayerNorms have no bias unless ``norm_bias``.

Positions are not learned: ``max_position_embeddings`` (8192 for the published models) bounds
``max_len`` only. The rotary tables are computed once per sequence length and distinct base
(NumPy, cached: constants of the compiled program), and the two attention masks once per
call; every layer reuses them.

Like the BERT encoder, blocks see tokens flattened to (B*S, H).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import nn
from zoo.nn import Dropout, stored_gradient

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # transformers' layer_types names
LAYER_TYPES = (GLOBAL, LOCAL)
ACTIVATIONS = nn.ACTIVATIONS  # also the heads' (classifier_style "<act>-norm")
POOLINGS = ("cls", "mean")


def layer_pattern(num_layers: int, global_every: int = 3) -> tuple[str, ...]:
    """transformers 4.x's ``global_attn_every_n_layers``: layer i is global when
    ``i % global_every == 0``, local otherwise."""
    if isinstance(global_every, bool) or not isinstance(global_every, int) or global_every < 1:
        raise ValueError(f"global_attn_every_n_layers must be a positive integer, "
                         f"got {global_every!r}")
    return tuple(GLOBAL if i % global_every == 0 else LOCAL for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """A ModernBERT encoder's hyper-parameters (HF ``config.json`` names in comments)."""

    vocab_size: int
    hidden_size: int
    num_layers: int                   # num_hidden_layers
    num_heads: int                    # num_attention_heads
    intermediate_size: int            # the MLP's width (Wi projects to twice this)
    max_position_embeddings: int = 8192
    layer_norm_eps: float = 1e-5      # norm_eps
    norm_bias: bool = False           # every LayerNorm (encoder and heads) has a bias
    hidden_act: str = "gelu"          # hidden_activation
    attention_bias: bool = False      # Wqkv and the attention's Wo
    mlp_bias: bool = False            # the MLP's Wi and Wo
    # one per layer, "full_attention" (global) or "sliding_attention" (local); None: every
    # third layer global, starting with layer 0 (transformers' default)
    layer_types: tuple[str, ...] | None = None
    local_attention: int = 128        # sliding window: keys within local_attention // 2
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    embedding_dropout: float = 0.0
    dropout: float = 0.0              # mlp_dropout
    attention_dropout: float = 0.0    # attention probabilities and the attention output
    classifier_dropout: float = 0.0
    classifier_pooling: str = "cls"   # "cls" (position 0) or "mean" (over the mask)
    classifier_activation: str = "gelu"
    classifier_bias: bool = False     # the heads' dense layer (and the MLM head's)
    decoder_bias: bool = True         # the MLM decoder's bias
    type_vocab_size: int = 0          # no token types
    model_type: str = "modernbert"
    max_len: int | None = None        # longest input the zoo tokenises to (default: positions)

    def __post_init__(self):
        nn.check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads",
                              "intermediate_size", "max_position_embeddings",
                              "local_attention"))
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"the head size hidden_size/num_heads="
                             f"{self.hidden_size // self.num_heads} must be even (rotary "
                             "embeddings rotate pairs of features)")
        nn.check_choice(self, "hidden_act", ACTIVATIONS)
        nn.check_choice(self, "classifier_activation", ACTIVATIONS)
        if self.classifier_pooling not in POOLINGS:
            raise ValueError(f"classifier_pooling must be one of {', '.join(POOLINGS)}, "
                             f"got {self.classifier_pooling!r}")
        if self.model_type != "modernbert":
            raise ValueError(f"model_type must be 'modernbert', got {self.model_type!r}")
        for name in ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias",
                     "decoder_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        nn.check_positive(self, ("global_rope_theta", "local_rope_theta", "layer_norm_eps"))
        nn.check_fractions(self, ("embedding_dropout", "dropout", "attention_dropout",
                                  "classifier_dropout"))
        if self.type_vocab_size not in (0, 1):
            raise ValueError(f"type_vocab_size must be 0 or 1 (ModernBERT has no token "
                             f"types), got {self.type_vocab_size!r}")
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", layer_pattern(self.num_layers))
        if isinstance(self.layer_types, (str, bytes)) \
                or not isinstance(self.layer_types, (list, tuple)):
            raise ValueError(f"layer_types must be a list of {' / '.join(LAYER_TYPES)}, "
                             f"got {self.layer_types!r}")
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                             f"num_layers={self.num_layers}")
        bad = sorted({str(t) for t in self.layer_types if t not in LAYER_TYPES})
        if bad:
            raise ValueError(f"layer_types: unknown type(s) {', '.join(bad)} "
                             f"(expected {' / '.join(LAYER_TYPES)})")
        if self.max_len is not None and (
                isinstance(self.max_len, bool) or not isinstance(self.max_len, int)
                or not 2 <= self.max_len <= self.max_position_embeddings):
            raise ValueError(f"max_len must be in [2, {self.max_position_embeddings}], "
                             f"got {self.max_len!r}")
        if self.max_len is None:
            object.__setattr__(self, "max_len", self.max_position_embeddings)

    # What the architecture-neutral heads read (see zoo/heads.py): ModernBERT's prediction
    # head is dense -> activation -> LayerNorm, before the classifier of every task.
    @property
    def classifier_style(self) -> str:
        return f"{self.classifier_activation}-norm"

    @property
    def token_classifier_style(self) -> str:
        return self.classifier_style

    @property
    def mlm_activation(self) -> str:
        return self.classifier_activation

    @property
    def head_bias(self) -> bool:
        return self.classifier_bias

    @property
    def global_attn_every_n_layers(self) -> int | None:
        """The 4.x period when ``layer_types`` follows one (for writing config.json), else None."""
        for n in range(1, self.num_layers + 1):
            if layer_pattern(self.num_layers, n) == self.layer_types:
                return n
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # How parameters split over the ``model`` axis of a device mesh (zoo/sharding.py):
    # Megatron-style, word embeddings by vocabulary rows, the fused Q/K/V and the MLP's input
    # projection by output features, the attention output and the MLP output by input
    # features; LayerNorms and biases added after a reduction are replicated. (The fused
    # kernels' output columns are [q | k | v] and [input | gate]: a contiguous split puts
    # different parts on different devices, and XLA moves what the next op needs.)
    partition_rules = (
        (r"embeddings/word/embedding$", ("model", None)),
        (r"attention/qkv/kernel$", (None, "model")),
        (r"attention/qkv/bias$", ("model",)),
        (r"attention/output/kernel$", ("model", None)),
        (r"mlp/intermediate/kernel$", (None, "model")),
        (r"mlp/intermediate/bias$", ("model",)),
        (r"mlp/output/kernel$", ("model", None)),
    )


def _dense(n_in: int, n_out: int, bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=bias, kernel_init=nnx.initializers.normal(0.02),
                      rngs=rngs)


def _norm(config: ModernBertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nn.layer_norm(config.hidden_size, config.layer_norm_eps, rngs,
                         use_bias=config.norm_bias)


def rotary_tables(length, head_dim: int, theta: float) -> tuple:
    """(cos, sin), each (length, head_dim // 2) float32, as transformers' default RoPE:
    inverse frequencies ``theta ** -(2i / d)``, angles ``position * inv_freq`` (transformers
    repeats them twice; :func:`rotate` uses each half once).

    NumPy at trace time when the length is static: inside the program the tables are then
    constants. Computed with jnp, XLA fused ``cos``/``sin`` into every rotated element and
    evaluated them batch x heads times over (9 % of a ModernBERT-base forward on a CPU).
    A symbolic length (ONNX export) computes them in the program."""
    if isinstance(length, (int, np.integer)):
        return _static_rotary_tables(int(length), head_dim, theta)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * _inverse_frequencies(
        head_dim, theta)[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def _inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _static_rotary_tables(length: int, head_dim: int, theta: float):
    angles = np.arange(length, dtype=np.float32)[:, None] * _inverse_frequencies(
        head_dim, theta)[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    cos.flags.writeable = sin.flags.writeable = False  # cached and shared
    return cos, sin


def rotate(x: jax.Array, cos, sin) -> jax.Array:
    """Rotary embedding of ``x`` (..., S, d) in float32, transformers' x*cos +
    rotate_half(x)*sin with rotate_half(x) = [-x2, x1] for the halves x1, x2 of the last
    axis, written per half: [x1*c - x2*s, x2*c + x1*s] (``cos``/``sin``: (S, d/2))."""
    dtype = x.dtype
    x = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(dtype)


class Embeddings(nnx.Module):
    """token embeddings -> LayerNorm -> dropout."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.word = nn.Embed(config.vocab_size, config.hidden_size,
                             embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.norm = _norm(config, rngs)
        self.dropout = Dropout(config.embedding_dropout)

    def __call__(self, input_ids, *, rngs=None):
        return self.dropout(self.norm(self.word(input_ids)), rngs=rngs)


class SelfAttention(nnx.Module):
    """Fused-QKV multi-head attention with rotary positions and a key mask."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.qkv = _dense(h, 3 * h, config.attention_bias, rngs)
        self.output = _dense(h, h, config.attention_bias, rngs)
        self.dropout = Dropout(config.attention_dropout)          # attention probabilities
        self.output_dropout = Dropout(config.attention_dropout)   # after the output projection

    def __call__(self, x, mask, cos, sin, batch: int, *, rngs=None,
                 first_token_only: bool = False):
        """``x``: (B*S, H); ``mask``: (keys each query may see, broadcasting to (B, 1, S, S);
        queries that see some key, (B, 1, S or 1, 1)); ``cos``/``sin``: (S, head_dim / 2)
        float32. ``first_token_only``: the output of position 0 alone, (B, H)."""
        allowed, rows = mask
        hidden = x.shape[-1]
        length = x.shape[0] // batch
        d_head = hidden // self.num_heads
        def heads(t):  # (B*S, H) -> (B, heads, S, d): one axis split per reshape (jax's
            # explicit sharding mode allows no more)
            t = t.reshape(batch, length, hidden)
            return t.reshape(batch, length, self.num_heads, d_head).transpose(0, 2, 1, 3)

        # The fused output's columns are [q | k | v]: three contiguous blocks, so their
        # gradient is one concatenation (slicing a (B, S, 3, heads, d) view instead made XLA
        # sum three padded copies, 4 % of a training step).
        q, k, v = (heads(t) for t in jnp.split(self.qkv(x), 3, axis=-1))
        if first_token_only:  # one query; keys and values at every position
            q, qcos, qsin, length = q[:, :, :1], cos[:1], sin[:1], 1
            allowed, rows = allowed[:, :, :1], rows[:, :, :1]
        else:
            qcos, qsin = cos, sin
        q, k = rotate(q, qcos, qsin), rotate(k, cos, sin)
        dtype = self.qkv.dtype  # the compute dtype (set_precision)
        scores = nn.einsum("bhqd,bhkd->bhqk", q, k, dtype=dtype,
                           out_dtype=jnp.float32) * d_head ** -0.5
        # the dtype's most negative value at hidden keys, as transformers' additive mask
        scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        weights = self.dropout(weights, rngs=rngs)
        context = nn.einsum("bhqk,bhkd->bhqd", weights, v, dtype=dtype)
        context = jnp.where(rows, context, jnp.zeros((), context.dtype))
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        out = self.output(context.reshape(batch * length, hidden))
        return self.output_dropout(out, rngs=rngs)


class MLP(nnx.Module):
    """Gated linear unit: Wo(Drop(act(input) * gate)), [input | gate] = Wi(x)."""

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        h, inner = config.hidden_size, config.intermediate_size
        self.activation = config.hidden_act
        self.intermediate = _dense(h, 2 * inner, config.mlp_bias, rngs)
        self.output = _dense(inner, h, config.mlp_bias, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, x, *, rngs=None):
        both = self.intermediate(x)
        inner = both.shape[-1] // 2
        gated = ACTIVATIONS[self.activation](both[..., :inner]) * both[..., inner:]
        return self.output(self.dropout(gated, rngs=rngs))


class Layer(nnx.Module):
    """Pre-LN block: x += Attn(LN(x)) (no LN in layer 0); x += MLP(LN(x))."""

    def __init__(self, config: ModernBertConfig, index: int, *, rngs: nnx.Rngs):
        self.kind = config.layer_types[index]
        self.attention_norm = _norm(config, rngs) if index else None
        self.attention = SelfAttention(config, rngs=rngs)
        self.mlp_norm = _norm(config, rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x, mask, cos, sin, batch: int, *, rngs=None,
                 first_token_only: bool = False):
        """(B*S, H) -> (B*S, H); with ``first_token_only``, position 0's row alone, (B, H)."""
        x = stored_gradient(x)  # the residual's gradient, once per block (zoo.nn)
        h = x if self.attention_norm is None else self.attention_norm(x)
        residual = x.reshape(batch, -1, x.shape[-1])[:, 0] if first_token_only else x
        x = residual + self.attention(h, mask, cos, sin, batch, rngs=rngs,
                                      first_token_only=first_token_only)
        return x + self.mlp(self.mlp_norm(x), rngs=rngs)


class ModernBertEncoder(nnx.Module):
    """Token ids (B, S) and padding mask (B, S) -> hidden (B, S, H) (transformers'
    ``last_hidden_state``, after the final LayerNorm); (B, 1, H) with ``first_token_only``:
    the last block computes position 0 alone (``zoo.nn.run_layers``)."""

    FIRST_TOKEN_ONLY = True  # accepts first_token_only= (zoo.model.Model.__call__)

    def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([Layer(config, i, rngs=rngs) for i in range(config.num_layers)])
        self.final_norm = _norm(config, rngs)

    def token_embeddings(self) -> nnx.Param:
        """The (vocab_size, hidden_size) token-embedding table (also the tied MLM decoder)."""
        return self.embeddings.word.embedding

    def masks(self, attention_mask) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Per layer type, (allowed, rows): global layers see the real keys (B, 1, 1, S),
        local layers those within local_attention // 2 of the query (B, 1, S, S); ``rows``
        (B, 1, S or 1, 1) is False where a query sees no key at all (a padded position
        beyond the window of every real token), whose attention output is then 0 as
        transformers' default (SDPA) attention gives. The window comes from iotas, not a
        constant table, so XLA fuses it into the attention instead of storing S x S."""
        length = attention_mask.shape[-1]
        keys = attention_mask[:, None, None, :] != 0
        out = {}
        if GLOBAL in self.config.layer_types:
            out[GLOBAL] = (keys, jnp.any(keys, axis=-1, keepdims=True))
        if LOCAL in self.config.layer_types:
            positions = jnp.arange(length)
            window = jnp.abs(positions[:, None] - positions[None, :]) \
                <= self.config.local_attention // 2
            allowed = keys & window[None, None]
            out[LOCAL] = (allowed, jnp.any(allowed, axis=-1, keepdims=True))
        return out

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None,
                 first_token_only: bool = False):
        if token_type_ids is not None:
            raise ValueError("ModernBERT has no token types (type_vocab_size 0): call it "
                             "without token_type_ids")
        config = self.config
        batch, length = input_ids.shape
        d_head = config.hidden_size // config.num_heads
        thetas = {GLOBAL: config.global_rope_theta, LOCAL: config.local_rope_theta}
        tables = {}  # once per call and per distinct base, shared by the layers
        for kind in sorted(set(config.layer_types)):
            if thetas[kind] not in tables:
                tables[thetas[kind]] = rotary_tables(length, d_head, thetas[kind])
        masks = self.masks(attention_mask)
        x = self.embeddings(input_ids, rngs=rngs)
        x = x.reshape(batch * length, config.hidden_size)
        last = len(self.layers) - 1 if first_token_only else -1
        for i, layer in enumerate(self.layers):
            cos, sin = tables[thetas[layer.kind]]
            x = layer(x, masks[layer.kind], cos, sin, batch, rngs=rngs,
                      first_token_only=i == last)
        x = self.final_norm(x)
        return x.reshape(batch, -1, config.hidden_size)
