"""Fast prediction for a loaded classifier: tokenise, pad to a bucket, one jitted forward.

The forward is a pure ``jax.jit`` function of (graph, state) cached per model, so a call
costs tokenisation plus one compiled program per bucket shape — no NNX graph walk.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from zoo.batching import buckets_for, pad_to_bucket
from zoo.errors import InvalidArgumentError, ZooError
from zoo.nn import in_training_mode


class NonFiniteOutputError(ZooError, FloatingPointError):
    """A model's outputs hold NaN or infinity (its weights do): never returned as an answer."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    probability: float  # of the predicted label
    probabilities: dict[str, float]


_FORWARD_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward(model):
    """(jitted probabilities(state, ids, mask), state) for ``model``, built once per model.

    The split state holds the model's own Variable objects, so in-place parameter updates
    (training, ``nnx.update``) show through; only replacing a submodule forces a re-split.
    The graph is taken in eval mode: prediction never applies dropout.
    """
    parts = (model.encoder, model.head)
    cached = _FORWARD_CACHE.get(model)
    if cached is None or any(a is not b for a, b in zip(cached[0], parts)):
        training = in_training_mode(model)
        model.eval()
        graph, state = nnx.split(model)
        if training:
            model.train()
        # The graph is closed over, not a static argument: hashing it costs ~2 ms a call.
        probabilities = jax.jit(
            lambda state, ids, mask: jax.nn.softmax(nnx.merge(graph, state)(ids, mask), -1))
        cached = _FORWARD_CACHE[model] = (parts, probabilities, state)
    return cached[1], cached[2]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a sequence of strings, not {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return list(texts)


def predict(model, texts, batch_size: int = 64):
    """Label and probability per text. Long texts are truncated to the model's max_len."""
    from zoo.text import encode, special_ids

    if model.info.head_kind != "classification":
        raise InvalidArgumentError(
            f"predict needs a classification head; this model has {model.info.head!r}")
    if model.tokenizer is None:
        raise InvalidArgumentError(
            "this model carries no tokenizer: load it from a model directory or run")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    texts = _check_texts(texts)
    if not texts:
        return []
    max_len = model.config.max_len
    # Finer than training's buckets: texts are sorted by length, so each chunk pads only to
    # its own longest text rounded up to 8 (a few more compiled shapes, far less padding).
    buckets = buckets_for(max_len, tuple(range(8, max_len + 1, 8)))
    pad = special_ids(model.tokenizer)["pad"]
    probabilities_fn, state = _forward(model)
    # The jitted forward checks no ids; a tokenizer's ids lie below its vocabulary size.
    if model.tokenizer.get_vocab_size() > model.config.vocab_size:
        raise InvalidArgumentError(
            f"the tokenizer has {model.tokenizer.get_vocab_size()} tokens but the model embeds "
            f"only {model.config.vocab_size}: the tokenizer does not belong to this model")
    token_ids = encode(model.tokenizer, texts, max_len)
    order = np.argsort([len(t) for t in token_ids], kind="stable")  # similar lengths together
    probabilities = np.empty((len(texts), model.info.num_classes), np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_to_bucket([token_ids[i] for i in chunk], buckets, pad,
                                  num_rows=_bucket_rows(len(chunk), batch_size))
        probabilities[chunk] = np.asarray(probabilities_fn(state, ids, mask))[:len(chunk)]
    bad = np.flatnonzero(~np.isfinite(probabilities).all(-1))
    if bad.size:
        raise NonFiniteOutputError(
            f"the model gave non-finite probabilities (for text {int(bad[0])}): its weights hold "
            "NaN or infinity; re-export or re-train the model")
    labels = model.info.labels
    return [
        Prediction(text, labels[int(p.argmax())], float(p.max()),
                   {label: float(x) for label, x in zip(labels, p)})
        for text, p in zip(texts, probabilities)
    ]


def _bucket_rows(n: int, batch_size: int) -> int:
    """Round the row count up to a power of two (<= batch_size): few compiled shapes."""
    rows = 1
    while rows < n:
        rows *= 2
    return min(rows, max(batch_size, n))
