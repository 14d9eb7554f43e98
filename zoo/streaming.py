"""Pre-training text larger than memory: streamed, tokenised on the fly, sharded, resumable.

A source is a local UTF-8 text file (one example per line, blank lines skipped) or a
HuggingFace hub dataset read with ``datasets``' streaming mode
(``hf:NAME[/CONFIG]:SPLIT[:COLUMN]``).
Its non-blank texts, stripped, are the examples, numbered ``n = 0, 1, 2, ...`` in stream order;
every epoch is the same examples.

Order. The stream is cut into *windows* of ``W = shuffle_window * process_count`` consecutive
examples. In epoch ``e`` the examples of window ``w`` are put in the order of
``np.random.default_rng((seed, e, w)).permutation(len(window))``; the permuted windows, one
after another, are cut into global batches of ``batch_size`` rows (a batch may span two
windows). Only the last global batch of an epoch can be short: it is topped up with filler
rows (weight 0, index -1), so every batch has the same number of rows; then the next epoch
starts from the first example again (a file is re-read, a hub stream restarted).

Processes. Process ``p`` of ``P`` takes rows ``[p * B, (p + 1) * B)`` of every global batch,
``B = batch_size // P``. Every process reads the whole stream (a window at a time, as text)
but tokenises only its own rows; together the processes see every example once per epoch,
and since all batches are ``max_len`` long (``buckets`` are honoured only for ``P == 1``),
every process's batches have the same shape without any communication. The global batch is
the same for any ``P`` with the same ``batch_size`` and window size ``W``: a 1-process run
with ``shuffle_window=2 * s`` sees the rows that 2 processes with ``shuffle_window=s`` see.

Exact resume. Each process's batches are a pure function of (source, tokenizer, batch_size,
max_len, seed, process_index, process_count, shuffle_window, buckets), so
``batches_from(k)`` yields exactly what an uninterrupted ``batches_from(0)`` yields from global
step ``k`` on: it locates the epoch and window holding step ``k``'s first example, re-draws
that window's permutation and drops the rows already used, without tokenising anything
before ``k``. For a text file the one counting pass (which also checks the UTF-8) keeps the
byte offset of every ``shuffle_window``-th example, so a resume seeks straight to its
window; a hub stream is skipped by counting examples. A hub stream's length is unknown until
it has been read to the end once (``steps_per_epoch`` is ``None``, the caller sets the number
of steps); it is learned then, and the next epoch restarts the stream. A resume past the end
of the first hub epoch reads the whole stream once, counting, to learn it.

Background thread. One producer thread per ``batches_from`` reads, permutes and tokenises
(``zoo.text.encode``, batched over several batches' rows) and puts ready batches into a
bounded ``queue.Queue(prefetch)``; the consumer gets them in order. An exception in the
producer is raised again in the consumer. ``close()`` (or leaving the ``with`` block, or
dropping the generator) sets a stop event; the producer notices it between batches and
while waiting on a full queue, so closing never hangs.
"""

from __future__ import annotations

import io
import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.batching import FILLER_INDEX, Batch, _pad_rows, buckets_for
from zoo.data import DataFileMissingError, DataFormatError
from zoo.errors import InvalidArgumentError
from zoo.text import encode

HUB_PREFIX = "hf:"
HUB_FORM = "hf:NAME[/CONFIG]:SPLIT[:COLUMN]"
DEFAULT_COLUMN = "text"
# Rows tokenised per zoo.text.encode call (whole batches, at least one).
ENCODE_ROWS = 1024
_POLL_S = 0.05       # how often a waiting producer / consumer looks at the stop event
_JOIN_S = 5.0        # how long close() waits for a producer busy in a long call


# --------------------------------------------------------------------------- sources

class TextFileSource:
    """A local UTF-8 text file: one example per line (split at ``\\n``), blank lines skipped.

    ``count`` reads the file once, in binary, to count its non-blank lines, check their
    UTF-8 and note the byte offset of every ``every``-th example; ``texts(start)`` then
    seeks straight to the indexed offset at or before example ``start``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DataFileMissingError(
                f"{self.path}: file not found; pass a UTF-8 text file (one example per line) "
                f"or a hub dataset as {HUB_FORM}")
        if not self.path.is_file():
            raise DataFileMissingError(
                f"{self.path}: not a file; pass a UTF-8 text file (one example per line) "
                f"or a hub dataset as {HUB_FORM}")
        # every -> (number of examples, [(byte offset, line number) of example k * every])
        self._index: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextFileSource({str(self.path)!r})"

    def describe(self) -> str:
        return str(self.path)

    def count(self, every: int) -> int:
        """The number of examples (non-blank lines); builds the offset index on first call."""
        return self._scan(every)[0]

    def texts(self, start: int = 0, every: int | None = None) -> Iterator[str]:
        """The examples from example number ``start`` on, stripped."""
        offset, line_no, skip = 0, 1, start
        if every is not None and start:
            _, marks = self._scan(every)
            k = min(start // every, len(marks) - 1)
            (offset, line_no), skip = marks[k], start - k * every
        return self._read(offset, line_no, skip)

    def _scan(self, every: int) -> tuple[int, list[tuple[int, int]]]:
        with self._lock:
            if every not in self._index:
                count, marks, offset = 0, [], 0
                with self._open() as f:
                    for line_no, raw in enumerate(f, 1):
                        if self._text(raw, line_no) is not None:
                            if count % every == 0:
                                marks.append((offset, line_no))
                            count += 1
                        offset += len(raw)
                if not count:
                    raise DataFormatError(
                        f"{self.path}: no text (the file is empty or holds only blank lines)")
                self._index[every] = (count, marks)
            return self._index[every]

    def _read(self, offset: int, line_no: int, skip: int) -> Iterator[str]:
        with self._open() as f:
            f.seek(offset)
            for line_no, raw in enumerate(f, line_no):
                text = self._text(raw, line_no)
                if text is None:
                    continue
                if skip:
                    skip -= 1
                    continue
                yield text

    def _open(self) -> io.BufferedReader:
        try:
            return open(self.path, "rb")  # noqa: SIM115 - the callers use it as a context
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise DataFileMissingError(f"{self.path}: file not found; check the path.") from err

    def _text(self, raw: bytes, line_no: int) -> str | None:
        """The line's example, or None for a blank line; one rule for counting and reading."""
        stripped = raw.strip()
        if not stripped:
            return None
        if stripped.isascii():
            return stripped.decode("ascii").strip() or None  # str.strip also drops \x1c-\x1f
        try:
            text = raw.decode("utf-8").strip()  # str.strip: Unicode spaces count as blank
        except UnicodeDecodeError as err:
            raise DataFormatError(
                f"{self.path}, line {line_no}: not valid UTF-8 ({err.reason})") from err
        return text or None


@dataclass(frozen=True)
class HubSource:
    """A dataset read with ``datasets.load_dataset(name, config, split=..., streaming=True)``.

    ``column`` holds the texts; blank ones (and None) are skipped. ``data_files`` is passed
    through, so a local ``HubSource(name="text", data_files="corpus.txt")`` runs the same code
    without network.
    """

    name: str
    config: str | None = None
    split: str = "train"
    column: str = DEFAULT_COLUMN
    data_files: str | Sequence[str] | None = None

    def describe(self) -> str:
        config = f"/{self.config}" if self.config else ""
        return f"{HUB_PREFIX}{self.name}{config}:{self.split}:{self.column}"

    def count(self, every: int) -> None:
        """Unknown without reading the whole stream."""
        return None

    def texts(self, start: int = 0, every: int | None = None) -> Iterator[str]:
        """The examples from example number ``start`` on, stripped (skipped ones are counted)."""
        return itertools.islice(self._texts(), start, None)

    def _dataset(self):
        import datasets

        kwargs = {} if self.data_files is None else {"data_files": self.data_files}
        try:
            return datasets.load_dataset(
                self.name, self.config, split=self.split, streaming=True, **kwargs)
        except Exception as err:  # offline, unknown name/config/split, bad data files...
            if _is_network_error(err):
                raise self._unreachable(err) from err
            raise InvalidArgumentError(
                f"cannot load dataset {self.describe()} ({type(err).__name__}: "
                f"{_first_line(err)}); check the name, config and split, or pass a local "
                "text file") from err

    def _unreachable(self, err: BaseException) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"cannot reach the HuggingFace hub for dataset {self.describe()} (offline? "
            f"{type(err).__name__}: {_first_line(err)}): download it where you have "
            "network, or pass a local text file (one example per line)")

    def _examples(self) -> Iterator[dict]:
        """The dataset's rows; a network failure while streaming becomes a one-line error."""
        rows = iter(self._dataset())
        while True:
            try:
                example = next(rows)
            except StopIteration:
                return
            except Exception as err:
                if _is_network_error(err):
                    raise self._unreachable(err) from err
                raise
            yield example

    def _texts(self) -> Iterator[str]:
        for number, example in enumerate(self._examples()):
            if self.column not in example:
                raise InvalidArgumentError(
                    f"dataset {self.describe()} has no column {self.column!r} (it has "
                    f"{', '.join(map(repr, example))}); name one as {HUB_FORM}")
            text = example[self.column]
            if text is None:
                continue
            if not isinstance(text, str):
                raise InvalidArgumentError(
                    f"dataset {self.describe()}: row {number} of column {self.column!r} is "
                    f"{type(text).__name__}, not text; name a text column as {HUB_FORM}")
            text = text.strip()
            if text:
                yield text


Source = TextFileSource | HubSource


def parse_source(spec: str | Path | Source) -> Source:
    """A text file path, or ``hf:NAME[/CONFIG]:SPLIT[:COLUMN]`` (column default ``text``).

    NAME may carry an owner; then CONFIG (or an empty one) must follow it, since one slash
    means NAME/CONFIG: ``hf:wikitext/wikitext-103-raw-v1:train``, ``hf:allenai/c4/en:train``,
    ``hf:owner/dataset/:train:content``.
    """
    if isinstance(spec, (TextFileSource, HubSource)):
        return spec
    if isinstance(spec, Path) or not str(spec).startswith(HUB_PREFIX):
        if not str(spec).strip():
            raise InvalidArgumentError(
                f"empty text source; pass a UTF-8 text file or {HUB_FORM}")
        return TextFileSource(spec)
    parts = str(spec)[len(HUB_PREFIX):].split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise InvalidArgumentError(
            f"bad hub dataset {str(spec)!r}: expected {HUB_FORM}, e.g. "
            "hf:wikitext/wikitext-103-raw-v1:train:text")
    path, split, column = parts[0], parts[1], parts[2] if len(parts) == 3 else DEFAULT_COLUMN
    name, config = split_hub_name(path, str(spec), HUB_FORM)
    return HubSource(name=name, config=config, split=split, column=column)


def split_hub_name(path: str, given: str, form: str) -> tuple[str, str | None]:
    """(dataset, config) of ``NAME``, ``NAME/CONFIG`` or ``OWNER/NAME/CONFIG`` (an empty
    CONFIG allowed: ``owner/name/``); ``given`` and ``form`` word the error."""
    names = path.split("/")
    if len(names) > 3 or not all(names[:2]) or (len(names) == 3 and not names[0]):
        raise InvalidArgumentError(
            f"bad hub dataset name {path!r} in {given!r}: expected NAME, NAME/CONFIG or "
            f"OWNER/NAME/CONFIG (an empty CONFIG allowed), as in {form}")
    if len(names) == 3:
        return f"{names[0]}/{names[1]}", names[2] or None
    return names[0], (names[1] if len(names) == 2 else None)


def sample_texts(source: str | Path | Source, n: int) -> list[str]:
    """The first ``n`` non-blank texts (stripped) of the source, e.g. to train a tokenizer."""
    source = parse_source(source)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"the number of sample texts must be a positive int, got {n!r}")
    texts = source.texts(0)
    try:
        sample = list(itertools.islice(texts, n))
    finally:
        close = getattr(texts, "close", None)
        if close is not None:
            close()
    if not sample:
        raise DataFormatError(f"{source.describe()}: no text (it is empty or holds only blank "
                              "lines)")
    return sample


# --------------------------------------------------------------------------- the stream

class _Failure:
    """An exception raised in the producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Stopped(Exception):
    """The producer was asked to stop."""


class TextStream:
    """Infinite, deterministic, per-process batches of a streamed source (see the module doc)."""

    def __init__(
        self,
        source: str | Path | Source,
        tokenizer,
        *,
        batch_size: int,
        max_len: int,
        pad_id: int = 0,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        shuffle_window: int = 10_000,
        prefetch: int = 8,
        buckets: Sequence[int] | None = None,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("max_len", max_len, 2),
                                 ("seed", seed, 0), ("process_count", process_count, 1),
                                 ("process_index", process_index, 0),
                                 ("shuffle_window", shuffle_window, 1), ("prefetch", prefetch, 1),
                                 ("pad_id", pad_id, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")
        if process_index >= process_count:
            raise InvalidArgumentError(
                f"process_index {process_index} is not below process_count {process_count}")
        if batch_size % process_count:
            raise InvalidArgumentError(
                f"--batch-size {batch_size} must be a multiple of the number of processes "
                f"({process_count})")
        self.source = parse_source(source)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_len = int(max_len)
        self.pad_id = int(pad_id)
        self.seed = int(seed)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.shuffle_window = int(shuffle_window)
        self.prefetch = int(prefetch)
        self.local_batch_size = self.batch_size // self.process_count
        self.window = self.shuffle_window * self.process_count
        # Row lengths: buckets only on one process (all processes' shapes must agree).
        if buckets is not None and self.process_count == 1:
            self.lengths = buckets_for(self.max_len, buckets)
        else:
            self.lengths = (self.max_len,)
        self._epoch_len = self.source.count(self.shuffle_window)  # None for a hub stream
        self._producers: set[_Producer] = set()
        self._lock = threading.Lock()

    @property
    def examples_per_epoch(self) -> int | None:
        """Non-blank examples per epoch; None for a hub stream until one epoch was read."""
        return self._epoch_len

    @property
    def steps_per_epoch(self) -> int | None:
        """Global batches per pass over a text file; None for a hub stream."""
        if isinstance(self.source, HubSource):
            return None
        return -(-self._epoch_len // self.batch_size)

    def batches_from(self, step0: int = 0) -> Iterator[tuple[int, Batch]]:
        """``(global step, this process's batch)`` from ``step0`` on, forever."""
        if isinstance(step0, bool) or not isinstance(step0, (int, np.integer)) or step0 < 0:
            raise InvalidArgumentError(f"the start step must be an int >= 0, got {step0!r}")
        return self._iterate(int(step0))

    def _iterate(self, step0: int) -> Iterator[tuple[int, Batch]]:
        """The consumer side; the producer thread starts on the first ``next``."""
        producer = _Producer(self, step0)
        with self._lock:
            self._producers.add(producer)
        try:
            yield from producer.results()
        finally:
            producer.stop()
            with self._lock:
                self._producers.discard(producer)

    def close(self) -> None:
        """Stop every producer thread (waits a few seconds at most)."""
        with self._lock:
            producers = list(self._producers)
            self._producers.clear()
        for producer in producers:
            producer.stop()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the producer's work (runs in its thread)

    def _produce(self, step: int, stop: threading.Event) -> Iterator[tuple[int, Batch]]:
        """This process's batches from global ``step`` on; a pure function of the settings."""
        size, window = self.batch_size, self.window
        while True:
            if self._epoch_len is not None:
                epoch, s = divmod(step, -(-self._epoch_len // size))
            else:  # a hub stream not yet read to its end: try the first epoch
                epoch, s = 0, step
            pos = s * size
            w = pos // window
            texts, opened = self._open(w * window)
            if opened < w * window:  # only a hub stream: step lies past its first epoch
                self._learn_length(opened)
                continue
            skip, seen, carry = pos - w * window, w * window, []
            while True:
                if stop.is_set():
                    raise _Stopped
                chunk = list(itertools.islice(texts, window))
                seen += len(chunk)
                last = len(chunk) < window
                if last:
                    self._learn_length(seen)
                elif self._epoch_len is not None and seen > self._epoch_len:
                    self._changed()
                order = np.random.default_rng((self.seed, epoch, w)).permutation(len(chunk))
                rows = [(w * window + int(i), chunk[i]) for i in order]
                # (all dropped if a hub stream turns out shorter than step's position: then
                # its length is now known and the next round locates step in a later epoch)
                rows, skip = rows[skip:], 0
                carry.extend(rows)
                complete = len(carry) // size * size
                if last and len(carry) > complete:
                    complete = len(carry)  # the epoch's short last batch
                for batch in self._batches(carry[:complete], stop):
                    yield step, batch
                    step += 1
                del carry[:complete]
                if last:
                    break
                w += 1
            close = getattr(texts, "close", None)
            if close is not None:
                close()

    def _open(self, start: int) -> tuple[Iterator[str], int]:
        """An iterator from example ``start``, and how many examples it skipped (< start only
        if the stream is shorter)."""
        if isinstance(self.source, TextFileSource):
            if start > self._epoch_len:
                self._changed()
            return self.source.texts(start, self.shuffle_window), start
        texts = self.source.texts(0)
        skipped = sum(1 for _ in itertools.islice(texts, start))
        return texts, skipped

    def _learn_length(self, count: int) -> None:
        if self._epoch_len is None:
            if count == 0:
                raise DataFormatError(f"{self.source.describe()}: no text (it is empty or "
                                      "holds only blank lines)")
            self._epoch_len = count
        elif count != self._epoch_len:
            self._changed()

    def _changed(self) -> None:
        raise DataFormatError(
            f"{self.source.describe()}: the number of examples changed while streaming "
            f"(counted {self._epoch_len} before); do not edit a corpus during a run")

    def _batches(self, rows: list[tuple[int, str]], stop: threading.Event) -> Iterator[Batch]:
        """Global batches (consecutive ``batch_size`` rows; the last may be short) cut to this
        process's rows, tokenised several batches per ``encode`` call."""
        size, local = self.batch_size, self.local_batch_size
        lo = self.process_index * local
        per_call = max(1, ENCODE_ROWS // local)
        starts = list(range(0, len(rows), size))
        for g in range(0, len(starts), per_call):
            if stop.is_set():
                raise _Stopped
            mine = [rows[b + lo:b + lo + local] for b in starts[g:g + per_call]]
            texts = [text for part in mine for _, text in part]
            ids = encode(self.tokenizer, texts, self.max_len) if texts else []
            at = 0
            for part in mine:
                yield self._make_batch([n for n, _ in part], ids[at:at + len(part)])
                at += len(part)

    def _make_batch(self, numbers: list[int], ids: list[list[int]]) -> Batch:
        local, real = self.local_batch_size, len(numbers)
        longest = max((len(row) for row in ids), default=0)
        length = next(b for b in self.lengths if b >= longest)
        input_ids, attention_mask = _pad_rows(ids, local, length, self.pad_id)
        weights = np.zeros(local, np.float32)
        weights[:real] = 1.0
        indices = np.full(local, FILLER_INDEX, np.int64)
        indices[:real] = numbers
        return Batch(input_ids, attention_mask, np.zeros(local, np.int32), weights, indices, {})


class _Producer:
    """One background thread running ``stream._produce`` into a bounded queue."""

    def __init__(self, stream: TextStream, step0: int) -> None:
        self._stream = stream
        self._step0 = step0
        self._queue: queue.Queue = queue.Queue(stream.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"zoo-textstream-{stream.process_index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._stream._produce(self._step0, self._stop):
                if not self._put(item):
                    return
        except _Stopped:
            return
        except BaseException as err:  # noqa: BLE001 - every failure goes to the consumer
            self._put(_Failure(err))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def results(self) -> Iterator[tuple[int, Batch]]:
        while True:
            if self._stop.is_set():
                raise RuntimeError("the text stream was closed")
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the text stream's producer thread ended unexpectedly")
                continue
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=_JOIN_S)


_NETWORK_ERROR_NAMES = frozenset({
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ClientConnectorError",
    "ServerDisconnectedError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
})


def _is_network_error(err: BaseException) -> bool:
    """Whether ``err`` (from datasets, huggingface_hub, requests, aiohttp...) means "no hub"."""
    return isinstance(err, (ConnectionError, TimeoutError)) or any(
        cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(err).__mro__)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
