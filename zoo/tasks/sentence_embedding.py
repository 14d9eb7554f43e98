"""Sentence embeddings trained as sentence-transformers trains them: a bi-encoder.

Every example is two texts, each encoded on its own (``input_ids`` / ``pair_input_ids``, not
joined as a cross-encoder pair) into the ``embedder`` head's pooled vectors u and v. The loss
follows the data:

- **scored pairs** (STS-B): sentence-transformers' ``CosineSimilarityLoss``, the mean squared
  error between cos(u, v) and the gold score. Scores must lie in [-1, 1] (the range of a
  cosine); a dataset that declares its range (GLUE STS-B: 0-5) is mapped onto 0..1, as
  sentence-transformers' STS-B example divides by 5;
- **unscored (anchor, positive) pairs**: ``MultipleNegativesRankingLoss``, the cross-entropy
  of ``SCALE`` · cos(anchor_i, positive_j) over the batch's positives, the diagonal (j = i)
  the target: every other positive of the batch is a negative. Filler rows are neither
  anchors nor candidates.

Metrics: on scored pairs, Pearson (exact over the split) and Spearman (``finalize``) of the
cosine similarities against the gold scores, and the loss (MSE); on unscored pairs, the
in-batch retrieval accuracy (the anchor's own positive ranked first among the batch's) and the
loss. The best checkpoint is the one with the highest dev Spearman, or with the lowest dev
loss when the dev pairs have no scores.
"""

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from zoo.tasks.base import Task, rngs_for, spearman, weighted_mean
from zoo.tasks.regression import Pearson, score_report

SCALE = 20.0  # MultipleNegativesRankingLoss's default: cosines times 20 before the softmax
# What a score may be when the dataset declares no range of its own: a cosine similarity.
SCORE_BOUNDS = (-1.0, 1.0)


@flax.struct.dataclass
class CosinePearson(Pearson):
    """Pearson correlation of cos(u, v) with the gold scores, over the scored rows only;
    None (left out of the results) for a split without scores."""

    @classmethod
    def from_model_output(cls, similarity, targets, scored, **_) -> "CosinePearson":
        return super().from_model_output(similarity, targets, scored)

    def compute(self):
        return None if float(self.stats[0]) == 0 else super().compute()


@flax.struct.dataclass
class InBatchAccuracy(metrics.Average):
    """Share of anchors whose own positive scores highest among the batch's positives;
    None (left out) for a split of scored pairs."""

    @classmethod
    def from_model_output(cls, correct, ranked, **_) -> "InBatchAccuracy":
        return super().from_model_output(correct.astype(jnp.float32), ranked)

    def compute(self):
        return None if int(self.count) == 0 else super().compute()


# (This module has no ``from __future__ import annotations``: clu reads the metric classes
# from the Collection's annotations.)
@flax.struct.dataclass
class EmbeddingMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: InBatchAccuracy
    pearson: CosinePearson

    def compute(self) -> dict:
        """The metrics the split's kind of pairs gives (scored: pearson; unscored: accuracy)."""
        return {k: v for k, v in super().compute().items() if v is not None}


def unit(vectors: jax.Array) -> jax.Array:
    """Rows scaled to length 1 (as torch's ``normalize``, eps 1e-12)."""
    return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def ranking_loss(anchors: jax.Array, positives: jax.Array, weights: jax.Array,
                 scale: float = SCALE) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy per anchor, whether its own positive ranks first): the softmax over
    ``scale`` · cos(anchor_i, positive_j) of the batch's real positives j, target j = i."""
    scores = scale * unit(anchors) @ unit(positives).T  # (B, B)
    scores = jnp.where(weights[None, :] > 0, scores, -1e9)  # filler rows are no candidates
    targets = jnp.arange(scores.shape[0])
    per_example = optax.softmax_cross_entropy_with_integer_labels(scores, targets)
    return per_example, jnp.argmax(scores, -1) == targets


def cosine_loss(u: jax.Array, v: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error per pair between cos(u, v) and its target score."""
    return (jnp.sum(unit(u) * unit(v), -1) - targets.astype(jnp.float32)) ** 2


def _scored(batch) -> bool:
    """Whether the batch's pairs carry scores: float labels (a split without labels gets the
    batcher's integer zeros). Static under jit, so each kind of split compiles its own loss."""
    return bool(jnp.issubdtype(batch["labels"].dtype, jnp.floating))


class SentenceEmbedding(Task):
    name = "sentence-embedding"
    output_name = "sentence_embedding"  # pooled and normalised in the graph
    hf_class = "Model"  # + sentence-transformers' pooling files
    head = "embedder"
    metrics = EmbeddingMetrics
    best_metric = "spearman"
    higher_is_better = True
    label_kind = "score"
    labels_optional = True
    needs_pairs = True
    collect = ("similarity",)

    def bind(self, masking=None, data=None, **_) -> "SentenceEmbedding":
        """Dev pairs without scores have no Spearman: the best checkpoint is then the one
        with the lowest dev loss."""
        if data is None or data.splits["validation"].labels is not None:
            return self
        return SentenceEmbedding(best_metric="loss", higher_is_better=False)

    def forward(self, model, batch, key):
        if "pair_input_ids" not in batch:
            raise ValueError("the sentence-embedding task needs both texts of each pair "
                             "(pair_input_ids, pair_attention_mask in the batch)")
        rows = batch["input_ids"].shape[0]
        # Both texts in one forward of 2B rows (one bucket length): anchors, then positives.
        ids = jnp.concatenate([batch["input_ids"], batch["pair_input_ids"]])
        mask = jnp.concatenate([batch["attention_mask"], batch["pair_attention_mask"]])
        vectors = model(ids, mask, rngs=rngs_for(key)).astype(jnp.float32)
        u, v = vectors[:rows], vectors[rows:]
        weights = batch["weights"]
        real = weights > 0
        similarity = jnp.sum(unit(u) * unit(v), -1)
        zeros = jnp.zeros_like(similarity)
        if _scored(batch):
            targets = batch["labels"].astype(jnp.float32)
            per_example = cosine_loss(u, v, targets)
            update = EmbeddingMetrics.single_from_model_output(
                loss=per_example, mask=real, correct=zeros, ranked=jnp.zeros_like(real),
                similarity=similarity, targets=targets, scored=real)
        else:
            per_example, correct = ranking_loss(u, v, weights)
            update = EmbeddingMetrics.single_from_model_output(
                loss=per_example, mask=real, correct=correct, ranked=real,
                similarity=similarity, targets=zeros, scored=jnp.zeros_like(real))
        return weighted_mean(per_example, weights), update, {"similarity": similarity}

    def finalize(self, collected, reference, labels) -> dict[str, float]:
        similarity = np.asarray(collected["similarity"], np.float64)
        return {"spearman": spearman(similarity, np.asarray(reference, np.float64))}

    # -- data ----------------------------------------------------------------------

    def encode_examples(self, tokenizer, examples, max_len: int):
        """Both texts of every pair tokenised on their own (``Encoded.pair``)."""
        import dataclasses

        from zoo.errors import InvalidArgumentError
        from zoo.text import encode_texts

        if examples.pairs is None:
            raise InvalidArgumentError(f"{examples.source}: the {self.name} task needs two texts "
                                       "per example; pass --text-pair-column")
        first = encode_texts(tokenizer, examples.texts, None, max_len)
        second = encode_texts(tokenizer, examples.pairs, None, max_len)
        return [dataclasses.replace(a, pair=b) for a, b in zip(first, second)], examples.labels

    def prepare_scores(self, values: list[float], declared: tuple[float, float] | None,
                       where: Sequence[str]) -> list[float]:
        """Scores as cosine targets: a declared range mapped onto 0..1, else checked to lie
        in [-1, 1]."""
        if declared is not None:
            low, high = declared
            return [(x - low) / (high - low) for x in values]
        low, high = SCORE_BOUNDS
        bad = next((i for i, x in enumerate(values) if not low <= x <= high), None)
        if bad is not None:
            from zoo.data import DataFormatError

            raise DataFormatError(
                f"{where[bad]}: score {values[bad]:g} lies outside [-1, 1], the range of a "
                "cosine similarity; rescale the scores (e.g. 0-5 similarity divided by 5)")
        return values

    def output_shape(self, batch, length, config, size) -> tuple:
        return (batch, config.hidden_size)

    # -- inference -------------------------------------------------------------------

    def encode_items(self, tokenizer, items, max_len: int) -> list:
        from zoo.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "an embedding model gives vectors, not predictions: use model.encode(texts) or "
            "model.search(queries, corpus), or `python -m zoo embed RUN TEXT...`")

    # -- reports ---------------------------------------------------------------------

    def report(self, run_dir, collected, reference, labels, title: str) -> dict:
        return score_report(run_dir, collected["similarity"], reference, title,
                            what="cosine similarity of the two texts' embeddings against the "
                                 "gold score")
