"""Masked-LM pre-training: BERT-style masking and the loss over masked positions only.

Filler rows (``batch.weights == 0``, used to keep batch shapes fixed) never count.
"""


import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import optax
from clu import metrics

from zoo.tasks.base import Task, rngs_for as _rngs


@flax.struct.dataclass
class MLMMetrics(metrics.Collection):
    masked_accuracy: metrics.Average.from_output("correct")
    loss: metrics.Average.from_output("loss")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """BERT-style masking: 15 % of real, non-special tokens; 80 % [MASK], 10 % random, 10 % kept."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    rate: float = 0.15

    def capacity(self, length: int) -> int:
        """Masked positions scored per row of ``length`` tokens: the expected count plus two
        standard deviations of the binomial draw (a row past it has its extra draws left
        unmasked, about 2 % of rows)."""
        mean = self.rate * length
        spread = 2.0 * math.sqrt(length * self.rate * (1.0 - self.rate))
        return max(1, min(length, math.ceil(mean + spread)))


def mask_tokens(batch, key, cfg: MaskingConfig):
    """Returns (corrupted ids (B, S), positions (B, P), target ids (B, P), weights (B, P)).

    Positions are chosen per row, with a fixed capacity P per row: the masked-LM head then
    runs over B x P hidden states instead of B x S (the 25,000-way output layer is the
    costliest part of a small model), and every row's work stays on the device that holds
    the row, so a batch split over devices needs no gather of hidden states.
    """
    ids = batch["input_ids"]
    _, s = ids.shape
    k_select, k_kind, k_random = jax.random.split(key, 3)
    maskable = (batch["attention_mask"] > 0) & (batch["weights"][:, None] > 0)
    for special in cfg.special_ids:
        maskable &= ids != special
    drawn = maskable & (jax.random.uniform(k_select, ids.shape) < cfg.rate)
    capacity = cfg.capacity(s)
    chosen = drawn & (jnp.cumsum(drawn, axis=1) <= capacity)  # what is masked is scored
    positions = jax.vmap(lambda row: jnp.nonzero(row, size=capacity, fill_value=0)[0])(chosen)
    valid = jnp.arange(capacity)[None, :] < jnp.sum(chosen, axis=1, keepdims=True)
    kind = jax.random.uniform(k_kind, ids.shape)
    # A random replacement is any non-special id: draw from vocab - #specials ids, then step
    # over each special at or below the draw (specials may sit anywhere in the vocabulary).
    specials = sorted(set(cfg.special_ids))
    random_ids = jax.random.randint(k_random, ids.shape, 0, cfg.vocab_size - len(specials))
    for special in specials:
        random_ids = random_ids + (random_ids >= special)
    corrupted = jnp.where(chosen & (kind < 0.8), cfg.mask_id, ids)
    corrupted = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, corrupted)
    targets = jnp.take_along_axis(ids, positions, axis=1)
    return corrupted, positions, targets, valid.astype(jnp.float32)


def make_mlm_forward(cfg: MaskingConfig):
    def mlm_forward(model, batch, key):
        # Masking needs randomness even in evaluation: derive it from a fixed key then.
        mask_key = jax.random.key(0) if key is None else jax.random.fold_in(key, 1)
        corrupted, positions, targets, weights = mask_tokens(batch, mask_key, cfg)
        hidden = model.encoder(corrupted, batch["attention_mask"], rngs=_rngs(key))
        hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # (B, P, H)
        logits = model.head(hidden).astype(jnp.float32)
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        loss = jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        update = MLMMetrics.single_from_model_output(
            correct=correct.reshape(-1), loss=per_token.reshape(-1),
            mask=weights.reshape(-1) > 0)
        return loss, update, {}

    return mlm_forward


class MaskedLM(Task):
    """Masked-LM pre-training; ``bind(masking=MaskingConfig(...))`` gives the trainable task
    (the mask id and special ids come from the run's tokenizer)."""

    name = "mlm"
    head = "mlm"
    metrics = MLMMetrics
    best_metric = "loss"
    higher_is_better = False

    def __init__(self, masking: MaskingConfig | None = None):
        super().__init__()
        self.masking = masking

    def output_shape(self, batch, length, config, size) -> tuple:
        return (batch, length, config.vocab_size)

    def bind(self, masking: MaskingConfig | None = None, **_) -> "MaskedLM":
        if masking is None:
            raise ValueError("the MLM task needs a MaskingConfig (mask id, vocab, special ids)")
        return MaskedLM(masking)

    def forward(self, model, batch, key):
        if self.masking is None:
            raise ValueError("the MLM task needs a MaskingConfig: use task.bind(masking=...)")
        return make_mlm_forward(self.masking)(model, batch, key)
