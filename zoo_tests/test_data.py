"""SST-2 loading: real row counts, strict parsing with file/line errors, the hub fallback."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import pytest

from zoo.data import (
    DataFileMissingError, DataFormatError, DataNotFoundError, load_sst2, read_text_lines,
)

SST2_DIR = Path(
    os.environ.get("ZOO_SST2_DIR") or Path(__file__).resolve().parents[2] / "shared/data/SST-2"
)

GOOD_TRAIN = "sentence\tlabel\na \"quoted\" film 's fine \t1\nbad .\t0\n"
GOOD_DEV = "sentence\tlabel\nok .\t1\n"
GOOD_TEST = "index\tsentence\n0\tunlabelled one .\n1\tand \"two\"\n"


def write_sst2(
    folder: Path, train: str = GOOD_TRAIN, dev: str = GOOD_DEV, test: str | None = GOOD_TEST
) -> Path:
    """A small SST-2 folder; a file whose body is None is left out."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        if body is not None:
            (folder / name).write_text(body, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def sst2() -> datasets.DatasetDict:
    if not (SST2_DIR / "train.tsv").is_file():
        pytest.skip(f"no SST-2 at {SST2_DIR}")
    return load_sst2(SST2_DIR)


def test_real_sst2_matches_glue(sst2):
    assert {split: len(ds) for split, ds in sst2.items()} == {
        "train": 67_349, "validation": 872, "test": 1_821,
    }
    train_labels = sst2["train"]["label"][:]
    assert (train_labels.count(0), train_labels.count(1)) == (29_780, 37_569)
    assert set(sst2["test"]["label"][:]) == {-1}
    assert sst2["train"].features["label"].names == ["negative", "positive"]
    assert sst2["train"]["idx"][:5] == [0, 1, 2, 3, 4]
    assert sst2["test"]["idx"][:] == list(range(1_821))
    first = sst2["train"][0]
    # the file has a trailing space here; it is stripped
    assert first["sentence"] == "hide new secretions from the parental units"


def test_env_var_is_used_when_no_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_SST2_DIR", str(write_sst2(tmp_path / "sst2")))
    dsd = load_sst2()
    assert dsd["train"]["sentence"][:] == ['a "quoted" film \'s fine', "bad ."]  # quotes are text
    assert dsd["train"]["label"][:] == [1, 0]
    assert dsd["test"]["label"][:] == [-1, -1]
    assert dsd["test"]["sentence"][1] == 'and "two"'


@pytest.mark.parametrize(
    ("file_name", "files", "line", "detail"),
    [
        ("train.tsv", {"train": "sentence\tlabel\nfine .\t1\ntoo\tmany\t0\n"}, 3, "columns"),
        ("train.tsv", {"train": "sentence\tlabel\nno label column\n"}, 2, "columns"),
        ("dev.tsv", {"dev": "sentence\tlabel\nok .\tpositive\n"}, 2, "not an integer"),
        ("dev.tsv", {"dev": "sentence\tlabel\nok .\t1\nodd .\t2\n"}, 3, "not 0 or 1"),
        ("train.tsv", {"train": "fine .\t1\n"}, 1, "header"),
        ("test.tsv", {"test": ""}, 1, "header"),
        ("test.tsv", {"test": "index\tsentence\nx\tfine .\n"}, 2, "not an integer"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, file_name, files, line, detail):
    folder = write_sst2(tmp_path, **files)
    with pytest.raises(DataFormatError) as err:
        load_sst2(folder)
    message = str(err.value)
    assert file_name in message and f"line {line}" in message and detail in message


def test_invalid_utf8_names_the_line(tmp_path):
    folder = write_sst2(tmp_path)
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\nok .\t1\nbad \xff byte\t0\n")
    with pytest.raises(DataFormatError, match=r"dev\.tsv, line 3: not valid UTF-8"):
        load_sst2(folder)


def test_missing_file_is_reported_with_guidance(tmp_path):
    folder = write_sst2(tmp_path, test=None)
    with pytest.raises(DataFileMissingError) as err:
        load_sst2(folder)
    assert isinstance(err.value, DataFormatError) and isinstance(err.value, FileNotFoundError)
    assert "test.tsv" in str(err.value) and "ZOO_SST2_DIR" in str(err.value)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_sst2(tmp_path / "nowhere")


def test_trailing_blank_line_is_fine(tmp_path):
    dsd = load_sst2(write_sst2(tmp_path, dev=GOOD_DEV + "\n"))
    assert len(dsd["validation"]) == 1


def test_hub_fallback_offline_raises_with_guidance(monkeypatch):
    monkeypatch.delenv("ZOO_SST2_DIR", raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError) as err:
        load_sst2()
    message = str(err.value)
    assert "--data-dir" in message and "ZOO_SST2_DIR" in message and "train.tsv" in message
    assert isinstance(err.value.__cause__, ConnectionError)


def test_hub_is_asked_for_glue_sst2(monkeypatch):
    monkeypatch.delenv("ZOO_SST2_DIR", raising=False)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or "dsd")
    assert load_sst2() == "dsd"
    assert calls == [("nyu-mll/glue", "sst2")]


def test_read_text_lines_skips_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line \n\n   \nsecond\n", encoding="utf-8")
    assert read_text_lines(path) == ["first line", "second"]


def test_read_text_lines_errors_name_the_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing.txt"):
        read_text_lines(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty.txt"):
        read_text_lines(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin\.txt, line 2"):
        read_text_lines(latin)
