"""Streamed pre-training text: exact resume, process sharding, the producer thread, errors."""

from __future__ import annotations

import math
import random
import threading
import time
from itertools import islice
from pathlib import Path

import datasets
import numpy as np
import pytest

from zoo import streaming
from zoo.batching import FILLER_INDEX
from zoo.data import DataFormatError
from zoo.errors import USER_ERRORS, InvalidArgumentError
from zoo.streaming import HubSource, TextFileSource, TextStream, parse_source, sample_texts
from zoo.text import encode, train_tokenizer

WORDS = "the cat sat on a mat while dogs ran far away from naïve café owners".split()
LINES = 300
BATCH = 8
WINDOW = 20
MAX_LEN = 16


def _corpus_lines() -> list[str]:
    """Unique lines (a number ends each), every 7th blank, some with padding spaces."""
    rng = random.Random(0)
    lines = []
    for i in range(LINES):
        if i % 7 == 0:
            lines.append("   " if i % 2 else "")
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
            lines.append(f"  {words} {i}\t" if i % 5 == 0 else f"{words} {i}")
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("streaming") / "corpus.txt"
    path.write_text("\n".join(_corpus_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """The examples, by global example number."""
    return [line.strip() for line in _corpus_lines() if line.strip()]


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=200)


def _stream(source, tokenizer, **kw) -> TextStream:
    settings = dict(batch_size=BATCH, max_len=MAX_LEN, seed=3, shuffle_window=WINDOW, prefetch=4)
    settings.update(kw)
    return TextStream(source, tokenizer, **settings)


def _take(stream: TextStream, start: int, count: int) -> list:
    return list(islice(stream.batches_from(start), count))


def _assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for (step_a, a), (step_b, b) in zip(got, want):
        assert step_a == step_b
        for name in ("input_ids", "attention_mask", "weights", "indices", "labels"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.extras == {} and b.extras == {}


def _record_encode(monkeypatch) -> dict[str, list[str]]:
    """Patch the stream's encode to record the texts each producer thread tokenises."""
    seen: dict[str, list[str]] = {}
    real = streaming.encode

    def recording(tok, batch_texts, max_len):
        seen.setdefault(threading.current_thread().name, []).extend(batch_texts)
        return real(tok, batch_texts, max_len)

    monkeypatch.setattr(streaming, "encode", recording)
    return seen


# ------------------------------------------------------------------ (1) exact resume

def test_resume_matches_an_uninterrupted_run(corpus, tokenizer, texts):
    stream = _stream(corpus, tokenizer)
    spe = stream.steps_per_epoch
    full = _take(stream, 0, 2 * spe + 10)
    assert [step for step, _ in full] == list(range(2 * spe + 10))
    # the epochs are shuffled differently, and within a window only
    assert not np.array_equal(full[0][1].indices, full[spe][1].indices)
    assert set(full[0][1].indices) <= set(range(WINDOW))
    for k in (1, 2, 7, spe - 2, spe - 1, spe, spe + 1, 2 * spe - 1, 2 * spe):
        _assert_same(_take(stream, k, 6), full[k:k + 6])
    stream.close()


def test_resume_does_not_tokenise_the_skipped_part(corpus, tokenizer, texts, monkeypatch):
    seen = _record_encode(monkeypatch)
    with _stream(corpus, tokenizer) as stream:
        spe = stream.steps_per_epoch
        full = _take(stream, 0, 2 * spe)
        seen.clear()
        k = spe + 10
        with _stream(corpus, tokenizer, prefetch=1) as resumed:
            _assert_same(_take(resumed, k, 3), full[k:k + 3])
    encoded = [t for chunk in seen.values() for t in chunk]
    skipped = {texts[n] for _, b in full[spe:k] for n in b.indices if n >= 0}
    rest = [texts[n] for _, b in full[k:] for n in b.indices if n >= 0]
    assert encoded and not skipped & set(encoded)
    assert encoded == rest[:len(encoded)]  # tokenised in order, starting at step k


def test_same_seed_same_batches_other_seed_other_order(corpus, tokenizer):
    a = _take(_stream(corpus, tokenizer), 0, 5)
    _assert_same(_take(_stream(corpus, tokenizer), 0, 5), a)
    b = _take(_stream(corpus, tokenizer, seed=4), 0, 5)
    assert any(not np.array_equal(x.indices, y.indices) for (_, x), (_, y) in zip(a, b))


def test_resume_seeks_to_the_indexed_offset(corpus, texts, monkeypatch):
    source = TextFileSource(corpus)
    assert source.count(WINDOW) == len(texts)
    opened = []
    real = TextFileSource._read

    def spy(self, offset, line_no, skip):
        opened.append((offset, line_no, skip))
        return real(self, offset, line_no, skip)

    monkeypatch.setattr(TextFileSource, "_read", spy)
    assert list(source.texts(45, WINDOW)) == texts[45:]
    raw = corpus.read_bytes().split(b"\n")
    numbers = [i for i, line in enumerate(raw) if line.decode().strip()]
    offset = sum(len(line) + 1 for line in raw[:numbers[40]])
    assert opened == [(offset, numbers[40] + 1, 5)]  # example 40's line, then 5 more


# ------------------------------------------------------------------ (2) process sharding

def test_processes_split_the_global_batch_and_tokenise_only_their_rows(
        corpus, tokenizer, texts, monkeypatch):
    single = _stream(corpus, tokenizer, shuffle_window=2 * WINDOW)
    steps = single.steps_per_epoch + 5
    whole = _take(single, 0, steps)
    seen = _record_encode(monkeypatch)
    parts = []
    for p in (0, 1):
        with _stream(corpus, tokenizer, process_index=p, process_count=2, prefetch=1) as stream:
            assert stream.local_batch_size == BATCH // 2
            assert stream.steps_per_epoch == single.steps_per_epoch
            parts.append(_take(stream, 0, steps))
    for (step, one), (s0, p0), (s1, p1) in zip(whole, *parts):
        assert step == s0 == s1
        for name in ("input_ids", "attention_mask", "weights", "indices"):
            joined = np.concatenate([getattr(p0, name), getattr(p1, name)])
            np.testing.assert_array_equal(joined, getattr(one, name), err_msg=name)
    for p, batches in enumerate(parts):
        own = [texts[n] for _, b in batches for n in b.indices if n >= 0]
        encoded = seen[f"zoo-textstream-{p}"]
        # every text it tokenised is one of its own rows, in order (it may run a little ahead)
        assert encoded[:len(own)] == own
        assert len(encoded) <= len(own) + 4 * BATCH


def test_batch_size_must_divide_among_processes(corpus, tokenizer):
    with pytest.raises(InvalidArgumentError, match=r"--batch-size 9 .*processes \(2\)"):
        _stream(corpus, tokenizer, batch_size=9, process_count=2)
    with pytest.raises(InvalidArgumentError, match="process_index 2"):
        _stream(corpus, tokenizer, process_index=2, process_count=2)


# ------------------------------------------------------------------ (3) once per epoch

@pytest.mark.parametrize("batch_size", [BATCH, 7])
def test_every_example_once_per_epoch_and_filler_rows(corpus, tokenizer, texts, batch_size):
    count = 1 if batch_size % 2 else 2
    streams = [_stream(corpus, tokenizer, batch_size=batch_size, process_index=p,
                       process_count=count) for p in range(count)]
    spe = streams[0].steps_per_epoch
    epochs = [_take(s, 0, 2 * spe) for s in streams]
    for epoch in (0, 1):
        real = []
        for batches in epochs:
            for _, batch in batches[epoch * spe:(epoch + 1) * spe]:
                real.extend(int(n) for n in batch.indices if n >= 0)
                assert batch.input_ids.shape == (batch_size // count, MAX_LEN)
                assert batch.input_ids.dtype == np.int32 and batch.indices.dtype == np.int64
                assert batch.weights.dtype == np.float32 and not batch.labels.any()
                filler = batch.indices == FILLER_INDEX
                np.testing.assert_array_equal(batch.weights, (~filler).astype(np.float32))
                assert (batch.input_ids[filler] == 0).all()
                assert (batch.attention_mask[filler, 0] == 1).all()
                assert (batch.attention_mask[filler, 1:] == 0).all()
                for row, n in zip(batch.input_ids, batch.indices):  # the row is example n
                    if n >= 0:
                        ids = encode(tokenizer, [texts[n]], MAX_LEN)[0]
                        assert list(row[:len(ids)]) == ids and not row[len(ids):].any()
        assert sorted(real) == list(range(len(texts)))
    fillers = sum(int((b.indices == FILLER_INDEX).sum()) for bs in epochs for _, b in bs[:spe])
    assert fillers == spe * batch_size - len(texts)


# ------------------------------------------------------------------ (4) steps per epoch

@pytest.mark.parametrize("batch_size", [1, 4, 8, 32, 257, 1000])
def test_steps_per_epoch(corpus, tokenizer, texts, batch_size):
    stream = _stream(corpus, tokenizer, batch_size=batch_size)
    assert stream.examples_per_epoch == len(texts) == 257
    assert stream.steps_per_epoch == math.ceil(len(texts) / batch_size)


def test_buckets_only_with_one_process(corpus, tokenizer):
    stream = _stream(corpus, tokenizer, max_len=32, buckets=(8, 16))
    lengths = set()
    for _, batch in _take(stream, 0, stream.steps_per_epoch):
        longest = int(batch.attention_mask.sum(axis=1).max())
        width = batch.input_ids.shape[1]
        assert width == min(b for b in (8, 16, 32) if b >= longest)
        lengths.add(width)
    assert len(lengths) >= 2
    sharded = _stream(corpus, tokenizer, max_len=32, buckets=(8, 16), process_count=2)
    assert {b.input_ids.shape for _, b in _take(sharded, 0, 10)} == {(BATCH // 2, 32)}


# ------------------------------------------------------------------ (5) the producer thread

def _producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zoo-textstream")]


def test_close_mid_stream_is_prompt_and_stops_the_thread(corpus, tokenizer):
    stream = _stream(corpus, tokenizer, prefetch=2)
    batches = stream.batches_from(0)
    next(batches)
    next(batches)
    time.sleep(0.2)  # let the producer block on the full queue
    assert _producer_threads()
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 1.0
    assert not _producer_threads()
    with pytest.raises(RuntimeError, match="closed"):
        next(batches)


def test_leaving_the_with_block_stops_the_thread(corpus, tokenizer):
    with _stream(corpus, tokenizer, prefetch=1) as stream:
        batches = stream.batches_from(5)
        assert next(batches)[0] == 5
    assert not _producer_threads()


class _BrokenTokenizer:
    """Fails as soon as the stream tries to tokenise with it."""

    def to_str(self) -> str:
        raise RuntimeError("tokenizer exploded on purpose")


def test_tokeniser_errors_reach_the_consumer(corpus, tokenizer, monkeypatch):
    with _stream(corpus, _BrokenTokenizer()) as stream, \
            pytest.raises(RuntimeError, match="tokenizer exploded on purpose"):
        next(stream.batches_from(0))
    calls = []
    real = streaming.encode

    def fails_later(tok, batch_texts, max_len):
        calls.append(len(batch_texts))
        if len(calls) == 3:
            raise ValueError("bad text in call 3")
        return real(tok, batch_texts, max_len)

    monkeypatch.setattr(streaming, "encode", fails_later)
    got = []
    with _stream(corpus, tokenizer) as stream, pytest.raises(ValueError, match="call 3"):
        for step, _ in stream.batches_from(0):
            got.append(step)
    assert got and got == list(range(len(got)))  # the batches before the failure came first
    assert not _producer_threads()


# ------------------------------------------------------------------ (6) the hub code path

def test_hub_path_with_a_local_streaming_dataset(corpus, tokenizer, texts):
    hub = HubSource(name="text", data_files=str(corpus))
    assert hub.describe() == "hf:text:train:text"
    assert sample_texts(hub, 1000) == sample_texts(corpus, 1000) == texts
    assert sample_texts(hub, 5) == texts[:5]
    file_stream = _stream(corpus, tokenizer)
    spe = file_stream.steps_per_epoch
    want = _take(file_stream, 0, 2 * spe + 3)
    stream = _stream(hub, tokenizer)
    assert stream.steps_per_epoch is None and stream.examples_per_epoch is None
    _assert_same(_take(stream, 0, 2 * spe + 3), want)  # across the epoch boundary
    assert stream.examples_per_epoch == len(texts)  # learned at the end of the first epoch
    for k in (spe - 1, spe, spe + 4):  # fresh streams: the length is learned while resuming
        _assert_same(_take(_stream(hub, tokenizer), k, 3), want[k:k + 3])
    # windows of 30: step spe starts inside the last window, past the stream's end
    file_30 = _take(_stream(corpus, tokenizer, shuffle_window=30), spe - 1, 3)
    _assert_same(_take(_stream(hub, tokenizer, shuffle_window=30), spe - 1, 3), file_30)
    _assert_same(_take(_stream(hub, tokenizer, shuffle_window=30), spe, 2), file_30[1:])
    sharded = _stream(hub, tokenizer, process_index=1, process_count=2, shuffle_window=10)
    for (_, one), (_, part) in zip(want[:5], _take(sharded, 0, 5)):
        np.testing.assert_array_equal(part.indices, one.indices[BATCH // 2:])


def test_hub_unreachable_gives_one_line_advice(monkeypatch, tokenizer):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    source = parse_source("hf:wikitext/wikitext-103-raw-v1:train")
    with pytest.raises(InvalidArgumentError) as err:
        sample_texts(source, 10)
    message = str(err.value)
    assert "cannot reach the HuggingFace hub" in message and "local text file" in message
    assert "hf:wikitext/wikitext-103-raw-v1:train:text" in message and "\n" not in message
    with _stream(source, tokenizer) as stream, \
            pytest.raises(InvalidArgumentError, match="cannot reach the HuggingFace hub"):
        next(stream.batches_from(0))


def test_hub_connection_lost_while_streaming(monkeypatch, corpus):
    class Dropping:
        def __iter__(self):
            yield {"text": "first"}
            raise TimeoutError("read timed out")

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: Dropping())
    assert sample_texts(HubSource(name="somebody/corpus"), 1) == ["first"]
    with pytest.raises(InvalidArgumentError, match="cannot reach the HuggingFace hub for "
                       "dataset hf:somebody/corpus:train:text .*TimeoutError: read timed out"):
        sample_texts(HubSource(name="somebody/corpus"), 2)


def test_hub_unknown_dataset(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(InvalidArgumentError, match="cannot load dataset hf:nobody/nothing:"
                       "train:text .*doesn't exist.*check the name"):
        sample_texts("hf:nobody/nothing/:train", 1)


def test_hub_missing_column(corpus):
    with pytest.raises(InvalidArgumentError, match="no column 'body'.*'text'"):
        sample_texts(HubSource(name="text", data_files=str(corpus), column="body"), 3)


# ------------------------------------------------------------------ (7) errors

def _one_line_user_error(excinfo, *parts: str) -> None:
    assert isinstance(excinfo.value, USER_ERRORS)
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        parse_source(tmp_path / "nope.txt")
    _one_line_user_error(err, "nope.txt", "file not found")
    with pytest.raises(FileNotFoundError) as err:
        parse_source(str(tmp_path))
    _one_line_user_error(err, str(tmp_path), "not a file")


def test_bad_utf8_names_the_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good line\n\nanother caf\xc3\xa9\ncaf\xe9 latin-1\nlast\n")
    with pytest.raises(DataFormatError) as err:
        _stream(path, tokenizer)
    _one_line_user_error(err, str(path), "line 4", "UTF-8")
    with pytest.raises(DataFormatError, match="line 4"):
        sample_texts(path, 10)
    assert sample_texts(path, 2) == ["good line", "another café"]  # before the bad line


def test_empty_corpus(tmp_path, tokenizer):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n\u3000\n\x1f \r\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        _stream(path, tokenizer)
    _one_line_user_error(err, str(path), "no text")
    with pytest.raises(DataFormatError, match="no text"):
        sample_texts(path, 10)


@pytest.mark.parametrize("spec", [
    "hf:", "hf:wikitext", "hf:wikitext:", "hf::train", "hf:a:b:c:d",
    "hf:a/b/c/d:train", "hf:/config:train", "hf:owner//config:train",
])
def test_bad_hub_spec(spec):
    with pytest.raises(InvalidArgumentError) as err:
        parse_source(spec)
    _one_line_user_error(err, spec)


def test_hub_spec_parsing(corpus):
    assert parse_source("hf:wikitext/wikitext-103-raw-v1:train:text") == HubSource(
        name="wikitext", config="wikitext-103-raw-v1", split="train", column="text")
    assert parse_source("hf:allenai/c4/en:validation") == HubSource(
        name="allenai/c4", config="en", split="validation", column="text")
    assert parse_source("hf:owner/data/:train:content") == HubSource(
        name="owner/data", config=None, split="train", column="content")
    assert parse_source("hf:bookcorpus:train") == HubSource(name="bookcorpus", split="train")
    assert isinstance(parse_source(str(corpus)), TextFileSource)


def test_bad_arguments(corpus, tokenizer):
    with pytest.raises(InvalidArgumentError, match="max_len"):
        _stream(corpus, tokenizer, max_len=1)
    with pytest.raises(InvalidArgumentError, match="shuffle_window"):
        _stream(corpus, tokenizer, shuffle_window=0)
    with pytest.raises(InvalidArgumentError, match="start step"):
        _stream(corpus, tokenizer).batches_from(-1)
    with pytest.raises(InvalidArgumentError, match="sample texts"):
        sample_texts(corpus, 0)
