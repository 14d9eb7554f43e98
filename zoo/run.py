"""A run directory, end to end: data and tokenizer, model, training, export and reports.

Layout of ``RUN/``::

    config.json                 the TrainConfig (``--resume`` reads it back), format zoo-run/1
    .lock                       held (flock) by the process training in the folder
    tokenizer.json              the tokenizer the run used
    checkpoints/{latest,best}/  orbax checkpoints (params + optimizer + progress), each step
                                with zoo_checksums.json (sha256 of its files, checked on restore)
    metrics.jsonl, tb/          metrics as they come (JSONL and TensorBoard)
    model/                      the best model as a zoo model directory: ``zoo.load(RUN)``
    dev_report.{txt,json}, dev_confusion.png, curves.png, summary.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from zoo import checkpoint, sharding
from zoo.batching import DEFAULT_BUCKETS, BucketBatcher, buckets_for
from zoo.errors import ConfigError, InvalidArgumentError
from zoo.fsutil import (FolderLock, InUseError, OutputExistsError, atomic_file,
                        atomic_write_text, check_output, is_temporary_name)
from zoo.hub import cache_root, load
from zoo.model import ZooModel, build_model, set_dropout_rate
from zoo.tasks import MaskingConfig, task_for
from zoo.train import FLAGS, Evaluator, TrainConfig, Trainer, committed_steps

EVAL_BATCH_SIZE = 64  # small batches run faster on CPU (cache-sized activations)
# A streamed corpus is shuffled in windows of this many examples, whatever the process count
# (each process's share of a window is STREAM_WINDOW / processes), so a run resumed with
# another number of processes sees the same global batches.
STREAM_WINDOW = 16_384
TOKENIZER_SAMPLE = 100_000  # texts of a streamed corpus a tokenizer is trained on


@dataclasses.dataclass
class PreparedData:
    tokenizer: object
    train: BucketBatcher
    dev: BucketBatcher
    dev_labels: np.ndarray | None
    masking: MaskingConfig | None
    info: dict = dataclasses.field(default_factory=dict)  # merged into summary.json


def make_model(cfg: TrainConfig) -> ZooModel:
    """The model a run starts from: pre-trained weights when asked, else a random init."""
    if cfg.pretrained or cfg.weights:
        model = load(cfg.model, head=cfg.head, weights=cfg.weights, seed=cfg.seed)
    else:
        model = build_model(cfg.model, cfg.head, seed=cfg.seed)
    if cfg.dropout is not None:
        set_dropout_rate(model, cfg.dropout)
    return model


def _tokenizer_for(model: ZooModel, texts: list[str], cfg: TrainConfig):
    """The encoder's own tokenizer when it has one, else the tutorial's recipe trained here."""
    from zoo.text import cached_tokenizer

    vocab_size = model.config.vocab_size
    tokenizer = model.tokenizer
    if tokenizer is None:
        tokenizer, _ = cached_tokenizer(
            texts, cfg.vocab_size or vocab_size, cache_root() / "tokenizers")
    if tokenizer.get_vocab_size() > vocab_size:
        raise InvalidArgumentError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but {cfg.model} embeds "
            f"only {vocab_size}" + (" (lower vocab_size)" if cfg.vocab_size else "")
        )
    return tokenizer


def read_data(cfg: TrainConfig) -> tuple:
    """(SST-2, the ``text_file`` lines, a ``StreamSample`` of ``stream``, or None), read before
    a model is built: bad data then fails in a moment, not after the weights are loaded."""
    from zoo.data import load_sst2, read_text_lines
    from zoo.registry import get_head

    mlm = get_head(cfg.head).kind == "mlm"
    if cfg.stream is not None and not mlm:
        raise InvalidArgumentError(f"--stream is for masked-LM pre-training (`zoo pretrain`); "
                                   f"head {cfg.head!r} trains on SST-2")
    lines = read_text_lines(cfg.text_file) if cfg.text_file and mlm else None
    if cfg.stream is not None:
        from zoo.streaming import parse_source, sample_texts

        source = parse_source(cfg.stream)
        lines = StreamSample(source, sample_texts(source, TOKENIZER_SAMPLE))
    return load_sst2(cfg.data_dir), lines


@dataclasses.dataclass(frozen=True)
class StreamSample:
    """A streamed corpus: its source, and its first texts (to train a tokenizer on)."""

    source: object
    texts: list[str]


def prepare_data(model: ZooModel, cfg: TrainConfig, raw: tuple | None = None) -> PreparedData:
    from zoo.text import encode, special_ids, tokenize_splits

    max_len = min(cfg.max_len or model.config.max_len, model.config.max_len)
    buckets = buckets_for(max_len, tuple(cfg.buckets or DEFAULT_BUCKETS))
    dataset, lines = raw or read_data(cfg)
    kind = model.info.head_kind
    stream = None
    if kind == "mlm" and isinstance(lines, StreamSample):
        tokenizer = _tokenizer_for(model, lines.texts, cfg)
        stream = _open_stream(lines.source, tokenizer, cfg, max_len, buckets)
        train_ids, dev_ids = None, encode(tokenizer, dataset["validation"]["sentence"], max_len)
    elif kind == "mlm" and lines is not None:
        tokenizer = _tokenizer_for(model, lines, cfg)
        train_ids = encode(tokenizer, lines, max_len)
        dev_ids = encode(tokenizer, dataset["validation"]["sentence"], max_len)
    else:
        tokenizer = _tokenizer_for(model, dataset["train"]["sentence"], cfg)
        tokenized = tokenize_splits(dataset, tokenizer, max_len, cache_root() / "datasets")
        train_ids, dev_ids = tokenized["train"]["input_ids"], tokenized["validation"]["input_ids"]
    ids = special_ids(tokenizer)
    dev_labels = train_labels = None
    if kind == "classification":
        train_labels = np.asarray(dataset["train"]["label"])
        dev_labels = np.asarray(dataset["validation"]["label"])
        n = model.info.num_classes
        for split, values in (("train", train_labels), ("validation", dev_labels)):
            if values.min() < 0 or values.max() >= n:
                raise InvalidArgumentError(
                    f"SST-2 {split} labels outside 0..{n - 1} for a {n}-class head")
    masking = None
    if kind == "mlm":
        masking = MaskingConfig(
            mask_id=ids["mask"], vocab_size=model.config.vocab_size,
            special_ids=tuple(sorted(ids.values())),
        )
    train = stream or BucketBatcher(train_ids, train_labels, batch_size=cfg.batch_size,
                                    buckets=buckets, pad_id=ids["pad"])
    dev = BucketBatcher(dev_ids, dev_labels, batch_size=EVAL_BATCH_SIZE, buckets=buckets,
                        pad_id=ids["pad"])
    for split, batcher in (("train", train), ("dev", dev)):
        if batcher is stream:  # checked as it is tokenised (ids come from the same tokenizer)
            continue
        low, high = batcher.id_range()  # inside jit nothing checks ids: a bad one gives NaN
        if low < 0 or high >= model.config.vocab_size:
            raise InvalidArgumentError(
                f"{split} token ids span [{low}, {high}], outside the vocabulary of "
                f"{cfg.model} (0..{model.config.vocab_size - 1}); the tokenizer does not fit the "
                f"model, or the token cache under {cache_root()} is damaged (delete it)")
    return PreparedData(tokenizer, train, dev, dev_labels, masking)


def _open_stream(source, tokenizer, cfg: TrainConfig, max_len: int, buckets):
    """This process's share of a streamed corpus, as batches of ``cfg.batch_size`` rows."""
    import jax

    from zoo.streaming import TextStream
    from zoo.text import special_ids

    processes = jax.process_count()
    stream = TextStream(source, tokenizer, batch_size=cfg.batch_size, max_len=max_len,
                        pad_id=special_ids(tokenizer)["pad"], seed=cfg.seed,
                        process_index=jax.process_index(), process_count=processes,
                        shuffle_window=max(1, STREAM_WINDOW // processes),
                        buckets=buckets if processes == 1 else None)
    if stream.steps_per_epoch is None and cfg.max_steps is None:
        stream.close()
        raise InvalidArgumentError(f"--stream {cfg.stream}: a hub stream has no known length; "
                                   "pass --max-steps")
    return stream


def _save_tokenizer(tokenizer, run_dir: Path) -> Path:
    path = run_dir / checkpoint.TOKENIZER
    with atomic_file(path) as tmp:
        tokenizer.save(str(tmp))
    return path


# ------------------------------------------------------------------------------ the run folder

RUN_FORMAT = "zoo-run/1"
CONFIG = "config.json"
# config.json sections of training methods beside plain training (their own settings).
METHOD_SECTIONS = ("distill",)
# Everything a run writes. --overwrite and a restart remove these names and nothing else.
RUN_ENTRIES = frozenset({
    CONFIG, checkpoint.TOKENIZER, "checkpoints", "metrics.jsonl", "tb", "model", "summary.json",
    "dev_report.txt", "dev_report.json", "dev_confusion.png", "curves.png", FolderLock.NAME})


def _own_entry(name: str) -> bool:
    return name in RUN_ENTRIES or is_temporary_name(name)


def _config_json(run_dir: Path) -> object:
    """The parsed ``config.json``, or None when absent or unparseable."""
    try:
        return json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a zoo run: its ``config.json`` is a run config.

    Runs written before the ``format`` field are recognised by their fields and their
    ``checkpoints/`` folder, so a foreign ``config.json`` (e.g. a HuggingFace model's) is not.
    """
    path = Path(path)
    data = _config_json(path)
    if not isinstance(data, dict):
        return False
    if data.get("format") == RUN_FORMAT:
        return True
    fields = set(TrainConfig.__dataclass_fields__)
    return "model" in data and "head" in data and set(data) <= fields \
        and (path / "checkpoints").is_dir()


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """A run's ``config.json``, checked like the flags it came from (errors name the file)."""
    path = Path(run_dir) / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in METHOD_SECTIONS}  # their owners read them
    if data.pop("format", RUN_FORMAT) != RUN_FORMAT:
        raise ConfigError(f"{path}: not a {RUN_FORMAT} run config")
    unknown = sorted(set(data) - set(TrainConfig.__dataclass_fields__))
    if unknown or "model" not in data or "head" not in data:
        what = f"unknown field(s) {', '.join(unknown)}" if unknown else "'model' or 'head' missing"
        raise ConfigError(f"{path}: {what}; it is not a zoo run config")
    if isinstance(data.get("buckets"), list):
        data["buckets"] = tuple(data["buckets"])
    return TrainConfig(**data).validated(source=str(path))


def _completed(run_dir: Path) -> bool:
    """True once the run holds a result worth keeping: a committed checkpoint or an export."""
    checkpoints = run_dir / "checkpoints"
    return any(committed_steps(checkpoints / kind) for kind in ("latest", "best")) \
        or (run_dir / "model").exists() or (run_dir / "summary.json").exists()


def _check_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, with one line, a ``--out`` that training must not write into.

    New or empty: fine. A run: ``--resume`` continues it; a fresh start replaces it only with
    ``--overwrite``, or when it never completed a checkpoint (a crash early in its first
    run). Anything else is someone's folder and is refused.
    """
    if not run_dir.exists():
        if resume:
            raise FileNotFoundError(f"--resume: {run_dir} does not exist")
        return
    if not run_dir.is_dir():
        raise OutputExistsError(f"{run_dir} exists and is not a folder; choose another --out")
    entries = [e.name for e in run_dir.iterdir()
               if e.name != FolderLock.NAME and not is_temporary_name(e.name)]
    if not entries and not resume:
        return
    if not is_run_dir(run_dir):
        if (run_dir / CONFIG).is_file() and all(map(_own_entry, entries)):
            read_run_config(run_dir)  # a run with a broken config: say what is wrong with it
        raise OutputExistsError(
            f"{run_dir} is not empty and is not a zoo run; choose a new or empty folder")
    if resume:
        return
    if _completed(run_dir) and not overwrite:
        raise OutputExistsError(
            f"{run_dir} already holds a zoo run: pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out")


def _check_inputs_outside(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse inputs that live among the run files a fresh start is about to remove."""
    for field in ("weights", "data_dir", "text_file", "stream"):
        value = getattr(cfg, field)
        if value is None or (field == "stream" and str(value).startswith("hf:")):
            continue
        path = Path(value).expanduser().resolve()
        if path.is_relative_to(run_dir) and path != run_dir \
                and _own_entry(path.relative_to(run_dir).parts[0]):
            raise InvalidArgumentError(
                f"{FLAGS[field]} {value} lies inside the run files of --out {run_dir}, which "
                "a fresh start replaces; copy it elsewhere first")


def _remove_run_files(run_dir: Path) -> None:
    """Remove the run's own entries (never a user's file; ``model/`` only if it is a model)."""
    for entry in run_dir.iterdir():
        if entry.name == FolderLock.NAME or not _own_entry(entry.name):
            continue
        if entry.name == "model" and not checkpoint.is_model_dir(entry):
            continue  # not ours after all: the export check below refuses it by name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def train_run(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
              show_progress: bool = True, overwrite: bool = False, *, prepare=None,
              task=None, method: dict | None = None) -> dict:
    """Train per ``cfg`` into ``run_dir`` (or continue it with ``resume``); returns the summary.

    Everything that can be checked is checked before the folder is touched: the config's
    ranges and names, that ``run_dir`` is new, empty or this run (``_check_run_folder``), the
    starting weights and the data. The folder is then locked for the whole run, so a second
    trainer on it fails at once.

    Another training method (``zoo.distill``) passes its ``prepare(model, cfg) ->
    PreparedData``, its ``task`` and ``method`` ({config.json section: settings}).
    """
    from zoo.registry import get_encoder, get_head

    run_dir = Path(run_dir).expanduser().resolve()
    if resume and overwrite:
        raise InvalidArgumentError("--resume continues a run and --overwrite replaces it; "
                                   "pass only one")
    _check_not_in_use(run_dir)
    _check_run_folder(run_dir, resume, overwrite)
    if resume:
        # The run's settings, on the devices of this launch: a run saved on 8 devices resumes
        # on 1 or 4 (checkpoints restore into the new mesh's shardings).
        cfg = dataclasses.replace(read_run_config(run_dir), mesh=cfg.mesh)
        _check_same_method(run_dir, method)
    else:
        cfg = cfg.validated().resolved()
        get_encoder(cfg.model), get_head(cfg.head)
        _check_inputs_outside(run_dir, cfg)
    # The mesh fits the devices and the batch splits over it: said before the folder is touched.
    sharding.check_batch_size(cfg.batch_size, sharding.make_mesh(cfg.mesh))
    check_output(run_dir / "model", overwrite=True, owned=checkpoint.is_model_dir,
                 what="a zoo model directory")
    raw = read_data(cfg) if prepare is None else None
    model = make_model(cfg)
    data = prepare(model, cfg) if prepare is not None else prepare_data(model, cfg, raw)
    _check_not_in_use(run_dir)
    # Several processes (hosts): all have checked the folder above; process 0 alone locks and
    # writes it, the others wait until it is ready, then every process trains.
    primary = sharding.is_primary()
    sharding.barrier("zoo-run-checked")
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(run_dir) if primary else contextlib.nullcontext():
        if primary:
            _check_run_folder(run_dir, resume, overwrite)  # again, now no one else can write
            if not resume:
                _remove_run_files(run_dir)
                atomic_write_text(run_dir / CONFIG, json.dumps(
                    {"format": RUN_FORMAT, **cfg.to_dict(), **(method or {})}, indent=2) + "\n")
        sharding.barrier("zoo-run-ready")
        return _train(model, data, cfg, run_dir, resume, show_progress, task)


def _check_same_method(run_dir: Path, method: dict | None) -> None:
    """Refuse to resume a run with another method than the one that started it."""
    found = sorted(set(_config_json(run_dir) or {}) & set(METHOD_SECTIONS))
    if found != sorted(method or {}):
        made_by = found[0] if found else "train"
        raise InvalidArgumentError(f"{run_dir} was made by `zoo {made_by}`; continue it with "
                                   f"`python -m zoo {made_by} --out {run_dir} --resume`")


def _check_not_in_use(run_dir: Path) -> None:
    pid = FolderLock.holder(run_dir)
    if pid is not None:  # said first: it explains whatever else looks odd in the folder
        raise InUseError(f"{run_dir} is in use by another training process (pid {pid}); wait "
                         "for it to finish or stop it, or choose another --out")


def _train(model: ZooModel, data: PreparedData, cfg: TrainConfig, run_dir: Path, resume: bool,
           show_progress: bool, task=None) -> dict:
    primary = sharding.is_primary()
    tokenizer_path = _save_tokenizer(data.tokenizer, run_dir) if primary \
        else run_dir / checkpoint.TOKENIZER
    trainer = Trainer(model, cfg, run_dir, data.train, data.dev, data.masking, show_progress, task)
    try:
        progress = trainer.fit(resume=resume)
        best = trainer.best_model()
    finally:
        trainer.close()
    export_model(best, run_dir / "model", tokenizer_path,
                 source={"kind": "fine-tuned" if model.info.head_kind != "mlm" else "pre-trained",
                         "run": str(run_dir), "best_step": progress.best_step},
                 write=primary)
    summary = {
        "model": cfg.model, "head": cfg.head, "pretrained": bool(cfg.pretrained or cfg.weights),
        "steps": progress.step, "epochs": round(progress.step / data.train.steps_per_epoch, 3)
        if data.train.steps_per_epoch else None,
        "train_seconds": round(progress.train_seconds, 1), "best_step": progress.best_step,
        f"best_dev_{trainer.task.best_metric}": progress.best,
        "train_padding_fraction": round(data.train.padding_fraction(
            data.train.epoch_plan(0, cfg.seed)), 4) if hasattr(data.train, "epoch_plan")
        else None,
        "compiled_train_shapes": trainer.steps.compiled_shapes(),
        "devices": f"{len(trainer.mesh.devices.flat)} x {jax.devices()[0].device_kind} "
                   f"({jax.process_count()} process(es), mesh {dict(trainer.mesh.shape)})",
        "precision": cfg.precision,
    } | data.info
    summary |= write_reports(trainer, best, data, run_dir if primary else None)
    if primary:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    sharding.barrier("zoo-run-done")
    return summary


def write_reports(trainer_or_none, model: ZooModel, data: PreparedData, run_dir: Path | None
                  ) -> dict:
    """Dev classification report + confusion matrix, and the training curves when logged.

    ``run_dir=None`` computes the dev metrics without writing anything.
    """
    from zoo.report import classification_summary, plot_curves, write_report

    results = {}
    metrics_path = run_dir / "metrics.jsonl" if run_dir is not None else None
    if metrics_path is not None and metrics_path.is_file() and metrics_path.stat().st_size:
        plot_curves(metrics_path, run_dir / "curves.png")
    if model.info.head_kind != "classification":
        return results
    evaluator = trainer_or_none.steps.evaluator if trainer_or_none else Evaluator(
        model, task_for("classification"))
    _, state = nnx.split(model)
    metrics, indices, logits = evaluator.run(state, data.dev, collect=True)
    y_true = data.dev_labels[indices]
    labels = list(model.info.labels)
    if run_dir is None:
        summary = classification_summary(y_true, logits.argmax(-1), labels)
    else:
        summary = write_report(run_dir, y_true, logits.argmax(-1), labels, prefix="dev",
                               title=f"{model.info.encoder} + {model.info.head} (dev)")
    results["dev_accuracy"] = summary["accuracy"]
    results["dev_loss"] = metrics["loss"]
    return results


def export_model(model: ZooModel, out: Path, tokenizer_path: Path | None, source: dict,
                 write: bool = True) -> Path:
    """Write ``model`` as a zoo model directory (what ``zoo.load(DIR)`` opens).

    Sharded parameters are gathered to the host first; with several processes every process
    must call this (the gather is collective) and only the one with ``write`` writes.
    """
    params = checkpoint.module_params(model.encoder, "encoder/")
    heads = {}
    if model.head is not None:
        params |= checkpoint.module_params(model.head, f"heads/{model.info.head}/")
        heads[model.info.head] = {"kind": model.info.head_kind}
        if model.info.head_kind == "classification":
            heads[model.info.head] |= {"num_classes": model.info.num_classes,
                                       "labels": list(model.info.labels)}
    params = sharding.to_host(params)
    if not write:
        return out
    manifest = {"model": model.info.encoder, "config": model.config.to_dict(), "heads": heads,
                "default_head": model.info.head, "source": source}
    return checkpoint.save_model_dir(out, params, manifest, tokenizer=tokenizer_path,
                                     overwrite=True)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None) -> dict:
    """Re-evaluate a run's exported model on the dev split and rewrite its report.

    The model's checksums are verified on load. A bare model directory is evaluated without
    writing into it (reports belong to runs, and a model directory holds only its files).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    model = load(str(run_dir))
    if not is_run_dir(run_dir):
        cfg = TrainConfig(model=model.info.encoder, data_dir=data_dir)
        return write_reports(None, model, prepare_data(model, cfg), None)
    with FolderLock(run_dir, what="a training or evaluating process"):
        cfg = dataclasses.replace(read_run_config(run_dir), data_dir=data_dir, buckets=None)
        return write_reports(None, model, prepare_data(model, cfg), run_dir)
