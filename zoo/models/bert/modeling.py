"""BERT-family encoders (BERT, MiniLM, ELECTRA, DistilBERT) in Flax NNX.

Numerics follow HuggingFace's PyTorch models, so converted checkpoints give the same
hidden states: learned positions and token types added to the word embeddings, LayerNorm
with the config's epsilon (1e-12 for BERT), post-LN blocks, GELU per ``hidden_act``
(``gelu`` is the exact erf form), an additive mask with the dtype's most negative value
at padded keys, softmax in float32. ELECTRA projects its embeddings when
``embedding_size != hidden_size``; DistilBERT has no token types.

The pooler (dense + tanh over ``[CLS]``) is not part of the encoder: it is the first layer
of the ``tanh``-style classification head (``zoo/heads.py``), which is where the
converter puts HF's ``pooler.dense`` when a checkpoint carries a classifier.

Like the M2L encoder, blocks see tokens flattened to (B*S, H): on CPU the weight
gradients of 2-D matmuls are much faster than those of 3-D contractions.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from flax import nnx

from zoo import nn
from zoo.nn import Dropout

ModelType = Literal["bert", "electra", "distilbert"]
ACTIVATIONS = nn.ACTIVATIONS
CLASSIFIER_STYLE = {"bert": "tanh", "electra": "gelu", "distilbert": "relu"}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A BERT-family encoder's hyper-parameters (HF ``config.json`` names in comments)."""

    vocab_size: int
    hidden_size: int
    num_layers: int                 # num_hidden_layers / n_layers
    num_heads: int                  # num_attention_heads / n_heads
    intermediate_size: int          # intermediate_size / hidden_dim
    max_position_embeddings: int = 512
    type_vocab_size: int = 2        # 0: no token-type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    dropout: float = 0.1            # hidden_dropout_prob / dropout
    attention_dropout: float = 0.1  # attention_probs_dropout_prob / attention_dropout
    classifier_dropout: float = 0.1  # classifier_dropout / seq_classif_dropout
    embedding_size: int | None = None  # ELECTRA: projected to hidden_size when different
    model_type: ModelType = "bert"
    max_len: int | None = None      # longest input the zoo tokenises to (default: positions)

    def __post_init__(self):
        nn.check_sizes(self)
        nn.check_choice(self, "hidden_act", ACTIVATIONS)
        if self.model_type not in CLASSIFIER_STYLE:
            raise ValueError(f"model_type {self.model_type!r}: expected one of "
                             f"{', '.join(CLASSIFIER_STYLE)}")
        nn.check_fractions(self)
        nn.check_positive(self)
        nn.check_count(self, "type_vocab_size")
        if self.max_len is not None and not 2 <= self.max_len <= self.max_position_embeddings:
            raise ValueError(f"max_len must be in [2, {self.max_position_embeddings}], "
                             f"got {self.max_len}")
        if self.max_len is None:
            object.__setattr__(self, "max_len", self.max_position_embeddings)
        if self.embedding_size is None:
            object.__setattr__(self, "embedding_size", self.hidden_size)
        nn.check_sizes(self, ("embedding_size",))

    # What the architecture-neutral heads read (see zoo/heads.py).
    @property
    def classifier_style(self) -> str:
        return CLASSIFIER_STYLE[self.model_type]

    @property
    def mlm_activation(self) -> str:
        # transformers' BERT and DistilBERT MLM heads apply hidden_act (ACT2FN); ELECTRA's
        # generator head always applies gelu
        return "gelu" if self.model_type == "electra" else self.hidden_act

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # How parameters split over the ``model`` axis of a device mesh (zoo/sharding.py).
    partition_rules = nn.POST_LN_PARTITION_RULES


_dense, _embed = nn.dense, nn.embed


class Embeddings(nnx.Module):
    """word + position (+ token type) -> LayerNorm -> dropout (-> ELECTRA projection)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        e = config.embedding_size
        self.word = _embed(config.vocab_size, e, rngs)
        self.position = _embed(config.max_position_embeddings, e, rngs)
        self.token_type = _embed(config.type_vocab_size, e, rngs) if config.type_vocab_size \
            else None
        self.norm = nn.layer_norm(e, config.layer_norm_eps, rngs)
        self.dropout = Dropout(config.dropout)
        self.projection = _dense(e, config.hidden_size, rngs) if e != config.hidden_size \
            else None

    def __call__(self, input_ids, token_type_ids=None, *, rngs=None):
        length = input_ids.shape[-1]
        x = self.word(input_ids) + self.position.embedding[...][:length]
        if self.token_type is None and token_type_ids is not None:
            raise ValueError("this model has no token types (type_vocab_size 0, e.g. "
                             "DistilBERT): call it without token_type_ids")
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.embedding[...][0]
            else:
                x = x + self.token_type(token_type_ids)
        x = self.dropout(self.norm(x), rngs=rngs)
        return x if self.projection is None else self.projection(x)


Layer = nn.PostLNLayer


class BertEncoder(nnx.Module):
    """Token ids (B, S), padding mask (B, S) [, token types (B, S)] -> hidden (B, S, H);
    (B, 1, H) with ``first_token_only`` (``zoo.nn.run_layers``)."""

    FIRST_TOKEN_ONLY = True  # accepts first_token_only= (zoo.model.Model.__call__)

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_layers)])

    def token_embeddings(self) -> nnx.Param:
        """The (vocab_size, embedding_size) word-embedding table (read and written by
        ``zoo.distill.transfer_embeddings``)."""
        return self.embeddings.word.embedding

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None,
                 first_token_only: bool = False):
        length = input_ids.shape[-1]
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds the model's "
                f"{self.config.max_position_embeddings} positions; truncate when tokenising")
        x = self.embeddings(input_ids, token_type_ids, rngs=rngs)
        return nn.run_layers(self.layers, x, attention_mask, rngs=rngs,
                             first_token_only=first_token_only)
