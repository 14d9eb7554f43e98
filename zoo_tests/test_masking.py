"""Masked-LM masking: per-row positions, the BERT 80/10/10 recipe, nothing special masked."""

import jax
import numpy as np

from zoo.tasks import MaskingConfig, mask_tokens

SPECIAL = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask
CFG = MaskingConfig(mask_id=4, vocab_size=1000, special_ids=SPECIAL)


def _batch(rows=256, length=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, (rows, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, rows)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    ids[np.arange(rows), lengths - 1] = 3
    ids[mask == 0] = 0
    weights = np.ones(rows, np.float32)
    weights[-8:] = 0.0  # filler rows
    return {"input_ids": ids, "attention_mask": mask, "weights": weights}


def test_masking_follows_the_recipe_and_scores_exactly_what_it_corrupts():
    batch = _batch()
    corrupted, positions, targets, valid = map(np.asarray, jax.jit(
        lambda b, k: mask_tokens(b, k, CFG))(batch, jax.random.key(0)))
    ids = batch["input_ids"]
    rows, length = ids.shape
    assert positions.shape == targets.shape == valid.shape == (rows, CFG.capacity(length))
    scored = np.zeros_like(ids, bool)
    for r in range(rows):
        p = positions[r][valid[r] > 0]
        assert len(set(p.tolist())) == len(p)  # no position twice
        scored[r, p] = True
        np.testing.assert_array_equal(targets[r][valid[r] > 0], ids[r, p])
    changed = corrupted != ids
    assert not (changed & ~scored).any()  # only scored positions are corrupted
    special = np.isin(ids, SPECIAL) | (batch["attention_mask"] == 0)
    assert not (scored & special).any()
    assert not scored[batch["weights"] == 0].any()  # filler rows are never scored
    maskable = ~special & (batch["weights"][:, None] > 0)
    rate = scored.sum() / maskable.sum()
    assert 0.13 < rate < 0.16, rate  # 15 %, a little less where a row hits its capacity
    at = corrupted[scored]
    to_mask = np.mean(at == CFG.mask_id)
    kept = np.mean(at == ids[scored])
    assert 0.76 < to_mask < 0.84 and 0.07 < kept < 0.13, (to_mask, kept)


def test_capacity_covers_almost_every_row():
    for length in (16, 32, 64, 128):
        cap = CFG.capacity(length)
        assert length * CFG.rate < cap < length
        draws = np.random.default_rng(length).binomial(length, CFG.rate, 100_000)
        assert np.mean(draws > cap) < 0.05


def test_random_replacements_skip_specials_anywhere_in_the_vocabulary():
    """ModernBERT-style vocabularies put special tokens last, RoBERTa's <mask> is the last id:
    a random replacement is never a special token, and every other id can be drawn."""
    specials = (0, 500, 996, 997, 999)
    cfg = MaskingConfig(mask_id=999, vocab_size=1000, special_ids=specials, rate=1.0)
    batch = _batch(rows=512, length=64, seed=1)
    batch["input_ids"][np.isin(batch["input_ids"], specials)] = 7
    corrupted, positions, _, valid = map(np.asarray, jax.jit(
        lambda b, k: mask_tokens(b, k, cfg))(batch, jax.random.key(3)))
    changed = (corrupted != batch["input_ids"]) & (corrupted != cfg.mask_id)
    drawn = corrupted[changed]
    assert drawn.size > 1000
    assert not np.isin(drawn, specials).any()
    assert drawn.max() == 998 and drawn.min() == 1  # both ends of the non-special range
