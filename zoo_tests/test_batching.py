"""Bucketed batching: deterministic plans, exactly-once coverage, fixed shapes, inert fillers."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import numpy as np
import pytest

from zoo.batching import (DEFAULT_BUCKETS, BucketBatcher, buckets_for, inference_buckets,
                          inference_plan, inference_rows, pad_to_bucket)
from zoo.inference import pass_plan

BUCKETS = (4, 8, 16)
BATCH = 8
PAD = 0


def make_examples(n: int = 203, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Examples of length 2..16 whose tokens (>= 5) can be told from padding."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 17, size=n)
    return [list(rng.integers(5, 100, size=k)) for k in lengths], list(rng.integers(0, 2, size=n))


@pytest.fixture
def batcher() -> BucketBatcher:
    ids, labels = make_examples()
    return BucketBatcher(ids, labels, batch_size=BATCH, buckets=BUCKETS, pad_id=PAD)


def test_buckets_for():
    assert buckets_for(128) == DEFAULT_BUCKETS
    assert buckets_for(64) == (16, 32, 64)
    assert buckets_for(100) == (16, 32, 64, 100)
    assert buckets_for(8) == (8,)


@pytest.mark.parametrize("max_len", [1, 5, 31, 128, 512, 8192])
def test_inference_buckets_pad_little_with_few_shapes(max_len):
    buckets = inference_buckets(max_len)
    assert list(buckets) == sorted(set(buckets)) and buckets[-1] == max_len
    for length in range(1, max_len + 1):  # the bucket a batch of longest `length` pads to
        padded = next(b for b in buckets if b >= length)
        assert padded - length <= max(3, length // 8), (length, padded)
    assert len(buckets) <= {1: 1, 5: 2, 31: 8, 128: 24, 512: 40, 8192: 72}[max_len]


def test_too_long_example_is_named():
    with pytest.raises(ValueError, match="example 1 has 17 tokens"):
        BucketBatcher([[1, 2], [1] * 17], None, batch_size=2, buckets=BUCKETS)


def test_epoch_plan_is_a_function_of_seed_and_epoch(batcher):
    def as_lists(plan):
        return [b.tolist() for b in plan]

    assert as_lists(batcher.epoch_plan(3, seed=7)) == as_lists(batcher.epoch_plan(3, seed=7))
    assert as_lists(batcher.epoch_plan(3, seed=7)) != as_lists(batcher.epoch_plan(4, seed=7))
    assert as_lists(batcher.epoch_plan(3, seed=7)) != as_lists(batcher.epoch_plan(3, seed=8))


def _slots(plan, lengths, batch_size, buckets) -> tuple[int, int]:
    """(padded token slots, compiled shapes) of an inference plan."""
    table = np.asarray(buckets)
    shapes = [(inference_rows(len(b), batch_size),
               int(table[np.searchsorted(table, lengths[b].max())])) for b in plan]
    return sum(rows * length for rows, length in shapes), len(set(shapes))


@pytest.mark.parametrize("count, batch_size", [(1, 64), (64, 64), (65, 64), (872, 64),
                                               (3000, 64), (500, 50), (100, 10), (40, 4)])
def test_inference_plan_covers_each_item_once_in_length_order_with_less_padding(count,
                                                                                batch_size):
    rng = np.random.default_rng(count)
    lengths = rng.integers(3, 61, size=count)  # SST-2-like: dense, many items per length
    buckets = inference_buckets(128)
    plan = inference_plan(lengths, batch_size, buckets)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(count))
    # runs of the length-sorted order: every batch's items are no longer than the next's
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(plan, plan[1:]))
    sizes = [len(b) for b in plan]
    assert max(sizes) <= batch_size
    allowed = {batch_size} | {n for n in range(8, batch_size, 8) if 4 * n >= 3 * batch_size}
    assert set(sizes[:-1]) <= allowed, sizes
    fixed = [np.argsort(lengths, kind="stable")[i:i + batch_size]
             for i in range(0, count, batch_size)]
    slots, shapes = _slots(plan, lengths, batch_size, buckets)
    fixed_slots, fixed_shapes = _slots(fixed, lengths, batch_size, buckets)
    loose = inference_plan(lengths, batch_size, buckets, tight=False)
    assert len(loose) == len(fixed) and all(map(np.array_equal, loose, fixed))
    # what it minimises: padded slots plus one row's worth per batch
    assert slots + _extra(plan, lengths, buckets) <= fixed_slots + _extra(fixed, lengths,
                                                                          buckets)
    if count > 2 * batch_size >= 16:  # enough items for the cuts to matter
        assert slots < 0.985 * fixed_slots, (slots, fixed_slots)
        assert shapes <= 3 * fixed_shapes


def _extra(plan, lengths, buckets) -> int:
    table = np.asarray(buckets)
    return sum(int(table[np.searchsorted(table, lengths[b].max())]) for b in plan)


def test_inference_plan_of_nothing_and_of_one_length():
    assert inference_plan([], 64, (8, 16)) == []
    plan = inference_plan([5] * 200, 64, (8, 16))  # nothing to gain: fixed chunks of 64
    assert [len(b) for b in plan] == [64, 64, 64, 8]


def test_a_forwards_first_long_pass_runs_fixed_chunks_and_later_ones_pad_less():
    """Extra shapes to compile do not pay in one pass: the first runs fixed chunks."""
    encoded = [SimpleNamespace(ids=[1] * n) for n in
               np.random.default_rng(3).integers(3, 61, size=872)]
    buckets = inference_buckets(128)

    def forward(state, ids, mask, types):  # stands in for a jitted forward (weakly keyed)
        return ids

    short = pass_plan(forward, encoded[:64], 64, buckets)
    assert [len(b) for b in short] == [64]  # one batch: not a pass that counts
    first, second, third = (pass_plan(forward, encoded, 64, buckets) for _ in range(3))
    assert [len(b) for b in first] == [64] * 13 + [40]
    lengths = np.array([len(e.ids) for e in encoded])
    assert _slots(second, lengths, 64, buckets)[0] < 0.99 * _slots(first, lengths, 64,
                                                                    buckets)[0]
    assert all(np.array_equal(a, b) for a, b in zip(second, third))
    assert [len(b) for b in pass_plan(lambda *a: a, encoded, 64, buckets)] == [64] * 13 + [40]


def test_epoch_plan_covers_every_example_once_in_single_bucket_batches(batcher):
    for epoch in range(3):
        plan = batcher.epoch_plan(epoch, seed=0)
        assert len(plan) == batcher.steps_per_epoch
        seen = np.concatenate(plan)
        assert np.array_equal(np.sort(seen), np.arange(len(batcher)))
        assert all(len(set(batcher.bucket_of[b].tolist())) == 1 for b in plan)
    # batch order is shuffled across buckets, not bucket after bucket
    buckets_in_order = [int(batcher.bucket_of[b[0]]) for b in batcher.epoch_plan(0, seed=0)]
    assert buckets_in_order != sorted(buckets_in_order)


def test_training_batches_have_fixed_shapes_and_inert_fillers(batcher):
    shapes = set()
    for indices in batcher.epoch_plan(0, seed=1):
        batch = batcher.make_batch(indices)
        shapes.add(batch.input_ids.shape)
        assert batch.input_ids.shape[0] == BATCH
        assert batch.attention_mask.shape == batch.input_ids.shape
        assert batch.input_ids.dtype == np.int32 and batch.attention_mask.dtype == np.int32
        assert batch.labels.dtype == np.int32 and batch.weights.dtype == np.float32
        assert batch.indices.dtype == np.int64
        real = batch.indices >= 0
        assert real.sum() == len(indices) == batch.num_real
        assert np.array_equal(batch.weights, real.astype(np.float32))
        assert np.all(batch.labels[~real] == 0)
        assert np.all(batch.input_ids[~real] == PAD)
        assert np.all(batch.attention_mask[~real, 0] == 1)
        assert np.all(batch.attention_mask[~real, 1:] == 0)
        assert np.all(batch.attention_mask.sum(axis=1) >= 1)  # no fully masked row
    assert len(shapes) <= len(BUCKETS)


def test_make_batch_contents(batcher):
    ids, labels = make_examples()
    indices = np.array([i for i in range(len(ids)) if 4 < len(ids[i]) <= 8][:5])
    batch = batcher.make_batch(indices)
    assert batch.input_ids.shape == (BATCH, 8)
    for row, i in enumerate(indices):
        n = len(ids[i])
        assert batch.input_ids[row, :n].tolist() == ids[i]
        assert np.all(batch.input_ids[row, n:] == PAD)
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (8 - n)
        assert batch.labels[row] == labels[i]
    with pytest.raises(ValueError, match="1..8"):
        batcher.make_batch(np.arange(BATCH + 1))
    with pytest.raises(IndexError):
        batcher.make_batch(np.array([len(ids)]))


def test_eval_plan_covers_each_example_once_in_order(batcher):
    plan = batcher.eval_plan()
    seen = np.concatenate(plan)
    assert np.array_equal(np.sort(seen), np.arange(len(batcher)))
    for indices in plan:
        assert np.all(np.diff(indices) > 0) and len(set(batcher.bucket_of[indices].tolist())) == 1
    assert [b.tolist() for b in plan] == [b.tolist() for b in batcher.eval_plan()]
    weights = sum(batcher.make_batch(b).weights.sum() for b in plan)
    assert weights == len(batcher)  # fillers carry no weight


def test_padding_fraction_counts_pad_and_filler_slots():
    batcher = BucketBatcher([[1, 2, 3], [1, 2, 3, 4], [1] * 8], None, batch_size=2, buckets=(4, 8))
    plan = batcher.eval_plan()  # [0, 1] in bucket 4 (7 of 8 slots), [2] + filler in 8 (8 of 16)
    assert batcher.padding_fraction(plan) == pytest.approx(1 - 15 / 24)
    assert np.array_equal(batcher.labels, np.zeros(3, np.int32))


def test_accepts_datasets_columns():
    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2], [1, 2, 3, 4, 5]], "label": [1, 0]})
    batcher = BucketBatcher(ds["input_ids"], ds["label"], batch_size=2, buckets=BUCKETS)
    batch = batcher.make_batch(np.array([0, 1]))
    assert batch.input_ids.shape == (2, 8) and batch.labels.tolist() == [1, 0]


def test_pad_to_bucket_uses_smallest_bucket_holding_the_longest():
    input_ids, mask = pad_to_bucket([[1, 2], [1, 2, 3, 4, 5]], BUCKETS, pad_id=9)
    assert input_ids.shape == (2, 8) and input_ids.dtype == np.int32
    assert input_ids[0].tolist() == [1, 2] + [9] * 6
    assert mask.sum(axis=1).tolist() == [2, 5]
    assert pad_to_bucket([[1, 2, 3, 4]], BUCKETS)[0].shape == (1, 4)
    with pytest.raises(ValueError, match="17 tokens"):
        pad_to_bucket([[1] * 17], BUCKETS)


def test_row_shares_of_a_batch_make_the_whole_batch():
    """Processes that each build their rows of a global batch build exactly the batch."""
    rows = [[2, 5 + i % 7] + [9] * (i % 20) + [3] for i in range(40)]
    extras = {"teacher": np.arange(80, dtype=np.float32).reshape(40, 2)}
    b = BucketBatcher(rows, [i % 2 for i in range(40)], batch_size=8, buckets=(8, 16, 32),
                      extras=extras)
    for indices in (np.array([3, 17, 25, 1, 30, 7, 8, 9]), np.array([38, 2, 21])):  # + fillers
        whole = b.make_batch(indices)
        shares = [b.make_batch(indices, slice(start, start + 2)) for start in range(0, 8, 2)]
        for field in ("input_ids", "attention_mask", "labels", "weights", "indices"):
            np.testing.assert_array_equal(
                np.concatenate([getattr(s, field) for s in shares]), getattr(whole, field))
        np.testing.assert_array_equal(
            np.concatenate([s.extras["teacher"] for s in shares]), whole.extras["teacher"])
        assert all(s.input_ids.shape == (2, whole.input_ids.shape[1]) for s in shares)
