"""Task heads, architecture-neutral: they read an encoder's hidden states (B, S, hidden_size).

A head takes what it needs from the encoder's config — ``hidden_size``, ``vocab_size``,
``layer_norm_eps``, and two small style fields:

- ``classifier_style``: how position 0 becomes class logits.
  ``"relu-norm"`` (the M2L original): Linear -> ReLU -> LayerNorm -> Linear;
  ``"tanh"`` (BERT's pooler): Linear -> tanh -> Dropout -> Linear;
  ``"relu"`` (DistilBERT's pre-classifier): Linear -> ReLU -> Dropout -> Linear;
  ``"gelu"`` (ELECTRA's classification head): Linear -> GELU -> Dropout -> Linear.
- ``mlm_activation``: ``"relu"`` (M2L) or ``"gelu"`` (BERT) between the MLM head's
  dense layer and its LayerNorm.

The registered heads are defined at the bottom: ``mlm``, ``classifier`` and ``sst2``
(classification), ``regressor`` (one score from the classifier's layers) and
``token-classifier`` (a tag per position). A head's ``kind`` names its task (``zoo.tasks``).
"""

from __future__ import annotations

import jax
from flax import nnx

from zoo.nn import Dropout, layer_norm
from zoo.registry import HeadSpec, register_head

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "tanh": jax.nn.tanh,
}
CLASSIFIER_STYLES = ("relu-norm", "tanh", "relu", "gelu")


class MLMHead(nnx.Module):
    """Linear -> activation -> LayerNorm -> Linear(vocab) at each position (no weight tying)."""

    def __init__(self, hidden_size: int, vocab_size: int, *, activation: str = "relu",
                 epsilon: float = 1e-5, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLM activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.dense = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.norm = layer_norm(hidden_size, epsilon, rngs)
        self.decoder = nnx.Linear(hidden_size, vocab_size, rngs=rngs)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """(..., hidden) -> (..., vocab). Pass only masked positions to save the vocab matmul."""
        return self.decoder(self.norm(ACTIVATIONS[self.activation](self.dense(hidden))))


class ClassificationHead(nnx.Module):
    """Position 0 (``[CLS]``) -> class logits, in one of ``CLASSIFIER_STYLES``.

    The M2L original ran its first three layers on every position and then took position
    0; they act position-wise, so running them on position 0 alone gives identical numbers.
    """

    def __init__(self, hidden_size: int, num_classes: int, *, style: str = "relu-norm",
                 epsilon: float = 1e-5, dropout: float = 0.1, rngs: nnx.Rngs,
                 min_outputs: int = 2):
        if num_classes < min_outputs:
            raise ValueError(f"num_classes must be >= {min_outputs}, got {num_classes}")
        if style not in CLASSIFIER_STYLES:
            raise ValueError(f"classifier style {style!r}: expected one of {CLASSIFIER_STYLES}")
        self.num_classes = num_classes
        self.style = style
        self.dense = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        if style == "relu-norm":
            self.norm = layer_norm(hidden_size, epsilon, rngs)
        else:
            self.dropout = Dropout(dropout)
        self.classifier = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.dense(hidden[:, 0])
        if self.style == "relu-norm":
            x = self.norm(jax.nn.relu(x))
        else:
            x = self.dropout(ACTIVATIONS[self.style](x), rngs=rngs)
        return self.classifier(x)


class TokenClassificationHead(nnx.Module):
    """Every position -> tag logits: Dropout -> Linear (BERT's token-classification head)."""

    def __init__(self, hidden_size: int, num_classes: int, *, dropout: float = 0.1,
                 rngs: nnx.Rngs):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 tags, got {num_classes}")
        self.num_classes = num_classes
        self.dropout = Dropout(dropout)
        self.classifier = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    def __call__(self, hidden: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.classifier(self.dropout(hidden, rngs=rngs))


# How head parameters split over a mesh's ``model`` axis (see zoo/sharding.py): the MLM
# decoder (hidden x vocabulary, the largest matrix of a small model) by vocabulary columns.
PARTITION_RULES = (
    (r"^head/decoder/kernel$", (None, "model")),
    (r"^head/decoder/bias$", ("model",)),
)


def mlm_head(cfg, *, num_classes=None, rngs: nnx.Rngs) -> MLMHead:
    return MLMHead(cfg.hidden_size, cfg.vocab_size, activation=cfg.mlm_activation,
                   epsilon=cfg.layer_norm_eps, rngs=rngs)


def classification_head(cfg, *, num_classes: int, rngs: nnx.Rngs) -> ClassificationHead:
    return ClassificationHead(cfg.hidden_size, num_classes, style=cfg.classifier_style,
                              epsilon=cfg.layer_norm_eps, dropout=cfg.classifier_dropout,
                              rngs=rngs)


def regression_head(cfg, *, num_classes=None, rngs: nnx.Rngs) -> ClassificationHead:
    """The classifier's layers with one output: a score per text or pair."""
    return ClassificationHead(cfg.hidden_size, 1, style=cfg.classifier_style,
                              epsilon=cfg.layer_norm_eps, dropout=cfg.classifier_dropout,
                              rngs=rngs, min_outputs=1)


def token_classification_head(cfg, *, num_classes: int, rngs: nnx.Rngs
                              ) -> TokenClassificationHead:
    return TokenClassificationHead(cfg.hidden_size, num_classes,
                                   dropout=cfg.classifier_dropout, rngs=rngs)


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
