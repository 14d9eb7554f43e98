"""Tokenization: the M2L tutorial's BPE recipe, correct truncation, and on-disk caches.

Training a 25k BPE vocabulary and encoding 67k sentences takes seconds, so both results
are cached under a content hash: a changed recipe, vocabulary size, corpus, tokenizer or
``max_len`` gives a new key, never a stale hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from zoo.errors import ConfigError, InvalidArgumentError, one_line

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")  # the zoo's own tokenizers
SUBWORD_PREFIX = "##"
# Bump when train_tokenizer / tokenize_splits change their output: old cache entries then miss.
RECIPE_VERSION = 1
TOKENS_VERSION = 1
TOKEN_FEATURES = datasets.Features({
    "input_ids": datasets.List(datasets.Value("int32")),
    "length": datasets.Value("int32"),
})


def train_tokenizer(texts: Sequence[str], vocab_size: int = 25_000) -> Tokenizer:
    """A BPE tokenizer trained with the tutorial's recipe; encodings are ``[CLS] ... [SEP]``.

    Padding is left off: the batcher pads to length buckets, not to a fixed width.
    """
    texts = _checked_texts(texts)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) \
            or vocab_size <= len(SPECIAL_TOKENS):
        raise InvalidArgumentError(
            f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=SUBWORD_PREFIX,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    ids = special_ids(tokenizer)
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", ids["sep"]), ("[CLS]", ids["cls"])
    )
    return tokenizer


def cached_tokenizer(
    texts: Sequence[str], vocab_size: int, cache_dir: str | Path
) -> tuple[Tokenizer, Path]:
    """``train_tokenizer(texts, vocab_size)``, trained once per (recipe, vocab_size, texts)."""
    texts = _checked_texts(texts)
    digest = _digest([f"recipe-{RECIPE_VERSION}", f"vocab-{vocab_size}"], texts)
    path = Path(cache_dir).expanduser() / f"tokenizer-v{RECIPE_VERSION}-{vocab_size}-{digest}.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path)), path
        except Exception:  # a damaged cache entry (tokenizers raises plain Exceptions): redo it
            pass
    tokenizer = train_tokenizer(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return tokenizer, path


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Token ids of each text, at most ``max_len`` of them counting ``[CLS]`` and ``[SEP]``.

    Truncation is set on a copy, so the caller's tokenizer is never mutated. (The tutorial's
    ``enable_truncation(True)`` meant ``max_length=1``, which silently disabled truncation.)
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise InvalidArgumentError(
            f"max_len must be an int >= 2 (room for [CLS] and [SEP]), got {max_len!r}")
    texts = _checked_texts(texts)
    local = _truncating_copy(tokenizer, max_len)
    ids = [encoding.ids for encoding in local.encode_batch(texts)]
    too_long = next((i for i, row in enumerate(ids) if len(row) > max_len), None)
    if too_long is not None:  # a foreign post-processor adding tokens truncation can't see
        raise InvalidArgumentError(f"text {too_long} encodes to {len(ids[too_long])} ids > "
                                   f"max_len={max_len} (the tokenizer's post-processor adds "
                                   "tokens that truncation cannot see)")
    return ids


_TRUNCATING: dict[tuple[int, int], tuple[Tokenizer, Tokenizer]] = {}


def _truncating_copy(tokenizer: Tokenizer, max_len: int) -> Tokenizer:
    """A truncating, non-padding copy of ``tokenizer``, made once per (tokenizer, max_len).

    Copying costs about a millisecond, which one-sentence ``predict`` calls would feel.
    """
    key = (id(tokenizer), max_len)
    cached = _TRUNCATING.get(key)
    if cached is None or cached[0] is not tokenizer:
        local = Tokenizer.from_str(tokenizer.to_str())
        local.no_padding()
        local.enable_truncation(max_length=max_len)
        if len(_TRUNCATING) >= 16:
            _TRUNCATING.clear()
        cached = _TRUNCATING[key] = (tokenizer, local)
    return cached[1]


def tokenize_splits(
    dsd: datasets.DatasetDict,
    tokenizer: Tokenizer,
    max_len: int,
    cache_dir: str | Path,
    *,
    text_column: str = "sentence",
) -> datasets.DatasetDict:
    """Each split with ``input_ids`` (int32) and ``length`` columns added.

    The token columns of each split are cached under a hash of (tokenizer JSON, ``max_len``,
    the split's texts), so re-running a script skips encoding; the other columns are taken
    from ``dsd`` as given.
    """
    cache_dir = Path(cache_dir).expanduser()
    tokenizer_json = tokenizer.to_str()
    out = {}
    for split, ds in dsd.items():
        texts = _checked_texts(ds.with_format("arrow")[text_column].to_pylist())
        digest = _digest([f"tokens-{TOKENS_VERSION}", tokenizer_json, f"max_len-{max_len}"], texts)
        path = cache_dir / f"tokens-{split}-{digest}"
        tokens = _load_cached(path)
        if tokens is None:
            ids = encode(tokenizer, texts, max_len)
            tokens = datasets.Dataset.from_dict(
                {"input_ids": ids, "length": [len(row) for row in ids]}, features=TOKEN_FEATURES
            )
            _save_quietly(tokens, path)
            tokens = datasets.load_from_disk(str(path))
        base = ds.remove_columns([c for c in TOKEN_FEATURES if c in ds.column_names])
        out[split] = datasets.concatenate_datasets([base, tokens], axis=1)
    return datasets.DatasetDict(out)


# The names each special-token role goes by: BERT's and the zoo's own, then RoBERTa's.
ROLE_TOKENS = {"pad": ("[PAD]", "<pad>"), "cls": ("[CLS]", "<s>"), "sep": ("[SEP]", "</s>"),
               "mask": ("[MASK]", "<mask>"), "unk": ("[UNK]", "<unk>")}
_SPECIALS: dict[int, tuple[Tokenizer, dict[str, int]]] = {}


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of the special tokens by role: pad, cls, sep, mask, unk.

    Read from the tokenizer itself: ``cls`` and ``sep`` are the tokens its post-processor
    puts around a single text, ``pad`` is its padding token when one is set, ``unk`` its
    model's unknown token; a role still open is found by name (``[PAD]`` or ``<pad>``, ...).
    Special tokens may sit anywhere in the vocabulary.
    """
    key = id(tokenizer)
    cached = _SPECIALS.get(key)
    if cached is not None and cached[0] is tokenizer:
        return dict(cached[1])
    names = _role_names(tokenizer)
    ids: dict[str, int] = {}
    for role, candidates in ROLE_TOKENS.items():
        for token in ((names[role],) if role in names else ()) + candidates:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                ids[role] = token_id
                break
    missing = [f"{role} ({' or '.join(ROLE_TOKENS[role])})" for role in ROLE_TOKENS
               if role not in ids]
    if missing:
        raise InvalidArgumentError(
            f"the tokenizer lacks special token(s) for {', '.join(missing)}; zoo models need "
            "all five roles (train one with zoo.text.train_tokenizer)")
    if len(_SPECIALS) >= 16:
        _SPECIALS.clear()
    _SPECIALS[key] = (tokenizer, ids)
    return dict(ids)


def _role_names(tokenizer: Tokenizer) -> dict[str, str]:
    """Role -> token name, as the tokenizer's own configuration says."""
    import json

    names: dict[str, str] = {}
    padding = tokenizer.padding
    if padding and padding.get("pad_token"):
        names["pad"] = padding["pad_token"]
    unk = getattr(tokenizer.model, "unk_token", None)
    if isinstance(unk, str) and unk:
        names["unk"] = unk
    processor = tokenizer.post_processor
    state = json.loads(processor.__getstate__()) if processor is not None else None
    stack = [state] if state else []
    while stack:
        node = stack.pop()
        kind = node.get("type")
        if kind == "Sequence":
            stack.extend(node.get("processors") or [])
        elif kind in ("BertProcessing", "RobertaProcessing"):
            names["cls"], names["sep"] = node["cls"][0], node["sep"][0]
        elif kind == "TemplateProcessing":
            single = node.get("single") or []
            pieces = [next(iter(p)) for p in single]
            if "Sequence" in pieces:
                at = pieces.index("Sequence")
                if at > 0 and pieces[0] == "SpecialToken":
                    names["cls"] = _template_token(node, single[0])
                if at < len(pieces) - 1 and pieces[-1] == "SpecialToken":
                    names["sep"] = _template_token(node, single[-1])
    return names


def _template_token(node: dict, piece: dict) -> str:
    """The token a TemplateProcessing piece stands for (its id may name a multi-token entry)."""
    name = piece["SpecialToken"]["id"]
    tokens = (node.get("special_tokens") or {}).get(name, {}).get("tokens") or [name]
    return tokens[0]


def check_fits(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
    """Every id the tokenizer can emit must index the model's embedding table: its vocabulary
    (added tokens included) and the ids its post-processor inserts, which a tokenizer.json
    states on their own (jax would clamp an id past the table: a silently wrong answer)."""
    import json

    if tokenizer.get_vocab_size() > vocab_size:
        raise ConfigError(f"{where}: the tokenizer has {tokenizer.get_vocab_size()} tokens but "
                          f"the model embeds only {vocab_size}")
    vocab = tokenizer.get_vocab(with_added_tokens=True)  # ids need not be 0..n-1 in a file
    token = max(vocab, key=vocab.__getitem__, default=None)
    if token is not None and vocab[token] >= vocab_size:
        raise ConfigError(f"{where}: the tokenizer gives {token!r} the id {vocab[token]}, but "
                          f"the model embeds only {vocab_size}")
    processor = tokenizer.post_processor
    stack = [json.loads(processor.__getstate__())] if processor is not None else []
    while stack:
        node = stack.pop()
        stack += node.get("processors") or []
        inserted = [tuple(node[k]) for k in ("cls", "sep") if isinstance(node.get(k), list)]
        for entry in (node.get("special_tokens") or {}).values():
            inserted += zip(entry.get("tokens") or [], entry.get("ids") or [])
        for token, token_id in inserted:
            if not isinstance(token_id, int) or not 0 <= token_id < vocab_size:
                raise ConfigError(f"{where}: the tokenizer's post-processor inserts {token!r} "
                                  f"as id {token_id}, but the model embeds only {vocab_size}")


def library_error(err: BaseException) -> bool:
    """Whether ``err`` is the tokenizers library's own failure: a plain ``Exception``, or a
    Rust panic it let through (pyo3's ``PanicException`` derives from ``BaseException``, so
    ``except Exception`` misses it)."""
    return isinstance(err, Exception) or type(err).__name__ == "PanicException"


# Words of several scripts, digits, punctuation, accents and symbols few vocabularies hold
# (they take the unknown token): what any tokenizer must encode without failing.
PROBE_TEXT = "Hello, world! 123 caf\u00e9 \u00fcber \u4e2d\u6587 \U0001f600 \u2603 x"


def check_encodes(tokenizer: Tokenizer, where: str) -> None:
    """One ``ConfigError`` line unless ``tokenizer`` encodes a sample text, also once copied
    through its own JSON (as ``encode_texts`` copies it to truncate, and a saved model
    stores it). Either can fail for a tokenizer that loaded: a vocabulary without the unknown
    token its WordPiece model names fails on the first word it does not know, one that
    gives two tokens the same id does not survive the copy (in ``predict``, far from the
    file)."""
    try:
        tokenizer.encode(PROBE_TEXT)
        Tokenizer.from_str(tokenizer.to_str()).encode(PROBE_TEXT)
    except BaseException as err:
        if not library_error(err):
            raise
        raise ConfigError(f"{where}: the tokenizer fails to encode text ({one_line(err)})"
                          ) from None


def charsmap_problem(data: bytes) -> str | None:
    """What is wrong with a precompiled character map, SentencePiece's normaliser as the
    tokenizers library runs it (``Precompiled``); None: any input normalises safely. The
    library indexes the map without bounds checks (a bad index panics mid-``encode``, a
    ``BaseException``), so every trie position any input can reach, and every string
    offset it can yield, is checked here.

    Layout: u32 trie size in bytes, the trie's u32 units, then the UTF-8 replacement strings.
    A unit's label is ``u & (1 << 31 | 0xFF)``, its leaf flag bit 8, its offset
    ``(u >> 10) << ((u & 1 << 9) >> 6)``, a leaf's value ``u & (1 << 31) - 1``. From the
    root (position ``offset(unit[0])``) each input byte c (1..255) goes to ``p ^ c``; a
    unit whose label is c moves on to ``p ^ c ^ offset``, and its leaf value there is the
    offset of a replacement string.
    """
    if len(data) < 4:
        return "is shorter than its 4-byte header"
    units = struct.unpack("<I", data[:4])[0] // 4
    if len(data) < 4 + 4 * units:
        return f"holds {len(data) - 4} bytes, fewer than its trie's {4 * units}"
    if units == 0:
        return "has an empty trie"
    array = np.frombuffer(data, "<u4", count=units, offset=4).astype(np.int64)
    strings = data[4 + 4 * units:]
    try:
        strings.decode("utf-8")
    except UnicodeDecodeError:
        return "has replacement strings that are not UTF-8"
    starts = np.frombuffer(strings, np.uint8) & 0xC0 != 0x80  # where a character may start
    starts = np.append(starts, True)                            # (and the very end)

    def offset(unit):
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    labels = np.arange(1, 256, dtype=np.int64)
    seen = np.zeros(units, bool)
    frontier = np.array([offset(array[0])])
    while frontier.size:
        if frontier.max() >= units:
            return f"leads to trie position {int(frontier.max())} of {units}"
        seen[frontier] = True
        children = frontier[:, None] ^ labels[None, :]
        if children.max() >= units:
            return f"leads to trie position {int(children.max())} of {units}"
        found = array[children]
        match = (found & ((1 << 31) | 0xFF)) == labels[None, :]
        child, unit = children[match], found[match]
        nxt = child ^ offset(unit)
        if nxt.size and nxt.max() >= units:
            return f"leads to trie position {int(nxt.max())} of {units}"
        values = array[nxt[(unit >> 8) & 1 == 1]] & ((1 << 31) - 1)
        bad = values[(values > len(strings)) | ~starts[np.minimum(values, len(strings))]]
        if bad.size:
            return (f"points at byte {int(bad[0])} of its {len(strings)} bytes of "
                    "replacements, not at the start of a character")
        frontier = np.unique(nxt)
        frontier = frontier[~seen[frontier]]
    return None


def read_tokenizer_file(path: Path) -> Tokenizer:
    """A ``tokenizer.json`` the zoo did not write itself (a model directory's, an HF folder's,
    a run's), as a Tokenizer: one ``ConfigError`` line when it is not one (the library's
    parse errors and panics alike), or when its SentencePiece normaliser could make the
    tokenizers library panic."""
    import json

    from zoo.fsutil import check_size

    check_size(path, "a tokenizer file the zoo reads")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except BaseException as err:  # plain Exceptions, and panics (e.g. a Precompiled map)
        if not library_error(err):
            raise
        raise ConfigError(f"{path}: not a valid tokenizer.json ({one_line(err)})") from None
    stack = [json.loads(tokenizer.normalizer.__getstate__())] if tokenizer.normalizer else []
    while stack:
        node = stack.pop()
        stack += node.get("normalizers") or []
        if node.get("type") == "Precompiled":
            import base64

            problem = charsmap_problem(base64.b64decode(node.get("precompiled_charsmap") or ""))
            if problem:
                raise ConfigError(f"{path}: its Precompiled normaliser's character map "
                                  f"{problem}")
    return tokenizer


def _load_cached(path: Path) -> datasets.Dataset | None:
    """A cached token dataset, or None when absent or damaged (then it is rebuilt).

    The cache is the zoo's own: a damaged entry (an interrupted disk, a stray edit) is
    removed and computed again rather than failing the run.
    """
    if not path.is_dir():
        return None
    try:
        tokens = datasets.load_from_disk(str(path))
        if set(tokens.column_names) == set(TOKEN_FEATURES):
            return tokens
    except Exception:  # datasets/arrow raise many types for a damaged folder
        pass
    shutil.rmtree(path, ignore_errors=True)
    return None


def _checked_texts(texts: Iterable[str], what: str = "texts") -> list[str]:
    """``texts`` as a list, refusing a bare string, non-string items and text that is not
    valid Unicode (a lone surrogate), each named by its index."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is {type(text).__name__}, expected str")
        check_unicode(text, f"{what}[{i}]")
    return texts


def check_unicode(text: str, where: str) -> None:
    """Refuse a string the tokenizer cannot read (a lone surrogate such as '\\ud800')."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidArgumentError(
            f"{where} is not valid Unicode: a lone surrogate {text[err.start]!r} at character "
            f"{err.start}") from None


@dataclasses.dataclass
class Encoded:
    """One tokenised example: ids, token types (segment 0 / 1), and for word input the word
    of each token (None for special tokens), the words and their character spans; for a
    task that encodes the two texts of a pair separately, the second one as ``pair``."""

    ids: list[int]
    type_ids: list[int]
    word_ids: list[int | None] | None = None
    words: list[str] | None = None
    spans: list[tuple[int, int]] | None = None
    # A second text encoded on its own (a bi-encoder's pair: ``pair_input_ids`` in a batch).
    pair: "Encoded | None" = None


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None,
                 max_len: int) -> list[Encoded]:
    """Each text, or (text, pair), as ``[CLS] a [SEP] (b [SEP])`` of at most ``max_len`` ids.

    A pair too long is truncated "longest first" (a token off the longer side at a time), as
    HuggingFace does. Token types are 0 on the first segment and 1 on the second.
    """
    _check_max_len(max_len)
    texts = _checked_texts(texts)
    local = _truncating_copy(tokenizer, max_len)
    if pairs is None:
        encodings = local.encode_batch(texts)
    else:
        pairs = _checked_texts(pairs, "text pairs")
        if len(pairs) != len(texts):
            raise InvalidArgumentError(f"{len(texts)} texts but {len(pairs)} text pairs")
        encodings = local.encode_batch(list(zip(texts, pairs)))
    out = [Encoded(e.ids, e.type_ids) for e in encodings]
    _check_fits(out, max_len)
    return out


def encode_words(tokenizer: Tokenizer, words: Sequence[Sequence[str]], max_len: int
                 ) -> list[Encoded]:
    """Pre-split words (token classification) with the word of each token, at most
    ``max_len`` ids (words past the end are cut off)."""
    _check_max_len(max_len)
    rows = []
    for i, row in enumerate(words):
        if isinstance(row, (str, bytes)):
            raise TypeError(f"words[{i}] must be a list of words, not a single string")
        rows.append(_checked_texts(row, f"words[{i}]"))
    local = _truncating_copy(tokenizer, max_len)
    encodings = local.encode_batch(rows, is_pretokenized=True)
    out = [Encoded(e.ids, e.type_ids, list(e.word_ids), row)
           for e, row in zip(encodings, rows)]
    _check_fits(out, max_len)
    return out


def _check_max_len(max_len) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise InvalidArgumentError(
            f"max_len must be an int >= 2 (room for [CLS] and [SEP]), got {max_len!r}")


def _check_fits(encoded: Sequence[Encoded], max_len: int) -> None:
    too_long = next((i for i, e in enumerate(encoded) if len(e.ids) > max_len), None)
    if too_long is not None:  # a foreign post-processor adding tokens truncation can't see
        raise InvalidArgumentError(f"text {too_long} encodes to {len(encoded[too_long].ids)} ids "
                                   f"> max_len={max_len} (the tokenizer's post-processor adds "
                                   "tokens that truncation cannot see)")


def _digest(parts: Sequence[str], texts: Sequence[str]) -> str:
    """A short content hash; each item is length-prefixed so no two inputs collide by joining."""
    h = hashlib.sha256()
    for item in (*parts, *texts):
        data = item.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def _save_quietly(dataset: datasets.Dataset, path: Path) -> None:
    """Save to a temporary sibling folder, then rename: a crash never leaves a half-written cache.

    The save's progress bars are silenced: a cache write is not news to the user.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        dataset.save_to_disk(str(tmp))
        try:
            tmp.rename(path)
        except OSError:
            if not path.is_dir():  # not merely "another process got there first"
                raise
    finally:
        if bars_were_on:
            datasets.utils.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def tokenizer_files(tokenizer: Tokenizer, max_len: int) -> dict[str, str]:
    """What an exported folder carries for its tokenizer: ``tokenizer.json`` plus the
    ``tokenizer_config.json`` and ``special_tokens_map.json`` that transformers reads the
    special tokens from (the roles the zoo itself uses), as {file name: text}."""
    import json

    # An added token by its content: id_to_token gives a normalised one's normalised form
    # ("[mask]" under a lower-casing normaliser), which is not in the vocabulary.
    added = tokenizer.get_added_tokens_decoder()
    roles = {role: added[i].content if i in added else tokenizer.id_to_token(i)
             for role, i in special_ids(tokenizer).items()}
    specials = {f"{role}_token": token for role, token in sorted(roles.items())}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(max_len),
              "clean_up_tokenization_spaces": False, **specials}
    return {"tokenizer.json": tokenizer.to_str(),
            "tokenizer_config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
            "special_tokens_map.json": json.dumps(specials, indent=2, sort_keys=True) + "\n"}
