"""SST-2 and plain-text corpora, read strictly so a bad row fails loudly with its line number.

``load_sst2`` looks for GLUE's TSV files in ``data_dir``, then ``$ZOO_SST2_DIR``, then falls
back to the HuggingFace hub (``nyu-mll/glue``, ``sst2``). The local files give the same
splits, columns and features as the hub, so the rest of the zoo never knows the difference.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import datasets

from zoo.errors import ZooError

SST2_ENV = "ZOO_SST2_DIR"
SST2_LABELS = ("negative", "positive")
# split name -> (GLUE file name, expected header)
SST2_FILES = {
    "train": ("train.tsv", ("sentence", "label")),
    "validation": ("dev.tsv", ("sentence", "label")),
    "test": ("test.tsv", ("index", "sentence")),
}
# The hub's features for GLUE SST-2; ClassLabel accepts -1, GLUE's "no label" on test.
SST2_FEATURES = datasets.Features({
    "sentence": datasets.Value("string"),
    "label": datasets.ClassLabel(names=list(SST2_LABELS)),
    "idx": datasets.Value("int32"),
})
NO_LABEL = -1
_GUIDANCE = (
    f"pass --data-dir (or data_dir=...) or set ${SST2_ENV} to a folder holding GLUE's "
    "SST-2 files train.tsv, dev.tsv and test.tsv"
)


class DataFormatError(ZooError, ValueError):
    """A data file is malformed; the message names the file and, where there is one, the line."""


class DataNotFoundError(ZooError, FileNotFoundError):
    """The data could be found neither locally nor on the hub."""


class DataFileMissingError(DataNotFoundError, DataFormatError):
    """An expected data file is absent: both "not found" and "the folder is malformed"."""


def load_sst2(data_dir: str | Path | None = None) -> datasets.DatasetDict:
    """GLUE SST-2: splits ``train``/``validation``/``test``, columns ``sentence``/``label``/``idx``.

    Test labels are -1 (GLUE publishes none): never compute accuracy on ``test``.
    """
    data_dir = data_dir or os.environ.get(SST2_ENV) or None
    if data_dir is not None:
        return _read_sst2_dir(Path(data_dir).expanduser())
    try:
        return datasets.load_dataset("nyu-mll/glue", "sst2")
    except Exception as err:  # offline, hub down, auth...: all mean "give us local files"
        raise DataNotFoundError(
            f"SST-2 is not available locally and could not be fetched from the HuggingFace "
            f"hub (nyu-mll/glue, sst2: {type(err).__name__}: {err}); {_GUIDANCE}."
        ) from err


def read_text_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file (one sentence per line), for pre-training."""
    path = Path(path).expanduser()
    lines = [line.strip() for line in _read_utf8(path).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataFormatError(f"{path}: no text (the file is empty or holds only blank lines)")
    return lines


def _read_sst2_dir(data_dir: Path) -> datasets.DatasetDict:
    if not data_dir.is_dir():
        raise DataFileMissingError(f"SST-2 folder {data_dir} does not exist; {_GUIDANCE}.")
    splits = {}
    for split, (file_name, header) in SST2_FILES.items():
        rows = _read_tsv(data_dir / file_name, header, hint=_GUIDANCE)
        splits[split] = datasets.Dataset.from_dict(
            _sst2_columns(data_dir / file_name, rows, labelled=header[-1] == "label"),
            features=SST2_FEATURES,
            split=split,
        )
    return datasets.DatasetDict(splits)


def _sst2_columns(path: Path, rows: list[tuple[int, list[str]]], *, labelled: bool) -> dict:
    """Columns from ``(line number, fields)`` rows.

    Train/dev rows are ``sentence, label`` (idx = row position), test rows ``index, sentence``.
    """
    columns: dict[str, list] = {"sentence": [], "label": [], "idx": []}
    for position, (line_no, fields) in enumerate(rows):
        if labelled:
            sentence, label = fields
            label = _parse_int(path, line_no, "label", label)
            if label not in (0, 1):
                raise DataFormatError(f"{path}, line {line_no}: label {label} is not 0 or 1")
            idx = position
        else:
            idx, sentence = fields
            idx, label = _parse_int(path, line_no, "index", idx), NO_LABEL
        columns["sentence"].append(sentence.rstrip())
        columns["label"].append(label)
        columns["idx"].append(idx)
    return columns


def _read_tsv(path: Path, header: tuple[str, ...], *, hint: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` for every data row, after checking the header and column count.

    ``QUOTE_NONE``: SST-2 sentences contain quote characters that are text, not CSV quoting.
    Blank lines (e.g. a trailing one) are skipped.
    """
    text = _read_utf8(path, hint=hint)
    # csv refuses fields over 128 KiB by default; a field can be no longer than the file.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        return _tsv_rows(path, text, header)
    except csv.Error as err:  # e.g. a NUL byte
        raise DataFormatError(f"{path}: not a valid TSV file ({err})") from None
    finally:
        csv.field_size_limit(limit)


def _tsv_rows(path: Path, text: str, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    first = next(reader, None)
    if first is None or tuple(field.strip() for field in first) != header:
        found = "an empty file" if first is None else repr("\t".join(first))
        raise DataFormatError(
            f"{path}, line 1: expected the header {chr(9).join(header)!r}, found {found}"
        )
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataFormatError(
                f"{path}, line {reader.line_num}: expected {len(header)} tab-separated columns "
                f"({', '.join(header)}), found {len(fields)}"
            )
        rows.append((reader.line_num, fields))
    if not rows and header[-1] == "label":  # an unlabelled test split may be empty
        raise DataFormatError(f"{path}: no data rows (only the header)")
    return rows


def _read_utf8(path: Path, *, hint: str = "check the path") -> str:
    """The file's text; a missing file or invalid UTF-8 is reported with the path (and line)."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        raise DataFileMissingError(f"{path}: file not found; {hint}.") from err
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(f"{path}, line {line_no}: not valid UTF-8 ({err.reason})") from err


def _parse_int(path: Path, line_no: int, column: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataFormatError(
            f"{path}, line {line_no}: {column} {text!r} is not an integer"
        ) from None
