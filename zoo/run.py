"""A run directory, end to end: data and tokenizer, model, training, export and reports.

Layout of ``RUN/``::

    config.json                 the TrainConfig (``--resume`` reads it back)
    tokenizer.json              the tokenizer the run used
    checkpoints/{latest,best}/  orbax checkpoints (params + optimizer + progress)
    metrics.jsonl, tb/          metrics as they come (JSONL and TensorBoard)
    model/                      the best model as a zoo model directory: ``zoo.load(RUN)``
    dev_report.{txt,json}, dev_confusion.png, curves.png, summary.json
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from flax import nnx

from zoo import checkpoint
from zoo.batching import DEFAULT_BUCKETS, BucketBatcher, buckets_for
from zoo.hub import cache_root, load
from zoo.model import ZooModel, build_model, set_dropout_rate
from zoo.tasks import MaskingConfig, task_for
from zoo.train import Evaluator, TrainConfig, Trainer

EVAL_BATCH_SIZE = 64  # small batches run faster on CPU (cache-sized activations)


@dataclasses.dataclass
class PreparedData:
    tokenizer: object
    train: BucketBatcher
    dev: BucketBatcher
    dev_labels: np.ndarray | None
    masking: MaskingConfig | None


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
        raise ValueError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but {cfg.model} embeds "
            f"only {vocab_size}"
        )
    return tokenizer


def prepare_data(model: ZooModel, cfg: TrainConfig) -> PreparedData:
    from zoo.data import load_sst2, read_text_lines
    from zoo.text import encode, special_ids, tokenize_splits

    max_len = min(cfg.max_len or model.config.max_len, model.config.max_len)
    buckets = buckets_for(max_len, tuple(cfg.buckets or DEFAULT_BUCKETS))
    dataset = load_sst2(cfg.data_dir)
    kind = model.info.head_kind
    if kind == "mlm" and cfg.text_file:
        lines = read_text_lines(cfg.text_file)
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
                raise ValueError(f"SST-2 {split} labels outside 0..{n - 1} for a {n}-class head")
    masking = None
    if kind == "mlm":
        masking = MaskingConfig(
            mask_id=ids["mask"], vocab_size=model.config.vocab_size,
            special_ids=tuple(sorted(ids.values())),
        )
    train = BucketBatcher(train_ids, train_labels, batch_size=cfg.batch_size, buckets=buckets,
                          pad_id=ids["pad"])
    dev = BucketBatcher(dev_ids, dev_labels, batch_size=EVAL_BATCH_SIZE, buckets=buckets,
                        pad_id=ids["pad"])
    return PreparedData(tokenizer, train, dev, dev_labels, masking)


def _save_tokenizer(tokenizer, run_dir: Path) -> Path:
    path = run_dir / checkpoint.TOKENIZER
    tokenizer.save(str(path))
    return path


def train_run(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
              show_progress: bool = True) -> dict:
    """Train per ``cfg`` into ``run_dir`` (or continue it with ``resume``); returns the summary."""
    run_dir = Path(run_dir).resolve()
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise FileNotFoundError(f"--resume: {config_path} does not exist")
        saved = json.loads(config_path.read_text())
        saved["buckets"] = tuple(saved["buckets"]) if saved.get("buckets") else None
        cfg = TrainConfig(**saved)
    else:
        cfg = cfg.resolved()
    if not resume and (run_dir / "checkpoints").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    model = make_model(cfg)
    data = prepare_data(model, cfg)
    tokenizer_path = _save_tokenizer(data.tokenizer, run_dir)
    trainer = Trainer(model, cfg, run_dir, data.train, data.dev, data.masking, show_progress)
    progress = trainer.fit(resume=resume)
    best = trainer.best_model()
    export_model(best, run_dir / "model", tokenizer_path,
                 source={"kind": "fine-tuned" if model.info.head_kind != "mlm" else "pre-trained",
                         "run": str(run_dir), "best_step": progress.best_step})
    summary = {
        "model": cfg.model, "head": cfg.head, "pretrained": bool(cfg.pretrained or cfg.weights),
        "steps": progress.step, "epochs": round(progress.step / data.train.steps_per_epoch, 3),
        "train_seconds": round(progress.train_seconds, 1), "best_step": progress.best_step,
        f"best_dev_{trainer.task.best_metric}": progress.best,
        "train_padding_fraction": round(data.train.padding_fraction(
            data.train.epoch_plan(0, cfg.seed)), 4),
        "compiled_train_shapes": trainer.steps.compiled_shapes(),
    }
    summary |= write_reports(trainer, best, data, run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_reports(trainer_or_none, model: ZooModel, data: PreparedData, run_dir: Path) -> dict:
    """Dev classification report + confusion matrix, and the training curves when logged."""
    from zoo.report import plot_curves, write_report

    results = {}
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file() and metrics_path.stat().st_size:
        plot_curves(metrics_path, run_dir / "curves.png")
    if model.info.head_kind != "classification":
        return results
    evaluator = trainer_or_none.steps.evaluator if trainer_or_none else Evaluator(
        model, task_for("classification"))
    _, state = nnx.split(model)
    metrics, indices, logits = evaluator.run(state, data.dev, collect=True)
    y_true = data.dev_labels[indices]
    summary = write_report(run_dir, y_true, logits.argmax(-1), list(model.info.labels),
                           prefix="dev", title=f"{model.info.encoder} + {model.info.head} (dev)")
    results["dev_accuracy"] = summary["accuracy"]
    results["dev_loss"] = metrics["loss"]
    return results


def export_model(model: ZooModel, out: Path, tokenizer_path: Path | None, source: dict) -> Path:
    """Write ``model`` as a zoo model directory (what ``zoo.load(DIR)`` opens)."""
    params = checkpoint.module_params(model.encoder, "encoder/")
    heads = {}
    if model.head is not None:
        params |= checkpoint.module_params(model.head, f"heads/{model.info.head}/")
        heads[model.info.head] = {"kind": model.info.head_kind}
        if model.info.head_kind == "classification":
            heads[model.info.head] |= {"num_classes": model.info.num_classes,
                                       "labels": list(model.info.labels)}
    manifest = {"model": model.info.encoder, "config": model.config.to_dict(), "heads": heads,
                "default_head": model.info.head, "source": source}
    return checkpoint.save_model_dir(out, params, manifest, tokenizer=tokenizer_path,
                                     overwrite=True)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None) -> dict:
    """Re-evaluate a run's exported model on the dev split and rewrite its report."""
    run_dir = Path(run_dir).resolve()
    model = load(str(run_dir))
    cfg = TrainConfig(**{**json.loads((run_dir / "config.json").read_text()),
                         "data_dir": data_dir, "buckets": None}) \
        if (run_dir / "config.json").is_file() else TrainConfig(model=model.info.encoder,
                                                                 data_dir=data_dir)
    data = prepare_data(model, cfg)
    return write_reports(None, model, data, run_dir)
