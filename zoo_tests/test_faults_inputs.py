"""Bad inputs: every flag out of range, bad Python arguments and model inputs, malformed data
files, malformed model directories and tokenizers, hostile paths.

Each case is a row (input -> expected outcome). A command-line mistake must end with exit
status 2 and exactly one ``error:`` line naming the flag, file or line, and must create
nothing; the Python API raises the zoo's own error types. No case trains a model.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import checkpoint
from zoo.cli import main as cli_main
from zoo.errors import USER_ERRORS, InvalidArgumentError, ZooError
from zoo.inference import NonFiniteOutputError
from zoo.run import export_model, train_run
from zoo.text import train_tokenizer
from zoo.train import TrainConfig
from zoo_tests.faults_support import TRAIN, assert_one_error_line, cli_flags, write_sst2

TINY = "encoder-m2l-tiny"


@pytest.fixture(autouse=True)
def private_stores(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ZOO_CACHE_DIR", str(base / "inputs-cache"))
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(base / "inputs-weights"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_sst2(tmp_path_factory.mktemp("inputs") / "data")


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory, data):
    sentences = [line.split("\t")[0] for line in
                 (data / "train.tsv").read_text().splitlines()[1:]]
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tokenizer(sentences, vocab_size=120).save(str(path))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_file):
    """A healthy exported classifier with its tokenizer (copied, then damaged, per case)."""
    path = tmp_path_factory.mktemp("model") / "m"
    export_model(zoo.build_model(TINY, "sst2"), path, tokenizer_file, source={"kind": "test"})
    return path


# ------------------------------------------------------------------------ flags

FLAG_CASES = [
    # flags (after `train --out OUT <valid training flags>`), words of the one error line
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--dropout", "2"], "--dropout must be a finite number in [0, 1)"),
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--dropout", "nan"], "--dropout"),
    (["--max-steps", "0"], "--max-steps must be an integer >= 1"),
    (["--max-steps", "-5"], "--max-steps"),
    (["--max-steps", "1.5"], "argument --max-steps: invalid int value"),
    (["--epochs", "0"], "--epochs must be a finite number > 0"),
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "inf"], "--epochs"),
    (["--epochs", "abc"], "argument --epochs: invalid float value"),
    (["--eval-every", "0"], "--eval-every must be an integer >= 1"),
    (["--eval-every", "-3"], "--eval-every"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--warmup-fraction", "1"], "--warmup-fraction must be a finite number in [0, 1)"),
    (["--warmup-fraction", "-0.5"], "--warmup-fraction"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--time-limit", "0"], "--time-limit must be a finite number > 0"),
    (["--time-limit", "nan"], "--time-limit"),
    (["--max-len", "1"], "--max-len must be an integer >= 2"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
    (["--seed", str(2**32)], "--seed"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
    (["--precision", "fp8"], "argument --precision: invalid choice"),
    (["--mesh", "data=0"], "--mesh must be data=N[,model=M]"),
    (["--mesh", "rows=2"], "--mesh"),
    (["--mesh", "data=3"], "--mesh data=3,model=1: data x model must equal the 1 device"),
    (["--schedule", "step"], "argument --schedule: invalid choice"),
    (["--pretrained", "--no-pretrained"], "not allowed with argument"),
    (["--model", "encoder-nope"], "unknown model 'encoder-nope'"),
    (["--head", "nope"], "unknown head 'nope'"),
    (["--resume", "--overwrite"], "pass only one"),
    (["--weights", "/nonexistent/zoo-weights"], "/nonexistent/zoo-weights"),
    (["--data-dir", "/nonexistent/sst2"], "/nonexistent/sst2 does not exist"),
]


def _status(args: list[str]) -> int:
    """The exit status of the command line (argparse's own errors leave by SystemExit)."""
    try:
        return cli_main(args)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("flags, message", FLAG_CASES,
                         ids=[" ".join(f) for f, _ in FLAG_CASES])
def test_train_flag_out_of_range_is_one_line_and_creates_nothing(data, tmp_path, capsys, flags,
                                                                 message):
    out = tmp_path / "out"
    assert _status(["train", "--out", str(out), *cli_flags(data), *flags]) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert not out.exists()


def test_pretrain_flags_are_checked_too(data, tmp_path, capsys):
    assert cli_main(["pretrain", "--out", str(tmp_path / "o"), "--lr", "inf"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--lr")
    assert cli_main(["pretrain", "--out", str(tmp_path / "o"), *cli_flags(data),
                     "--text-file", str(tmp_path / "missing.txt")]) == 2
    assert_one_error_line(capsys.readouterr().err, "missing.txt")
    assert not (tmp_path / "o").exists()


PYTHON_CONFIGS = [
    # TrainConfig overrides, words of the InvalidArgumentError (Python names the flag too)
    ({"learning_rate": float("nan")}, "--lr"),
    ({"dropout": 2.0}, "--dropout"),
    ({"max_steps": 0}, "--max-steps"),
    ({"epochs": -1.0}, "--epochs"),
    ({"eval_every": 0}, "--eval-every"),
    ({"batch_size": True}, "--batch-size"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"buckets": (0, 16)}, "buckets"),
    ({"dropout_prng": "mt19937"}, "dropout_prng"),
    ({"vocab_size": 3}, "--vocab-size"),
]


@pytest.mark.parametrize("overrides, message", PYTHON_CONFIGS,
                         ids=[next(iter(o)) for o, _ in PYTHON_CONFIGS])
def test_train_run_checks_its_config_before_any_work(data, tmp_path, overrides, message):
    cfg = TrainConfig(**{**TRAIN, "data_dir": str(data), **overrides})
    with pytest.raises(InvalidArgumentError, match=message.replace("-", r"\-")):
        train_run(cfg, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ model inputs

IDS = np.array([[1, 9, 8, 7, 2, 0], [1, 5, 2, 0, 0, 0]], np.int32)
MASK = (IDS != 0).astype(np.int32)
MODEL_INPUTS = [
    # id, (input_ids, attention_mask), words of the error
    ("id-at-vocab", (np.where(IDS == 9, 512, IDS), MASK), "[0, 512)"),
    ("id-minus-one", (np.where(IDS == 9, -1, IDS), MASK), "[0, 512)"),
    ("float-ids", (IDS.astype(np.float32), MASK), "must hold integers"),
    ("one-dimensional", (IDS[0], MASK[0]), "must be 2-D"),
    ("three-dimensional", (IDS[None], MASK[None]), "must be 2-D"),
    ("mask-shape", (IDS, MASK[:, :4]), "attention_mask has shape (2, 4)"),
    ("mask-value-2", (IDS, MASK * 2), "attention_mask holds values in [0, 2]"),
    ("longer-than-max-len", (np.ones((1, 65), np.int32), np.ones((1, 65), np.int32)),
     "exceeds the model's max_len 64"),
    ("empty", (np.zeros((0, 6), np.int32), np.zeros((0, 6), np.int32)), "is empty"),
    ("jax-array-id-at-vocab", (jnp.asarray(np.where(IDS == 9, 512, IDS)), jnp.asarray(MASK)),
     "[0, 512)"),
]


@pytest.fixture(scope="module")
def tiny_model():
    return zoo.build_model(TINY, "sst2")


@pytest.mark.parametrize("inputs, message", [c[1:] for c in MODEL_INPUTS],
                         ids=[c[0] for c in MODEL_INPUTS])
def test_eager_call_checks_its_inputs(tiny_model, inputs, message):
    with pytest.raises(InvalidArgumentError) as err:
        tiny_model(*inputs)
    assert message in str(err.value)


def test_valid_inputs_pass_and_jit_leaves_checks_to_the_caller(tiny_model):
    eager = tiny_model(IDS, MASK)
    assert eager.shape == (2, 2) and np.isfinite(eager).all()
    np.testing.assert_allclose(tiny_model(IDS, MASK.astype(bool)), eager)
    bad = np.where(IDS == 9, 512, IDS)
    traced = jax.jit(lambda ids, mask: tiny_model(ids, mask))(bad, MASK)  # documented: unchecked
    assert traced.shape == (2, 2)


@pytest.mark.parametrize("batch_size", [-1, 0, True, 1.5, "8"])
def test_predict_batch_size_is_checked(model_dir, batch_size):
    model = zoo.load(str(model_dir))
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        model.predict(["a good film"], batch_size=batch_size)


def test_non_finite_weights_never_reach_the_output(tmp_path, tokenizer_file, capsys):
    model = zoo.build_model(TINY, "sst2")
    kernel = model.head.classifier.kernel
    kernel.set_value(jnp.full_like(kernel.get_value(), jnp.nan))
    export_model(model, tmp_path / "nan", tokenizer_file, source={"kind": "test"})
    with pytest.raises(NonFiniteOutputError):
        zoo.load(str(tmp_path / "nan")).predict(["a good film"])
    assert cli_main(["predict", str(tmp_path / "nan"), "a good film", "--json"]) == 2
    captured = capsys.readouterr()
    assert not captured.out and "NaN" not in captured.out
    assert_one_error_line(captured.err, "non-finite")


STDIN = [
    # id, stdin bytes, words of the error
    ("invalid-utf8-line-2", b"a good film\n\xff\xfe bad\n", "stdin, line 2: not valid UTF-8"),
    ("blank-only", b"\n  \n", "no text given"),
]


@pytest.mark.parametrize("raw, message", [s[1:] for s in STDIN], ids=[s[0] for s in STDIN])
def test_predict_stdin(model_dir, monkeypatch, capsys, raw, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    assert cli_main(["predict", str(model_dir)]) == 2
    assert_one_error_line(capsys.readouterr().err, message)


def test_predict_argument_that_is_not_utf8(model_dir, capsys):
    text = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Linux hands such argv over
    assert cli_main(["predict", str(model_dir), text]) == 2
    assert_one_error_line(capsys.readouterr().err, "text argument 1 is not valid UTF-8")


def test_predict_json_lines_are_strict_json(model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"good\r\nbad\n")))
    assert cli_main(["predict", str(model_dir), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line, parse_constant=_refuse)["text"] for line in lines] == ["good", "bad"]


def _refuse(name):
    raise AssertionError(f"{name} is not JSON")


# ------------------------------------------------------------------------ data files


def _damage(folder: Path, case: str) -> None:
    train = folder / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    if case == "header-only":
        train.write_text("sentence\tlabel\n")
    elif case == "empty-file":
        train.write_text("")
    elif case == "wrong-header":
        train.write_bytes(b"text\tlabel\n" + b"\n".join(lines[1:]))
    elif case == "three-columns":
        lines[2] += b"\textra"
        train.write_bytes(b"\n".join(lines))
    elif case == "label-2":
        lines[1] = lines[1][:-1] + b"2"
        train.write_bytes(b"\n".join(lines))
    elif case == "label-not-int":
        lines[1] = lines[1][:-1] + b"x"
        train.write_bytes(b"\n".join(lines))
    elif case == "invalid-utf8":
        lines[3] = b"caf\xe9 " + lines[3]
        train.write_bytes(b"\n".join(lines))
    elif case == "dev-missing":
        (folder / "dev.tsv").unlink()
    elif case == "train-is-a-folder":
        train.unlink()
        train.mkdir()
    else:
        raise AssertionError(case)


DATA_CASES = [
    # id, words of the error (the file, and the line where there is one)
    ("header-only", "train.tsv: no data rows"),
    ("empty-file", "train.tsv, line 1: expected the header"),
    ("wrong-header", "train.tsv, line 1: expected the header of GLUE's SST-2"),
    ("three-columns", "train.tsv, line 3: expected 2 tab-separated columns"),
    ("label-2", "train.tsv, line 2, column 'label': label '2' is outside 0..1"),
    ("label-not-int", "train.tsv, line 2, column 'label': label 'x' is neither"),
    ("invalid-utf8", "train.tsv, line 4: not valid UTF-8"),
    ("dev-missing", "dev.tsv: file not found"),
    ("train-is-a-folder", "train.tsv: file not found"),
]


@pytest.mark.parametrize("case, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_malformed_data_is_one_line_naming_file_and_line(data, tmp_path, capsys, case, message):
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    _damage(folder, case)
    out = tmp_path / "out"
    assert cli_main(["train", "--out", str(out), *cli_flags(folder)]) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert not out.exists()


def test_a_ten_megabyte_line_is_read(data, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    with open(folder / "train.tsv", "a", encoding="utf-8") as handle:
        handle.write("good " * 2_000_000 + "\t1\n")
    train = zoo.data.load_sst2(folder)["train"]
    assert len(train[-1]["sentence"]) > 9_000_000


# ------------------------------------------------------------------------ model directories


def _edit_manifest(change):
    def edit(folder: Path) -> None:
        path = folder / checkpoint.MANIFEST
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    return edit


def _write(name: str, content: bytes, *, unchecked: bool = False):
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(content)
        if unchecked:  # as if written before checksums existed: the parser must refuse it
            _edit_manifest(_drop_records)(folder)
    return edit


def _big_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_tokens([f"word{i}" for i in range(600)])
    tokenizer.save(str(folder / "tokenizer.json"))
    _edit_manifest(lambda m: (m["checksums"].pop("tokenizer.json"),
                              m["sizes"].pop("tokenizer.json")))(folder)


def _drop_records(manifest: dict) -> None:
    """As written before checksums and sizes were recorded."""
    manifest.pop("checksums")
    manifest.pop("sizes")


def _corrupt_metadata_unchecked(folder: Path) -> None:
    (folder / "params" / "_METADATA").write_text("{ not json")
    _edit_manifest(_drop_records)(folder)


MALFORMED = [
    # id, damage, words of the error
    ("manifest-is-a-list", _write("zoo.json", b"[1, 2]"), "zoo.json: expected a JSON object"),
    ("manifest-not-json", _write("zoo.json", b"{\"format\": "), "zoo.json: not valid JSON"),
    ("manifest-not-utf8", _write("zoo.json", b"\xff\xfe{}"), "zoo.json: not valid JSON"),
    ("manifest-5000-digit-number", _write("zoo.json", b'{"format": ' + b"7" * 5000 + b"}"),
     "zoo.json: not valid JSON (Exceeds the limit"),
    ("manifest-missing", lambda f: (f / "zoo.json").unlink(), "neither a zoo model directory"),
    ("lacks-model", _edit_manifest(lambda m: m.pop("model")), "'model' must be"),
    ("unknown-model", _edit_manifest(lambda m: m.update(model="encoder-nope")),
     "unknown model 'encoder-nope'"),
    ("wrong-format", _edit_manifest(lambda m: m.update(format="zoo-model/99")), "format"),
    ("num-heads-0", _edit_manifest(lambda m: m["config"].update(num_heads=0)), "num_heads"),
    ("config-unknown-field", _edit_manifest(lambda m: m["config"].update(colour="red")),
     "colour"),
    ("labels-shorter", _edit_manifest(lambda m: m["heads"]["sst2"].update(labels=["neg"])),
     "labels must be 2 strings"),
    ("num-classes-0", _edit_manifest(lambda m: m["heads"]["sst2"].update(num_classes=0)),
     "num_classes must be an integer >= 2"),
    ("default-head-absent", _edit_manifest(lambda m: m.update(default_head="mlm")),
     "default_head 'mlm'"),
    ("tokenizer-path-leaves", _edit_manifest(lambda m: m.update(tokenizer="../tokenizer.json")),
     "must be a file name inside the model directory"),
    ("tokenizer-path-absolute", _edit_manifest(lambda m: m.update(tokenizer="/etc/passwd")),
     "must be a file name inside the model directory"),
    ("tokenizer-garbage", _write("tokenizer.json", b"garbage"), "tokenizer.json: checksum"),
    ("tokenizer-garbage-unchecked", _write("tokenizer.json", b"garbage", unchecked=True),
     "not a valid tokenizer.json"),
    ("tokenizer-larger-than-vocab", _big_tokenizer, "tokens but the model embeds only 512"),
    ("params-missing", lambda f: shutil.rmtree(f / "params"), "missing"),
    ("params-extra-file", lambda f: (f / "params" / "evil.bin").write_bytes(b"x"),
     "not part of the model directory"),
    ("checksum-altered", _edit_manifest(lambda m: m["checksums"].update(
        {k: "0" * 64 for k in m["checksums"] if k.startswith("params/")})), "checksum mismatch"),
    ("metadata-corrupt-unchecked", _corrupt_metadata_unchecked, "unreadable orbax checkpoint"),
]


@pytest.mark.parametrize("damage, message", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_model_directory_is_refused_in_one_line(model_dir, tmp_path, capsys, damage,
                                                          message):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    damage(folder)
    with pytest.raises(USER_ERRORS) as err:
        zoo.load(str(folder))
    assert message in str(err.value)
    assert isinstance(err.value, (ZooError, FileNotFoundError))
    assert cli_main(["predict", str(folder), "a good film"]) == 2
    assert_one_error_line(capsys.readouterr().err, message)


def test_healthy_model_directory_predicts(model_dir):
    (prediction,) = zoo.load(str(model_dir)).predict(["a good film"])
    assert prediction.label in ("negative", "positive")
