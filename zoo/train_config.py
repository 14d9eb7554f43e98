"""The training run's configuration: ``TrainConfig``, its accepted values, and the one check
of every field (``validate_config``) shared by the command line and ``train_run``.

``TrainConfig`` is what ``config.json`` records; ``FLAGS`` names the command-line flag of each
field, so a bad value is reported under the flag (or, read from a file, under the field).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any

from zoo import sharding
from zoo.errors import ConfigError, InvalidArgumentError
from zoo.nn import PRECISIONS


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json`` in the run directory)."""

    model: str = "encoder-m2l-small"
    head: str | None = None  # None: the data's task's head (glue/sst2: "sst2")
    pretrained: bool = False
    weights: str | None = None
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    time_limit: float | None = None  # seconds of training after which the run stops early
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" (warm-up + decay), "adam" (the seed's constant adam)
    # or "sgd" (momentum 0.9, warm-up + decay)
    learning_rate: float | None = None  # None: the model's fine-tuning default (see resolve)
    schedule: str = "linear"  # "linear" | "cosine" | "constant" (after warm-up)
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    dropout: float | None = None  # None: the preset's
    eval_every: int = 500
    seed: int = 0
    max_len: int | None = None  # None: the model's
    buckets: tuple[int, ...] | None = None
    dropout_prng: str = "threefry2x32"  # or "rbg" (faster on GPU, slower on CPU here)
    data_dir: str | None = None
    text_file: str | None = None  # MLM only: pre-train on this file's lines instead of SST-2
    vocab_size: int | None = None  # of a tokenizer trained here; None: the model's
    mesh: str | None = None  # "data=N[,model=M]"; None: every device on the data axis
    precision: str = "float32"  # or "bf16": bf16 compute, float32 parameters and optimizer
    stream: str | None = None  # MLM only: stream this text file or hf:NAME... (not in memory)
    # The labelled data (zoo.dataset): a GLUE task by name (glue/mrpc; data_dir is its folder),
    # a hub dataset (hf:NAME[/CONFIG]), or your own files; none of them: GLUE SST-2.
    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str | None = None  # files and hub datasets: default "text"
    text_pair_column: str | None = None  # the second text of a pair task
    label_column: str | None = None  # default "label"
    task: str | None = None  # None: inferred from the labels (zoo.tasks names)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validated(self, source: str | None = None) -> "TrainConfig":
        """``self`` after ``validate_config`` (raises on the first out-of-range field)."""
        validate_config(self, source)
        return self

    def resolved(self) -> "TrainConfig":
        """A copy with every model-dependent default filled in (what ``config.json`` records).

        The learning rate defaults to the preset's ``finetune_defaults`` when training starts
        from pre-trained weights (about 5e-5 for BERT-family encoders), else 1e-3.
        """
        from zoo.registry import get_encoder

        if self.learning_rate is not None:
            return self
        defaults = get_encoder(self.model).finetune_defaults
        start_trained = bool(self.pretrained or self.weights)
        lr = defaults.get("learning_rate", 1e-3) if start_trained else 1e-3
        return dataclasses.replace(self, learning_rate=lr)


# ------------------------------------------------------------------------------ validation

# The command-line flag of each field (fields without one are named as such).
FLAGS = {f: "--" + f.replace("_", "-") for f in (
    "model", "head", "weights", "epochs", "max_steps", "time_limit", "batch_size", "optimizer",
    "schedule", "warmup_fraction", "weight_decay", "dropout", "eval_every", "seed", "max_len",
    "data_dir", "text_file", "mesh", "precision", "stream", "dataset", "train_file",
    "validation_file", "test_file", "text_column", "text_pair_column", "label_column",
    "task", "vocab_size")} | {"learning_rate": "--lr"}
OPTIMIZERS = ("adamw", "adam", "sgd")
MAX_BATCH_SIZE = 65_536  # rows per step; more would not fit a device's memory anyway
MAX_VOCAB_SIZE = 1_000_000  # tokens of a tokenizer trained here
SCHEDULES = ("linear", "cosine", "constant")
PRNGS = ("threefry2x32", "rbg", "unsafe_rbg")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_config(cfg: "TrainConfig", source: str | None = None) -> None:
    """Check every field's type and range before any work, naming the flag that is wrong.

    One function for the command line and for ``train_run`` from Python, so both refuse the
    same things (NaN learning rates, dropout 2, zero steps...). With ``source`` (a run's
    ``config.json``) the message names the file and the field instead of the flag, and the
    error is a ``ConfigError``.
    """
    def bad(field: str, must: str):
        value = getattr(cfg, field)
        if source is None:
            raise InvalidArgumentError(f"{FLAGS.get(field, field)} must be {must}, got {value!r}")
        raise ConfigError(f"{source}: {field} must be {must}, got {value!r}")

    def positive_int(field: str, optional: bool = False, minimum: int = 1,
                     maximum: int | None = None):
        value = getattr(cfg, field)
        if optional and value is None:
            return
        if not (_is_int(value) and value >= minimum):
            bad(field, f"an integer >= {minimum}")
        if maximum is not None and value > maximum:  # counts that size memory: bounded
            bad(field, f"an integer in [{minimum}, {maximum:,}]")

    def real(field: str, low: float, high: float = math.inf, *, low_open: bool = False,
             high_open: bool = True, optional: bool = False):
        value = getattr(cfg, field)
        if optional and value is None:
            return
        ok = _is_real(value) and math.isfinite(value) \
            and (value > low if low_open else value >= low) \
            and (value < high if high_open else value <= high)
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            span = f"> {low:g}" if high == math.inf and low_open else (
                f">= {low:g}" if high == math.inf else f"in {lo}{low:g}, {high:g}{hi}")
            bad(field, f"a finite number {span}")

    for field in ("model", "head", "task"):
        value = getattr(cfg, field)
        if (value is not None or field == "model") and (not isinstance(value, str) or not value):
            bad(field, "a registered name")
    for field in ("dataset", "text_column", "text_pair_column", "label_column"):
        value = getattr(cfg, field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            bad(field, "a non-empty name")
    for field in ("weights", "data_dir", "text_file", "stream", "train_file", "validation_file",
                  "test_file"):
        value = getattr(cfg, field)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
            bad(field, "a path")
    if not isinstance(cfg.pretrained, bool):
        bad("pretrained", "true or false")
    real("epochs", 0.0, low_open=True)
    positive_int("max_steps", optional=True)
    real("time_limit", 0.0, low_open=True, optional=True)
    positive_int("batch_size", maximum=MAX_BATCH_SIZE)
    if cfg.optimizer not in OPTIMIZERS:
        bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
    real("learning_rate", 0.0, low_open=True, optional=True)
    if cfg.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}")
    real("warmup_fraction", 0.0, 1.0)
    real("weight_decay", 0.0)
    real("clip_norm", 0.0, low_open=True)
    real("dropout", 0.0, 1.0, optional=True)
    positive_int("eval_every")
    if not (_is_int(cfg.seed) and 0 <= cfg.seed < 2**32):
        bad("seed", "an integer in [0, 2**32)")
    positive_int("max_len", optional=True, minimum=2)  # room for [CLS] and [SEP]
    if cfg.buckets is not None and not (
            isinstance(cfg.buckets, (tuple, list)) and cfg.buckets
            and all(_is_int(b) and b >= 1 for b in cfg.buckets)):
        bad("buckets", "a non-empty list of positive lengths")
    if cfg.dropout_prng not in PRNGS:
        bad("dropout_prng", f"one of {', '.join(PRNGS)}")
    positive_int("vocab_size", optional=True, minimum=6,  # more than the 5 special tokens
                 maximum=MAX_VOCAB_SIZE)
    if cfg.precision not in PRECISIONS:
        bad("precision", f"one of {', '.join(PRECISIONS)}")
    if cfg.mesh is not None:
        if not isinstance(cfg.mesh, str):
            bad("mesh", "data=N[,model=M]")
        try:
            sharding.parse_mesh(cfg.mesh)
        except InvalidArgumentError:
            bad("mesh", "data=N[,model=M] with positive integers")
    if cfg.stream is not None and cfg.text_file is not None:
        bad("stream", "unset when --text-file is given (one corpus)")
