"""Loading HuggingFace BERT-family folders: tokenizers, mismatch reports, config errors,
the ``convert.hf_to_flax`` command line and the hub path (with the download faked).

Synthetic folders come from ``zoo_tests.bert_reference.write_hf_folder`` (HF tensor names
written by hand, tiny sizes, MiniLM's 30,522-token vocabulary).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import zoo
from zoo import checkpoint
from zoo.errors import ConfigError
from zoo import hf as family
from zoo_tests import bert_reference as br

ROOT = Path(__file__).resolve().parents[1]
MINILM = br.minilm_folder()
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

TOKENIZER_TEXTS = [
    "A man is eating food.",
    "Hello, World! HOW are you?",
    "Café crème brûlée à la carte — naïve façade.",
    "The quick brown fox jumps over the lazy dog...",
    "我爱北京天安门",
    "Mixed 中文 and English, with émojis? no: just ümlauts & ß.",
    "don't stop-believing; it's 3.14159 (approximately) [citation needed]",
    "UPPERCASE words SHOULD be lowercased by an uncased model",
    "  extra   whitespace\tand\nnewlines  ",
    "unbelievably antidisestablishmentarianism supercalifragilistic",
]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT classifier folder (safetensors, MiniLM's tokenizer.json)."""
    folder = tmp_path_factory.mktemp("hf") / "bert"
    br.write_hf_folder(folder, "bert", seed=11, with_classifier=True)
    return folder


@pytest.fixture(scope="module")
def minilm_tokenizer():
    tokenizer = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def hidden(model, batch=((101, 7592, 2088, 102, 0), (101, 2023, 2003, 1037, 102))):
    ids = np.asarray(batch, np.int32)
    return np.asarray(model.encoder(ids, (ids != 0).astype(np.int32)))


# ---------------------------------------------------------------------------- tokenizers


def test_vocab_txt_tokenises_like_tokenizer_json(tmp_path, minilm_tokenizer):
    folder = tmp_path / "vocab-only"
    br.write_hf_folder(folder, "bert", seed=1, tokenizer="none")
    br.write_tokenizer(folder, "vocab", do_lower_case=True)
    assert not (folder / "tokenizer.json").exists()
    tokenizer = zoo.load(str(folder)).tokenizer
    for text in TOKENIZER_TEXTS:
        got, want = tokenizer.encode(text), minilm_tokenizer.encode(text)
        assert got.tokens == want.tokens, text
        assert got.ids == want.ids, text
    assert len(minilm_tokenizer.encode("我爱北京").tokens) == 6  # one token per Chinese char


@pytest.mark.parametrize("lower", [False, True])
def test_vocab_txt_casing_follows_tokenizer_config(tmp_path, lower):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello", "world", "World",
             "!", "cafe", "Café"]
    folder = tmp_path / ("uncased" if lower else "cased")
    br.write_hf_folder(folder, "bert", seed=2, tokenizer="none")
    br.write_tokenizer(folder, "vocab", do_lower_case=lower, vocab=vocab)
    encoding = zoo.load(str(folder)).tokenizer.encode("Hello World! Café")
    want = ["hello", "world", "!", "cafe"] if lower else ["Hello", "World", "!", "Café"]
    assert encoding.tokens == ["[CLS]", *want, "[SEP]"]
    assert encoding.ids == [vocab.index(t) for t in encoding.tokens]


def test_baked_in_padding_and_truncation_are_turned_off(bert_folder):
    baked = json.loads((bert_folder / "tokenizer.json").read_text())
    assert baked["padding"]["strategy"] == {"Fixed": 128} and baked["truncation"]
    tokenizer = zoo.load(str(bert_folder)).tokenizer
    encoding = tokenizer.encode("hello world")
    assert encoding.tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert encoding.attention_mask == [1, 1, 1, 1]
    assert len(tokenizer.encode(" ".join(["word"] * 300)).ids) == 302
    assert tokenizer.padding is None and tokenizer.truncation is None


# ---------------------------------------------------------------------------- mismatches


def test_every_problem_is_reported_in_one_error(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "bad"
    _, tensors = br.write_hf_folder(folder, "bert", seed=3, layers=2,
                                    config_overrides={"num_hidden_layers": 3})
    tensors["encoder.adapter.weight"] = np.zeros((4, 4), np.float32)  # no zoo name
    tensors["embeddings.LayerNorm.weight"] = np.ones(31, np.float32)  # wrong shape
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(zoo.CheckpointMismatchError) as caught:
        zoo.load(str(folder))
    report = str(caught.value)
    missing = sorted(line.strip() for line in report.splitlines()
                     if line.strip().startswith("encoder/layers/2/"))
    assert len(missing) == 16 and "16 missing" in report, report
    assert "encoder/layers/2/attention/query/kernel" in missing
    assert "encoder/layers/2/output_norm/bias" in missing
    assert "wrong shape" in report
    assert "encoder/embeddings/norm/scale: expected (32,) float32, found (31,) float32" in report
    assert "HF names with no zoo name" in report and "encoder.adapter.weight" in report
    assert "position_ids" not in report and "pooler" not in report


def test_buffers_are_skipped_without_complaint(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "buffers"
    _, tensors = br.write_hf_folder(folder, "bert", seed=4, with_classifier=True)
    tensors["bert.embeddings.token_type_ids"] = np.zeros((1, 64), np.int64)
    save_file(tensors, str(folder / "model.safetensors"))
    converted = family.convert_folder(folder)
    skipped = "\n".join(converted.notes)
    assert "bert.embeddings.position_ids: skipped (buffer)" in skipped
    assert "bert.embeddings.token_type_ids: skipped (buffer)" in skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load(str(folder))


@pytest.mark.parametrize("problem, config_text, match", [
    ("not json", "{'model_type': 'bert',", "not valid JSON"),
    ("not an object", "[1, 2, 3]", "expected a JSON object"),
    ("model type", None, "model_type 'gpt2' is not supported"),
    ("positions", None, "position_embedding_type 'relative_key' is not supported"),
    ({"layer_norm_eps": float("nan")}, None, "layer_norm_eps must be a positive finite number"),
    ({"layer_norm_eps": "1e-12"}, None, "layer_norm_eps must be a positive finite number"),
    ({"hidden_dropout_prob": "0.1"}, None, r"dropout must be in \[0, 1\), got '0.1'"),
    ({"type_vocab_size": "2"}, None, "type_vocab_size must be an integer >= 0, got '2'"),
    ({"max_position_embeddings": 1}, None, "max_position_embeddings 1 leaves room for 1 token"),
    ({"architectures": ["Bert\nForQuestionAnswering"]}, None, "must be a list of class names"),
], ids=str)
def test_bad_config_is_a_one_line_config_error(tmp_path, problem, config_text, match):
    folder = tmp_path / "cfg"
    config, _ = br.write_hf_folder(folder, "bert", seed=5)
    if problem == "model type":
        config["model_type"] = "gpt2"
    if problem == "positions":
        config["position_embedding_type"] = "relative_key"
    if isinstance(problem, dict):
        config.update(problem)
    (folder / "config.json").write_text(config_text or json.dumps(config))
    with pytest.raises(ConfigError, match=match) as caught:
        zoo.load(str(folder))
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "config.json") in message


def _drop_unk_piece(folder: Path) -> None:
    """[UNK] out of the WordPiece model's vocabulary (its added token stays, so every
    special token is found): the folder loaded, and predict failed on the first word the
    vocabulary lacks with the tokenizers library's raw Exception."""
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    del state["model"]["vocab"]["[UNK]"]
    (folder / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")


def _vocab_txt(folder: Path, unk: str) -> None:
    (folder / "tokenizer.json").unlink()
    br.write_tokenizer(folder, "vocab")
    (folder / "special_tokens_map.json").write_text(json.dumps({"unk_token": unk}))


@pytest.mark.parametrize("damage, words", [
    (_drop_unk_piece, "tokenizer.json: the tokenizer fails to encode text (WordPiece error: "
                      "Missing [UNK] token"),
    (lambda folder: _vocab_txt(folder, "[UNK]\n[X]"),  # named as written, on one line
     "vocab.txt: the vocabulary lacks '[UNK]\\n[X]'"),
], ids=["no-unknown-token", "line-break-in-a-token"])
def test_bert_tokenizers_that_cannot_run_are_one_line(tmp_path, damage, words):
    folder = tmp_path / "tok"
    br.write_hf_folder(folder, "bert", seed=5)
    damage(folder)
    with pytest.raises(ConfigError) as caught:
        zoo.load(str(folder))
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["x", -1, 2.5, [128], 10**30])
def test_electra_embedding_size_of_the_wrong_kind_is_named(tmp_path, value):
    """ELECTRA's embedding_size went unchecked into jax (a raw TypeError about shapes)."""
    folder = tmp_path / "electra"
    config, _ = br.write_hf_folder(folder, "electra", seed=5)
    (folder / "config.json").write_text(json.dumps({**config, "embedding_size": value}))
    with pytest.raises(ConfigError, match="embedding_size must be") as caught:
        zoo.load(str(folder))
    assert "\n" not in str(caught.value)


def test_folder_under_a_preset_of_another_shape_is_refused():
    with pytest.raises(ConfigError) as caught:
        zoo.load("bert-tiny", weights=MINILM)
    message = str(caught.value)
    assert str(MINILM / "config.json") in message
    assert "hidden_size 384 instead of 128" in message
    assert "num_layers 6 instead of 2" in message
    assert "num_heads 12 instead of 2" in message
    assert "\n" not in message


def test_custom_name_of_another_model_type_is_refused(bert_folder):
    """``distilbert-custom`` is "any HF distilbert checkpoint": a BERT folder must not load
    under that name (it would be recorded as distilbert-custom with a BERT config)."""
    with pytest.raises(ConfigError, match="model_type") as caught:
        zoo.load("distilbert-custom", weights=bert_folder)
    assert str(bert_folder / "config.json") in str(caught.value)


# ---------------------------------------------------------------------------- command line


def _cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "convert.hf_to_flax", *map(str, args)], cwd=ROOT,
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env})


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_cli_converts_a_folder_and_refuses_to_clobber(tmp_path, bert_folder):
    env = {"ZOO_WEIGHTS_DIR": str(tmp_path / "store"), "ZOO_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    first = _cli(bert_folder, "--out", out, env=env)
    assert first.returncode == 0, first.stderr
    assert f"-> {out}" in first.stdout
    converted, direct = zoo.load(str(out)), zoo.load(str(bert_folder))
    assert converted.info == direct.info
    np.testing.assert_array_equal(hidden(converted), hidden(direct))
    ids = np.asarray([[101, 7592, 102]], np.int32)
    np.testing.assert_array_equal(np.asarray(converted(ids, np.ones_like(ids))),
                                  np.asarray(direct(ids, np.ones_like(ids))))
    assert converted.tokenizer.padding is None
    assert converted.tokenizer.encode("hello").ids == direct.tokenizer.encode("hello").ids
    assert not (tmp_path / "store").exists()  # --out given: the store is untouched

    manifest = (out / "zoo.json").read_text()
    second = _cli(bert_folder, "--out", out, env=env)
    assert second.returncode == 2
    lines = _error_lines(second.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0], lines
    assert (out / "zoo.json").read_text() == manifest


def test_cli_leaves_a_user_folder_alone(tmp_path, bert_folder, monkeypatch, capsys):
    from convert.hf_to_flax import main

    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "store"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main([str(bert_folder), "--out", str(mine), "--overwrite"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error:") and str(mine) in lines[0]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_cli_overwrite_replaces_the_model_dir(tmp_path, bert_folder, monkeypatch, capsys):
    from convert.hf_to_flax import main

    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "store"))
    other = tmp_path / "distil"
    br.write_hf_folder(other, "distilbert", seed=12, with_classifier=True)
    out = tmp_path / "out"
    assert main([str(bert_folder), "--out", str(out)]) == 0
    assert zoo.load(str(out)).info.encoder == "bert-custom"
    assert main([str(other), "--out", str(out), "--overwrite"]) == 0
    replaced, direct = zoo.load(str(out)), zoo.load(str(other))
    assert replaced.info.encoder == "distilbert-custom"
    np.testing.assert_array_equal(hidden(replaced), hidden(direct))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_overwrite_keeps_a_user_file_inside_a_model_dir(tmp_path, bert_folder,
                                                            monkeypatch, capsys):
    """fsutil promises that replacing a tool's output "never takes a user's file that was
    dropped into that folder along with it" (``entries_are``); ``--overwrite`` must refuse."""
    from convert.hf_to_flax import main

    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "store"))
    out = tmp_path / "out"
    assert main([str(bert_folder), "--out", str(out)]) == 0
    (out / "my-notes.txt").write_text("results of a week of work")
    code = main([str(bert_folder), "--out", str(out), "--overwrite"])
    assert (out / "my-notes.txt").is_file(), "--overwrite deleted a user's file"
    assert code == 2


# ---------------------------------------------------------------------------- the hub


def _remote_missing(repo: str, filename: str) -> Exception:
    """What ``hf_hub_download`` raises when the repository lacks ``filename`` (HTTP 404)."""
    from huggingface_hub import errors

    cls = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    url = f"https://huggingface.co/{repo}/resolve/main/{filename}"
    message = f"404 Client Error. Entry Not Found for url: {url}."
    try:
        try:
            import httpx2 as httpx
        except ImportError:
            import httpx
        request = httpx.Request("GET", url)
        return cls(message, response=httpx.Response(404, request=request))
    except (ImportError, TypeError):
        err = cls.__new__(cls)
        Exception.__init__(err, message)
        return err


def fake_hub(served: Path, calls: list, fail: dict | None = None):
    """An ``hf_hub_download`` that copies files of ``served`` into ``local_dir``."""
    def download(repo_id, filename, *, local_dir=None, **kwargs):
        calls.append((repo_id, filename))
        if fail and filename in fail:
            raise fail[filename]
        source = served / filename
        if not source.is_file():
            raise _remote_missing(repo_id, filename)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)
    return download


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(path))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    return path


@pytest.fixture
def served(tmp_path):
    """The MiniLM repository as the fake hub serves it (vocab.txt absent, to see a 404)."""
    folder = tmp_path / "hub"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (folder / name).symlink_to(MINILM / name)
    return folder


def test_hub_download_once_then_the_store(store, served, monkeypatch):
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(served, calls))
    model = zoo.load("all-minilm-l6-v2")
    assert [name for _, name in calls] == ["config.json", "tokenizer.json", "vocab.txt",
                                           "tokenizer_config.json", "special_tokens_map.json",
                                           "model.safetensors"]
    assert {repo for repo, _ in calls} == {HUB_ID}
    manifest = json.loads((store / "all-minilm-l6-v2" / "zoo.json").read_text())
    assert manifest["model"] == "all-minilm-l6-v2" and manifest["source"]["hub_id"] == HUB_ID
    assert model.tokenizer is not None and model.tokenizer.padding is None
    assert len(model.tokenizer.encode("hello world").ids) == 4

    again = zoo.load("all-minilm-l6-v2")
    assert len(calls) == 6  # the store answered: no second download
    direct = zoo.load("all-minilm-l6-v2", weights=MINILM)
    want = checkpoint.module_params(direct)
    for loaded in (model, again):
        got = checkpoint.module_params(loaded)
        assert sorted(got) == sorted(want)
        for path in want:
            np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]),
                                          err_msg=path)


def test_hub_offline_error_names_the_commands(store, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: set the constant as well
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(zoo.WeightsNotFoundError) as caught:
        zoo.load("all-minilm-l6-v2")
    message = str(caught.value)
    assert "python -m convert.hf_to_flax" in message
    assert "huggingface-cli download" in message and HUB_ID in message
    assert not (store / "all-minilm-l6-v2").exists()


def test_hub_local_miss_is_not_taken_for_a_missing_file(store, served, monkeypatch):
    """An offline cache miss (LocalEntryNotFoundError) is an error, unlike a 404."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls: list = []
    fail = {"tokenizer.json": LocalEntryNotFoundError("offline and not cached")}
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(served, calls, fail))
    with pytest.raises(zoo.WeightsNotFoundError, match="LocalEntryNotFoundError"):
        zoo.load("all-minilm-l6-v2")
    assert [name for _, name in calls] == ["config.json", "tokenizer.json"]
    assert not (store / "all-minilm-l6-v2").exists()


def test_hub_repo_without_weights(store, served, monkeypatch):
    (served / "model.safetensors").unlink()
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(served, calls))
    with pytest.raises(zoo.WeightsNotFoundError, match="neither model.safetensors nor "
                                                       "pytorch_model.bin"):
        zoo.load("all-minilm-l6-v2")
    assert [name for _, name in calls][-4:] == ["model.safetensors", "pytorch_model.bin",
                                                "model.safetensors.index.json",
                                                "pytorch_model.bin.index.json"]
    assert not (store / "all-minilm-l6-v2").exists()


def _shard(folder: Path, tensors: dict, kind: str = "safetensors", parts: int = 3) -> dict:
    """Write ``tensors`` as ``parts`` shards and their index, as save_pretrained does above
    max_shard_size; returns the weight_map."""
    from safetensors.numpy import save_file

    from zoo_tests.torch_format import write_torch_bin

    names = sorted(tensors)
    stem, suffix = ("model", "safetensors") if kind == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for i in range(parts):
        shard = f"{stem}-{i + 1:05d}-of-{parts:05d}.{suffix}"
        part = {n: tensors[n] for n in names[i::parts]}
        if kind == "safetensors":
            save_file(part, str(folder / shard), metadata={"format": "pt"})
        else:
            write_torch_bin(folder / shard, part)
        weight_map |= dict.fromkeys(part, shard)
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return weight_map


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_weights_load_as_the_whole_file(tmp_path, kind):
    from zoo.hf import read_safetensors

    folder = tmp_path / "sharded"
    shutil.copytree(MINILM, folder, ignore=shutil.ignore_patterns("model.safetensors", "*.bin"))
    _shard(folder, read_safetensors(MINILM / "model.safetensors"), kind)
    model, whole = zoo.load(str(folder)), zoo.load(str(MINILM))
    np.testing.assert_array_equal(hidden(model), hidden(whole))
    from zoo.hf.architecture import convert_folder

    source = convert_folder(folder).source
    assert source["file"] == ("model.safetensors" if kind == "safetensors"
                              else "pytorch_model.bin") + ".index.json"
    if kind == "safetensors":  # the provenance digest covers every shard's bytes
        shard = folder / "model-00002-of-00003.safetensors"
        data = bytearray(shard.read_bytes())
        data[-1] ^= 1
        shard.write_bytes(bytes(data))
        assert convert_folder(folder).source["sha256"] != source["sha256"]


def test_hub_download_fetches_every_shard(store, served, monkeypatch, tmp_path):
    from zoo.hf import read_safetensors

    (served / "model.safetensors").unlink()
    weight_map = _shard(served, read_safetensors(MINILM / "model.safetensors"))
    calls: list = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(served, calls))
    model = zoo.load("all-minilm-l6-v2")
    fetched = [name for _, name in calls]
    assert set(weight_map.values()) <= set(fetched) and "pytorch_model.bin" in fetched
    np.testing.assert_array_equal(hidden(model), hidden(zoo.load(str(MINILM))))


@pytest.mark.parametrize("edit, error, message", [
    (lambda m, f: m.update({next(iter(m)): "../outside.safetensors"}), ConfigError,
     "not a .safetensors file beside the index"),
    (lambda m, f: m.update({next(iter(m)): "model.bin"}), ConfigError,
     "not a .safetensors file beside the index"),
    (lambda m, f: (f / sorted(set(m.values()))[0]).unlink(), zoo.WeightsNotFoundError,
     "model-00001-of-00003.safetensors: missing (the index model.safetensors.index.json "
     "lists it; copy every shard)"),
    (lambda m, f: m.pop(next(iter(m))), ConfigError, "does not hold what "
     "model.safetensors.index.json lists for it (0 missing"),
    (lambda m, f: m.clear(), ConfigError, "non-empty 'weight_map'"),
])
def test_a_broken_shard_index_is_one_line(tmp_path, edit, error, message):
    from zoo.hf import read_safetensors

    folder = tmp_path / "sharded"
    shutil.copytree(MINILM, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    weight_map = _shard(folder, read_safetensors(MINILM / "model.safetensors"))
    edit(weight_map, folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(error) as caught:
        zoo.load(str(folder))
    assert message in str(caught.value) and "\n" not in str(caught.value)
