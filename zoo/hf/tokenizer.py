"""Tokenizers of HF checkpoint folders, without transformers.

In order of preference: ``tokenizer.json`` (any model the ``tokenizers`` library reads:
WordPiece, byte-level BPE, Unigram), ``vocab.json`` + ``merges.txt`` (byte-level BPE, as
RoBERTa's slow tokenizer writes them), ``spm.model`` (a SentencePiece Unigram model, as
DeBERTa-v2/v3's: the hub's ``microsoft/deberta-v3-*`` ship nothing else; built as
transformers 5 builds it, without the sentencepiece library), ``vocab.txt`` (WordPiece, as
BERT's). Padding and truncation baked into a file are turned off (the zoo pads to length
buckets). Special tokens are not assumed: the roles the zoo reads from the tokenizer
(``zoo.text.special_ids``) are checked against ``special_tokens_map.json`` /
``tokenizer_config.json`` when present.
"""

from __future__ import annotations

import re
from pathlib import Path

from zoo.errors import ConfigError, one_line
from zoo.hf.files import read_json
from zoo.registry import WeightsNotFoundError

ROLES = ("pad", "cls", "sep", "mask", "unk")
SPM_FILE = "spm.model"
# transformers' order of the special-token attributes: a named token the vocabulary lacks
# is appended in this order.
SPECIAL_ATTRIBUTES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
SPM_SPECIALS = {"bos": "[CLS]", "eos": "[SEP]", "unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]",
                "cls": "[CLS]", "mask": "[MASK]"}  # DebertaV2Tokenizer's defaults
ADDED_FLAGS = ("special", "normalized", "lstrip", "rstrip", "single_word")


def read_tokenizer(path: Path, source: str = ""):
    """The folder's tokenizer (see the module docstring), checked: its special tokens agree
    with the folder's files, and it encodes text (``zoo.text.check_encodes``)."""
    from zoo.text import check_encodes, read_tokenizer_file

    json_path = path / "tokenizer.json"
    if json_path.is_file():
        file, tokenizer = json_path, read_tokenizer_file(json_path)
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        _check_sizes(path, "vocab.json", "merges.txt")
        file, tokenizer = path / "vocab.json", _byte_level_bpe(path)
    elif (path / SPM_FILE).is_file():
        _check_sizes(path, SPM_FILE)
        file, tokenizer = path / SPM_FILE, _sentencepiece(path)
    elif (path / "vocab.txt").is_file():
        _check_sizes(path, "vocab.txt")
        file, tokenizer = path / "vocab.txt", _wordpiece(path, source or str(path))
    else:
        others = [p.name for p in path.glob("*.model")]
        hint = (f" ({', '.join(others)} is a SentencePiece model of another name: save the "
                "tokenizer with transformers' fast tokenizer to get tokenizer.json)"
                if others else "")
        raise WeightsNotFoundError(f"{path}: no tokenizer.json, vocab.json + merges.txt, "
                                   f"{SPM_FILE} or vocab.txt{hint}")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    named = special_token_names(path)
    if tokenizer.post_processor is None and "cls" in named and "sep" in named:
        _frame(tokenizer, named["cls"], named["sep"], path)
    check_specials(tokenizer, named, path)
    check_encodes(tokenizer, str(file))
    return tokenizer


def _check_sizes(path: Path, *names: str) -> None:
    """A vocabulary file over ``zoo.fsutil.MAX_JSON_BYTES`` is one line, before it is read."""
    from zoo.fsutil import check_size

    for name in names:
        check_size(path / name, "a tokenizer file the zoo reads")


def special_token_names(path: Path, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    """Role -> token as ``special_tokens_map.json`` (else ``tokenizer_config.json``) names it."""
    names: dict[str, str] = {}
    for file in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins
        if not (path / file).is_file():
            continue
        values = read_json(path / file)
        if not isinstance(values, dict):
            raise ConfigError(f"{path / file}: expected a JSON object")
        for role in roles:
            value = values.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                names[role] = _checked_text(value, f"{path / file}: {role}_token")
    return names


def _checked_text(text: str, what: str) -> str:
    """``text`` when it is valid Unicode; JSON's lone surrogates (``"\\ud800"``) read as
    Python strings that the tokenizers library cannot take (TypeError, UnicodeEncodeError)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {text!r} is not valid Unicode (a lone surrogate)") from None
    return text


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

    from zoo.text import library_error

    try:
        model = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    except BaseException as err:  # the library panics on a merge longer than any token
        if not library_error(err):
            raise
        raise ConfigError(f"{path}: vocab.json / merges.txt are not a BPE vocabulary "
                          f"({one_line(err)})") from None
    prefix_space = _setting(path, "add_prefix_space", False)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    named = special_token_names(path)
    specials = [t for t in (named.get(r) for r in ROLES) if t]
    tokenizer.add_special_tokens(specials)
    cls, sep = named.get("cls", "<s>"), named.get("sep", "</s>")
    ids = [tokenizer.token_to_id(t) for t in (cls, sep)]
    if None in ids:
        raise ConfigError(f"{path / 'vocab.json'}: the vocabulary lacks {cls!r} or {sep!r}")
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, ids[1]), (cls, ids[0]), add_prefix_space=prefix_space)
    return tokenizer


def _lowercase(path: Path, source: str) -> bool:
    """Casing per tokenizer_config.json's do_lower_case, else by the repo or folder's own
    name ('...-cased' keeps case), else lowercase as HF's BertTokenizer does."""
    value = _config(path).get("do_lower_case")
    if isinstance(value, bool):
        return value
    return not re.search(r"(?<!un)cased", source.lower().rstrip("/").rsplit("/", 1)[-1])


def _config(path: Path) -> dict:
    """``tokenizer_config.json`` as a dict ({} when the folder has none)."""
    file = path / "tokenizer_config.json"
    if not file.is_file():
        return {}
    values = read_json(file)
    if not isinstance(values, dict):
        raise ConfigError(f"{file}: expected a JSON object")
    return values


def _setting(path: Path, key: str, default: bool, config: dict | None = None) -> bool:
    """A true/false option of tokenizer_config.json (``config``: the file, already read)."""
    value = (_config(path) if config is None else config).get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{path / 'tokenizer_config.json'}: {key} must be true or false, "
                          f"got {value!r}")
    return value


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
            raise ConfigError(f"{vocab_path}: the vocabulary lacks {token!r}")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None,
        lowercase=_lowercase(path, source))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.BertProcessing((sep, vocab[sep]), (cls, vocab[cls]))
    return tokenizer


def _sentencepiece(path: Path):
    """DeBERTa-v2/v3's tokenizer from ``spm.model``, as transformers 5's DebertaV2Tokenizer
    builds it: the pieces as a Unigram model, the model's character map as the normaliser
    (or whitespace runs to one space + NFC when it has none), Metaspace pieces, control
    pieces and the named special tokens as special tokens, ``[CLS] A [SEP] (B [SEP])``."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)

    from zoo.hf.sentencepiece import CONTROL, MODEL_TYPES, UNIGRAM, read_model
    from zoo.text import library_error

    spm = read_model(path / SPM_FILE)
    if spm.model_type != UNIGRAM:
        kind = MODEL_TYPES.get(spm.model_type, f"type-{spm.model_type}")
        raise ConfigError(f"{path / SPM_FILE}: a SentencePiece {kind} model; the zoo reads "
                          "Unigram models. Save the tokenizer with transformers "
                          "to get tokenizer.json")
    names = SPM_SPECIALS | special_token_names(path, SPECIAL_ATTRIBUTES)
    vocab = [(piece, score) for piece, score, _ in spm.pieces]
    unk = (names["unk"], 0.0)
    tokenizer = Tokenizer(models.Unigram(
        vocab, unk_id=vocab.index(unk) if unk in vocab else spm.unk_id, byte_fallback=False))
    config = _config(path)
    steps = [normalizers.Lowercase()] if _setting(path, "do_lower_case", False, config) else []
    if spm.precompiled_charsmap:
        try:
            steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
        except BaseException as err:  # the library's Exceptions and panics
            if not library_error(err):
                raise
            raise ConfigError(f"{path / SPM_FILE}: its precompiled character map is "
                              f"malformed ({one_line(err)})") from None
        steps += [normalizers.Strip(left=False, right=True),
                  normalizers.Replace(Regex(" {2,}"), " ")]
    else:
        steps += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                  normalizers.Strip(left=False, right=True)]
    tokenizer.normalizer = normalizers.Sequence(steps)
    scheme = "always" if _setting(path, "add_prefix_space", True, config) else "first"
    splits = [pre_tokenizers.Punctuation(behavior="isolated")] \
        if _setting(path, "split_by_punct", False, config) else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)])
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    tokenizer.add_special_tokens([AddedToken(piece, special=True, normalized=False)
                                  for piece, _, kind in spm.pieces if kind == CONTROL])
    from_files: set[str] = set()  # tokens whose flags the files set
    for token_id, token in _added_tokens(path, config, [piece for piece, _ in vocab],
                                         set(names.values())):
        tokenizer.add_tokens([token])  # the file's flags win over the control pieces'
        if tokenizer.token_to_id(token.content) != token_id:
            raise ConfigError(f"{path}: its added token {token.content!r} must have id "
                              f"{token_id} (added tokens follow the vocabulary without "
                              f"gaps), but gets {tokenizer.token_to_id(token.content)}")
        from_files.add(token.content)
    tokenizer.add_special_tokens([
        AddedToken(names[role], special=True, normalized=False)
        for role in SPECIAL_ATTRIBUTES if names[role] not in from_files])
    cls, sep = names["cls"], names["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])
    return tokenizer


def _added_tokens(path: Path, config: dict, pieces: list[str], specials: set[str]) -> list:
    """(id, AddedToken) by id, from ``added_tokens.json`` ({token: id}; transformers adds them
    normalised, special when they name a special token) and tokenizer_config.json's
    ``added_tokens_decoder`` ({id: {content, special, normalized, ...}}, which wins). An id
    inside the SentencePiece vocabulary must name its piece (the entry sets its flags); those
    after it must follow it without a gap."""
    from tokenizers import AddedToken

    found: dict[int, AddedToken] = {}
    file = path / "added_tokens.json"
    if file.is_file():
        values = read_json(file)
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and type(v) is int and v >= 0 for k, v in values.items()):
            raise ConfigError(f"{file}: expected a JSON object of token -> id (an integer "
                              "from 0)")
        for content, token_id in values.items():
            found[token_id] = AddedToken(_checked_text(content, f"{file}: token"),
                                         special=content in specials, normalized=True)
    decoder = config.get("added_tokens_decoder")
    if decoder is not None:
        where = f"{path / 'tokenizer_config.json'}: added_tokens_decoder"
        if not isinstance(decoder, dict):
            raise ConfigError(f"{where} must be a JSON object of id -> token")
        for key, entry in decoder.items():
            if not (key.isascii() and key.isdigit() and len(key) < 10 and isinstance(entry, dict)
                    and isinstance(entry.get("content"), str) and entry["content"]
                    and all(isinstance(entry.get(f, False), bool) for f in ADDED_FLAGS)):
                raise ConfigError(f"{where}: entry {key!r} must map an id to "
                                  "{\"content\": a token, and true/false flags}")
            flags = {f: entry[f] for f in ADDED_FLAGS if f in entry}
            found[int(key)] = AddedToken(_checked_text(entry["content"], f"{where}: token"),
                                         **flags)
    for token_id, token in found.items():
        if token_id < len(pieces) and pieces[token_id] != token.content:
            raise ConfigError(f"{path}: its added token {token.content!r} has id {token_id}, "
                              f"which is {pieces[token_id]!r} in {SPM_FILE}")
    return sorted(found.items(), key=lambda item: item[0])
