"""An encoder plus an optional head: the object ``zoo.load`` returns."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from zoo.errors import InvalidArgumentError
from zoo.inference import Prediction, predict
from zoo.nn import count_params, in_training_mode, set_dropout_rate  # noqa: F401 (re-exported)
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
    # The length the model was trained at (inputs are truncated to it); None: config.max_len.
    max_len: int | None = None

    @property
    def input_len(self) -> int:
        """Tokens per input at most: the trained length, within the encoder's positions."""
        return min(self.max_len or self.config.max_len, self.config.max_len)

    def to_dict(self) -> dict:
        return {
            "encoder": self.encoder,
            "config": self.config.to_dict(),
            "head": self.head,
            "head_kind": self.head_kind,
            "num_classes": self.num_classes,
            "labels": list(self.labels) if self.labels else None,
            "max_len": self.max_len,
        }


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

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *,
                 rngs: nnx.Rngs | None = None):
        """Head outputs for a batch of token ids.

        Called eagerly (concrete arrays), the inputs are checked first: 2-D, the same shape,
        integer dtype, ids in ``[0, vocab_size)``, mask values 0/1, at most ``max_len``
        positions. Inside ``jax.jit`` (tracers) nothing is checked and valid inputs are the
        caller's duty: an out-of-range id there gives NaN or a wrapped-around row, silently.
        """
        if not isinstance(input_ids, jax.core.Tracer):
            check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        # A head that reads position 0 alone lets an encoder that can skip the other
        # positions in its last block do so (``zoo.nn.run_layers``): same numbers, less work.
        options = {"first_token_only": True} if (
            getattr(self.head, "reads_first_token", False)
            and getattr(self.encoder, "FIRST_TOKEN_ONLY", False)) else {}
        if token_type_ids is not None:
            hidden = self.encoder(input_ids, attention_mask, token_type_ids, rngs=rngs,
                                  **options)
        else:
            hidden = self.encoder(input_ids, attention_mask, rngs=rngs, **options)
        if self.head is None:
            return hidden
        return self.head(hidden, rngs=rngs, attention_mask=attention_mask)

    @property
    def partition_rules(self) -> tuple:
        """Rules that split parameters over a mesh's ``model`` axis (``zoo/sharding.py``): the
        encoder config's ``partition_rules`` (kept beside its family's modeling code), then
        the heads'."""
        from zoo.heads import PARTITION_RULES

        return tuple(getattr(self.config, "partition_rules", ())) + PARTITION_RULES

    @property
    def config(self):
        return self.info.config

    def predict(self, texts, batch_size: int = 64) -> list:
        """The head's task's prediction for each item (a model with a tokenizer only).

        Items are texts, or ``(text, text_pair)`` tuples for pair tasks; a token classifier
        also takes lists of words. Classification gives ``Prediction`` (label, probability),
        regression ``Score``, token classification ``Tagged`` (entities with character spans).
        """
        return predict(self, texts, batch_size=batch_size)

    def encode(self, texts, *, pooling: str | None = None, normalize: bool | None = None,
               batch_size: int = 64, progress: bool = False):
        """Sentence embeddings (N, hidden_size), float32, in input order: hidden states
        pooled over real tokens ("mean", "cls" or "max"), L2-normalised by default; the
        preset's defaults where it names them (``zoo.embeddings``)."""
        from zoo.embeddings import encode

        return encode(self, texts, pooling=pooling, normalize=normalize,
                      batch_size=batch_size, progress=progress)

    def search(self, queries, corpus, top_k: int = 5, **options):
        """For each query, the ``top_k`` corpus texts by cosine similarity (``Hit``s)."""
        from zoo.embeddings import search

        return search(self, queries, corpus, top_k, **options)

    @property
    def task(self):
        """The registered task of this model's head (``zoo.tasks``), None without a head."""
        from zoo.tasks import get_task

        return None if self.info.head_kind is None else get_task(self.info.head_kind)


def check_inputs(config: Any, input_ids, attention_mask, token_type_ids=None) -> None:
    """Raise ``InvalidArgumentError`` for inputs a model cannot read correctly.

    Cheap (a min and a max per array): garbage ids otherwise turn into NaN logits or, for -1,
    silently into the last embedding row.
    """
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        arrays["token_type_ids"] = token_type_ids
    shape = None
    for name, value in arrays.items():
        if isinstance(value, jax.core.Tracer):
            return  # mixed concrete/traced inputs: under a transform, the caller's duty
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            value = np.asarray(value)
            dtype = value.dtype
        if not (np.issubdtype(dtype, np.integer) or (name == "attention_mask" and dtype == bool)):
            raise InvalidArgumentError(f"{name} must hold integers, got dtype {dtype}")
        if np.ndim(value) != 2:
            raise InvalidArgumentError(
                f"{name} must be 2-D (batch, sequence), got shape {tuple(np.shape(value))}")
        if shape is None:
            shape = tuple(np.shape(value))
        elif tuple(np.shape(value)) != shape:
            raise InvalidArgumentError(
                f"{name} has shape {tuple(np.shape(value))} but input_ids has {shape}")
        arrays[name] = value
    if 0 in shape:
        raise InvalidArgumentError(f"input_ids is empty (shape {shape})")
    max_len = getattr(config, "max_len", None)
    if max_len is not None and shape[1] > max_len:
        raise InvalidArgumentError(f"sequence length {shape[1]} exceeds the model's max_len "
                                   f"{max_len}; truncate when tokenising")
    limits = {"input_ids": config.vocab_size, "attention_mask": 2,
              "token_type_ids": getattr(config, "type_vocab_size", None) or None}
    for name, value in arrays.items():
        low, high = int(value.min()), int(value.max())
        limit = limits[name]
        if low < 0 or (limit is not None and high >= limit):
            span = f"[0, {limit})" if limit is not None else ">= 0"
            raise InvalidArgumentError(f"{name} holds values in [{low}, {high}]; they must lie "
                                       f"in {span}")


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
    info = model_info(encoder, config, head, num_classes)
    head_module = None
    if head is not None:
        head_module = build_head(head, config, num_classes=info.num_classes, seed=seed)
    model = ZooModel(enc, head_module, info)
    model.eval()
    return model


class _ShapeOnlyStream(nnx.RngStream):
    """A key stream for shape-only builds: the same key every call, its counter untouched.

    Under ``nnx.eval_shape`` each ordinary stream call writes its counter, and flax compares
    the new value's ``sharding``, which jax answers for a tracer by walking the whole trace
    so far: quadratic in the model's size (0.45 s of a 0.6 s RoBERTa-base build). A
    shape-only build never uses the values, so the keys need not differ.
    """

    def __call__(self) -> jax.Array:
        return jax.random.fold_in(self.key[...], 0)


def shape_only_rngs() -> nnx.Rngs:
    """``nnx.Rngs`` for a build under ``nnx.eval_shape`` whose values are thrown away."""
    rngs = nnx.Rngs(params=0)
    rngs.params = _ShapeOnlyStream(jax.random.key(0), tag="params")
    return rngs


@functools.lru_cache(maxsize=16)
def _abstract_encoder_parts(encoder: str, config: Any):
    abstract = nnx.eval_shape(lambda: get_encoder(encoder).build(shape_only_rngs(), config))
    return nnx.split(abstract)


def abstract_encoder(encoder: str, config: Any | None = None) -> nnx.Module:
    """A new shape-only encoder (no initialisation cost after the first call per config)."""
    graph, state = _abstract_encoder_parts(encoder, config or get_encoder(encoder).config)
    return nnx.merge(graph, state, copy=True)  # new Variables: loads never share params


def model_info(encoder: str, config: Any, head: str | None, num_classes: int | None,
               labels: Sequence[str] | None = None) -> ModelInfo:
    """What a model with this head is (classification heads get their class count and labels)."""
    if head is None:
        return ModelInfo(encoder, config)
    from zoo.tasks import get_task

    spec = get_head(head)
    task = get_task(spec.kind)
    if not task.has_classes:
        return ModelInfo(encoder, config, head, spec.kind, task.head_size(None))
    n = num_classes or spec.num_classes
    labels = tuple(labels) if labels else spec.label_names(n)
    if len(labels) != n:
        raise ValueError(f"head {head!r}: {len(labels)} labels for {n} classes")
    return ModelInfo(encoder, config, head, spec.kind, n, labels)


def build_head(head: str, config: Any, *, num_classes: int | None, seed: int) -> nnx.Module:
    """A fresh head; its own seed stream, so it is the same whether or not the encoder is restored."""
    return get_head(head).build(config, nnx.Rngs(params=seed + 1), num_classes=num_classes)


def expected_params(encoder: str, heads: Mapping[str, int | None], *,
                    config: Any | None = None) -> dict[str, Any]:
    """Abstract (shape-only) flat params of ``encoder`` plus the named heads.

    ``heads`` maps head name -> number of classes (None for the MLM head). Converters check
    what they read against this, so a mismatch is reported before anything is written.
    """
    from zoo.checkpoint import module_params

    config = config or get_encoder(encoder).config
    expected = module_params(abstract_encoder(encoder, config), "encoder/")
    for name, num_classes in heads.items():
        head = nnx.eval_shape(lambda: build_head(name, config, num_classes=num_classes, seed=0))
        expected |= module_params(head, f"heads/{name}/")
    return expected
