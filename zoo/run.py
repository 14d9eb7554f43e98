"""A run directory, end to end: the folder's checks and lock, training, export, reports and
re-evaluation (the data, model and batches are ``zoo.prepare``'s).

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
from flax import nnx

from zoo import checkpoint, sharding
from zoo.errors import ConfigError, InvalidArgumentError
from zoo.fsutil import (FolderLock, InUseError, OutputExistsError, atomic_file,
                        atomic_write_text, check_output, is_temporary_name, json_or_none,
                        read_json)
from zoo.hub import load
from zoo.model import ZooModel
from zoo.prepare import (EVAL_BATCH_SIZE, STREAM_WINDOW, TOKENIZER_SAMPLE,  # noqa: F401
                         PreparedData, StreamSample, batcher_for, make_model, max_len_and_buckets,
                         prepare_data, read_data, resolve_head)
from zoo.steps import Evaluator
from zoo.train import FLAGS, TrainConfig, Trainer, committed_steps

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
    "dev_report.txt", "dev_report.json", "dev_confusion.png", "dev_scatter.png", "curves.png",
    FolderLock.NAME})


def _own_entry(name: str) -> bool:
    return name in RUN_ENTRIES or is_temporary_name(name)


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a zoo run: its ``config.json`` is a run config.

    Runs written before the ``format`` field are recognised by their fields and their
    ``checkpoints/`` folder, so a foreign ``config.json`` (e.g. a HuggingFace model's) is not.
    """
    path = Path(path)
    data = json_or_none(path / CONFIG)
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
    data = read_json(path)
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
    for field in ("weights", "data_dir", "text_file", "stream", "train_file", "validation_file",
                  "test_file"):
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
    """Remove the run's own entries (never a user's file). ``model/`` stays: the previous
    run's model is readable (``zoo.load``, ``predict``) until the new one replaces it."""
    for entry in run_dir.iterdir():
        if entry.name in (FolderLock.NAME, "model") or not _own_entry(entry.name):
            continue
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

    Another training method (``zoo.distill``) passes its ``prepare(model, cfg, raw) ->
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
        get_encoder(cfg.model)
        if cfg.head is not None:
            get_head(cfg.head)
        _check_inputs_outside(run_dir, cfg)
    # The mesh fits the devices and the batch splits over it: said before the folder is touched.
    sharding.check_batch_size(cfg.batch_size, sharding.make_mesh(cfg.mesh))
    check_output(run_dir / "model", overwrite=True, owned=checkpoint.is_model_dir,
                 what="a zoo model directory")
    raw = read_data(cfg)
    cfg = resolve_head(cfg, raw)
    model = make_model(cfg, raw)
    data = (prepare or prepare_data)(model, cfg, raw)
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
    found = sorted(set(json_or_none(run_dir / CONFIG) or {}) & set(METHOD_SECTIONS))
    if found != sorted(method or {}):
        made_by = found[0] if found else "train"
        raise InvalidArgumentError(f"{run_dir} was made by `zoo {made_by}`; continue it with "
                                   f"`python -m zoo {made_by} --out {run_dir} --resume`")


def _check_not_in_use(run_dir: Path, action: str | None = None) -> None:
    pid = FolderLock.holder(run_dir)
    if pid is None:
        return
    if action is not None and (run_dir / "model" / checkpoint.MANIFEST).is_file():
        return  # the model of an earlier run stays readable while the new one trains
    if action is not None:
        raise InUseError(f"{run_dir} is being trained by process {pid} and holds no model yet; "
                         f"{action} it once training ends (its model/ appears then)")
    # said first: it explains whatever else looks odd in the folder
    raise InUseError(f"{run_dir} is in use by another training process (pid {pid}); wait "
                     "for it to finish or stop it, or choose another --out")


def _train(model: ZooModel, data: PreparedData, cfg: TrainConfig, run_dir: Path, resume: bool,
           show_progress: bool, task=None) -> dict:
    primary = sharding.is_primary()
    tokenizer_path = _save_tokenizer(data.tokenizer, run_dir) if primary \
        else run_dir / checkpoint.TOKENIZER
    trainer = Trainer(model, cfg, run_dir, data.train, data.dev, data.masking, show_progress,
                      task or data.task)
    try:
        progress = trainer.fit(resume=resume)
        best = trainer.best_model()
    finally:
        trainer.close()
    best.info = dataclasses.replace(best.info, max_len=max_len_and_buckets(best, cfg)[0])
    export_model(best, run_dir / "model", tokenizer_path,
                 source={"kind": "pre-trained" if data.task_data is None else "fine-tuned",
                         "run": str(run_dir), "best_step": progress.best_step,
                         "data": data_fields(cfg)},
                 write=primary)
    summary = {
        "model": cfg.model, "head": cfg.head, "pretrained": bool(cfg.pretrained or cfg.weights),
        "steps": progress.step, "epochs": round(progress.step / data.train.steps_per_epoch, 3)
        if data.train.steps_per_epoch else None,
        "train_seconds": round(progress.train_seconds, 1), "best_step": progress.best_step,
        f"best_dev_{trainer.task.for_eval.best_metric}": progress.best,
        "train_padding_fraction": round(data.train.padding_fraction(
            data.train.epoch_plan(0, cfg.seed)), 4) if hasattr(data.train, "epoch_plan")
        else None,
        "compiled_train_shapes": trainer.steps.compiled_shapes(),
        "devices": f"{len(trainer.mesh.devices.flat)} x {jax.devices()[0].device_kind} "
                   f"({jax.process_count()} process(es), mesh {dict(trainer.mesh.shape)})",
        "precision": cfg.precision,
    } | data.info
    summary |= write_reports(trainer, best, data, run_dir if primary else None)
    test = (data.task_data.splits.get("test") if data.task_data is not None else None)
    if test is not None and test.labels is not None:
        scores = score_examples(best, test, cfg, trainer.steps.evaluator, data.tokenizer)
        summary |= {f"test_{k}": v for k, v in scores.items()}
    if primary:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    sharding.barrier("zoo-run-done")
    return summary


def write_reports(trainer_or_none, model: ZooModel, data: PreparedData, run_dir: Path | None
                  ) -> dict:
    """The task's dev report (e.g. classification report + confusion matrix, regression
    scatter, entity table) and the training curves when logged.

    ``run_dir=None`` computes the dev figures without writing anything.
    """
    from zoo.report import plot_curves

    results = {}
    metrics_path = run_dir / "metrics.jsonl" if run_dir is not None else None
    if metrics_path is not None and metrics_path.is_file() and metrics_path.stat().st_size:
        plot_curves(metrics_path, run_dir / "curves.png")
    task = model.task
    if task is None or task.label_kind is None or data.dev_labels is None:
        return results
    evaluator = trainer_or_none.steps.evaluator if trainer_or_none else Evaluator(model, task)
    _, state = nnx.split(model)
    metrics, collected = evaluator.run(state, data.dev, collect=True)
    results |= task.report(run_dir, collected, data.dev_labels, model.info.labels,
                           title=f"{model.info.encoder} + {model.info.head} (dev)")
    results["dev_loss"] = metrics["loss"]
    return results


def score_examples(model: ZooModel, examples, cfg: TrainConfig, evaluator=None,
                   tokenizer=None) -> dict:
    """The task's metrics of ``model`` over labelled ``examples`` (``zoo.dataset.Examples``),
    tokenised by ``tokenizer`` (default: the model's own)."""
    task = model.task
    max_len, buckets = max_len_and_buckets(model, cfg)
    batcher = batcher_for(task, examples, tokenizer or model.tokenizer, model,
                          batch_size=EVAL_BATCH_SIZE, max_len=max_len, buckets=buckets)
    evaluator = evaluator or Evaluator(model, task)
    _, state = nnx.split(model)
    return evaluator.run(state, batcher)


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
        if model.task.has_classes:
            heads[model.info.head] |= {"num_classes": model.info.num_classes,
                                       "labels": list(model.info.labels)}
    params = sharding.to_host(params)
    if not write:
        return out
    manifest = {"model": model.info.encoder, "config": model.config.to_dict(), "heads": heads,
                "default_head": model.info.head, "source": source}
    if model.info.max_len is not None:
        manifest["max_len"] = model.info.max_len
    return checkpoint.save_model_dir(out, params, manifest, tokenizer=tokenizer_path,
                                     overwrite=True)


def data_fields(cfg: TrainConfig) -> dict:
    """The fields of a config that say what data a model reads (kept in its manifest, so a
    model directory knows its file format without its run)."""
    fields = {k: getattr(cfg, k) for k in DATA_FIELDS if getattr(cfg, k) is not None}
    if cfg.dataset is None and cfg.train_file is not None:
        fields["dataset"] = "files"
    return fields


DATA_FIELDS = ("dataset", "text_column", "text_pair_column", "label_column", "task", "max_len")


def model_config(path: Path, model: ZooModel) -> TrainConfig:
    """A run's config, or for a model directory one rebuilt from its manifest's ``data``."""
    if is_run_dir(path):
        return read_run_config(path)
    directory = path / "model" if (path / "model" / checkpoint.MANIFEST).is_file() else path
    try:
        source = checkpoint.read_manifest(directory).get("source") or {}
    except (OSError, ConfigError):
        source = {}
    data = source.get("data") if isinstance(source.get("data"), dict) else {}
    data = {k: v for k, v in data.items() if k in DATA_FIELDS and isinstance(v, (str, int))}
    return TrainConfig(model=model.info.encoder, head=model.info.head, **data)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None,
                 data_file: str | None = None) -> dict:
    """The task's metrics of a run's (or model directory's) model, checksums verified on load.

    With ``data_file``: any labelled file in the run's dataset format (the same columns or
    layout as training), nothing written. Without: the dev split again (``data_dir`` for a
    GLUE task's folder), and a run's dev report is rewritten (``dev_*`` keys); a bare model
    directory is never written into.
    """
    from zoo.dataset import format_spec, read_labelled_file

    run_dir = Path(run_dir).expanduser().resolve()
    _check_not_in_use(run_dir, "evaluate")
    model = load(str(run_dir))
    task = model.task
    if task is None or task.label_kind is None:
        raise InvalidArgumentError(f"{run_dir}: its head {model.info.head!r} is not scored on "
                                   "labelled data (a masked-LM run has no evaluate)")
    cfg = dataclasses.replace(model_config(run_dir, model), buckets=None)
    if data_file is None and cfg.dataset == "files" and not is_run_dir(run_dir):
        raise InvalidArgumentError(f"{run_dir} is a model directory trained on your own files; "
                                   "pass --data-file (a labelled file in that format)")
    if data_file is not None:
        examples = read_labelled_file(format_spec(cfg), data_file, task.name, model.info.labels)
        return score_examples(model, examples, cfg)
    cfg = dataclasses.replace(cfg, data_dir=data_dir if data_dir is not None else cfg.data_dir)
    data = prepare_data(model, cfg)
    metrics = Evaluator(model, task).run(nnx.split(model)[1], data.dev)
    if not is_run_dir(run_dir):
        return metrics | write_reports(None, model, data, None)
    with FolderLock(run_dir, what="a training or evaluating process"):
        return metrics | write_reports(None, model, data, run_dir)


def predict_file(run_dir: str | Path, path: str | Path, precision: str = "float32"
                 ) -> tuple[list, list]:
    """(items, predictions) for a file in the run's dataset format (its text columns, or its
    token-file layout); labels in the file are not needed and not read."""
    from zoo.dataset import format_spec, read_labelled_file

    run_dir = Path(run_dir).expanduser().resolve()
    _check_not_in_use(run_dir, "predict")
    model = load(str(run_dir), precision=precision)
    if model.task is None or model.task.label_kind is None:
        raise InvalidArgumentError(f"{run_dir}: its head {model.info.head!r} makes no "
                                   "predictions")
    examples = read_labelled_file(format_spec(model_config(run_dir, model)), path,
                                  model.task.name, model.info.labels, labelled=False)
    items = list(examples.texts) if examples.pairs is None else list(zip(examples.texts,
                                                                         examples.pairs))
    return items, model.predict(items)
