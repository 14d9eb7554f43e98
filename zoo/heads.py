"""Task heads, architecture-neutral: they read an encoder's hidden states (B, S, hidden_size).

A head takes what it needs from the encoder's config — ``hidden_size``, ``vocab_size``,
``layer_norm_eps``, and a few style fields (each with a default, so a family sets only
what differs):

- ``classifier_style``: how the pooled state becomes class logits.
  ``"tanh"`` (BERT's pooler, RoBERTa's head): Linear -> tanh -> Dropout -> Linear;
  ``"relu"`` (DistilBERT's pre-classifier), ``"gelu"`` (ELECTRA, DeBERTa): the same with
  that activation; ``"<act>-norm"`` (the M2L original ``relu-norm``, ModernBERT's
  ``gelu-norm``): Linear -> act -> LayerNorm -> Dropout -> Linear.
- ``classifier_pooling``: ``"cls"`` (position 0, default) or ``"mean"`` (over real tokens).
- ``head_bias`` / ``norm_bias``: whether the head's dense layer / LayerNorm has a bias
  (default True; ModernBERT has neither).
- ``token_classifier_style``: None (Dropout -> Linear at every position, default) or a
  classifier style applied at every position first (ModernBERT).
- ``mlm_activation``: between the MLM head's dense layer and its LayerNorm;
  ``decoder_bias``: whether its output layer has a bias (default True).

The registered heads are defined at the bottom: ``mlm``, ``classifier`` and ``sst2``
(classification), ``regressor`` (one score from the classifier's layers) and
``token-classifier`` (a tag per position). A head's ``kind`` names its task (``zoo.tasks``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.nn import ACTIVATIONS, Dropout, layer_norm
from zoo.registry import HeadSpec, register_head

CLASSIFIER_STYLES = (*ACTIVATIONS, *(f"{a}-norm" for a in ACTIVATIONS))
POOLINGS = ("cls", "mean")


class MLMHead(nnx.Module):
    """Linear -> activation -> LayerNorm -> Linear(vocab) at each position (no weight tying)."""

    def __init__(self, hidden_size: int, vocab_size: int, *, activation: str = "relu",
                 epsilon: float = 1e-5, rngs: nnx.Rngs, dense_bias: bool = True,
                 norm_bias: bool = True, decoder_bias: bool = True):
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLM activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.dense = nnx.Linear(hidden_size, hidden_size, use_bias=dense_bias, rngs=rngs)
        self.norm = layer_norm(hidden_size, epsilon, rngs, use_bias=norm_bias)
        self.decoder = nnx.Linear(hidden_size, vocab_size, use_bias=decoder_bias, rngs=rngs)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        """(..., hidden) -> (..., vocab). Pass only masked positions to save the vocab matmul."""
        return self.decoder(self.norm(ACTIVATIONS[self.activation](self.dense(hidden))))


def _pre_layers(head: nnx.Module, hidden_size: int, style: str, *, epsilon: float,
                dropout: float, rngs: nnx.Rngs, dense_bias: bool, norm_bias: bool) -> None:
    """Give ``head`` the layers ``style`` puts before the output layer: ``dense``, then
    ``norm`` (``-norm`` styles, as the M2L original and ModernBERT: no dropout there) or
    ``dropout`` (the others)."""
    if style not in CLASSIFIER_STYLES:
        raise ValueError(f"classifier style {style!r}: expected one of {CLASSIFIER_STYLES}")
    head.style = style
    head.activation = style.removesuffix("-norm")
    head.dense = nnx.Linear(hidden_size, hidden_size, use_bias=dense_bias, rngs=rngs)
    if style.endswith("-norm"):
        head.norm = layer_norm(hidden_size, epsilon, rngs, use_bias=norm_bias)
    else:
        head.dropout = Dropout(dropout)


def _apply_pre_layers(head: nnx.Module, x: jax.Array, rngs) -> jax.Array:
    x = ACTIVATIONS[head.activation](head.dense(x))
    return head.norm(x) if head.style.endswith("-norm") else head.dropout(x, rngs=rngs)


class ClassificationHead(nnx.Module):
    """The pooled state (position 0, or the mean over real tokens) -> class logits, in one
    of ``CLASSIFIER_STYLES``.

    The M2L original ran its first three layers on every position and then took position
    0; they act position-wise, so running them on position 0 alone gives identical numbers.
    """

    def __init__(self, hidden_size: int, num_classes: int, *, style: str = "relu-norm",
                 epsilon: float = 1e-5, dropout: float = 0.1, rngs: nnx.Rngs,
                 min_outputs: int = 2, pooling: str = "cls", dense_bias: bool = True,
                 norm_bias: bool = True):
        if num_classes < min_outputs:
            raise ValueError(f"num_classes must be >= {min_outputs}, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"classifier pooling {pooling!r}: expected one of {POOLINGS}")
        self.num_classes = num_classes
        self.pooling = pooling
        _pre_layers(self, hidden_size, style, epsilon=epsilon, dropout=dropout, rngs=rngs,
                    dense_bias=dense_bias, norm_bias=norm_bias)
        self.classifier = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    @property
    def reads_first_token(self) -> bool:
        """Whether only position 0 of the hidden states is read (``zoo.model.Model``)."""
        return self.pooling == "cls"

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        if self.pooling == "mean":
            if attention_mask is None:
                raise ValueError("a mean-pooling classifier needs the attention_mask")
            weights = attention_mask.astype(hidden.dtype)[..., None]
            x = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        else:
            x = hidden[:, 0]
        return self.classifier(_apply_pre_layers(self, x, rngs))


class TokenClassificationHead(nnx.Module):
    """Every position -> tag logits: Dropout -> Linear (BERT's token-classification head),
    after a classifier style's layers when one is given (ModernBERT's)."""

    def __init__(self, hidden_size: int, num_classes: int, *, dropout: float = 0.1,
                 rngs: nnx.Rngs, style: str | None = None, epsilon: float = 1e-5,
                 dense_bias: bool = True, norm_bias: bool = True):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 tags, got {num_classes}")
        self.num_classes = num_classes
        self.transform = style is not None
        if style is not None:
            _pre_layers(self, hidden_size, style, epsilon=epsilon, dropout=0.0, rngs=rngs,
                        dense_bias=dense_bias, norm_bias=norm_bias)
        self.dropout = Dropout(dropout)
        self.classifier = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        if self.transform:
            hidden = _apply_pre_layers(self, hidden, rngs)
        return self.classifier(self.dropout(hidden, rngs=rngs))


# How head parameters split over a mesh's ``model`` axis (see zoo/sharding.py): the MLM
# decoder (hidden x vocabulary, the largest matrix of a small model) by vocabulary columns.
PARTITION_RULES = (
    (r"^head/decoder/kernel$", (None, "model")),
    (r"^head/decoder/bias$", ("model",)),
)


def _style(cfg) -> dict:
    """The head options an encoder config sets (defaults for what it leaves out)."""
    return {"epsilon": cfg.layer_norm_eps, "dense_bias": getattr(cfg, "head_bias", True),
            "norm_bias": getattr(cfg, "norm_bias", True)}


def mlm_head(cfg, *, num_classes=None, rngs: nnx.Rngs) -> MLMHead:
    return MLMHead(cfg.hidden_size, cfg.vocab_size, activation=cfg.mlm_activation, rngs=rngs,
                   decoder_bias=getattr(cfg, "decoder_bias", True), **_style(cfg))


def classification_head(cfg, *, num_classes: int, rngs: nnx.Rngs, min_outputs: int = 2
                        ) -> ClassificationHead:
    return ClassificationHead(cfg.hidden_size, num_classes, style=cfg.classifier_style,
                              dropout=cfg.classifier_dropout, rngs=rngs,
                              min_outputs=min_outputs,
                              pooling=getattr(cfg, "classifier_pooling", "cls"), **_style(cfg))


def regression_head(cfg, *, num_classes=None, rngs: nnx.Rngs) -> ClassificationHead:
    """The classifier's layers with one output: a score per text or pair."""
    return classification_head(cfg, num_classes=1, rngs=rngs, min_outputs=1)


def multi_label_head(cfg, *, num_classes: int, rngs: nnx.Rngs) -> ClassificationHead:
    """The classifier's layers, one logit per label (read by a sigmoid each)."""
    return classification_head(cfg, num_classes=num_classes, rngs=rngs, min_outputs=1)


def token_classification_head(cfg, *, num_classes: int, rngs: nnx.Rngs
                              ) -> TokenClassificationHead:
    return TokenClassificationHead(cfg.hidden_size, num_classes, dropout=cfg.classifier_dropout,
                                   rngs=rngs, style=getattr(cfg, "token_classifier_style", None),
                                   **_style(cfg))


register_head(HeadSpec(
    name="mlm",
    kind="mlm",
    description="Masked-LM head: Linear -> activation -> LayerNorm -> Linear(vocab) per position.",
    factory=mlm_head,
))

register_head(HeadSpec(
    name="classifier",
    kind="classification",
    description="Generic [CLS] classification head in the encoder's style; pass num_classes.",
    factory=classification_head,
    num_classes=2,
))

register_head(HeadSpec(
    name="sst2",
    kind="classification",
    description="SST-2 sentiment: the [CLS] classification head with 2 classes.",
    factory=classification_head,
    num_classes=2,
    labels=("negative", "positive"),
))

register_head(HeadSpec(
    name="multi-label-classifier",
    kind="multi-label-classification",
    description="Multi-label classification: the [CLS] head in the encoder's style, one "
                "sigmoid per label (any subset of the labels per text).",
    factory=multi_label_head,
    num_classes=2,
))

register_head(HeadSpec(
    name="regressor",
    kind="regression",
    description="Regression: the [CLS] head in the encoder's style with one output (e.g. STS-B).",
    factory=regression_head,
    num_classes=1,
))

register_head(HeadSpec(
    name="token-classifier",
    kind="token-classification",
    description="Token classification (e.g. NER): Dropout -> Linear(tags) at every position.",
    factory=token_classification_head,
    num_classes=2,
))


# ------------------------------------------------------------------------------ embeddings


class EmbeddingHead(nnx.Module):
    """Sentence embeddings (the ``sentence-embedding`` task's head): the hidden states pooled
    over real tokens ("mean", "cls" or "max", as ``zoo.embeddings``), L2-normalised when
    ``normalize``. It has no parameters; ``model.encode`` on a model with this head pools
    the way it does (``embedding_defaults``)."""

    def __init__(self, pooling: str = "mean", normalize: bool = True):
        from zoo.embeddings import POOLINGS

        if pooling not in POOLINGS:
            raise ValueError(f"embedding pooling {pooling!r}: expected one of {sorted(POOLINGS)}")
        self.pooling = pooling
        self.normalize = bool(normalize)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        from zoo.embeddings import POOLINGS

        if attention_mask is None:
            raise ValueError("an embedding head needs the attention_mask")
        vectors = POOLINGS[self.pooling](hidden.astype(jnp.float32), attention_mask)
        if self.normalize:  # as torch.nn.functional.normalize (eps 1e-12)
            norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
            vectors = vectors / jnp.maximum(norm, 1e-12)
        return vectors

    def embedding_defaults(self) -> dict:
        return {"pooling": self.pooling, "normalize": self.normalize}


def embedding_style(cfg) -> dict:
    """Pooling and normalisation of the preset(s) with this encoder config that name them
    (``EncoderSpec.embedding``; all-MiniLM-L6-v2: mean, normalised); else mean, normalised."""
    from zoo.registry import get_encoder, list_models

    styles = set()
    for name in list_models():
        spec = get_encoder(name)
        if spec.embedding and type(spec.config) is type(cfg) and spec.config == cfg:
            styles.add((spec.embedding.get("pooling", "mean"),
                        bool(spec.embedding.get("normalize", True))))
    pooling, normalize = styles.pop() if len(styles) == 1 else ("mean", True)
    return {"pooling": pooling, "normalize": normalize}


def embedding_head(cfg, *, num_classes=None, rngs: nnx.Rngs) -> EmbeddingHead:
    return EmbeddingHead(**embedding_style(cfg))


register_head(HeadSpec(
    name="embedder",
    kind="sentence-embedding",
    description="Sentence embeddings: pooled over real tokens (the preset's pooling, else "
                "mean), L2-normalised; no parameters.",
    factory=embedding_head,
))
