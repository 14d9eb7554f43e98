"""RoBERTa and XLM-RoBERTa encoders in Flax NNX.

The transformer blocks are BERT's post-LN layers (``zoo.nn.PostLNLayer``,
imported, not copied). What differs is the embedding layer, which follows HuggingFace's
``RobertaEmbeddings``:

- learned positions are offset by ``pad_token_id + 1`` and computed from the padding, as
  fairseq does: a token's position is ``pad_token_id`` plus the number of non-pad tokens up
  to and including it, and a pad token sits at position ``pad_token_id``. Padding is read
  from ``input_ids != pad_token_id`` (not from the attention mask), exactly as HF does, so
  ``max_position_embeddings`` (514 for the published models) leaves
  ``max_position_embeddings - pad_token_id - 1`` usable positions (512);
- one token-type row (``type_vocab_size`` 1) whose row 0 is always added; a config with
  more rows takes ``token_type_ids`` like BERT.

XLM-RoBERTa is the same network with a larger vocabulary; only ``model_type`` differs.
The heads (``zoo/heads.py``) read ``classifier_style`` "tanh" (RoBERTa's classification
head: dense -> tanh -> out_proj over ``<s>``) and ``mlm_activation`` "gelu" (its LM head).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp
from flax import nnx

from zoo import nn
from zoo.nn import ACTIVATIONS, PostLNLayer as Layer
from zoo.nn import Dropout

ModelType = Literal["roberta", "xlm-roberta"]
MODEL_TYPES = ("roberta", "xlm-roberta")


@dataclasses.dataclass(frozen=True)
class RobertaConfig:
    """A RoBERTa / XLM-RoBERTa encoder's hyper-parameters (HF ``config.json`` names in
    comments)."""

    vocab_size: int
    hidden_size: int
    num_layers: int                 # num_hidden_layers
    num_heads: int                  # num_attention_heads
    intermediate_size: int
    max_position_embeddings: int = 514
    type_vocab_size: int = 1        # row 0 is added when no token_type_ids are given
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    dropout: float = 0.1            # hidden_dropout_prob
    attention_dropout: float = 0.1  # attention_probs_dropout_prob
    classifier_dropout: float = 0.1  # classifier_dropout, else hidden_dropout_prob
    pad_token_id: int = 1           # also the position offset (positions start after it)
    model_type: ModelType = "roberta"
    max_len: int | None = None      # longest input the zoo tokenises to (default: positions)

    def __post_init__(self):
        nn.check_sizes(self, ("vocab_size", "hidden_size", "num_layers", "num_heads",
                              "intermediate_size", "max_position_embeddings",
                              "type_vocab_size"))
        nn.check_choice(self, "hidden_act", ACTIVATIONS)
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r}: expected one of "
                             f"{', '.join(MODEL_TYPES)}")
        nn.check_fractions(self)
        nn.check_positive(self)
        pad = self.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size:
            raise ValueError(f"pad_token_id must be an integer in [0, {self.vocab_size}), "
                             f"got {pad!r}")
        if self.positions < 2:
            raise ValueError(
                f"max_position_embeddings={self.max_position_embeddings} leaves "
                f"{self.positions} positions after the pad_token_id + 1 = {pad + 1} offset; "
                "at least 2 are needed")
        if self.max_len is not None and (
                isinstance(self.max_len, bool) or not isinstance(self.max_len, int)
                or not 2 <= self.max_len <= self.positions):
            raise ValueError(f"max_len must be in [2, {self.positions}] (max_position_embeddings "
                             f"- pad_token_id - 1), got {self.max_len!r}")
        if self.max_len is None:
            object.__setattr__(self, "max_len", self.positions)

    @property
    def positions(self) -> int:
        """Positions usable by a sequence: the table's rows after the ``pad + 1`` offset."""
        return self.max_position_embeddings - self.pad_token_id - 1

    # What the architecture-neutral heads read (see zoo/heads.py).
    @property
    def classifier_style(self) -> str:
        return "tanh"  # RobertaClassificationHead: dense -> tanh -> dropout -> out_proj

    @property
    def classifier_pooling(self) -> str:
        return "cls"  # <s>

    @property
    def head_bias(self) -> bool:
        return True

    @property
    def norm_bias(self) -> bool:
        return True

    @property
    def token_classifier_style(self) -> None:
        return None  # dropout -> Linear

    @property
    def mlm_activation(self) -> str:
        return "gelu"  # RobertaLMHead applies the exact GELU whatever hidden_act is

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # Megatron-style over a mesh's ``model`` axis, as BERT's (the parameter paths are the same).
    partition_rules = nn.POST_LN_PARTITION_RULES


def _embed(n: int, d: int, rngs: nnx.Rngs) -> nn.Embed:
    return nn.Embed(n, d, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)


def position_ids(input_ids: jnp.ndarray, pad_token_id: int) -> jnp.ndarray:
    """HF's ``create_position_ids_from_input_ids``: ``pad + cumsum(ids != pad) * (ids != pad)``
    along each row, so real tokens count from ``pad + 1`` and pads sit at ``pad``."""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=-1, dtype=jnp.int32) * real + pad_token_id


class Embeddings(nnx.Module):
    """word + padding-aware position + token type -> LayerNorm -> dropout."""

    def __init__(self, config: RobertaConfig, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.pad_token_id = config.pad_token_id
        self.word = _embed(config.vocab_size, h, rngs)
        self.position = _embed(config.max_position_embeddings, h, rngs)
        self.token_type = _embed(config.type_vocab_size, h, rngs)
        self.norm = nn.layer_norm(h, config.layer_norm_eps, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, input_ids, token_type_ids=None, *, rngs=None):
        x = self.word(input_ids) + self.position(position_ids(input_ids, self.pad_token_id))
        if token_type_ids is None:
            x = x + self.token_type.embedding[...][0].astype(x.dtype)
        else:
            x = x + self.token_type(token_type_ids)
        return self.dropout(self.norm(x), rngs=rngs)


class RobertaEncoder(nnx.Module):
    """Token ids (B, S), padding mask (B, S) [, token types (B, S)] -> hidden (B, S, H);
    (B, 1, H) with ``first_token_only`` (``zoo.nn.run_layers``)."""

    FIRST_TOKEN_ONLY = True  # accepts first_token_only= (zoo.model.Model.__call__)

    def __init__(self, config: RobertaConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        # BERT's post-LN block reads hidden_size, num_heads, intermediate_size, hidden_act,
        # layer_norm_eps, dropout and attention_dropout, which RobertaConfig shares.
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_layers)])

    def token_embeddings(self) -> nnx.Param:
        """The (vocab_size, hidden_size) word-embedding table."""
        return self.embeddings.word.embedding

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None,
                 first_token_only: bool = False):
        length = input_ids.shape[-1]
        if length > self.config.positions:
            raise ValueError(
                f"sequence length {length} exceeds the model's {self.config.positions} "
                f"positions (max_position_embeddings {self.config.max_position_embeddings} "
                f"less the pad_token_id + 1 offset); truncate when tokenising")
        x = self.embeddings(input_ids, token_type_ids, rngs=rngs)
        return nn.run_layers(self.layers, x, attention_mask, rngs=rngs,
                             first_token_only=first_token_only)
