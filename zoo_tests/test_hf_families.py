"""The HuggingFace layer and the families on it, end to end and against hostile folders.

- every family's transformers-written checkpoint (the tiny golden folders) fine-tunes on
  sentence pairs through the command line, predicts and evaluates, and teaches a student;
- safetensors files are read with every byte range checked (bfloat16 and float16 included);
- broken folders of each type fail with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.checkpoint import CheckpointMismatchError
from zoo.cli import main as cli_main
from zoo.errors import ConfigError
from zoo.hf import read_safetensors
from zoo.registry import WeightsNotFoundError

GOLDEN = Path(__file__).resolve().parent / "golden"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py
# (golden folder, the -custom preset it loads as)
BASES = [("roberta-base", "roberta-custom"), ("roberta-xlm-base", "xlm-roberta-custom"),
         ("deberta-v2-v3-base", "deberta-v2-custom"), ("modernbert-base", "modernbert-custom")]
COMMON = ["--batch-size", "16", "--max-len", "32", "--eval-every", "4", "--seed", "0",
          "--quiet", "--lr", "3e-3"]


def _head(path: Path, rows: int) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:rows + 1])


@pytest.fixture(scope="module")
def mrpc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mrpc")
    (root / "train.tsv").write_text(_head(SHARED / "MRPC" / "train.tsv", 64))
    (root / "dev.tsv").write_text(_head(SHARED / "MRPC" / "dev.tsv", 32))
    return root


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sst2")
    for split, rows in (("train", 96), ("dev", 32)):
        (root / f"{split}.tsv").write_text(_head(SHARED / "SST-2" / f"{split}.tsv", rows))
    return root


@pytest.mark.parametrize("folder, preset", BASES)
def test_each_family_fine_tunes_on_pairs_predicts_and_evaluates(folder, preset, mrpc, tmp_path,
                                                                capsys):
    run = tmp_path / "run"
    assert cli_main(["train", "--model", preset, "--weights", str(GOLDEN / folder),
                     "--dataset", "glue/mrpc", "--data-dir", str(mrpc), "--max-steps", "6",
                     "--out", str(run), *COMMON]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == preset and summary["task"] == "classification"
    model = zoo.load(str(run))
    assert model.info.encoder == preset and model.info.labels == ("not_equivalent",
                                                                  "equivalent")
    rows = [line.split("\t") for line in (mrpc / "dev.tsv").read_text().splitlines()[1:]]
    predictions = model.predict([(r[3], r[4]) for r in rows])
    capsys.readouterr()
    assert cli_main(["evaluate", str(run), "--data-file", str(mrpc / "dev.tsv"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    predicted = [model.info.labels.index(p.label) for p in predictions]
    accuracy = np.mean(np.array(predicted) == np.array([int(r[0]) for r in rows]))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # the second text reaches the model
    a, b = model.predict([(rows[0][3], rows[0][4]), (rows[0][3], rows[1][4])])
    assert a.probabilities != b.probabilities


def test_a_fine_tuned_roberta_teaches_an_m2l_student(sst2, tmp_path):
    teacher = tmp_path / "teacher"
    assert cli_main(["train", "--model", "roberta-custom", "--weights",
                     str(GOLDEN / "roberta-base"), "--data-dir", str(sst2), "--max-steps", "4",
                     "--out", str(teacher), *COMMON]) == 0
    student = tmp_path / "student"
    assert cli_main(["distill", "--teacher", str(teacher), "--student", "encoder-m2l-tiny",
                     "--data-dir", str(sst2), "--max-steps", "4", "--batch-size", "16",
                     "--out", str(student), "--quiet"]) == 0
    summary = json.loads((student / "summary.json").read_text())
    assert summary["teacher_logits_cache"] == "miss" and "dev_accuracy" in summary
    assert zoo.load(str(student)).info.encoder == "encoder-m2l-tiny"


# ------------------------------------------------------------------------------ safetensors


@pytest.mark.parametrize("source", ["bert", "distilbert", "electra", "roberta-classifier",
                                    "roberta-regressor", "roberta-xlm-base",
                                    "modernbert-classifier", "modernbert-regressor",
                                    "deberta-v2-v3-classifier", "deberta-v2-v3-regressor",
                                    "deberta-v2-v2-base-pairs", "deberta-v2-v2-conv-classifier",
                                    "encoder-m2l-mini"])
def test_a_first_token_head_skips_the_last_blocks_other_positions(source, tmp_path):
    """A head reading [CLS] / <s> alone: the encoder's last block computes position 0 only,
    with the numbers of the full forward and fewer FLOPs in the compiled program."""
    import jax
    from flax import nnx

    from zoo_tests import bert_reference as br

    if source in ("bert", "distilbert", "electra"):
        br.write_hf_folder(tmp_path / source, source, seed=4, with_classifier=True, layers=3)
        model = zoo.load(str(tmp_path / source))
    elif source == "encoder-m2l-mini":  # the zoo's own family, its SST-2 head
        model = zoo.load(source, head="sst2", pretrained=False, seed=0)
    elif source == "modernbert-classifier":  # stored with mean pooling: reads every token
        assert not zoo.load(str(GOLDEN / source)).head.reads_first_token
        folder = _copy(source, tmp_path)
        _edit_config(folder, classifier_pooling="cls")
        model = zoo.load(str(folder))
    elif "-base" in source:  # no stored head: a new classifier
        with pytest.warns(UserWarning, match="initialised from seed=0"):
            model = zoo.load(str(GOLDEN / source), head="classifier", seed=0)
    else:  # the stored classifier or regressor
        model = zoo.load(str(GOLDEN / source))
    assert model.head.reads_first_token and type(model.encoder).FIRST_TOKEN_ONLY
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    graph, state = nnx.split(model)

    def fast(state, ids, mask):
        return nnx.merge(graph, state)(ids, mask)

    def full(state, ids, mask):  # every position through every block, then the head
        merged = nnx.merge(graph, state)
        return merged.head(merged.encoder(ids, mask), attention_mask=mask)

    want = np.asarray(jax.jit(full)(state, ids, mask))
    np.testing.assert_allclose(np.asarray(jax.jit(fast)(state, ids, mask)), want,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))
    flops = {f.__name__: jax.jit(f).lower(state, ids, mask).compile().cost_analysis()["flops"]
             for f in (fast, full)}
    assert flops["fast"] < 0.95 * flops["full"], flops


def _write_safetensors(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_bfloat16_and_float16_tensors_read_as_float32(tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 1e-3, -65504.0]], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # exact: these values fit bfloat16
    f16 = values.astype("<f2")
    _write_safetensors(tmp_path / "m.safetensors", {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
        "b": {"dtype": "F16", "shape": [2, 3], "data_offsets": [12, 24]},
        "c": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}},
        bf16.tobytes() + f16.tobytes() + np.array([7, -1], "<i8").tobytes())
    tensors = read_safetensors(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(tensors["a"], (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_array_equal(tensors["a"][0], values[0])
    np.testing.assert_array_equal(tensors["b"], f16.astype(np.float32))
    assert tensors["c"].tolist() == [7, -1]


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, bytes(12),
     "do not hold shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(4), "do not hold"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "overlap"),
    ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), "dtype 'C64'"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), "shape"),
    ({"a": {"dtype": "F32", "shape": [1]}}, bytes(4), "is not {dtype, shape, data_offsets}"),
    ([1, 2], b"", "not a JSON object"),
])
def test_malformed_safetensors_is_one_line(tmp_path, header, data, message):
    path = tmp_path / "m.safetensors"
    _write_safetensors(path, header, data)
    with pytest.raises(ConfigError, match=message) as caught:
        read_safetensors(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_header_nested_too_deeply_is_one_line(tmp_path):
    path = tmp_path / "m.safetensors"
    text = b"[" * 100_000 + b"]" * 100_000  # json's parser recurses once a level
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_safetensors(path)


def test_header_length_past_the_file_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ConfigError, match="header length"):
        read_safetensors(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ConfigError, match="8-byte header"):
        read_safetensors(path)


# ------------------------------------------------------------------------------ hostile folders


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(GOLDEN / name, folder, ignore=shutil.ignore_patterns("expected.npz"))
    return folder


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _load_error(folder: Path, error=ConfigError) -> str:
    with pytest.raises(error) as caught:
        zoo.load(str(folder))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_missing_config_key_is_named(name, tmp_path):
    folder = _copy(name, tmp_path)
    _edit_config(folder, hidden_size=None)
    message = _load_error(folder)
    assert "hidden_size" in message and str(folder / "config.json") in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_a_tensor_of_the_wrong_shape_is_reported(name, tmp_path):
    folder = _copy(name, tmp_path)
    size = json.loads((folder / "config.json").read_text())["intermediate_size"]
    _edit_config(folder, intermediate_size=size + 16)  # the stored MLP weights no longer fit
    with pytest.raises(CheckpointMismatchError) as caught:  # a report: one line a tensor
        zoo.load(str(folder))
    report = str(caught.value)
    assert str(folder) in report.splitlines()[0] and "wrong shape or dtype" in report
    assert f"expected ({size + 16}," in report or f", {size + 16})" in report


@pytest.mark.parametrize("name, decoder", [
    ("roberta-mlm", "lm_head.decoder.weight"), ("modernbert-mlm", "decoder.weight"),
    ("deberta-v2-v3-mlm", "cls.predictions.decoder.weight")])
def test_an_untied_decoder_missing_from_the_file_is_refused(name, decoder, tmp_path):
    """A tied file (transformers 5 leaves the decoder out) whose config says untied: the
    zoo must not quietly predict with the word embeddings (transformers leaves it random)."""
    folder = _copy(name, tmp_path)
    assert decoder not in read_safetensors(folder / "model.safetensors")
    assert zoo.load(str(folder)).info.head == "mlm"  # tied, as the file was written
    _edit_config(folder, tie_word_embeddings=False)
    message = _load_error(folder)
    assert message.startswith(str(folder / "model.safetensors")) and decoder in message
    assert "tie_word_embeddings false" in message


def test_deberta_new_mlm_layout_is_tied_whatever_the_config_says(tmp_path):
    """DeBERTa's own MLM head (lm_predictions.*, legacy false) has no decoder weight: it is
    the word embeddings even with tie_word_embeddings false (as transformers reads it; the
    parity fuzzer found this refused)."""
    folder = _copy("deberta-v2-v3-mlm-new-head", tmp_path)
    tied = zoo.load(str(folder))
    _edit_config(folder, tie_word_embeddings=False)
    untied = zoo.load(str(folder))
    ids = np.asarray([tied.tokenizer.encode("a sentence").ids], np.int32)
    np.testing.assert_array_equal(np.asarray(untied(ids, np.ones_like(ids))),
                                  np.asarray(tied(ids, np.ones_like(ids))))


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_absurd_config_values_are_refused_before_a_model_is_built(name, tmp_path):
    """A million layers would take hours to build; a 400-digit width overflows jax."""
    folder = _copy(name, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, num_hidden_layers=10**6)
    assert "num_layers must be at most 1024, got 1000000" in _load_error(folder)
    _edit_config(folder, num_hidden_layers=config["num_hidden_layers"], hidden_size=10**400,
                 pooler_hidden_size=10**400 if "pooler_hidden_size" in config else None)
    assert "got a 401-digit number" in _load_error(folder)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "config.json: not valid JSON (nested too deeply)" in _load_error(folder)
    with open(folder / "config.json", "r+b") as handle:  # 3 GB, sparse: never read whole
        handle.truncate(3 << 30)
    assert "config.json: 3,072 MB, too large for a JSON file the zoo reads (at most 64 MB)" \
        in _load_error(folder)
    (folder / "config.json").write_text(json.dumps(config))
    # the tokenizer file the loader would read (tokenizers reads it whole, unchecked)
    vocab = next(folder / n for n in ("tokenizer.json", "vocab.json", "spm.model", "vocab.txt")
                 if (folder / n).is_file())
    with open(vocab, "r+b") as handle:
        handle.truncate(3 << 30)
    assert (f"{vocab.name}: 3,072 MB, too large for a tokenizer file the zoo reads (at most "
            "64 MB)") in _load_error(folder)


@pytest.mark.parametrize("name", ["roberta-classifier", "deberta-v2-v3-classifier"])
def test_labels_the_classifier_does_not_have_are_refused(name, tmp_path):
    folder = _copy(name, tmp_path)
    rows = zoo.load(str(GOLDEN / name)).info.num_classes
    _edit_config(folder, id2label={str(i): f"L{i}" for i in range(rows + 1)},
                 label2id={f"L{i}": i for i in range(rows + 1)})
    message = _load_error(folder)
    assert f"{rows + 1} labels, but the classifier head's weights have {rows} outputs" in message
    # the same head read as independent labels: a sigmoid each
    _edit_config(folder, id2label=None, label2id=None, problem_type="multi_label_classification")
    multi = zoo.load(str(folder))
    assert multi.info.head == "multi-label-classifier" and multi.info.num_classes == rows
    ids = np.asarray([multi.tokenizer.encode("a sentence").ids], np.int32)
    logits = np.asarray(multi(ids, np.ones_like(ids)), np.float64)[0]
    got = list(multi.predict(["a sentence"])[0].probabilities.values())
    assert got == pytest.approx((1 / (1 + np.exp(-logits))).tolist(), abs=1e-6)
    _edit_config(folder, problem_type="regression")  # transformers: one score per label
    assert (f"problem_type regression with {rows} outputs is not supported"
            in _load_error(folder))


def test_deberta_log_buckets_of_one_are_refused(tmp_path):
    folder = _copy("deberta-v2-v3-base", tmp_path)
    _edit_config(folder, position_buckets=1)  # transformers divides by position_buckets // 2
    assert "position_buckets must be <= 0 (no log buckets) or >= 2" in _load_error(folder)


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_truncated_weights_are_refused(name, tmp_path):
    folder = _copy(name, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    message = _load_error(folder)
    assert str(weights) in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_missing_tokenizer_is_named(name, tmp_path):
    folder = _copy(name, tmp_path)
    (folder / "tokenizer.json").unlink()
    message = _load_error(folder, WeightsNotFoundError)
    assert "tokenizer.json" in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_missing_weights_are_named(name, tmp_path):
    """A family's config.json without weights: what the folder lacks, not "no format"."""
    folder = _copy(name, tmp_path)
    (folder / "model.safetensors").unlink()
    message = _load_error(folder, WeightsNotFoundError)
    assert f"{folder} is not a complete HuggingFace checkpoint: it lacks model.safetensors " \
           "or pytorch_model.bin" in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_tokenizer_files_that_contradict_the_tokenizer_are_refused(name, tmp_path):
    folder = _copy(name, tmp_path)
    files = [f for f in ("special_tokens_map.json", "tokenizer_config.json")
             if (folder / f).is_file()]
    assert files
    for file in files:
        values = json.loads((folder / file).read_text())
        values["pad_token"] = "<no such token>"
        (folder / file).write_text(json.dumps(values))
    message = _load_error(folder)
    assert "<no such token>" in message and "not in the vocabulary" in message


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    folder = _copy("roberta-base", tmp_path)
    _edit_config(folder, model_type="gpt2")
    message = _load_error(folder)
    assert "model_type 'gpt2' is not supported" in message
    for model_type in ("bert", "roberta", "xlm-roberta", "deberta-v2", "modernbert"):
        assert model_type in message


def test_a_folder_under_a_preset_of_another_family_is_refused(tmp_path):
    with pytest.raises(Exception, match="roberta") as caught:
        zoo.load("deberta-v2-custom", weights=GOLDEN / "roberta-base")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name, preset", [
    ("roberta-classifier", "roberta-custom"), ("deberta-v2-v3-regressor", "deberta-v2-custom"),
    ("modernbert-token", "modernbert-custom")])
def test_a_custom_name_with_weights_restores_their_head(name, preset):
    """zoo.load("<model_type>-custom", weights=FOLDER) keeps the folder's task head, as
    loading the folder by its path does."""
    by_path = zoo.load(str(GOLDEN / name))
    by_name = zoo.load(preset, weights=GOLDEN / name)
    assert by_name.info.encoder == preset and by_name.info.head == by_path.info.head
    assert by_path.info.head is not None
    texts = ["a gorgeous , witty , seductive movie .", "the film is strictly routine ."]
    assert repr(by_name.predict(texts)) == repr(by_path.predict(texts))
    assert zoo.load(preset, weights=GOLDEN / name, head="embedder").info.head == "embedder"


def test_task_heads_are_restored_under_their_zoo_heads():
    """config.json's architectures decide the head: sequence classifiers (1 output:
    regressor), token classifiers and masked-LM heads."""
    heads = {name: zoo.load(str(GOLDEN / name)).info for name in (
        "roberta-classifier", "roberta-regressor", "roberta-token", "roberta-mlm",
        "modernbert-token", "deberta-v2-v3-classifier")}
    assert heads["roberta-classifier"].head == "classifier"
    assert heads["roberta-classifier"].labels == ("negative", "neutral", "positive")
    assert heads["roberta-regressor"].head == "regressor"
    assert heads["roberta-token"].head == "token-classifier"
    assert heads["roberta-mlm"].head == "mlm"
    assert heads["modernbert-token"].head == "token-classifier"
    assert heads["deberta-v2-v3-classifier"].head == "classifier"


def test_default_labels_are_transformers_defaults(tmp_path):
    """transformers 5 writes no id2label for the default 2 labels, 4 wrote LABEL_0/LABEL_1:
    the same model gets the same class names either way (lowercased, as classifiers' are)."""
    folder = _copy("deberta-v2-v3-classifier-spm", tmp_path)
    _edit_config(folder, id2label=None, label2id=None)
    assert zoo.load(str(folder)).info.labels == ("label_0", "label_1")
    _edit_config(folder, id2label={"0": "LABEL_0", "1": "LABEL_1"})
    assert zoo.load(str(folder)).info.labels == ("label_0", "label_1")
    _edit_config(folder, id2label={"0": "same", "1": "same"})  # unusable: generic names
    assert zoo.load(str(folder)).info.labels == ("class_0", "class_1")
    tokens = _copy("deberta-v2-v3-token", tmp_path)
    _edit_config(tokens, id2label=None, label2id=None)
    assert zoo.load(str(tokens)).info.labels == tuple(f"LABEL_{i}" for i in range(5))


@pytest.mark.parametrize("name", [b for b, _ in BASES])
@pytest.mark.parametrize("suffix, task", [("ForQuestionAnswering", "question-answering"),
                                          ("ForMultipleChoice", "multiple-choice"),
                                          ("ForCausalLM", "causal-LM")])
def test_task_classes_without_a_zoo_head_are_refused(name, suffix, task, tmp_path):
    """Not read as another head (a multiple-choice scorer looked like a 1-class classifier)
    nor dropped: one line, with the way to the encoder alone."""
    folder = _copy(name, tmp_path)
    _edit_config(folder, architectures=[f"Some{suffix}"])
    message = _load_error(folder)
    assert f"architectures names Some{suffix}, and the zoo has no {task} head" in message
    assert "AutoModel.from_pretrained(DIR).save_pretrained(OUT)" in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_a_post_processor_id_past_the_embedding_is_refused(name, tmp_path):
    """tokenizer.json states the ids its post-processor inserts on their own; one past the
    embedding table would be clamped by jax (a silently wrong answer), so it is refused."""
    folder = _copy(name, tmp_path)
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    processor = state["post_processor"]
    if processor["type"] == "TemplateProcessing":
        entry = next(iter(processor["special_tokens"].values()))
        entry["ids"] = [99_999]
        token = entry["tokens"][0]
    else:  # RobertaProcessing / BertProcessing: [token, id]
        processor["cls"][1] = 99_999
        token = processor["cls"][0]
    (folder / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    message = _load_error(folder)
    assert f"post-processor inserts {token!r} as id 99999, but the model embeds only " \
           f"{vocab}" in message



def _edit_tokenizer(folder: Path, **changes) -> None:
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    (folder / "tokenizer.json").write_text(json.dumps(state | changes), encoding="utf-8")


@pytest.mark.parametrize("name", [b for b, _ in BASES])
@pytest.mark.parametrize("damage, words", [
    # an unparsable SentencePiece map made the tokenizers library panic (a BaseException)
    (lambda f: _edit_tokenizer(f, normalizer={"type": "Precompiled",
                                              "precompiled_charsmap": "AAAA"}),
     "tokenizer.json: not a valid tokenizer.json (Precompiled: "),
    # a lone surrogate (JSON "\ud800") reached the library: TypeError, UnicodeEncodeError
    (lambda f: (f / "tokenizer_config.json").write_text('{"pad_token": "\\ud800"}'),
     "tokenizer_config.json: pad_token '\\ud800' is not valid Unicode"),
], ids=["charsmap-panic", "lone-surrogate"])
def test_tokenizers_the_library_cannot_run_are_refused(name, damage, words, tmp_path):
    """Found by ``benchmarks/malformed_fuzz.py``: each crashed outside the zoo's errors."""
    folder = _copy(name, tmp_path)
    damage(folder)
    assert words in _load_error(folder)


@pytest.mark.parametrize("name", ["roberta-xlm-base", "deberta-v2-v3-base"])  # Unigram
def test_a_tokenizer_without_an_unknown_token_is_refused(name, tmp_path):
    """A Unigram model with no ``unk_id`` loads, and failed on the first piece it did not
    know, inside predict (a raw Exception of the tokenizers library)."""
    folder = _copy(name, tmp_path)
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    _edit_tokenizer(folder, model=model | {"unk_id": None})
    assert "tokenizer.json: the tokenizer fails to encode text" in _load_error(folder)


@pytest.mark.parametrize("name", [b for b, _ in BASES])
def test_positions_for_fewer_than_two_tokens_are_refused_when_loading(name, tmp_path):
    """max_position_embeddings 1 loaded (DeBERTa, ModernBERT: no position table to
    disagree) and every predict failed with "max_len must be an int >= 2", naming no file."""
    folder = _copy(name, tmp_path)
    _edit_config(folder, max_position_embeddings=1)
    message = _load_error(folder)
    assert str(folder / "config.json") in message and "max_position_embeddings" in message


def test_an_unused_lm_head_bias_of_another_shape_is_refused(tmp_path):
    """An untied decoder keeps its own bias and transformers never reads lm_head.bias, but
    still loads it: one of another shape was dropped silently."""
    from safetensors.numpy import load_file, save_file

    folder = _copy("roberta-xlm-mlm-untied", tmp_path)
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["lm_head.bias"] = np.zeros(tensors["lm_head.bias"].shape[0] + 1, np.float32)
    save_file(tensors, str(weights))
    assert f"{weights}: lm_head.bias has shape" in _load_error(folder)


def _bpe_files(folder: Path) -> None:
    """tokenizer.json as the slow tokenizer's vocab.json + merges.txt."""
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    (folder / "tokenizer.json").unlink()


def test_vocab_json_and_merges_txt_tokenise_like_tokenizer_json(tmp_path):
    folder = _copy("roberta-classifier", tmp_path)
    _bpe_files(folder)
    texts = ["a gorgeous , witty , seductive movie .", "the film is strictly routine ."]
    assert repr(zoo.load(str(folder)).predict(texts)) == \
        repr(zoo.load(str(GOLDEN / "roberta-classifier")).predict(texts))


def test_a_merge_longer_than_every_vocab_json_token_is_refused(tmp_path):
    """A merge whose result vocab.json lacks is a plain error of the tokenizers library,
    unless the result is longer than every token: then the library panicked (a
    BaseException, past ``except Exception``)."""
    folder = _copy("roberta-classifier", tmp_path)
    _bpe_files(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    single = [token for token in vocab if len(token) == 1]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(single)}),
                                       encoding="utf-8")
    assert "vocab.json / merges.txt are not a BPE vocabulary" in _load_error(folder)


def test_two_merged_tokens_of_one_id_are_refused_when_loading(tmp_path):
    """vocab.json giving two merge results one id loads, but the tokenizer does not survive
    its own JSON (one of them is lost): predict failed copying it to truncate."""
    folder = _copy("roberta-classifier", tmp_path)
    _bpe_files(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["\u0120t"] = vocab["\u0120a"]  # "Ġt", "Ġa": the first merges' results
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    assert "vocab.json: the tokenizer fails to encode text" in _load_error(folder)


@pytest.mark.parametrize("name", ["roberta-base", "modernbert-base"])  # BPE: token -> id
def test_a_vocabulary_id_past_the_embedding_is_refused(name, tmp_path):
    """A tokenizer.json vocabulary need not number its tokens 0..n-1: a sparse id past the
    table passes a count of tokens, and is refused by its value."""
    folder = _copy(name, tmp_path)
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = state["model"]["vocab"]
    token = next(t for t in vocab if t.isalpha())
    vocab[token] = 99_999
    (folder / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    message = _load_error(folder)
    assert f"the tokenizer gives {token!r} the id 99999, but the model embeds only" in message



@pytest.mark.parametrize("name", [b for b, _ in BASES])
@pytest.mark.parametrize("key, value, words", [
    ("layer_norm_eps", float("nan"), "layer_norm_eps must be a positive finite number, got nan"),
    ("layer_norm_eps", float("inf"), "layer_norm_eps must be a positive finite number, got inf"),
    ("layer_norm_eps", "1e-5", "layer_norm_eps must be a positive finite number, got '1e-5'"),
    ("attention_probs_dropout_prob", "0.1", "dropout must be in [0, 1), got '0.1'"),
])
def test_config_numbers_of_the_wrong_kind_are_named(name, key, value, words, tmp_path):
    """Every family checks its numbers alike: a NaN epsilon would only show as NaN outputs,
    a string would fail deep inside jax."""
    folder = _copy(name, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if "norm_eps" in config:  # ModernBERT's names (its layer_norm_eps is a duplicate)
        key = {"layer_norm_eps": "norm_eps"}.get(key, "attention_dropout")
    _edit_config(folder, **{key: value})
    message = _load_error(folder)
    assert words in message and str(folder / "config.json") in message


@pytest.mark.parametrize("name", [b for b, _ in BASES])
@pytest.mark.parametrize("key, value, words", [
    ("model_type", ["roberta"], "model_type ['roberta'] is not supported"),
    ("id2label", 3, "id2label must be an object of id -> label, got 3"),
    ("id2label", {"first": "a"}, "id2label must be an object of id -> label"),
    ("num_labels", "2", "num_labels must be a positive integer, got '2'"),
    ("problem_type", "ranking", "problem_type must be one of"),
    ("architectures", "RobertaModel", "architectures must be a list of class names"),
    # not a class name: its line break went into a two-line "no question-answering head"
    ("architectures", ["Some\nForQuestionAnswering"], "architectures must be a list of class"),
])
def test_task_keys_of_the_wrong_kind_are_named(name, key, value, words, tmp_path):
    """Found by a sweep setting every config.json key to a string, null, list, dict, NaN,
    -1 and 1e30: these crashed with TypeError (or, for architectures, were ignored)."""
    folder = _copy(name, tmp_path)
    _edit_config(folder, **{key: value})
    assert words in _load_error(folder)


@pytest.mark.parametrize("name, key", [("modernbert-classifier", "classifier_activation"),
                                       ("modernbert-classifier", "hidden_activation"),
                                       ("roberta-classifier", "hidden_act")])
def test_an_activation_of_the_wrong_kind_is_named(name, key, tmp_path):
    folder = _copy(name, tmp_path)
    _edit_config(folder, **{key: {"name": "gelu"}})
    assert "is not supported" in _load_error(folder)


@pytest.mark.parametrize("name", ["roberta-regressor", "modernbert-regressor",
                                  "deberta-v2-v3-regressor"])
def test_a_one_output_classifier_without_architectures_is_a_regressor(name, tmp_path):
    """Without architectures (or id2label) the head is read from the tensors; one output row
    is a regressor (it raised a raw "num_classes must be >= 2")."""
    folder = _copy(name, tmp_path)
    _edit_config(folder, architectures=None, id2label=None, label2id=None)
    model = zoo.load(str(folder))
    assert model.info.head == "regressor"
    np.testing.assert_allclose(model.predict(["a gorgeous , witty movie ."])[0].score,
                               zoo.load(str(GOLDEN / name)).predict(
                                   ["a gorgeous , witty movie ."])[0].score, rtol=1e-6)
