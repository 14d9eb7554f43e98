"""Datasets as data: a ``DatasetSpec`` names a source, its columns, its labels and its task.

Sources:

- GLUE tasks by name (``glue/sst2``, ``glue/mrpc``, ``glue/stsb``, ...: the ``GLUE`` table
  below) from a folder in GLUE's layout (``--data-dir``), else ``$ZOO_GLUE_DIR/<FOLDER>``
  (and ``$ZOO_SST2_DIR`` for SST-2), else the hub's ``nyu-mll/glue``;
- your own files: CSV, TSV, JSON lines (or a JSON array), parquet, with the columns named;
- CoNLL-style token files (``.txt``, ``.conll``, ``.iob``): a token in the first column, its
  tag in the last, a blank line between sentences, ``-DOCSTART-`` lines skipped;
- any hub dataset, ``hf:NAME[/CONFIG]``, with the same column names.

Every split is read into ``Examples`` (texts, optional pairs, labels encoded for the task,
and where each example came from), checked row by row: a bad value is reported with its
file, line and column. The task is inferred where the labels make it unambiguous (word
lists -> token classification, non-integer numbers -> regression, integers or names ->
classification) and taken from ``--task`` otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.data import DataFileMissingError, DataFormatError, DataNotFoundError, _read_utf8
from zoo.errors import InvalidArgumentError

GLUE_ENV = "ZOO_GLUE_DIR"
SST2_ENV = "ZOO_SST2_DIR"
HUB_GLUE = "nyu-mll/glue"
SPLITS = ("train", "validation", "test")
TOKEN_FORMATS = ("conll",)
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
              ".parquet": "parquet", ".txt": "conll", ".conll": "conll", ".iob": "conll"}


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its folder and files in GLUE's layout, columns there and on the hub."""

    folder: str
    columns: tuple[str, str | None, str]       # text, pair, label in the local TSV header
    hub_columns: tuple[str, str | None, str]   # the same on the hub's nyu-mll/glue
    labels: tuple[str, ...] | None             # names of label ids 0..n-1 (None: regression)
    task: str
    dev_file: str = "dev.tsv"
    hub_validation: str = "validation"
    header: tuple[str, ...] | None = None      # column names of a file without a header row
    head: str | None = None                    # the head a run on it gets (None: the task's)
    score_range: tuple[float, float] | None = None  # what its scores span (a task may rescale)


GLUE = {
    "sst2": GlueTask("SST-2", ("sentence", None, "label"), ("sentence", None, "label"),
                     ("negative", "positive"), "classification", head="sst2"),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String", "Quality"),
                     ("sentence1", "sentence2", "label"), ("not_equivalent", "equivalent"),
                     "classification"),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2", "score"),
                     ("sentence1", "sentence2", "label"), None, "regression",
                     score_range=(0.0, 5.0)),
    "rte": GlueTask("RTE", ("sentence1", "sentence2", "label"),
                    ("sentence1", "sentence2", "label"), ("entailment", "not_entailment"),
                    "classification"),
    "qnli": GlueTask("QNLI", ("question", "sentence", "label"), ("question", "sentence", "label"),
                     ("entailment", "not_entailment"), "classification"),
    "mnli": GlueTask("MNLI", ("sentence1", "sentence2", "gold_label"),
                     ("premise", "hypothesis", "label"),
                     ("entailment", "neutral", "contradiction"), "classification",
                     dev_file="dev_matched.tsv", hub_validation="validation_matched"),
    "qqp": GlueTask("QQP", ("question1", "question2", "is_duplicate"),
                    ("question1", "question2", "label"), ("not_duplicate", "duplicate"),
                    "classification"),
    "cola": GlueTask("CoLA", ("sentence", None, "label"), ("sentence", None, "label"),
                     ("unacceptable", "acceptable"), "classification",
                     header=("source", "label", "original_label", "sentence")),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2", "label"),
                     ("sentence1", "sentence2", "label"), ("not_entailment", "entailment"),
                     "classification"),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and how to read it (recorded in a run's config.json)."""

    name: str                                  # glue/mrpc, hf:NAME[/CONFIG], or "files"
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    label_names: tuple[str, ...] | None = None
    task: str | None = None
    files: tuple[tuple[str, str], ...] = ()    # (split, path) for "files"
    data_dir: str | None = None                # a GLUE task's folder

    @property
    def glue(self) -> GlueTask | None:
        return GLUE.get(self.name.split("/", 1)[1]) if self.name.startswith("glue/") else None

    @property
    def pairs(self) -> bool:
        return self.text_pair_column is not None

    @property
    def score_range(self) -> tuple[float, float] | None:
        """The range the source declares for its scores (GLUE STS-B: 0-5), else None."""
        glue = self.glue
        return glue.score_range if glue is not None else None

    @property
    def labels_optional(self) -> bool:
        """Whether the spec's task also trains on examples without labels (then a label
        column is read only where a file has it)."""
        from zoo.tasks import get_task

        return self.task is not None and get_task(self.task).labels_optional


@dataclasses.dataclass
class Examples:
    """One split, checked: ``texts`` (strings, or word lists for token tasks), ``pairs``
    (None for single texts), ``labels`` (class ids, floats, tag-id lists, or None when the
    split has none) and ``where[i]`` ("FILE, line N") for messages."""

    texts: list
    pairs: list[str] | None
    labels: Any
    where: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class TaskData:
    spec: DatasetSpec
    task: str
    label_names: tuple[str, ...] | None
    splits: dict[str, Examples]

    def summary(self) -> dict:
        return {"dataset": self.spec.name, "task": self.task,
                "labels": list(self.label_names) if self.label_names else None,
                **{f"{split}_examples": len(ex) for split, ex in self.splits.items()}}


# ------------------------------------------------------------------------------ the spec


def spec_from_config(cfg) -> DatasetSpec:
    """The dataset a ``TrainConfig`` names: ``--dataset``, or files, or GLUE SST-2."""
    files = tuple((split, str(path)) for split, path in (
        ("train", cfg.train_file), ("validation", cfg.validation_file), ("test", cfg.test_file))
        if path is not None)
    name = cfg.dataset or ("files" if files else "glue/sst2")
    if files and name != "files":
        raise InvalidArgumentError(f"--dataset {name} and --train-file/--validation-file name "
                                   "two datasets; pass one")
    if name == "files" and {"train", "validation"} - {s for s, _ in files}:
        raise InvalidArgumentError("your own data needs --train-file and --validation-file")
    if name.startswith("glue/"):
        key = name.split("/", 1)[1]
        if key not in GLUE:
            raise InvalidArgumentError(f"--dataset {name}: unknown GLUE task (known: "
                                       f"{', '.join('glue/' + k for k in GLUE)})")
        glue = GLUE[key]
        if cfg.task is not None and cfg.task != glue.task:
            _check_glue_task(name, glue, cfg.task)
        return DatasetSpec(name, *glue.columns, label_names=glue.labels,
                           task=cfg.task or glue.task, data_dir=cfg.data_dir)
    if not (name == "files" or name.startswith("hf:")) or name == "hf:":
        raise InvalidArgumentError(f"--dataset {name}: expected glue/TASK or hf:NAME[/CONFIG] "
                                   "(or --train-file and --validation-file)")
    if cfg.data_dir is not None:
        raise InvalidArgumentError("--data-dir is a GLUE task's folder; with your own files or "
                                   "a hub dataset it is not used (drop it)")
    return DatasetSpec(name, cfg.text_column, cfg.text_pair_column, cfg.label_column,
                       task=cfg.task, files=files)


def _check_glue_task(name: str, glue: GlueTask, task: str) -> None:
    """``--task`` on a GLUE task: any task that reads its texts and its kind of labels (e.g.
    sentence embeddings on STS-B's scored pairs)."""
    from zoo.tasks import get_task

    wanted = get_task(task)
    if wanted.needs_pairs and glue.columns[1] is None:
        raise InvalidArgumentError(f"--task {task} needs two texts per example; {name} has one "
                                   f"({glue.columns[0]})")
    if wanted.label_kind != get_task(glue.task).label_kind:
        raise InvalidArgumentError(f"--task {task}: {name} is a {glue.task} task")


def format_spec(cfg) -> DatasetSpec:
    """The layout of a run's data without its files: how ``evaluate --data-file`` and
    ``predict --file`` read a new file the way training read its own."""
    name = cfg.dataset or ("files" if cfg.train_file or cfg.text_column else "glue/sst2")
    if name.startswith("glue/") and name.split("/", 1)[1] in GLUE:
        glue = GLUE[name.split("/", 1)[1]]
        return DatasetSpec(name, *glue.columns, label_names=glue.labels,
                           task=cfg.task or glue.task)
    return DatasetSpec(name, cfg.text_column, cfg.text_pair_column, cfg.label_column,
                       task=cfg.task)


def file_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise InvalidArgumentError(
            f"{path}: unknown file type {suffix or '(no extension)'!r}; expected .csv, .tsv, "
            ".jsonl / .json, .parquet, or a CoNLL token file .txt / .conll / .iob")
    return EXTENSIONS[suffix]


# ------------------------------------------------------------------------------ loading


def load_task_data(spec: DatasetSpec) -> TaskData:
    """Every split of ``spec`` read, checked and encoded for its task (inferred if unset)."""
    from zoo.tasks import get_task

    raw = _read_splits(spec)
    task = spec.task or infer_task(raw["train"])
    _check_task_fits(task, raw["train"])
    for rows in raw.values():
        _check_pairs(task, rows)
    names = spec.label_names or raw["train"].label_names
    kind = get_task(task).label_kind
    if kind == "class" and names is None:
        names = class_names(raw["train"])
    if kind == "classes" and names is None:
        names = label_set_names(raw["train"])
    if kind == "tags" and names is None:
        names = tag_names(raw["train"])
    splits = {split: encode_labels(task, rows, names, score_range=spec.score_range)
              for split, rows in raw.items()}
    return TaskData(spec, task, names, splits)


def read_labelled_file(spec: DatasetSpec, path: str | Path, task: str,
                       label_names: Sequence[str] | None, *, labelled: bool = True) -> Examples:
    """A file in ``spec``'s format (``zoo evaluate --data-file``, ``zoo predict --file``),
    encoded with a trained model's task and label names."""
    path = Path(path).expanduser()
    glue = spec.glue
    if glue is not None:
        rows = _read_table(path, "tsv", glue.columns if labelled else glue.columns[:2] + (None,),
                           header=glue.header, hint=f"a file in the layout of GLUE {glue.folder}",
                           layout=f"GLUE's {glue.folder}")
    else:
        columns = (spec.text_column, spec.text_pair_column, spec.label_column if labelled
                   else None)
        fmt = file_format(path)
        from zoo.tasks import get_task

        if get_task(task).label_kind == "tags" and fmt != "conll" and spec.text_column is None:
            raise InvalidArgumentError(f"{path}: this run was trained on CoNLL token files; "
                                       "give one (.txt / .conll)")
        if labelled and spec.label_column is None and get_task(task).labels_optional:
            labelled = _has_column(path, fmt, None)  # pairs without scores are scored too
        rows = _read_file(path, fmt, columns, labelled=labelled)
    _check_pairs(task, rows)
    return encode_labels(task, rows, label_names, score_range=spec.score_range) if labelled \
        else _unlabelled(rows)


@dataclasses.dataclass
class _Rows:
    """A split as read, before label encoding: raw label values (str, int, float, lists)."""

    texts: list
    pairs: list[str] | None
    labels: list | None
    where: list[str]        # "FILE, line N" per example
    label_where: list[str]  # the same plus the label column, for label messages
    source: str
    tokens: bool = False    # texts are word lists (token classification)
    word_lines: list[list[int]] | None = None  # CoNLL: the line of every word
    label_names: tuple[str, ...] | None = None  # declared by the source (a hub ClassLabel)


def _unlabelled(rows: _Rows) -> Examples:
    return Examples(rows.texts, rows.pairs, None, rows.where, rows.source)


def _read_splits(spec: DatasetSpec) -> dict[str, _Rows]:
    if spec.glue is not None:
        return _read_glue(spec)
    if spec.name.startswith("hf:"):
        return _read_hub(spec.name[3:], spec)
    out = {}
    # A task that trains without labels too reads the default label column where present.
    optional = spec.labels_optional and spec.label_column is None
    for split, path in spec.files:
        fmt = file_format(path)
        out[split] = _read_file(Path(path).expanduser(), fmt,
                                (spec.text_column, spec.text_pair_column, spec.label_column),
                                labelled=(split != "test" and not optional)
                                or _has_column(path, fmt, spec.label_column))
    return out


def _has_column(path, fmt: str, column: str | None) -> bool:
    """Whether a test file carries the label column (then it is scored, else predicted)."""
    if fmt == "conll":
        return True
    try:
        return (column or "label") in _columns_of(Path(path).expanduser(), fmt)
    except (DataFormatError, OSError):
        return True  # let the full read report the problem


def _glue_folder(spec: DatasetSpec) -> Path | None:
    glue = spec.glue
    if spec.data_dir is not None:
        return Path(spec.data_dir).expanduser()
    if os.environ.get(GLUE_ENV):
        return Path(os.environ[GLUE_ENV]).expanduser() / glue.folder
    if glue.folder == "SST-2" and os.environ.get(SST2_ENV):
        return Path(os.environ[SST2_ENV]).expanduser()
    return None


def _read_glue(spec: DatasetSpec) -> dict[str, _Rows]:
    glue = spec.glue
    folder = _glue_folder(spec)
    if folder is None:
        return _read_hub(f"{HUB_GLUE}/{spec.name.split('/', 1)[1]}", dataclasses.replace(
            spec, text_column=glue.hub_columns[0], text_pair_column=glue.hub_columns[1],
            label_column=glue.hub_columns[2]), validation=glue.hub_validation,
            guidance=f"pass --data-dir (a folder with GLUE's {glue.folder} files train.tsv and "
                     f"{glue.dev_file}) or set ${GLUE_ENV} to the folder holding {glue.folder}/")
    if not folder.is_dir():
        raise DataFileMissingError(f"{spec.name} folder {folder} does not exist; pass --data-dir "
                                   f"(or set ${GLUE_ENV}) to a folder holding GLUE's "
                                   f"{glue.folder} files train.tsv and {glue.dev_file}.")
    hint = f"pass --data-dir or set ${GLUE_ENV}: a folder in GLUE's {glue.folder} layout"
    return {split: _read_table(folder / name, "tsv", glue.columns, header=glue.header, hint=hint,
                               layout=f"GLUE's {glue.folder}")
            for split, name in (("train", "train.tsv"), ("validation", glue.dev_file))}


# ------------------------------------------------------------------------------ readers


def _read_file(path: Path, fmt: str, columns: tuple, *, labelled: bool = True) -> _Rows:
    text, pair, label = columns
    if fmt == "conll":
        return _read_conll(path, labelled=labelled)
    text = text or "text"
    label = (label or "label") if labelled else None
    if fmt in ("csv", "tsv"):
        return _read_table(path, fmt, (text, pair, label), hint="check the path")
    if fmt == "jsonl":
        return _records(path, _json_records(path), (text, pair, label), "line")
    return _records(path, _parquet_records(path), (text, pair, label), "row")


def _columns_of(path: Path, fmt: str) -> list[str]:
    if fmt in ("csv", "tsv"):
        first = _read_utf8(path).split("\n", 1)[0]
        return next(csv.reader([first], delimiter="," if fmt == "csv" else "\t"), [])
    if fmt == "jsonl":
        _, record = next(iter(_json_records(path)), ("", {}))
        return list(record)
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def _missing_column(path: Path, column: str, found: Sequence[str], flag: str) -> DataFormatError:
    return DataFormatError(f"{path}: no column {column!r} (columns: "
                           f"{', '.join(map(repr, found)) or 'none'}); pass {flag}")


_FLAGS = ("--text-column", "--text-pair-column", "--label-column")


def _read_table(path: Path, fmt: str, columns: tuple, *, header: tuple | None = None,
                hint: str = "check the path", layout: str | None = None) -> _Rows:
    """CSV (standard quoting) or TSV (no quoting: quotes are text, as in GLUE). ``layout``
    names a fixed layout (a GLUE task's) for a header that lacks its columns."""
    text = _read_utf8(path, hint=hint)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        options = {"delimiter": ","} if fmt == "csv" else {"delimiter": "\t",
                                                            "quoting": csv.QUOTE_NONE}
        reader = csv.reader(io.StringIO(text, newline=""), **options)
        names = list(header) if header is not None else next(reader, None)
        wanted = [c for c in columns if c is not None]
        if names is None:
            what = f"of {layout} (columns" if layout else "(columns"
            raise DataFormatError(f"{path}, line 1: expected the header {what} "
                                  f"{', '.join(map(repr, wanted))}), found an empty file")
        names = [n.strip().lstrip("\ufeff") for n in names]
        index = []
        for column, flag in zip(columns, _FLAGS):
            if column is None:
                index.append(None)
            elif column not in names and layout is not None:
                raise DataFormatError(f"{path}, line 1: expected the header of {layout} "
                                      f"(columns {', '.join(map(repr, wanted))}), found "
                                      f"{chr(9).join(names)!r}")
            elif column not in names:
                raise _missing_column(path, column, names, flag)
            else:
                index.append(names.index(column))
        texts, pairs, labels, where = [], [], [], []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            line = reader.line_num
            if len(fields) != len(names):
                raise DataFormatError(f"{path}, line {line}: expected {len(names)} "
                                      f"{'comma' if fmt == 'csv' else 'tab'}-separated columns "
                                      f"({', '.join(names)}), found {len(fields)}")
            texts.append(fields[index[0]])
            if index[1] is not None:
                pairs.append(fields[index[1]])
            if index[2] is not None:
                labels.append(fields[index[2]].strip())
            where.append(f"{path}, line {line}")
    except csv.Error as err:
        raise DataFormatError(f"{path}: not a valid {fmt.upper()} file ({err})") from None
    finally:
        csv.field_size_limit(limit)
    return _checked_rows(path, texts, pairs if index[1] is not None else None,
                         labels if index[2] is not None else None, where, columns)


def _json_records(path: Path):
    """("line N" / "item N", object) of a JSON-lines file, or of a JSON array's items."""
    text = _read_utf8(path)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})"
                                  ) from None
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataFormatError(f"{path}: item {i + 1} is not a JSON object")
            yield f"item {i + 1}", item
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}, line {number}: expected a JSON object, found "
                                  f"{type(record).__name__}")
        yield f"line {number}", record


def _parquet_records(path: Path):
    if not path.is_file():
        raise DataFileMissingError(f"{path}: file not found; check the path.")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # arrow raises its own types for a damaged file
        raise DataFormatError(f"{path}: not a valid parquet file ({err})") from None
    for i, record in enumerate(table.to_pylist(), start=1):
        yield f"row {i}", record


def _records(path: Path, records, columns: tuple, unit: str) -> _Rows:
    """Rows from ("line N" / "row N", dict) records (JSON, parquet, hub rows): typed values
    kept; ``unit`` names a record in the "no data" message."""
    texts, pairs, labels, where = [], [], [], []
    seen = None
    for number, record in records:
        if seen is None:
            seen = list(record)
        for column, flag in zip(columns, _FLAGS):
            if column is not None and column not in record:
                raise DataFormatError(f"{path}, {number}: no column {column!r} (columns: "
                                      f"{', '.join(map(repr, record)) or 'none'}); pass {flag}")
        texts.append(record[columns[0]])
        if columns[1] is not None:
            pairs.append(record[columns[1]])
        if columns[2] is not None:
            labels.append(record[columns[2]])
        where.append(f"{path}, {number}")
    if seen is None:
        raise DataFormatError(f"{path}: no data {unit}s")
    return _checked_rows(path, texts, pairs if columns[1] is not None else None,
                         labels if columns[2] is not None else None, where, columns)


def _checked_rows(path, texts, pairs, labels, where, columns) -> _Rows:
    """Texts must be non-empty strings (or, for token data, non-empty lists of words)."""
    if not texts:
        raise DataFormatError(f"{path}: no data rows (only the header)")
    tokens = isinstance(texts[0], (list, tuple))
    text_column, pair_column, label_column = columns
    for i, value in enumerate(texts):
        _check_text(value, f"{where[i]}, column {text_column!r}", tokens)
        if tokens:
            texts[i] = [str(w) for w in value]
        else:
            texts[i] = value.strip()
    if pairs is not None:
        for i, value in enumerate(pairs):
            _check_text(value, f"{where[i]}, column {pair_column!r}", False)
            pairs[i] = value.strip()
    label_where = [f"{w}, column {label_column!r}" for w in where]
    return _Rows(texts, pairs, labels, where, label_where, str(path), tokens)


def _check_text(value, where: str, tokens: bool) -> None:
    from zoo.text import check_unicode

    if tokens:
        if not isinstance(value, (list, tuple)) or not value:
            raise DataFormatError(f"{where}: expected a non-empty list of words, found "
                                  f"{value!r:.60}")
        for word in value:
            if not isinstance(word, str) or not word.strip():
                raise DataFormatError(f"{where}: a word is empty or not a string ({word!r:.40})")
        return
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: text must be a string, found {type(value).__name__} "
                              f"{value!r:.60}")
    if not value.strip():
        raise DataFormatError(f"{where}: empty text")
    try:
        check_unicode(value, where)
    except InvalidArgumentError as err:
        raise DataFormatError(str(err)) from None


def _read_conll(path: Path, *, labelled: bool = True) -> _Rows:
    """Sentences of ``token ... TAG`` lines; ``-DOCSTART-`` lines and blank lines separate."""
    text = _read_utf8(path)
    sentences, tags, where, word_lines = [], [], [], []
    words: list[str] = []
    sentence_tags: list[str] = []
    lines: list[int] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
                tags.append(sentence_tags)
                where.append(f"{path}, line {start}")
                word_lines.append(lines)
            words, sentence_tags, lines = [], [], []
            continue
        if labelled and len(fields) < 2:
            raise DataFormatError(f"{path}, line {number}: expected 'token TAG' (a token and its "
                                  f"tag separated by whitespace), found {line.strip()!r:.60}")
        if not words:
            start = number
        words.append(fields[0])
        lines.append(number)
        sentence_tags.append(fields[-1] if labelled else "O")
    if words:
        sentences.append(words)
        tags.append(sentence_tags)
        where.append(f"{path}, line {start}")
        word_lines.append(lines)
    if not sentences:
        raise DataFormatError(f"{path}: no sentences (expected 'token TAG' lines)")
    return _Rows(sentences, None, tags if labelled else None, where,
                 [f"{w}, tag column" for w in where], str(path), tokens=True,
                 word_lines=word_lines)


def _read_hub(name: str, spec: DatasetSpec, validation: str = "validation",
              guidance: str | None = None) -> dict[str, _Rows]:
    """A hub dataset (``NAME[/CONFIG]``): train and validation splits, the spec's columns."""
    import datasets

    from zoo.streaming import split_hub_name

    hub_name, config = split_hub_name(name, f"hf:{name}", "hf:NAME[/CONFIG] or "
                                      "hf:OWNER/NAME/CONFIG")
    guidance = guidance or ("download it where you have a network (datasets.load_dataset("
                            f"{hub_name!r}).save_to_disk(...) or export CSV) and pass "
                            "--train-file and --validation-file")
    try:
        loaded = datasets.load_dataset(hub_name, config)
    except Exception as err:  # offline, unknown name, auth...: all need the user to act
        raise DataNotFoundError(f"hf:{name}: could not be loaded from the HuggingFace hub "
                                f"({type(err).__name__}: {str(err)[:200]}); {guidance}."
                                ) from err
    out = {}
    for split, hub_split in (("train", "train"), ("validation", validation)):
        if hub_split not in loaded:
            raise DataFormatError(f"hf:{name}: no {hub_split!r} split (splits: "
                                  f"{', '.join(loaded)})")
        ds = loaded[hub_split]
        columns = (spec.text_column or "text", spec.text_pair_column,
                   spec.label_column or "label")
        if spec.labels_optional and spec.label_column is None \
                and columns[2] not in ds.column_names:
            columns = columns[:2] + (None,)
        for column, flag in zip(columns, _FLAGS):
            if column is not None and column not in ds.column_names:
                raise _missing_column(Path(f"hf:{name}[{hub_split}]"), column, ds.column_names,
                                      flag)
        rows = _records(Path(f"hf:{name}[{hub_split}]"),
                        ((f"row {i}", r) for i, r in enumerate(ds.select_columns(
                            [c for c in columns if c is not None]), start=1)), columns, "row")
        feature = ds.features[columns[2]] if columns[2] is not None else None
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None),
                                                           "names", None)
        if names:  # ClassLabel ids (or sequences of them): the names, in the hub's order
            rows.labels = [[names[t] for t in v] if isinstance(v, list) else
                           (names[v] if isinstance(v, int) and v >= 0 else v)
                           for v in rows.labels]
            rows.label_names = tuple(names)
        out[split] = rows
    return out


# ------------------------------------------------------------------------------ labels


def _number(value) -> int | float | None:
    """An int or float read from a label value, None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def infer_task(rows: _Rows) -> str:
    """Token lists -> token classification; lists of labels -> multi-label classification;
    numbers with a fraction -> regression; else classification."""
    if rows.tokens:
        return "token-classification"
    if rows.labels is None:
        raise DataFormatError(f"{rows.source}: no labels to train on")
    if any(isinstance(v, (list, tuple)) for v in rows.labels):
        return "multi-label-classification"
    numbers = [_number(v) for v in rows.labels]
    if all(n is not None for n in numbers) and any(
            isinstance(n, float) and not n.is_integer() for n in numbers):
        return "regression"
    return "classification"


def _check_task_fits(task: str, rows: _Rows) -> None:
    from zoo.tasks import get_task

    kind = get_task(task).label_kind
    if kind is None:
        raise InvalidArgumentError(f"--task {task} does not train on labelled data")
    if (kind == "tags") != rows.tokens:
        what = "word lists with a tag per word" if kind == "tags" else "a text per example"
        raise InvalidArgumentError(f"--task {task} needs {what}; {rows.source} holds "
                                   f"{'tagged words' if rows.tokens else 'texts'}")
    if rows.labels is None and not get_task(task).labels_optional:
        raise DataFormatError(f"{rows.source}: no labels to train on")


def _check_pairs(task: str, rows: _Rows) -> None:
    """A task that reads two texts per example needs a second text column."""
    from zoo.tasks import get_task

    if get_task(task).needs_pairs and rows.pairs is None:
        raise InvalidArgumentError(
            f"--task {task} needs two texts per example (e.g. an anchor and its positive, or "
            f"a scored pair); {rows.source} has one text column: pass --text-pair-column")


def _label_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def class_names(rows: _Rows) -> tuple[str, ...]:
    """Label names of a classification training split: integers sorted by value, or names
    sorted alphabetically."""
    values = []
    for value, where in zip(rows.labels, rows.label_where):
        number = _number(value)
        if isinstance(number, float) and not number.is_integer():
            raise DataFormatError(f"{where}: label {value!r} is a float; a classification "
                                  "label is an integer or a name (use --task regression for "
                                  "scores)")
        if _label_text(value) == "":
            raise DataFormatError(f"{where}: empty label")
        values.append(value)
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        ordered = sorted({int(n) for n in numbers})
        names = tuple(str(n) for n in ordered)
    else:
        names = tuple(sorted({_label_text(v) for v in values}))
    if len(names) < 2:
        raise DataFormatError(f"{rows.source}: every example has the label {names[0]!r}; "
                              "classification needs at least two classes")
    return names


LABEL_SEPARATOR = ","  # between the labels of one example in a CSV / TSV cell


def label_set(value, where: str) -> list:
    """One example's labels (multi-label): a list as it is, a string split at commas (an
    empty string or list: no label)."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in (p.strip() for p in value.split(LABEL_SEPARATOR)) if part]
    elif value is None:
        raise DataFormatError(f"{where}: no labels (write an empty list, or an empty string, "
                              "for an example with none)")
    else:
        items = [value]  # a single id or name
    for item in items:
        if isinstance(item, (list, tuple, dict)) or item is None or _label_text(item) == "":
            raise DataFormatError(f"{where}: label {item!r:.40} in {value!r:.80} is not a "
                                  "label name or id")
    return items


def label_set_names(rows: _Rows) -> tuple[str, ...]:
    """Label names of a multi-label training split: every label that occurs, integers sorted
    by value, or names sorted alphabetically."""
    values = []
    for value, where in zip(rows.labels, rows.label_where):
        for item in label_set(value, where):
            number = _number(item)
            if isinstance(number, float) and not number.is_integer():
                raise DataFormatError(f"{where}: label {item!r} is a float; a label is an "
                                      "integer or a name")
            values.append(item)
    numbers = [_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        names = tuple(str(n) for n in sorted({int(n) for n in numbers}))
    else:
        names = tuple(sorted({_label_text(v) for v in values}))
    if len(names) < 2:
        found = f"only the label {names[0]!r} occurs" if names else "no example has a label"
        raise DataFormatError(f"{rows.source}: {found}; multi-label classification needs at "
                              "least two labels")
    return names


def tag_names(rows: _Rows) -> tuple[str, ...]:
    """The training split's tags, completed so every entity type has both its ``B-`` and
    its ``I-`` tag (a dev split may use one the training split lacks)."""
    names = {str(tag) for tags in rows.labels for tag in tags}
    for tag in list(names):
        if tag[:2] in ("B-", "I-"):
            names |= {"B-" + tag[2:], "I-" + tag[2:]}
    names = sorted(names)
    if len(names) < 2:
        raise DataFormatError(f"{rows.source}: every word has the tag {names[0]!r}; token "
                              "classification needs at least two tags")
    return tuple(names)


def class_id(value, names: Sequence[str], where: str) -> int:
    """The id of a label value: its name, or (for names that are not numbers) its index."""
    text = _label_text(value)
    if text == "":
        raise DataFormatError(f"{where}: empty label")
    if text in names:
        return names.index(text)
    number = _number(value)
    if number is not None and float(number).is_integer() and str(int(number)) in names:
        return names.index(str(int(number)))  # "1.0" for the class "1"
    if isinstance(number, float) and not number.is_integer():
        raise DataFormatError(f"{where}: label {value!r} is a float; a classification label is "
                              "an integer or a name (use --task regression for scores)")
    numeric_names = all(_number(n) is not None for n in names)
    if number is not None and not numeric_names:
        if 0 <= int(number) < len(names):
            return int(number)
        raise DataFormatError(f"{where}: label {value!r} is outside 0..{len(names) - 1} (the "
                              f"class ids of {', '.join(names)})")
    raise DataFormatError(f"{where}: label {value!r} is neither a number nor a known name "
                          f"(labels: {', '.join(names)})")


def encode_labels(task: str, rows: _Rows, names: Sequence[str] | None, *,
                  score_range: tuple[float, float] | None = None) -> Examples:
    """``rows`` with labels as the task reads them (class ids, multi-hot rows, floats,
    tag-id lists);
    ``score_range``: what the source declares its scores to span (the task may rescale)."""
    from zoo.tasks import get_task

    if rows.labels is None:
        return _unlabelled(rows)
    kind = get_task(task).label_kind
    if kind == "class":
        labels = np.asarray([class_id(v, names, w) for v, w in zip(rows.labels,
                                                                      rows.label_where)],
                            np.int32)
    elif kind == "classes":  # multi-hot rows
        labels = np.zeros((len(rows.labels), len(names)), np.float32)
        for row, (value, where) in enumerate(zip(rows.labels, rows.label_where)):
            for item in label_set(value, where):
                labels[row, class_id(item, names, where)] = 1.0
    elif kind == "score":
        values = []
        for value, where in zip(rows.labels, rows.label_where):
            number = _number(value)
            if number is None:
                raise DataFormatError(f"{where}: label {value!r} is not a number (a regression "
                                      "label is a score)")
            values.append(float(number))
        values = get_task(task).prepare_scores(values, score_range, rows.label_where)
        labels = np.asarray(values, np.float32)
    elif kind == "tags":
        index = {name: i for i, name in enumerate(names)}
        labels = []
        for n, (tags, where, words) in enumerate(zip(rows.labels, rows.label_where,
                                                     rows.texts)):
            if not isinstance(tags, (list, tuple)) or len(tags) != len(words):
                raise DataFormatError(f"{where}: {len(words)} words but "
                                      f"{len(tags) if isinstance(tags, (list, tuple)) else 'no'}"
                                      " tags")
            unknown = next((j for j, t in enumerate(tags) if str(t) not in index), None)
            if unknown is not None:
                if rows.word_lines is not None:
                    where = f"{rows.source}, line {rows.word_lines[n][unknown]}, tag column"
                else:
                    where = f"{where}, word {unknown + 1} ({words[unknown]!r})"
                raise DataFormatError(f"{where}: tag {tags[unknown]!r} is not one of the "
                                      f"training tags ({', '.join(names)})")
            labels.append([index[str(t)] for t in tags])
    else:
        raise InvalidArgumentError(f"task {task!r} does not train on labelled data")
    return Examples(rows.texts, rows.pairs, labels, rows.where, rows.source)
