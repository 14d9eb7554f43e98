"""Tokenization: the tutorial's recipe, truncation that really truncates, and both caches."""

from __future__ import annotations

import datasets
import pytest
from tokenizers import Tokenizer, models

from zoo import text
from zoo.data import load_sst2
from zoo.text import (
    SPECIAL_TOKENS, cached_tokenizer, encode, special_ids, tokenize_splits, train_tokenizer,
)
from zoo_tests.test_data import SST2_DIR

CORPUS = [
    "the film is a charming , funny ride .",
    "a dull , lifeless and utterly boring movie .",
    "an unbelievably moving performance by the lead actor .",
    "i admired this work a lot .",
    "the story gets more tiresome as it continues .",
] * 20


@pytest.fixture(scope="module")
def small_tokenizer() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=200)


def test_real_recipe_on_sst2_train():
    """The full recipe on SST-2 train: special tokens 0..4, [CLS] ... [SEP] framing, no padding."""
    if not (SST2_DIR / "train.tsv").is_file():
        pytest.skip(f"no SST-2 at {SST2_DIR}")
    tokenizer = train_tokenizer(load_sst2(SST2_DIR)["train"]["sentence"][:])
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert special_ids(tokenizer) == {"pad": 0, "cls": 1, "sep": 2, "mask": 3, "unk": 4}
    assert 5_000 < tokenizer.get_vocab_size() <= 25_000
    encoding = tokenizer.encode("Hide new secretions")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert encoding.tokens[1] == "hide"  # lowercase normaliser
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert tokenizer.decode(encoding.ids) == "hide new secretions"  # '##' pieces rejoined


def test_encode_truncates_to_max_len_including_specials(small_tokenizer):
    long = " ".join(["film"] * 300)
    (ids,) = encode(small_tokenizer, [long], max_len=128)
    assert len(ids) == 128
    specials = special_ids(small_tokenizer)
    assert ids[0] == specials["cls"] and ids[-1] == specials["sep"]
    assert small_tokenizer.truncation is None  # the caller's tokenizer is not mutated


def test_encode_short_and_empty_texts(small_tokenizer):
    ids = special_ids(small_tokenizer)
    short, empty = encode(small_tokenizer, ["a dull film .", ""], max_len=64)
    assert len(short) < 64 and ids["pad"] not in short  # no padding to max_len
    assert empty == [ids["cls"], ids["sep"]]


def test_encode_validates_inputs(small_tokenizer):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encode(small_tokenizer, ["fine", 3], max_len=8)
    with pytest.raises(TypeError, match="single string"):
        encode(small_tokenizer, "a bare string", max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        encode(small_tokenizer, ["fine"], max_len=1)


def test_special_ids_rejects_a_foreign_tokenizer():
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3}
    foreign = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    with pytest.raises(ValueError, match=r"mask \(\[MASK\] or <mask>\)"):
        special_ids(foreign)


def test_cached_tokenizer_trains_once(tmp_path, monkeypatch):
    first, path = cached_tokenizer(CORPUS, 200, tmp_path)
    assert path.is_file() and path.parent == tmp_path

    def must_not_train(*args, **kwargs):
        raise AssertionError("retrained despite a cached tokenizer")

    monkeypatch.setattr(text, "train_tokenizer", must_not_train)
    second, same_path = cached_tokenizer(CORPUS, 200, tmp_path)
    assert same_path == path and second.to_str() == first.to_str()
    monkeypatch.undo()
    _, other = cached_tokenizer(CORPUS, 150, tmp_path)
    _, changed = cached_tokenizer(CORPUS[:-1], 200, tmp_path)
    assert len({path, other, changed}) == 3


def test_tokenize_splits_adds_columns_and_caches(small_tokenizer, tmp_path, monkeypatch):
    dsd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": CORPUS[:5], "label": [1, 0, 1, 1, 0]}),
        "test": datasets.Dataset.from_dict({"sentence": [" ".join(["movie"] * 50)], "label": [-1]}),
    })
    calls = []
    real_encode = text.encode
    monkeypatch.setattr(text, "encode", lambda *a, **k: calls.append(1) or real_encode(*a, **k))

    out = tokenize_splits(dsd, small_tokenizer, 16, tmp_path)
    assert len(calls) == 2
    assert out["train"].column_names == ["sentence", "label", "input_ids", "length"]
    assert out["train"].features["input_ids"].feature.dtype == "int32"
    assert out["train"]["input_ids"][:] == encode(small_tokenizer, CORPUS[:5], 16)
    assert out["train"]["length"][:] == [len(r) for r in out["train"]["input_ids"][:]]
    assert out["test"]["length"][:] == [16]

    calls.clear()
    again = tokenize_splits(dsd, small_tokenizer, 16, tmp_path)
    assert calls == []  # both splits came from the cache
    assert again["train"]["input_ids"][:] == out["train"]["input_ids"][:]

    tokenize_splits(dsd, small_tokenizer, 32, tmp_path)
    assert len(calls) == 2  # a new max_len is a new key

    calls.clear()
    shuffled = datasets.DatasetDict({"train": dsd["train"].select([4, 2, 0])})
    picked = tokenize_splits(shuffled, small_tokenizer, 16, tmp_path)
    assert len(calls) == 1
    expected = encode(small_tokenizer, [CORPUS[4], CORPUS[2], CORPUS[0]], 16)
    assert picked["train"]["input_ids"][:] == expected
    assert picked["train"]["label"][:] == [0, 1, 1]
