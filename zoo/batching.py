"""Length-bucketed batches: few distinct shapes (few jit compiles) and little padding.

The tutorial padded every SST-2 sentence to 128 tokens, so 90.6% of each batch was padding.
Here each example goes to the smallest bucket length that holds it, every batch comes from
one bucket, and every training batch has exactly ``batch_size`` rows (the last batch of a
bucket is topped up with filler rows of weight 0). The set of ``(batch_size, L)`` shapes is
therefore at most the set of buckets, and a jitted step compiles at most once per bucket.

An example may carry a second token sequence encoded on its own (``pair_ids``: a bi-encoder's
second text). It is padded to the same length as the first, in the batch fields
``pair_input_ids`` and ``pair_attention_mask``; the example's bucket is its longer text's.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import InvalidArgumentError

DEFAULT_BUCKETS = (16, 32, 64, 128)
# Inference (predict, encode) sorts texts by length, so each batch pads only to its longest
# text rounded up to the next of these lengths: every 4 tokens up to 64, then steps of a
# sixteenth of the next power of two (8 up to 128, 16 up to 256, ...), so that long inputs
# compile few shapes (40 up to 512 tokens, 72 up to 8,192; a fixed step of 4: 128 and
# 2,048) and pad by less than an eighth. On SST-2 a step of 4 gave 8-10 % more sentences/s
# than 8 (all-MiniLM-L6-v2, 2-core CPU); a step of 2 below 32 gave 2 % more warm but
# compiled 14 shapes instead of 10 over the dev set (its first pass took 5 s longer).
INFERENCE_MIN_STEP = 4


def inference_buckets(max_len: int) -> tuple[int, ...]:
    """The padded lengths inference uses up to ``max_len``."""
    lengths, n = [], INFERENCE_MIN_STEP
    while n < max_len:
        lengths.append(n)
        n += max(INFERENCE_MIN_STEP, 1 << max(0, n.bit_length() - 4))
    return buckets_for(max_len, tuple(lengths))


def inference_rows(n: int, batch_size: int) -> int:
    """Rows a chunk of ``n`` items is padded to (few compiled shapes, little filler): a power
    of two up to 8, then a multiple of 8, never above ``max(batch_size, n)``. (The last,
    partial chunk of a length-sorted pass holds the longest texts: 40 of 64 rows padded to
    64 made it the most wasteful batch of the pass.)"""
    rows = 1
    while rows < min(n, 8):
        rows *= 2
    if n > 8:
        rows = -(-n // 8) * 8
    return min(rows, max(batch_size, n))


def inference_plan(lengths: Sequence[int], batch_size: int, buckets: Sequence[int],
                   tight: bool = True) -> list[np.ndarray]:
    """Batches of item indices for a pass over items of these token ``lengths`` (``predict``,
    ``encode``): in order of length, each batch a run of the sorted items that is padded to
    the bucket of its longest.

    Fixed chunks of ``batch_size`` pad each batch past its longest item up to the next
    bucket; ONNX Runtime, which runs any shape, pads to the longest itself (on SST-2 dev
    with all-MiniLM-L6-v2 that padding was 5.4 % more token slots than ONNX Runtime's).
    Here the batch boundaries are chosen, by dynamic programming over the sorted lengths, to
    minimise the padded token slots (rows × bucket length, plus one row's worth per batch),
    with a batch of ``batch_size`` items or of a multiple of 8 down to three quarters of it
    (at most 4 row counts: few compiled shapes) and the last, longest run of any size. On
    SST-2 dev that came to 0.7 % more slots than ONNX Runtime's exact lengths, 16 batches
    instead of 14 and 13 compiled shapes instead of 10 (3,000 texts of uniform lengths: 29
    instead of 16). ``tight=False``: fixed chunks of ``batch_size`` (the fewest shapes)."""
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(lengths, kind="stable")
    count = len(order)
    if count == 0:
        return []
    table = np.asarray(_checked_buckets(buckets))
    padded = table[np.minimum(np.searchsorted(table, lengths[order]), len(table) - 1)]
    step = max(8, -(-batch_size // 16 // 8) * 8)
    sizes = sorted({batch_size} | {n for n in range(batch_size - batch_size % 8, 0, -step)
                                   if 4 * n >= 3 * batch_size and n % 8 == 0})[-4:]
    if not tight or count <= batch_size or batch_size < 8:
        return [order[i:i + batch_size] for i in range(0, count, batch_size)]
    # best[j]: least cost of batching the j shortest items; prev[j]: where its last batch starts
    best = np.full(count + 1, np.inf)
    best[0] = 0.0
    prev = np.zeros(count + 1, np.int64)
    for j in range(1, count + 1):
        cost = padded[j - 1]  # every item of a batch ending at j pads to the j-th's bucket
        for n in (sizes if j < count else range(1, batch_size + 1)):
            if n > j:
                break
            total = best[j - n] + (inference_rows(n, batch_size) + 1) * cost
            if total < best[j]:
                best[j], prev[j] = total, j - n
    if not np.isfinite(best[count]):  # no exact tiling of the shorter items: fixed chunks
        return [order[i:i + batch_size] for i in range(0, count, batch_size)]
    cuts, j = [], count
    while j:
        cuts.append((int(prev[j]), j))
        j = int(prev[j])
    return [order[a:b] for a, b in reversed(cuts)]


FILLER_INDEX = -1


def buckets_for(max_len: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The buckets shorter than ``max_len``, then ``max_len`` (the longest an example can be)."""
    if max_len < 1:
        raise InvalidArgumentError(f"max_len must be positive, got {max_len}")
    return tuple(sorted({b for b in buckets if 0 < b < max_len})) + (max_len,)


@dataclass(frozen=True)
class Batch:
    """One padded batch; filler rows have weight 0 and index -1 and must not count in losses."""

    input_ids: np.ndarray       # (B, L) int32
    attention_mask: np.ndarray  # (B, L) int32, 1 = real token
    labels: np.ndarray          # (B,) int32 / float32, 0 on filler rows; (B, L) per token;
    #                             (B, C) float32 multi-hot per example (multi-label)
    weights: np.ndarray         # (B,) float32, 1 real / 0 filler
    indices: np.ndarray         # (B,) int64, example index or -1 for filler
    # Per-example side inputs (e.g. a teacher's logits), rows gathered like labels; 0 on filler;
    # and per-token ones (token_type_ids), (B, L) padded like input_ids.
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_real(self) -> int:
        return int(np.count_nonzero(self.indices != FILLER_INDEX))


class BucketBatcher:
    """Plans and builds bucketed batches over a fixed set of already-truncated examples."""

    def __init__(
        self,
        token_ids: Sequence[Sequence[int]],
        labels: Sequence[int] | None,
        *,
        batch_size: int,
        buckets: Sequence[int],
        pad_id: int = 0,
        extras: Mapping[str, np.ndarray] | None = None,
        token_fields: Mapping[str, tuple[Sequence[Sequence[int]], int]] | None = None,
        pair_ids: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """``labels``: one number per example (class id or score), or one row of numbers
        (a multi-hot label set), or None. ``token_fields``:
        name -> (one value per token of each example, pad value), e.g. ``token_type_ids``
        (pad 0) or per-token ``labels`` (pad ``IGNORE``), padded like the ids. ``pair_ids``:
        a second token sequence per example (its own length), batched as ``pair_input_ids``
        and ``pair_attention_mask`` padded to the batch's length."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.buckets = _checked_buckets(buckets)
        self.pad_id = pad_id
        rows = _as_list(token_ids)
        self.lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
        # One flat array + offsets: cheap slicing in make_batch, no per-example numpy objects.
        self._flat = np.fromiter(
            itertools.chain.from_iterable(rows), np.int32, count=int(self.lengths.sum())
        )
        self._offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.pair = None  # (lengths, flat ids, offsets) of the second sequences, or None
        longest = self.lengths
        if pair_ids is not None:
            pair_rows = _as_list(pair_ids)
            if len(pair_rows) != len(rows):
                raise ValueError(f"{len(pair_rows)} pair sequences for {len(rows)} examples")
            pair_lengths = np.fromiter(map(len, pair_rows), np.int64, count=len(pair_rows))
            pair_flat = np.fromiter(itertools.chain.from_iterable(pair_rows), np.int32,
                                    count=int(pair_lengths.sum()))
            self.pair = (pair_lengths, pair_flat, np.concatenate([[0], np.cumsum(pair_lengths)]))
            longest = np.maximum(self.lengths, pair_lengths)
        too_long = np.flatnonzero(longest > self.buckets[-1])
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"example {i} has {longest[i]} tokens, longer than the largest bucket "
                f"{self.buckets[-1]}; truncate to max_len when encoding"
            )
        self.bucket_of = np.searchsorted(self.buckets, longest, side="left")
        if labels is None:
            self.labels = np.zeros(len(rows), np.int32)
        else:
            self.labels = np.asarray(_as_list(labels))
            self.labels = self.labels.astype(
                np.float32 if np.issubdtype(self.labels.dtype, np.floating) else np.int32)
            if self.labels.shape[:1] != (len(rows),) or self.labels.ndim > 2:
                raise ValueError(f"{len(self.labels)} labels for {len(rows)} examples")
        self.token_fields = {}
        for name, (values, pad) in (token_fields or {}).items():
            value_rows = _as_list(values)
            lengths = np.fromiter(map(len, value_rows), np.int64, count=len(value_rows))
            if lengths.shape != self.lengths.shape or (lengths != self.lengths).any():
                raise ValueError(f"token field {name!r}: its rows do not match the token ids "
                                 "in number or length")
            flat = np.fromiter(itertools.chain.from_iterable(value_rows), np.int32,
                               count=int(lengths.sum()))
            self.token_fields[name] = (flat, int(pad))
        if "labels" in self.token_fields and labels is not None:
            raise ValueError("labels given both per example and per token")
        self.extras = {name: np.asarray(values) for name, values in (extras or {}).items()}
        for name, values in self.extras.items():
            if values.ndim < 1 or values.shape[0] != len(rows):
                raise ValueError(
                    f"extras[{name!r}] has shape {values.shape} for {len(rows)} examples")

    def __len__(self) -> int:
        return len(self.lengths)

    def token_rows(self, field: str | None = None) -> list[np.ndarray]:
        """Each example's token ids, or its values of a token ``field`` (views of the flat
        arrays): to build a batcher over more."""
        flat = self._flat if field is None else self.token_fields[field][0]
        return [flat[a:b] for a, b in zip(self._offsets[:-1], self._offsets[1:])]

    def id_range(self) -> tuple[int, int]:
        """(smallest, largest) token id over all examples; (0, 0) when there are none."""
        flat = self._flat if self.pair is None else np.concatenate([self._flat, self.pair[1]])
        if not flat.size:
            return 0, 0
        return int(flat.min()), int(flat.max())

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: one partial (filled-up) batch at most per non-empty bucket."""
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        return int(np.sum(-(-counts // self.batch_size)))

    def epoch_plan(self, epoch: int, seed: int) -> list[np.ndarray]:
        """Index arrays for one training epoch, a pure function of ``(seed, epoch)``.

        Examples are shuffled within buckets and batches shuffled across buckets, so a run
        resumed at ``epoch`` sees exactly the batches it would have seen.
        """
        rng = np.random.default_rng((seed, epoch))
        plan = [
            chunk
            for members in self._bucket_members()
            for chunk in self._chunks(rng.permutation(members))
        ]
        return [plan[i] for i in rng.permutation(len(plan))]

    def eval_plan(self) -> list[np.ndarray]:
        """Every example once, bucket by bucket, in dataset order within a bucket."""
        return [chunk for members in self._bucket_members() for chunk in self._chunks(members)]

    def make_batch(self, indices: np.ndarray, rows: slice | None = None) -> Batch:
        """These examples padded to their (largest) bucket, topped up to ``batch_size`` rows.

        ``rows``: build only these rows of that batch (a process's share when several feed one
        global batch); the length is still the whole batch's, so every share has one shape.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or not 0 < indices.size <= self.batch_size:
            raise ValueError(
                f"a batch holds 1..{self.batch_size} indices, got shape {indices.shape}"
            )
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"batch indices must lie in [0, {len(self)}), got {indices}")
        length = self.buckets[int(self.bucket_of[indices].max())]
        full_indices = np.full(self.batch_size, FILLER_INDEX, np.int64)
        full_indices[:indices.size] = indices
        if rows is not None:
            full_indices = full_indices[rows]
        real = full_indices[full_indices != FILLER_INDEX]  # fillers only ever follow real rows
        size, n = full_indices.size, real.size
        token_rows = [self._flat[self._offsets[i]:self._offsets[i + 1]] for i in real]
        input_ids, attention_mask = _pad_rows(token_rows, size, length, self.pad_id)
        labels = np.zeros((size, *self.labels.shape[1:]), self.labels.dtype)
        labels[:n] = self.labels[real]
        per_token = {}
        for name, (flat, pad) in self.token_fields.items():
            per_token[name] = np.full((size, length), pad, np.int32)
            for r, i in enumerate(real):
                per_token[name][r, :self.lengths[i]] = flat[self._offsets[i]:self._offsets[i + 1]]
        if "labels" in per_token:
            labels = per_token.pop("labels")
        weights = np.zeros(size, np.float32)
        weights[:n] = 1.0
        extras = {}
        for name, values in self.extras.items():
            extras[name] = np.zeros((size, *values.shape[1:]), values.dtype)
            extras[name][:n] = values[real]
        extras |= per_token
        if self.pair is not None:
            _, pair_flat, pair_offsets = self.pair
            extras["pair_input_ids"], extras["pair_attention_mask"] = _pad_rows(
                [pair_flat[pair_offsets[i]:pair_offsets[i + 1]] for i in real], size, length,
                self.pad_id)
        return Batch(input_ids, attention_mask, labels, weights, full_indices, extras)

    def padding_fraction(self, plan: Sequence[np.ndarray]) -> float:
        """Share of token slots in the plan's batches that are padding (filler rows included;
        with pair sequences, over both texts)."""
        sequences = 1 if self.pair is None else 2
        slots = sum(sequences * self.batch_size * self.buckets[int(self.bucket_of[b].max())]
                    for b in plan)
        tokens = sum(int(self.lengths[b].sum()) for b in plan)
        if self.pair is not None:
            tokens += sum(int(self.pair[0][b].sum()) for b in plan)
        return 1.0 - tokens / slots if slots else 0.0

    def _bucket_members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.bucket_of == b) for b in range(len(self.buckets))]

    def _chunks(self, members: np.ndarray) -> list[np.ndarray]:
        return [members[i:i + self.batch_size] for i in range(0, members.size, self.batch_size)]


def pad_to_bucket(
    token_ids_list: Sequence[Sequence[int]], buckets: Sequence[int], pad_id: int = 0,
    num_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One ad-hoc batch (inference): rows padded to the smallest bucket holding the longest,
    and to ``num_rows`` rows with filler rows when given (fewer compiled shapes)."""
    if len(token_ids_list) == 0:
        raise ValueError("pad_to_bucket needs at least one sequence")
    buckets = _checked_buckets(buckets)
    longest = max(len(ids) for ids in token_ids_list)
    if longest > buckets[-1]:
        raise ValueError(
            f"a sequence has {longest} tokens, more than the largest bucket {buckets[-1]}"
        )
    length = buckets[int(np.searchsorted(buckets, longest, side="left"))]
    rows = len(token_ids_list) if num_rows is None else max(num_rows, len(token_ids_list))
    return _pad_rows(token_ids_list, rows, length, pad_id)


def _pad_rows(
    rows: Sequence[Sequence[int]], num_rows: int, length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(num_rows, length)`` ids and mask; rows past ``len(rows)`` are filler.

    A filler row attends to its position 0 only, so no row is fully masked.
    """
    input_ids = np.full((num_rows, length), pad_id, np.int32)
    attention_mask = np.zeros((num_rows, length), np.int32)
    for r, ids in enumerate(rows):
        input_ids[r, :len(ids)] = ids
        attention_mask[r, :len(ids)] = 1
    attention_mask[len(rows):, 0] = 1
    return input_ids, attention_mask


def _as_list(values: Sequence) -> list:
    """A list of ``values``; slicing first, because a ``datasets`` Column iterates row by row
    (about 1.7 s for SST-2's 67k labels) but slices in one Arrow call."""
    return list(values[:] if hasattr(values, "__getitem__") else values)


def _checked_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Buckets sorted and de-duplicated; all must be positive."""
    checked = tuple(sorted({int(b) for b in buckets}))
    if not checked or checked[0] < 1:
        raise InvalidArgumentError(f"buckets must be positive lengths, got {tuple(buckets)}")
    return checked
