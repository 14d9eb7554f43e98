"""Sentence embeddings as sentence-transformers gives them: the encoder's hidden states pooled
over real tokens (mean, [CLS] or max), optionally L2-normalised, and cosine search.

``encode`` sorts texts by length (each batch pads only to its longest text rounded up to 4),
runs one jitted program per shape, and returns the vectors in the input order. A preset can
name its defaults (``EncoderSpec.embedding``: all-MiniLM-L6-v2 pools by mean, normalises,
and reads at most 256 tokens, as its sentence-transformers configuration says).
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.errors import InvalidArgumentError, UnknownNameError
from zoo.nn import CastState, compiler_options, precision_changes


def _mean(hidden, mask):
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)


def _cls(hidden, mask):
    return hidden[:, 0]


def _max(hidden, mask):
    return jnp.where(mask[..., None] > 0, hidden, -jnp.inf).max(1)


POOLINGS = {"mean": _mean, "cls": _cls, "max": _max}


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result: the corpus item, its index in the corpus, its cosine similarity."""

    index: int
    score: float
    text: str


def defaults(model) -> dict:
    """The model's embedding defaults: its preset's (``EncoderSpec.embedding``), else mean
    pooling, normalised, at the model's input length. A model trained for embeddings pools
    as its head does (``sentence-embedding`` runs); a trained model reads at most the length
    it was trained at."""
    from zoo.registry import get_encoder

    try:
        preset = dict(get_encoder(model.info.encoder).embedding)
    except UnknownNameError:
        preset = {}
    settings = {"pooling": "mean", "normalize": True, "max_len": model.info.input_len} | preset
    head_defaults = getattr(model.head, "embedding_defaults", None)
    if callable(head_defaults):
        settings |= head_defaults()
    if model.info.max_len is not None:
        settings["max_len"] = min(settings["max_len"], model.info.max_len)
    return settings


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pooled_forward(model, pooling: str, normalize: bool):
    """A jitted (state, ids, mask, types) -> (B, H) embedding of ``model.encoder``, made once
    per (model, pooling, normalize); the split state shares the model's parameters."""
    key = (pooling, normalize)
    cached = _CACHE.setdefault(model, {})
    entry = cached.get(key)
    if entry is None or entry[0] is not model.encoder or entry[3] != precision_changes():
        graph, state = nnx.split(model.encoder)
        pool = POOLINGS[pooling]

        def embed(state, ids, mask, types=None):
            encoder = nnx.merge(graph, state)
            hidden = encoder(ids, mask) if types is None else encoder(ids, mask, types)
            vectors = pool(hidden.astype(jnp.float32), mask)
            if normalize:  # as torch.nn.functional.normalize (eps 1e-12)
                norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
                vectors = vectors / jnp.maximum(norm, 1e-12)
            return vectors

        jitted = jax.jit(embed, compiler_options=compiler_options(model.encoder))
        entry = cached[key] = (model.encoder, jitted, CastState(model.encoder, state),
                               precision_changes())
    return entry[1], entry[2]


def encode(model, texts: str | Sequence[str], *, pooling: str | None = None,
           normalize: bool | None = None, batch_size: int = 64, progress: bool = False,
           max_len: int | None = None) -> np.ndarray:
    """Embeddings (N, hidden_size) float32 of ``texts``, in their order."""
    from tqdm.auto import tqdm

    from zoo.batching import inference_buckets
    from zoo.inference import check_items, pass_plan, sorted_batches, uses_token_types
    from zoo.text import encode_texts, special_ids

    settings = defaults(model)
    pooling = settings["pooling"] if pooling is None else pooling
    normalize = settings["normalize"] if normalize is None else normalize
    if pooling not in POOLINGS:
        raise InvalidArgumentError(f"pooling must be one of {', '.join(POOLINGS)}, got "
                                   f"{pooling!r}")
    if not isinstance(normalize, bool):
        raise InvalidArgumentError(f"normalize must be True or False, got {normalize!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    if model.tokenizer is None:
        raise InvalidArgumentError("this model carries no tokenizer: load it from a model "
                                   "directory, a run or an HF folder")
    items = check_items(texts)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(items[bad]).__name__}, not str (embeddings "
                        "are of single texts)")
    length = min(max_len or settings["max_len"], model.config.max_len)
    if not items:
        return np.zeros((0, model.config.hidden_size), np.float32)
    encoded = encode_texts(model.tokenizer, items, None, length)
    buckets = inference_buckets(length)
    pad = special_ids(model.tokenizer)["pad"]
    embed, cast_state = _pooled_forward(model, pooling, normalize)
    out = np.empty((len(items), model.config.hidden_size), np.float32)
    plan = pass_plan(embed, encoded, batch_size, buckets)
    batches = sorted_batches(embed, cast_state(), encoded, batch_size, buckets, pad,
                             uses_token_types(model.config), plan)
    for chunk, vectors in tqdm(batches, total=len(plan), unit="batch",
                               disable=not progress, desc="encode", dynamic_ncols=True):
        out[chunk] = vectors
    if not np.isfinite(out).all():
        from zoo.inference import NonFiniteOutputError

        raise NonFiniteOutputError("the model gave non-finite embeddings: its weights hold NaN "
                                   "or infinity")
    return out


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities (len(a), len(b)) of two sets of vectors (normalised here)."""
    a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
    if a.shape[-1] != b.shape[-1]:
        raise InvalidArgumentError(f"vectors of width {a.shape[-1]} and {b.shape[-1]} cannot "
                                   "be compared")
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def search(model, queries: str | Sequence[str], corpus: Sequence[str], top_k: int = 5,
           **encode_options) -> list[list[Hit]]:
    """For each query, the ``top_k`` corpus texts by cosine similarity, best first."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}")
    queries = [queries] if isinstance(queries, str) else list(queries)
    corpus = list(corpus)
    scores = similarity(encode(model, queries, **encode_options),
                        encode(model, corpus, **encode_options))
    results = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append([Hit(int(i), float(row[i]), corpus[i]) for i in best])
    return results
