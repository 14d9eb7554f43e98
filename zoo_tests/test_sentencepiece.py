"""SentencePiece ``spm.model`` tokenizers (DeBERTa-v2/v3's), read without the sentencepiece
library: token ids against transformers', and malformed or hostile model files.

The golden folders are written by ``benchmarks/parity/deberta_v2.py golden`` (with the
sentencepiece library and transformers 5): ``deberta-v2-v3-classifier-spm`` is shaped as the
hub's ``microsoft/deberta-v3-*`` (``spm.model`` with an NFKC character map, no
``tokenizer.json``), ``spm-options`` turns every tokenizer option the other way (lower case,
punctuation split, no prefix space, identity normaliser, ``added_tokens.json``).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.errors import ConfigError
from zoo.hf.sentencepiece import read_model
from zoo.hf.tokenizer import read_tokenizer
from zoo_tests.test_hf_loading import fake_hub

GOLDEN = Path(__file__).resolve().parent / "golden"
HUB_LIKE = GOLDEN / "deberta-v2-v3-classifier-spm"
OPTIONS = GOLDEN / "spm-options"


@pytest.mark.parametrize("folder", [HUB_LIKE, OPTIONS], ids=lambda p: p.name)
def test_token_ids_are_transformers(folder):
    want = json.loads((folder / "token_ids.json").read_text(encoding="utf-8"))
    tokenizer = read_tokenizer(folder)
    for text, ids, encoding in zip(want["texts"], want["ids"],
                                   tokenizer.encode_batch(want["texts"])):
        assert encoding.ids == ids, text
    pairs = [tuple(pair) for pair in want["pairs"]]
    for pair, ids, types, encoding in zip(pairs, want["pair_ids"], want["pair_type_ids"],
                                          tokenizer.encode_batch(pairs)):
        assert (encoding.ids, encoding.type_ids) == (ids, types), pair


def test_the_model_file_as_read():
    model = read_model(HUB_LIKE / "spm.model")
    assert [p for p, _, _ in model.pieces[:4]] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert [t for _, _, t in model.pieces[:4]] == [3, 3, 3, 2]  # control, unknown
    assert model.model_type == 1 and model.unk_id == 3 and not model.byte_fallback
    assert len(model.precompiled_charsmap) > 100_000  # NFKC's map
    scores = np.array([s for _, s, t in model.pieces if t == 1])
    assert (scores < 0).all() and np.isfinite(scores).all()
    assert read_model(OPTIONS / "spm.model").precompiled_charsmap == b""  # identity


def test_added_tokens_and_specials_get_transformers_ids():
    tokenizer = read_tokenizer(HUB_LIKE)
    pieces = len(read_model(HUB_LIKE / "spm.model").pieces)
    assert tokenizer.token_to_id("[MASK]") == pieces  # appended, as transformers does
    assert tokenizer.get_vocab_size() == pieces + 1
    options = read_tokenizer(OPTIONS)
    added = json.loads((OPTIONS / "added_tokens.json").read_text())
    assert {t: options.token_to_id(t) for t in added} == added


def test_hub_repo_without_tokenizer_json_fetches_spm_model(tmp_path, monkeypatch):
    """microsoft/deberta-v3-* ship spm.model and no tokenizer.json."""
    from zoo.hf.architecture import convert_folder, download

    served = tmp_path / "hub"
    shutil.copytree(HUB_LIKE, served, ignore=shutil.ignore_patterns("*.json", "*.npz"))
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(HUB_LIKE / name, served / name)
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(served, calls))
    folder = download("microsoft/tiny-deberta", tmp_path / "download")
    assert {"spm.model", "added_tokens.json"} <= {name for _, name in calls}
    assert (folder / "spm.model").read_bytes() == (HUB_LIKE / "spm.model").read_bytes()
    model = zoo.load(str(folder))
    assert model.predict(["a gorgeous , witty , seductive movie ."]) == \
        zoo.load(str(HUB_LIKE)).predict(["a gorgeous , witty , seductive movie ."])
    assert convert_folder(folder).tokenizer.token_to_id("[MASK]") == \
        read_tokenizer(HUB_LIKE).token_to_id("[MASK]")


# ------------------------------------------------------------------------- malformed files


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _piece(text: bytes, score: float = -1.0, kind: int = 1) -> bytes:
    return _field(1, 2, _field(1, 2, text) + _field(2, 5, struct.pack("<f", score))
                  + _field(3, 0, kind))


GOOD = _piece(b"[UNK]", 0.0, 2) + _piece("\u2581a".encode()) + _piece(b"b", -2.0)


def test_a_hand_written_model_reads(tmp_path):
    model = read_model(_write(tmp_path, GOOD + _field(2, 2, _field(40, 0, 0))))
    assert model.pieces == (("[UNK]", 0.0, 2), ("\u2581a", -1.0, 1), ("b", -2.0, 1))


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "spm.model"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, words", [
    (b"", "no pieces"),
    (b"\x0a\xff\xff\xff\xff\x0f", "bytes where"),                       # length past the end
    (GOOD + b"\x0a", "truncated varint"),
    (GOOD + b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (GOOD + _field(9, 3, b""), "wire type 3"),                            # a protobuf-1 group
    (GOOD + b"\x00\x00", "field number 0"),
    (_piece(b"\xff\xfe") + GOOD, "piece 0 is not UTF-8"),
    (GOOD + _piece(b"c", float("nan")), "has the score nan"),
    (GOOD + _piece(b"b"), "repeats piece 2"),
    (GOOD + _piece(b""), "piece 3 is empty"),
    (GOOD + _piece(b"c", kind=9), "unknown type 9"),
    (GOOD + _field(2, 2, _field(40, 0, 7)), "unk_id 7 is not one of the 3 pieces"),
    (GOOD + _field(2, 2, _field(40, 0, -1)), "unk_id -1"),
    (GOOD + _field(2, 2, _field(40, 0, 1 << 40)), "is not an int32"),
    (GOOD + _field(2, 0, 5), "expected a length-delimited field"),
    (_field(1, 2, _field(1, 2, b"x") + _field(2, 0, 3)) + GOOD, "is not a float"),
])
def test_malformed_model_files_are_one_line(tmp_path, data, words):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match="not a SentencePiece model") as caught:
        read_model(path)
    message = str(caught.value)
    assert words in message and str(path) in message and "\n" not in message


def test_truncated_and_garbage_golden_files(tmp_path):
    data = (HUB_LIKE / "spm.model").read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 7):
        with pytest.raises(ConfigError, match="not a SentencePiece model"):
            read_model(_write(tmp_path, data[:cut]))
    rng = np.random.default_rng(0)
    for _ in range(20):  # random bytes: a one-line error or (rarely) a readable model
        noise = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        try:
            read_model(_write(tmp_path, noise))
        except ConfigError as err:
            assert "\n" not in str(err)


def _spm_folder(tmp_path: Path, **files) -> Path:
    folder = tmp_path / "tok"
    folder.mkdir(exist_ok=True)
    shutil.copy(OPTIONS / "spm.model", folder / "spm.model")
    for name, content in files.items():
        (folder / name.replace("__", ".")).write_text(
            content if isinstance(content, str) else json.dumps(content))
    return folder


@pytest.mark.parametrize("files, words", [
    ({"tokenizer_config__json": {"do_lower_case": "yes"}}, "do_lower_case must be true or false"),
    ({"tokenizer_config__json": [1, 2]}, "expected a JSON object"),
    ({"added_tokens__json": {"[MASK]": "297"}}, "token -> id"),
    ({"added_tokens__json": {"<x>": 400}}, "must have id 400"),           # a gap after 297
    ({"added_tokens__json": {"<x>": 5}}, "has id 5, which is"),           # inside the pieces
    ({"tokenizer_config__json": {"added_tokens_decoder": {"297": {"content": 3}}}},
     "entry '297' must map an id"),
    ({"tokenizer_config__json": {"added_tokens_decoder": {"-1": {"content": "x"}}}},
     "entry '-1' must map an id"),
    ({"tokenizer_config__json": {"added_tokens_decoder": []}}, "must be a JSON object"),
    # JSON's lone surrogates: the tokenizers library raised TypeError / UnicodeEncodeError
    ({"added_tokens__json": {"\ud800": 298}}, "token '\\ud800' is not valid Unicode"),
    ({"tokenizer_config__json": {"added_tokens_decoder": {"298": {"content": "\ud800"}}}},
     "token '\\ud800' is not valid Unicode"),
    ({"tokenizer_config__json": {"pad_token": "\ud800"}}, "pad_token '\\ud800' is not valid"),
])
def test_bad_tokenizer_settings_are_one_line(tmp_path, files, words):
    with pytest.raises(ConfigError) as caught:
        read_tokenizer(_spm_folder(tmp_path, **files))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_bpe_model_is_refused_with_the_way_out(tmp_path):
    folder = tmp_path / "bpe"
    folder.mkdir()
    _write(folder, GOOD + _field(2, 2, _field(3, 0, 2)))
    with pytest.raises(ConfigError, match="a SentencePiece bpe model; the zoo reads Unigram "
                                          "models. Save the tokenizer with transformers to get "
                                          "tokenizer.json"):
        read_tokenizer(folder)


def test_added_tokens_decoder_sets_flags_and_ids(tmp_path):
    decoder = {"297": {"content": "<new>", "special": True, "normalized": False},
               "0": {"content": "[PAD]", "special": True}}
    tokenizer = read_tokenizer(_spm_folder(
        tmp_path, tokenizer_config__json={"added_tokens_decoder": decoder}))
    assert tokenizer.token_to_id("<new>") == 297 and tokenizer.token_to_id("[MASK]") == 298
    assert tokenizer.encode("a <new> b").ids.count(297) == 1


def test_export_files_name_added_tokens_as_written(tmp_path):
    """Under a lower-casing normaliser tokenizers' id_to_token gives "[mask]" for the added
    "[MASK]": the exported files must name the token the vocabulary holds (the export then
    reads its own folder back)."""
    from zoo.text import special_ids, tokenizer_files

    tokenizer = read_tokenizer(OPTIONS)
    files = tokenizer_files(tokenizer, 128)
    assert json.loads(files["tokenizer_config.json"])["mask_token"] == "[MASK]"
    folder = tmp_path / "exported"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    again = read_tokenizer(folder)
    assert special_ids(again) == special_ids(tokenizer)
    want = json.loads((OPTIONS / "token_ids.json").read_text(encoding="utf-8"))
    assert [e.ids for e in again.encode_batch(want["texts"])] == want["ids"]


def _with_charsmap(tmp_path: Path, edit) -> Path:
    """The hub-like spm.model with its character map's bytes edited in place."""
    data = bytearray((HUB_LIKE / "spm.model").read_bytes())
    charsmap = read_model(HUB_LIKE / "spm.model").precompiled_charsmap
    at = bytes(data).index(charsmap)
    edited = bytearray(charsmap)
    edit(edited)
    data[at:at + len(charsmap)] = edited
    return _write(tmp_path, bytes(data))


def test_a_character_map_leading_outside_its_trie_is_refused(tmp_path):
    def root_far_away(charsmap):
        charsmap[4:8] = b"\xff\xfd\xff\x7f"  # the root unit's offset: far past the trie
    with pytest.raises(ConfigError, match="precompiled character map leads to trie position"):
        read_model(_with_charsmap(tmp_path, root_far_away))


def test_character_maps_that_pass_never_panic_the_tokenizer(tmp_path):
    """tokenizers indexes the map unchecked (a bad index panics mid-encode, a BaseException):
    a damaged map is refused at load, or it normalises every character safely."""
    from tokenizers import normalizers

    rng = np.random.default_rng(7)
    sweep = "".join(chr(c) for c in range(1, 0x3100) if not 0xD800 <= c < 0xE000)
    trie = int.from_bytes(read_model(HUB_LIKE / "spm.model").precompiled_charsmap[:4],
                          "little")
    outcomes = {"refused": 0, "accepted": 0}
    for _ in range(30):
        def damage(charsmap):
            for _ in range(int(rng.integers(1, 30))):
                charsmap[int(rng.integers(4, 4 + trie))] = int(rng.integers(0, 256))
        try:
            model = read_model(_with_charsmap(tmp_path, damage))
        except ConfigError as err:
            assert "\n" not in str(err)
            outcomes["refused"] += 1
            continue
        outcomes["accepted"] += 1
        normalizers.Precompiled(model.precompiled_charsmap).normalize_str(sweep)
    assert outcomes["refused"] > 0


def test_a_tokenizer_json_with_a_damaged_character_map_is_refused(tmp_path):
    """The same map inside tokenizer.json (XLM-R's and multilingual-e5's carry one): every
    tokenizer.json the zoo reads goes through one reader that checks it."""
    import base64

    from zoo.text import read_tokenizer_file

    state = json.loads(read_tokenizer(HUB_LIKE).to_str())
    charsmap = bytearray(base64.b64decode(state["normalizer"]["normalizers"][0]
                                          ["precompiled_charsmap"]))
    charsmap[4:8] = b"\xff\xfd\xff\x7f"
    state["normalizer"]["normalizers"][0]["precompiled_charsmap"] = \
        base64.b64encode(bytes(charsmap)).decode()
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "deberta-v2-v3-classifier", folder)
    (folder / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(ConfigError, match="tokenizer.json: its Precompiled normaliser's "
                                          "character map leads to trie position"):
        read_tokenizer_file(folder / "tokenizer.json")
    with pytest.raises(ConfigError, match="character map leads to trie position"):
        zoo.load(str(folder))
