"""Fast prediction for a loaded classifier: tokenise, pad to a bucket, one jitted forward.

The forward is a pure ``jax.jit`` function of (graph, state) cached per model, so a call
costs tokenisation plus one compiled program per bucket shape — no NNX graph walk.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from zoo.batching import DEFAULT_BUCKETS, buckets_for, pad_to_bucket

_SPLIT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


_probabilities = jax.jit(
    lambda state, ids, mask, *, graph: jax.nn.softmax(nnx.merge(graph, state)(ids, mask), -1),
    static_argnames="graph",
)


def _split(model):
    """(graph, state) of ``model``, re-split only when its parameters were replaced."""
    leaves = tuple(id(x) for x in jax.tree.leaves(nnx.state(model)))
    cached = _SPLIT_CACHE.get(model)
    if cached is None or cached[0] != leaves:
        graph, state = nnx.split(model)
        cached = (leaves, graph, state)
        _SPLIT_CACHE[model] = cached
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


def predict(model, texts, batch_size: int = 256):
    """Label and probability per text. Long texts are truncated to the model's max_len."""
    from zoo.model import Prediction, in_training_mode
    from zoo.text import encode, special_ids

    if model.info.head_kind != "classification":
        raise ValueError(f"predict needs a classification head; this model has {model.info.head!r}")
    if model.tokenizer is None:
        raise ValueError("this model carries no tokenizer: load it from a model directory or run")
    texts = _check_texts(texts)
    if not texts:
        return []
    if in_training_mode(model):
        raise ValueError("model is in training mode: call model.eval() before predict")
    max_len = model.config.max_len
    buckets = buckets_for(max_len, DEFAULT_BUCKETS)
    pad = special_ids(model.tokenizer)["pad"]
    graph, state = _split(model)
    token_ids = encode(model.tokenizer, texts, max_len)
    order = np.argsort([len(t) for t in token_ids], kind="stable")  # similar lengths together
    probabilities = np.empty((len(texts), model.info.num_classes), np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_to_bucket([token_ids[i] for i in chunk], buckets, pad)
        rows = _bucket_rows(len(chunk), batch_size)
        ids = np.pad(ids, ((0, rows - len(chunk)), (0, 0)), constant_values=pad)
        mask = np.pad(mask, ((0, rows - len(chunk)), (0, 0)))
        mask[len(chunk):, 0] = 1
        probabilities[chunk] = np.asarray(_probabilities(state, ids, mask, graph=graph))[:len(chunk)]
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
