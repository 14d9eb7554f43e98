"""DeBERTa-v2 / DeBERTa-v3 encoders in Flax NNX.

Numerics follow transformers' ``modeling_deberta_v2.py`` (5.x), so converted checkpoints
give the same hidden states:

- embeddings: word embeddings (``embedding_size``), plus learned absolute positions only when
  ``position_biased_input``, plus token types when ``type_vocab_size > 0``; projected to
  ``hidden_size`` (no bias) when the sizes differ; LayerNorm; multiplied by the padding mask;
  dropout.
- disentangled self-attention: content->content scores plus, with ``relative_attention``,
  content->position (``c2p``) and position->content (``p2c``) scores against a table of
  relative-position embeddings (optionally LayerNorm'ed, ``norm_rel_ebd``), relative
  distances optionally squashed into log buckets (``position_buckets``); all scores scaled by
  ``1 / sqrt(d_head * (1 + len(pos_att_type)))``. ``share_att_key`` projects the relative
  embeddings with the content query/key projections instead of separate ones.
- the mask as HF builds it: a (query, key) pair counts only when both are real tokens; a
  padded query row is all-masked, so its softmax is uniform (its output is never read).
- post-LN blocks like BERT, activation per ``hidden_act``.

The relative-position indices depend only on the sequence length, which is static under
``jit``: they are computed once per length in numpy (``relative_indices``), and only the
slice of the relative-embedding table those indices reach is projected, in each layer,
before one ``take_along_axis`` per score type.

With ``conv_kernel_size > 0`` (DeBERTa-v2-xlarge and xxlarge), HF's ``ConvLayer`` runs once,
after the first block: a 1-D convolution over the embeddings (``conv_groups`` groups, zero
padding), zeroed at padded positions, dropout, ``conv_act``, added to the first block's output,
LayerNorm, times the padding mask (``ConvLayer``).

HF's ``ContextPooler`` (dense over token 0, ``pooler_hidden_act``) is the first layer of the
zoo's classification head (``classifier_style``), as BERT's pooler is.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo import nn
from zoo.nn import Dropout

ACTIVATIONS = nn.ACTIVATIONS  # hidden_act, and pooler_hidden_act: the head's classifier_style
POS_ATT_TYPES = ("c2p", "p2c")
NORM_REL_EBD = ("none", "layer_norm")
IN_BOUNDS = "promise_in_bounds"  # gather indices are clamped when built: no checks needed


@dataclasses.dataclass(frozen=True)
class DebertaV2Config:
    """A DeBERTa-v2/v3 encoder's hyper-parameters (HF ``config.json`` names in comments).

    Defaults are transformers' ``DebertaV2Config`` defaults (and its ``getattr`` fallbacks for
    ``share_att_key``, ``position_buckets``, ``norm_rel_ebd``); the DeBERTa-v3 presets set the
    v3 values explicitly.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int                 # num_hidden_layers
    num_heads: int                  # num_attention_heads
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    hidden_act: str = "gelu"
    dropout: float = 0.1            # hidden_dropout_prob (also the relative embeddings' dropout)
    attention_dropout: float = 0.1  # attention_probs_dropout_prob
    classifier_dropout: float = 0.1  # cls_dropout, else hidden_dropout_prob
    pooler_hidden_act: str = "gelu"
    embedding_size: int | None = None  # projected to hidden_size when different
    relative_attention: bool = False
    max_relative_positions: int = -1   # < 1: max_position_embeddings
    position_buckets: int = -1         # <= 0: no log buckets
    pos_att_type: tuple[str, ...] = ()  # subset of ("c2p", "p2c"); "p2c|c2p" in old configs
    share_att_key: bool = False
    norm_rel_ebd: str = "none"         # "none" or "layer_norm"
    position_biased_input: bool = True
    conv_kernel_size: int = 0       # > 0: the ConvLayer after the first block (v2-xlarge)
    conv_groups: int = 1
    conv_act: str = "tanh"
    model_type: str = "deberta-v2"
    max_len: int | None = None      # longest input the zoo tokenises to (default: positions)

    def __post_init__(self):
        nn.check_sizes(self)
        nn.check_choice(self, "hidden_act", ACTIVATIONS)
        nn.check_choice(self, "pooler_hidden_act", ACTIVATIONS)
        nn.check_choice(self, "conv_act", ACTIVATIONS)
        if self.model_type != "deberta-v2":
            raise ValueError(f"model_type {self.model_type!r}: expected 'deberta-v2'")
        nn.check_fractions(self)
        nn.check_count(self, "type_vocab_size")
        nn.check_positive(self)
        for name in ("relative_attention", "share_att_key", "position_biased_input"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("max_relative_positions", "position_buckets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        nn.check_count(self, "conv_kernel_size")
        nn.check_count(self, "conv_groups", low=1)
        if self.conv_kernel_size and self.conv_kernel_size % 2 == 0:
            # HF pads (k - 1) // 2 on each side: an even kernel shortens the sequence
            raise ValueError(f"conv_kernel_size must be odd (or 0: no convolution), got "
                             f"{self.conv_kernel_size}")
        if self.hidden_size % self.conv_groups:
            raise ValueError(f"conv_groups {self.conv_groups} does not divide hidden_size "
                             f"{self.hidden_size}")
        if self.position_buckets == 1:  # log buckets divide by position_buckets // 2
            raise ValueError("position_buckets must be <= 0 (no log buckets) or >= 2, got 1")
        pos_att_type = self.pos_att_type
        if pos_att_type is None:
            pos_att_type = ()
        elif isinstance(pos_att_type, str):  # "p2c|c2p", as configs of transformers 4 wrote
            pos_att_type = tuple(t.strip() for t in pos_att_type.lower().split("|") if t.strip())
        elif isinstance(pos_att_type, (list, tuple)):
            pos_att_type = tuple(pos_att_type)
        else:
            raise ValueError(f"pos_att_type must be a list of {POS_ATT_TYPES}, "
                             f"got {pos_att_type!r}")
        unknown = [t for t in pos_att_type if t not in POS_ATT_TYPES]
        if unknown or len(set(pos_att_type)) != len(pos_att_type):
            raise ValueError(f"pos_att_type {list(pos_att_type)!r}: expected distinct values "
                             f"from {', '.join(POS_ATT_TYPES)}")
        # the order does not matter (HF tests membership): kept canonical, so that
        # "p2c|c2p" and ["c2p", "p2c"] give equal configs
        object.__setattr__(self, "pos_att_type",
                           tuple(t for t in POS_ATT_TYPES if t in pos_att_type))
        if self.norm_rel_ebd not in NORM_REL_EBD:
            raise ValueError(f"norm_rel_ebd {self.norm_rel_ebd!r}: expected one of "
                             f"{', '.join(NORM_REL_EBD)}")
        if self.embedding_size is None:
            object.__setattr__(self, "embedding_size", self.hidden_size)
        nn.check_sizes(self, ("embedding_size",))
        # Learned absolute positions bound the length; relative positions alone do not, but
        # the zoo still tokenises to max_position_embeddings unless told otherwise.
        if self.max_len is not None:
            if isinstance(self.max_len, bool) or not isinstance(self.max_len, int) \
                    or self.max_len < 2 or (self.position_biased_input
                                            and self.max_len > self.max_position_embeddings):
                bound = f"[2, {self.max_position_embeddings}]" if self.position_biased_input \
                    else ">= 2"
                raise ValueError(f"max_len must be in {bound}, got {self.max_len!r}")
        else:
            object.__setattr__(self, "max_len", self.max_position_embeddings)

    # Derived sizes of the relative attention (as DisentangledSelfAttention computes them).
    @property
    def max_relative(self) -> int:
        """The largest relative distance (``max_relative_positions``, else positions)."""
        return self.max_relative_positions if self.max_relative_positions >= 1 \
            else self.max_position_embeddings

    @property
    def attention_span(self) -> int:
        """Half the number of relative embeddings (HF's ``pos_ebd_size``)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    # What the architecture-neutral heads read (see zoo/heads.py).
    @property
    def classifier_style(self) -> str:
        return self.pooler_hidden_act  # dense -> act -> dropout -> out

    @property
    def classifier_pooling(self) -> str:
        return "cls"

    @property
    def head_bias(self) -> bool:
        return True

    @property
    def norm_bias(self) -> bool:
        return True

    @property
    def token_classifier_style(self) -> None:
        return None

    @property
    def mlm_activation(self) -> str:
        return {"gelu_pytorch_tanh": "gelu_new", "swish": "silu"}.get(self.hidden_act,
                                                                      self.hidden_act)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # How parameters split over the ``model`` axis of a device mesh (zoo/sharding.py):
    # Megatron-style, as BertConfig: word embeddings by vocabulary rows, the Q/K/V projections
    # (and the relative-position ones) and the intermediate layer by output features, the
    # attention output and layer output by input features. The relative-embedding table,
    # LayerNorms and biases added after a reduction are replicated.
    partition_rules = (
        (r"embeddings/word/embedding$", ("model", None)),
        (r"attention/(query|key|value|pos_query|pos_key)/kernel$", (None, "model")),
        (r"attention/(query|key|value|pos_query|pos_key)/bias$", ("model",)),
        (r"attention/output/kernel$", ("model", None)),
        (r"layers/\d+/intermediate/kernel$", (None, "model")),
        (r"layers/\d+/intermediate/bias$", ("model",)),
        (r"layers/\d+/output/kernel$", ("model", None)),
    )


# ------------------------------------------------------------------- relative positions


def log_bucket_position(relative: np.ndarray, bucket_size: int, max_position: int
                        ) -> np.ndarray:
    """HF's ``make_log_bucket_position`` in numpy, in float32 as torch computes it (exact
    distances below ``bucket_size // 2``, log-spaced buckets beyond)."""
    mid = bucket_size // 2
    sign = np.sign(relative)
    abs_pos = np.where((relative < mid) & (relative > -mid), mid - 1, np.abs(relative))
    ratio = (abs_pos / mid).astype(np.float32)
    log_pos = np.ceil(np.log(ratio) / np.log(np.float32((max_position - 1) / mid))
                      * np.float32(mid - 1)) + mid
    return np.where(abs_pos <= mid, relative, log_pos * sign).astype(np.int64)


@functools.lru_cache(maxsize=64)
def relative_indices(length: int, position_buckets: int, max_relative: int, span: int
                     ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """For a sequence of ``length`` tokens: ``(c2p, p2c, lo, hi)``.

    ``c2p[q, k]`` is the row of the relative-embedding table that query ``q`` reads for key
    ``k`` (HF's ``clamp(rel(q, k) + span)``); ``p2c[q, k]`` the row key ``k`` reads for query
    ``q`` (HF's ``clamp(-rel(k, q) + span)``, already transposed to (query, key)). Both are
    offset by ``lo``: only table rows ``[lo, hi)`` are ever read at this length.
    """
    ids = np.arange(length)
    relative = ids[:, None] - ids[None, :]  # query - key
    if position_buckets > 0 and max_relative > 0:
        relative = log_bucket_position(relative, position_buckets, max_relative)
    c2p = np.clip(relative + span, 0, 2 * span - 1)
    p2c = np.clip(-relative + span, 0, 2 * span - 1).T  # [k, q] -> [q, k]
    lo = int(min(c2p.min(), p2c.min()))
    hi = int(max(c2p.max(), p2c.max())) + 1
    c2p, p2c = (c2p - lo).astype(np.int32), (p2c - lo).astype(np.int32)
    c2p.flags.writeable = p2c.flags.writeable = False
    return c2p, p2c, lo, hi


@functools.lru_cache(maxsize=8)
def relative_rows(max_len: int, position_buckets: int, max_relative: int, span: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``relative_indices`` by distance, for a length only known when the graph runs (a
    shape-polymorphic trace, e.g. the ONNX export): ``(c2p, p2c)`` of the query - key
    distances ``-(max_len - 1) .. max_len - 1`` (index ``distance + max_len - 1``), rows of
    the whole table, computed by the same NumPy code as ``relative_indices``."""
    distance = np.arange(-(max_len - 1), max_len)
    relative = distance
    if position_buckets > 0 and max_relative > 0:
        relative = log_bucket_position(distance, position_buckets, max_relative)
    c2p = np.clip(relative + span, 0, 2 * span - 1)
    p2c = np.clip(-relative[::-1] + span, 0, 2 * span - 1)  # key k reads rel(k, q) = -distance
    return c2p.astype(np.int32), p2c.astype(np.int32)


# ------------------------------------------------------------------------------ modules


def _dense(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=use_bias,
                      kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


def _embed(n: int, d: int, rngs: nnx.Rngs) -> nn.Embed:
    return nn.Embed(n, d, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)


class Embeddings(nnx.Module):
    """word (+ positions) (+ token types) (-> projection) -> LayerNorm -> * mask -> dropout."""

    def __init__(self, config: DebertaV2Config, *, rngs: nnx.Rngs):
        e, h = config.embedding_size, config.hidden_size
        self.word = _embed(config.vocab_size, e, rngs)
        self.position = _embed(config.max_position_embeddings, e, rngs) \
            if config.position_biased_input else None
        self.token_type = _embed(config.type_vocab_size, e, rngs) if config.type_vocab_size \
            else None
        self.projection = _dense(e, h, rngs, use_bias=False) if e != h else None
        self.norm = nn.layer_norm(h, config.layer_norm_eps, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None):
        length = input_ids.shape[-1]
        x = self.word(input_ids)
        if self.position is not None:
            x = x + self.position.embedding[...][:length].astype(x.dtype)
        if self.token_type is None and token_type_ids is not None:
            raise ValueError("this model has no token types (type_vocab_size 0): call it "
                             "without token_type_ids")
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.embedding[...][0].astype(x.dtype)
            else:
                x = x + self.token_type(token_type_ids)
        if self.projection is not None:
            x = self.projection(x)
        x = self.norm(x) * attention_mask[..., None].astype(x.dtype)
        return self.dropout(x, rngs=rngs)


class DisentangledSelfAttention(nnx.Module):
    """Multi-head attention with DeBERTa's content<->position scores, over flattened tokens."""

    def __init__(self, config: DebertaV2Config, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.pos_att_type = config.pos_att_type if config.relative_attention else ()
        self.share_att_key = config.share_att_key
        self.query, self.key, self.value = (_dense(h, h, rngs) for _ in range(3))
        if config.relative_attention and not config.share_att_key:
            self.pos_key = _dense(h, h, rngs) if "c2p" in self.pos_att_type else None
            self.pos_query = _dense(h, h, rngs) if "p2c" in self.pos_att_type else None
        else:
            self.pos_key = self.pos_query = None
        self.output = _dense(h, h, rngs)
        self.dropout = Dropout(config.attention_dropout)
        self.pos_dropout = Dropout(config.dropout)
        # every score type present is scaled by sqrt(d_head * (1 + len(pos_att_type)))
        self.scale_factor = 1 + len(config.pos_att_type)

    def __call__(self, x, pair_mask, rel=None, *, rngs=None, first_token_only: bool = False):
        """``x``: (B*S, H); ``pair_mask``: (B, 1, S, S) bool, True where query and key are
        both real tokens; ``rel``: ``(table rows [lo, hi) of the normalised relative
        embeddings (R, H), c2p indices (S, S), p2c indices (S, S))`` or None.
        ``first_token_only``: the output of position 0 alone, (B, H)."""
        batch, _, length, _ = pair_mask.shape
        hidden = x.shape[-1]
        d_head = hidden // self.num_heads
        scale = math.sqrt(d_head * self.scale_factor)

        def heads(t, n):  # (B*n, H) -> (B, heads, n, d_head)
            # One axis split per reshape: jax's explicit sharding mode allows no more.
            t = t.reshape(batch, n, -1)
            return t.reshape(batch, n, self.num_heads, d_head).transpose(0, 2, 1, 3)

        def table_heads(t):  # (R, H) -> (heads, R, d_head)
            return t.reshape(t.shape[0], self.num_heads, d_head).transpose(1, 0, 2)

        count = length
        if first_token_only:  # one query row; keys and values at every position
            count = 1
            pair_mask = pair_mask[:, :, :1]
            if rel is not None:
                rel = (rel[0], rel[1][:1], rel[2][:1])
            queries = x.reshape(batch, length, hidden)[:, 0]
        else:
            queries = x
        q = heads(self.query(queries), count)
        k, v = heads(self.key(x), length), heads(self.value(x), length)
        q_scaled = q / jnp.asarray(scale, q.dtype)
        dtype = self.query.dtype  # the compute dtype (set_precision)
        scores = nn.einsum("bhqd,bhkd->bhqk", q_scaled, k, dtype=dtype, out_dtype=jnp.float32)
        if self.pos_att_type:
            table, c2p_index, p2c_index = rel
            table = self.pos_dropout(table, rngs=rngs)
            if "c2p" in self.pos_att_type:
                pos_key = table_heads((self.key if self.share_att_key else self.pos_key)(table))
                c2p = nn.einsum("bhqd,hrd->bhqr", q_scaled, pos_key, dtype=dtype)
                scores = scores + jnp.take_along_axis(
                    c2p, c2p_index[None, None], axis=-1, mode=IN_BOUNDS).astype(jnp.float32)
            if "p2c" in self.pos_att_type:
                pos_query = table_heads(
                    (self.query if self.share_att_key else self.pos_query)(table))
                pos_query = pos_query / jnp.asarray(scale, pos_query.dtype)
                # (B, heads, R, S_key): row r of key k; p2c[q, k] picks row p2c_index[q, k]
                p2c = nn.einsum("hrd,bhkd->bhrk", pos_query, k, dtype=dtype)
                scores = scores + jnp.take_along_axis(
                    p2c, p2c_index[None, None], axis=-2, mode=IN_BOUNDS).astype(jnp.float32)
        scores = jnp.where(pair_mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        weights = self.dropout(weights, rngs=rngs)
        context = nn.einsum("bhqk,bhkd->bhqd", weights, v, dtype=dtype)
        context = context.transpose(0, 2, 1, 3).reshape(batch, count, hidden)
        return self.output(context.reshape(batch * count, hidden))


class Layer(nnx.Module):
    """Post-LN block: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(W2 act(W1 x)))."""

    def __init__(self, config: DebertaV2Config, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.activation = config.hidden_act
        self.attention = DisentangledSelfAttention(config, rngs=rngs)
        self.attention_norm = nn.layer_norm(h, config.layer_norm_eps, rngs)
        self.intermediate = _dense(h, config.intermediate_size, rngs)
        self.output = _dense(config.intermediate_size, h, rngs)
        self.output_norm = nn.layer_norm(h, config.layer_norm_eps, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, x, pair_mask, rel=None, *, rngs=None, first_token_only: bool = False):
        """(B*S, H) -> (B*S, H); with ``first_token_only``, position 0's row alone, (B, H)."""
        residual = x.reshape(pair_mask.shape[0], -1, x.shape[-1])[:, 0] \
            if first_token_only else x
        attended = self.attention(x, pair_mask, rel, rngs=rngs,
                                  first_token_only=first_token_only)
        x = self.attention_norm(residual + self.dropout(attended, rngs=rngs))
        inner = ACTIVATIONS[self.activation](self.intermediate(x))
        return self.output_norm(x + self.dropout(self.output(inner), rngs=rngs))


class ConvLayer(nnx.Module):
    """HF's ``ConvLayer``: LN(residual + act(Drop(conv(x) zeroed at padding))) * mask.

    The kernel has ``nnx.Conv``'s layout, (k, hidden / groups, hidden): torch's (out,
    in / groups, k) Conv1d weight with its axes reversed. The convolution runs as one matrix
    product over the k shifted copies of ``x`` side by side (a grouped kernel is expanded to
    its block-diagonal form), so it takes the compute dtype like every Linear and exports to
    ONNX with the ops the rest of the graph uses.
    """

    MIXED_PRECISION = True  # ``dtype`` is the products' compute dtype (zoo.nn.set_precision)

    def __init__(self, config: DebertaV2Config, *, rngs: nnx.Rngs):
        h, k, g = config.hidden_size, config.conv_kernel_size, config.conv_groups
        self.kernel = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (k, h // g, h)))
        self.bias = nnx.Param(jnp.zeros((h,)))
        self.norm = nn.layer_norm(h, config.layer_norm_eps, rngs)
        self.activation = config.conv_act
        self.groups = g
        self.dropout = Dropout(config.dropout)
        self.dtype = None

    def full_kernel(self) -> jax.Array:
        """(k * hidden, hidden): row ``j * hidden + i`` weighs input feature i at offset j."""
        kernel = self.kernel[...]
        k, per_group, h = kernel.shape
        if self.groups > 1:  # (k, in/g, g, out/g) -> block-diagonal (k, g, in/g, g, out/g)
            blocks = kernel.reshape(k, per_group, self.groups, h // self.groups)
            eye = jnp.eye(self.groups, dtype=kernel.dtype)
            kernel = jnp.einsum("kcgo,Gg->kGcgo", blocks, eye).reshape(k, h, h)
        return kernel.reshape(k * h, h)

    def __call__(self, x, residual, attention_mask, *, rngs=None):
        """``x``: the embeddings (B, S, H), zero at padded positions; ``residual``: the first
        block's output (B, S, H); ``attention_mask``: (B, S)."""
        k = self.kernel.shape[0]
        length = x.shape[1]
        pad = (k - 1) // 2
        padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
        windows = jnp.concatenate([padded[:, j:j + length] for j in range(k)], axis=-1) \
            if k > 1 else x
        out = nn.einsum("bsi,io->bso", windows, self.full_kernel(), dtype=self.dtype,
                        out_dtype=jnp.float32) + self.bias[...]
        mask = attention_mask[..., None].astype(out.dtype)
        out = ACTIVATIONS[self.activation](self.dropout(out * mask, rngs=rngs))
        return self.norm(residual + out) * mask


class DebertaV2Encoder(nnx.Module):
    """Token ids (B, S), padding mask (B, S) [, token types (B, S)] -> hidden (B, S, H);
    (B, 1, H) with ``first_token_only``: the last block computes position 0 alone
    (``zoo.nn.run_layers``)."""

    FIRST_TOKEN_ONLY = True  # accepts first_token_only= (zoo.model.Model.__call__)

    def __init__(self, config: DebertaV2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.rel_embeddings = _embed(2 * config.attention_span, config.hidden_size, rngs) \
            if config.relative_attention else None
        # HF builds this LayerNorm whenever norm_rel_ebd asks for it (used only with
        # relative attention); kept likewise so that every checkpoint tensor has a place.
        self.rel_norm = nn.layer_norm(config.hidden_size, config.layer_norm_eps, rngs) \
            if config.norm_rel_ebd == "layer_norm" else None
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.conv = ConvLayer(config, rngs=rngs) if config.conv_kernel_size else None

    def token_embeddings(self) -> nnx.Param:
        """The (vocab_size, embedding_size) word-embedding table (read and written by
        ``zoo.distill.transfer_embeddings``)."""
        return self.embeddings.word.embedding

    def _relative(self, length: int):
        """(normalised table rows used at this length, c2p indices, p2c indices) or None."""
        config = self.config
        if not (config.relative_attention and config.pos_att_type):
            return None
        if isinstance(length, int):
            c2p, p2c, lo, hi = relative_indices(length, config.position_buckets,
                                                config.max_relative, config.attention_span)
        else:  # a symbolic length: the indices are gathered by distance in the graph
            by_distance = relative_rows(config.max_len, config.position_buckets,
                                        config.max_relative, config.attention_span)
            ids = jnp.arange(length)
            distance = ids[:, None] - ids[None, :] + (config.max_len - 1)
            c2p, p2c = (jnp.asarray(rows)[distance] for rows in by_distance)
            lo, hi = 0, 2 * config.attention_span
        table = self.rel_embeddings.embedding[...][lo:hi]
        if self.rel_embeddings.dtype is not None:
            table = table.astype(self.rel_embeddings.dtype)
        if self.rel_norm is not None:  # row-wise, so normalising the slice is the same
            table = self.rel_norm(table)
        return table, jnp.asarray(c2p), jnp.asarray(p2c)

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None,
                 first_token_only: bool = False):
        length = input_ids.shape[-1]
        if self.config.position_biased_input and length > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds the model's "
                f"{self.config.max_position_embeddings} positions; truncate when tokenising")
        x = self.embeddings(input_ids, attention_mask, token_type_ids, rngs=rngs)
        batch, _, hidden = x.shape
        real = attention_mask.astype(bool)
        pair_mask = (real[:, None, :, None] & real[:, None, None, :])
        rel = self._relative(length)
        embedded = x
        x = x.reshape(batch * length, hidden)
        last = len(self.layers) - 1 if first_token_only else -1
        if self.conv is not None and last == 0:  # the convolution needs every position
            last = -1
        for i, layer in enumerate(self.layers):
            x = layer(x, pair_mask, rel, rngs=rngs, first_token_only=i == last)
            if i == 0 and self.conv is not None:
                x = self.conv(embedded, x.reshape(batch, length, hidden), attention_mask,
                              rngs=rngs).reshape(batch * length, hidden)
        x = x.reshape(batch, -1, hidden)
        return x[:, :1] if first_token_only and last == -1 else x
