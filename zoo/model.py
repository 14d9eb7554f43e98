"""An encoder plus an optional head: the object ``zoo.load`` returns."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from zoo.registry import get_encoder, get_head


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model: enough to rebuild it and to read its outputs."""

    encoder: str
    config: Any
    head: str | None = None
    head_kind: str | None = None
    num_classes: int | None = None
    labels: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        return {
            "encoder": self.encoder,
            "config": self.config.to_dict(),
            "head": self.head,
            "head_kind": self.head_kind,
            "num_classes": self.num_classes,
            "labels": list(self.labels) if self.labels else None,
        }


@dataclasses.dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    probability: float  # of the predicted label
    probabilities: dict[str, float]


class ZooModel(nnx.Module):
    """``model(input_ids, attention_mask)`` -> head outputs, or hidden states without a head.

    ``input_ids`` and ``attention_mask`` are int arrays (B, S); mask 1 = token, 0 = padding.
    Dropout is active only after ``model.train()`` and then needs ``rngs=nnx.Rngs(dropout=key)``.
    """

    def __init__(self, encoder: nnx.Module, head: nnx.Module | None, info: ModelInfo,
                 tokenizer=None):
        self.encoder = encoder
        self.head = head
        self.info = info
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer (static, never checkpointed)

    def __call__(self, input_ids, attention_mask, *, rngs: nnx.Rngs | None = None):
        hidden = self.encoder(input_ids, attention_mask, rngs=rngs)
        return hidden if self.head is None else self.head(hidden)

    @property
    def config(self):
        return self.info.config

    def predict(self, texts: str | Sequence[str], batch_size: int = 64) -> list[Prediction]:
        """Label and probability for each text (a classifier with a tokenizer only)."""
        from zoo.inference import predict

        return predict(self, texts, batch_size=batch_size)


def build_model(
    encoder: str,
    head: str | None = None,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    config: Any | None = None,
) -> ZooModel:
    """A randomly initialised model from registered names (``config`` overrides the preset)."""
    spec = get_encoder(encoder)
    config = config or spec.config
    rngs = nnx.Rngs(params=seed)
    enc = spec.build(rngs, config)
    head_module, info = None, ModelInfo(encoder, config)
    if head is not None:
        head_spec = get_head(head)
        n = num_classes or head_spec.num_classes
        head_module = build_head(head, config, num_classes=n, seed=seed)
        info = ModelInfo(
            encoder, config, head, head_spec.kind,
            n if head_spec.kind == "classification" else None,
            head_spec.label_names(n) if head_spec.kind == "classification" else None,
        )
    model = ZooModel(enc, head_module, info)
    model.eval()
    return model


def build_head(head: str, config: Any, *, num_classes: int | None, seed: int) -> nnx.Module:
    """A fresh head; its own seed stream, so it is the same whether or not the encoder is restored."""
    return get_head(head).build(config, nnx.Rngs(params=seed + 1), num_classes=num_classes)


def in_training_mode(model: nnx.Module) -> bool:
    """True when some dropout layer is active (after ``model.train()``)."""
    return any(getattr(m, "deterministic", True) is False for _, m in model.iter_modules())


def set_dropout_rate(model: nnx.Module, rate: float) -> None:
    for _, module in model.iter_modules():
        if hasattr(module, "deterministic") and hasattr(module, "rate"):
            module.rate = rate


def count_params(module: nnx.Module) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))
