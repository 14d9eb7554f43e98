"""Tokenizers of HF checkpoint folders, without transformers.

In order of preference: ``tokenizer.json`` (any model the ``tokenizers`` library reads:
WordPiece, byte-level BPE, Unigram), ``vocab.json`` + ``merges.txt`` (byte-level BPE, as
RoBERTa's slow tokenizer writes them), ``vocab.txt`` (WordPiece, as BERT's). Padding and
truncation baked into a file are turned off (the zoo pads to length buckets). Special
tokens are not assumed: the roles the zoo reads from the tokenizer (``zoo.text.special_ids``)
are checked against ``special_tokens_map.json`` / ``tokenizer_config.json`` when present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from zoo.errors import ConfigError
from zoo.hf.files import read_json
from zoo.registry import WeightsNotFoundError

ROLES = ("pad", "cls", "sep", "mask", "unk")


def read_tokenizer(path: Path, source: str = ""):
    from tokenizers import Tokenizer

    json_path = path / "tokenizer.json"
    if json_path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(json_path))
        except Exception as err:  # the tokenizers library raises plain Exceptions
            raise ConfigError(f"{json_path}: not a valid tokenizer.json ({err})") from None
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        tokenizer = _byte_level_bpe(path)
    elif (path / "vocab.txt").is_file():
        tokenizer = _wordpiece(path, source or str(path))
    else:
        others = [p.name for p in path.glob("*.model")]
        hint = (f" ({', '.join(others)} is a SentencePiece model: save the tokenizer with "
                "transformers' fast tokenizer to get tokenizer.json)" if others else "")
        raise WeightsNotFoundError(f"{path}: no tokenizer.json, vocab.json + merges.txt or "
                                   f"vocab.txt{hint}")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    named = special_token_names(path)
    if tokenizer.post_processor is None and "cls" in named and "sep" in named:
        _frame(tokenizer, named["cls"], named["sep"], path)
    check_specials(tokenizer, named, path)
    return tokenizer


def special_token_names(path: Path) -> dict[str, str]:
    """Role -> token as ``special_tokens_map.json`` (else ``tokenizer_config.json``) names it."""
    names: dict[str, str] = {}
    for file in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins
        if not (path / file).is_file():
            continue
        values = read_json(path / file)
        if not isinstance(values, dict):
            raise ConfigError(f"{path / file}: expected a JSON object")
        for role in ROLES:
            value = values.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                names[role] = value
    return names


def check_specials(tokenizer, named: dict[str, str], path: Path) -> None:
    """The zoo's reading of the special tokens must agree with what the folder's files say."""
    from zoo.text import special_ids

    try:
        ids = special_ids(tokenizer)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    for role, token in named.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ConfigError(f"{path}: the {role} token {token!r} of its tokenizer files is "
                              "not in the vocabulary")
        if token_id != ids[role]:
            raise ConfigError(
                f"{path}: its tokenizer files make {token!r} (id {token_id}) the {role} token, "
                f"but the tokenizer frames or names id {ids[role]} "
                f"({tokenizer.id_to_token(ids[role])!r}) so")


def _frame(tokenizer, cls: str, sep: str, path: Path) -> None:
    from tokenizers import processors

    ids = [tokenizer.token_to_id(t) for t in (cls, sep)]
    if None in ids:
        raise ConfigError(f"{path}: special tokens {cls!r} / {sep!r} are not in the vocabulary")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, ids[0]), (sep, ids[1])])


def _byte_level_bpe(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        model = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    except Exception as err:
        raise ConfigError(f"{path}: vocab.json / merges.txt are not a BPE vocabulary "
                          f"({err})") from None
    config = read_json(path / "tokenizer_config.json") \
        if (path / "tokenizer_config.json").is_file() else {}
    prefix_space = bool(config.get("add_prefix_space", False)) if isinstance(config, dict) \
        else False
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    named = special_token_names(path)
    specials = [t for t in (named.get(r) for r in ROLES) if t]
    tokenizer.add_special_tokens(specials)
    cls, sep = named.get("cls", "<s>"), named.get("sep", "</s>")
    ids = [tokenizer.token_to_id(t) for t in (cls, sep)]
    if None in ids:
        raise ConfigError(f"{path / 'vocab.json'}: the vocabulary lacks {cls} or {sep}")
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, ids[1]), (cls, ids[0]), add_prefix_space=prefix_space)
    return tokenizer


def _lowercase(path: Path, source: str) -> bool:
    """Casing per tokenizer_config.json's do_lower_case, else by the repo or folder's own
    name ('...-cased' keeps case), else lowercase as HF's BertTokenizer does."""
    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            raise ConfigError(f"{config}: not a valid JSON object") from None
        if isinstance(value, bool):
            return value
    return not re.search(r"(?<!un)cased", source.lower().rstrip("/").rsplit("/", 1)[-1])


def _wordpiece(path: Path, source: str):
    """BERT's tokenizer from ``vocab.txt``: its normaliser and ``[CLS] … [SEP]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab_path = path / "vocab.txt"
    try:
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{vocab_path}: not valid UTF-8 ({err.reason})") from None
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))  # HF keeps the first id of a duplicate
    named = special_token_names(path)
    cls, sep, unk = named.get("cls", "[CLS]"), named.get("sep", "[SEP]"), \
        named.get("unk", "[UNK]")
    for token in (cls, sep, unk):
        if token not in vocab:
            raise ConfigError(f"{vocab_path}: the vocabulary lacks {token}")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None,
        lowercase=_lowercase(path, source))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.BertProcessing((sep, vocab[sep]), (cls, vocab[cls]))
    return tokenizer
