"""The benchmark of issue #4: the Haiku original against the zoo, in one run on one machine.

    python -m benchmarks.bench [--quick] [--out DIR] [--data-dir D] [--sst2-runs DIR]

Sections: train step at the seed's settings (fixed padding, batch 64, Adam 5e-5, dropout
on), eval throughput, a length-bucketed epoch against the original's fixed-128 epoch, time
to 0.80 dev accuracy (read from finished runs), ``predict`` latency and throughput,
checkpoint conversion time, and peak memory (each implementation's train step in its own
process). Every timing is the median of several runs with min and max; ratios are
computed pair by pair from interleaved measurements. Writes ``DIR/bench.md`` and
``DIR/bench.json`` (default ``runs/bench``) and prints the tables.

``--quick`` uses the tiny preset and few repetitions (seconds; for tests). dm-haiku is a
bench-only dependency (``pip install '.[bench]'``) and is imported only inside functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

BATCH = 64
SEED_LR = 5e-5
DEV_TARGET = 0.80
DEFAULT_RUNS = Path("runs/sst2")
DEFAULT_OUT = Path("runs/bench")


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    model: str             # zoo preset; the Haiku original gets the same config
    head: str
    paddings: tuple[int, ...]  # the seed's fixed paddings
    pairs: int             # interleaved rounds of the train-step / eval comparison
    steps_per_rep: int     # train steps timed together in one measurement
    epoch_runs: int        # systematic samples of the bucketed epoch
    epoch_stride: int      # every n-th batch of the plan is timed
    train_rows: int | None  # None: all of SST-2 train
    latency_calls: int
    throughput_runs: int
    convert_runs: int
    variants: tuple[str, ...] = ("zoo-rbg", "zoo-nodrop")  # extra zoo rows of the step table
    eval_256: bool = True
    predict_rows: int | None = None  # None: the whole dev set (872)
    # predict is measured on the classifier `nox -s sst2` trains (the mini preset) and on
    # the v1 size; quick mode uses the tiny preset only.
    predict_models: tuple[str, ...] = ("encoder-m2l-mini", "encoder-mlm-v1")


# Quick: the tiny preset (max_len 64, so its "fixed 128" is 64), one padding, few rounds.
QUICK = Settings(True, "encoder-m2l-tiny", "sst2", (64,), 2, 2, 1, 20, 3000, 30, 2, 1,
                 ("zoo-rbg",), eval_256=False, predict_rows=200,
                 predict_models=("encoder-m2l-tiny",))
FULL = Settings(False, "encoder-mlm-v1", "sst2", (128, 32), 7, 2, 3, 10, None, 200, 3, 3)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _require_haiku():
    try:
        import haiku  # noqa: F401
    except ImportError as err:
        raise SystemExit(
            "benchmarks.bench compares against the original dm-haiku model: dm-haiku is missing "
            "(install with pip install '.[bench]')"
        ) from err


# ------------------------------------------------------------------------------ statistics


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ratio_text(s: dict | None) -> str | None:
    if not s:
        return None
    return f"{_fmt(s['median'])}× [{_fmt(s['min'])}–{_fmt(s['max'])}]"


def row(measure: str, unit: str, values=None, *, ratio=None, ratio_label: str | None = None,
        target: str | None = None, met: bool | None = None, value: Any = None) -> dict:
    """One table row: a statistic of ``values`` (or a single ``value``), ratio, target."""
    out: dict[str, Any] = {"measure": measure, "unit": unit}
    if values is not None:
        out.update(summary(values))
    elif value is not None:
        out["value"] = value
    if ratio is not None:
        out["ratio"] = summary(ratio)
        out["ratio_of"] = ratio_label
    if target is not None:
        out["target"], out["met"] = target, met
    return out


def _display(r: dict) -> dict:
    cells = {"measure": r["measure"], "unit": r["unit"]}
    if "median" in r:
        cells |= {"median": r["median"], "min": r["min"], "max": r["max"]}
    elif "value" in r:
        cells["median"] = r["value"]
    if "ratio" in r:
        cells["ratio (median [min–max])"] = f"{_ratio_text(r['ratio'])} {r.get('ratio_of') or ''}".strip()
    if "target" in r:
        cells["target"] = r["target"]
        cells["met?"] = "yes" if r["met"] else "NO"
    return cells


COLUMNS = ["measure", "median", "min", "max", "unit", "ratio (median [min–max])", "target", "met?"]


# ------------------------------------------------------------------------------ data


def _data_dir(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("ZOO_SST2_DIR"):
        return os.environ["ZOO_SST2_DIR"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "SST-2"
    return str(shared) if shared.is_dir() else None


@dataclasses.dataclass
class Data:
    tokenizer: Any
    train_texts: list[str]
    train_labels: np.ndarray
    dev_texts: list[str]
    train_ids: list[list[int]]  # truncated to max_len


def load_data(settings: Settings, data_dir: str | None, encode_rows: int | None = None) -> Data:
    import zoo
    from zoo.data import load_sst2
    from zoo.hub import cache_root
    from zoo.text import cached_tokenizer, encode

    config = zoo.get_encoder(settings.model).config
    dataset = load_sst2(data_dir)
    train = dataset["train"][:]
    texts, labels = list(train["sentence"]), np.asarray(train["label"], np.int32)
    if settings.train_rows:
        texts, labels = texts[:settings.train_rows], labels[:settings.train_rows]
    tokenizer, _ = cached_tokenizer(texts, config.vocab_size, cache_root() / "tokenizers")
    train_ids = encode(tokenizer, texts[:encode_rows], config.max_len)
    return Data(tokenizer, texts, labels, list(dataset["validation"]["sentence"]), train_ids)


def fixed_batch(data: Data, length: int) -> dict:
    """The first 64 training sentences, truncated to and padded at ``length`` (the seed's way)."""
    ids = np.zeros((BATCH, length), np.int32)
    mask = np.zeros((BATCH, length), np.int32)
    for r, row_ids in enumerate(data.train_ids[:BATCH]):
        row_ids = row_ids[:length - 1] + [row_ids[-1]] if len(row_ids) > length else row_ids
        ids[r, :len(row_ids)], mask[r, :len(row_ids)] = row_ids, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": data.train_labels[:BATCH].copy(),
            "weights": np.ones(BATCH, np.float32)}


# ------------------------------------------------------------------------------ the two steps


def haiku_train_step(config, batch: dict):
    """The seed's step: hk.transform'ed classifier, clip(1) + adam(5e-5), dropout on.

    Returns ``run()`` doing one step (blocking). The dropout key is split every step and
    the consumed half is never reused (the tutorial returned the consumed key).
    """
    import jax
    import optax

    from benchmarks.haiku_original import build_haiku_model, mask_3d

    logits_fn, _ = build_haiku_model(config, "classifier", 2)
    ids, mask = batch["input_ids"], mask_3d(batch["attention_mask"])
    labels = batch["labels"]
    params = logits_fn.init(jax.random.PRNGKey(0), ids, mask)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(SEED_LR))
    opt_state = optimizer.init(params)

    def loss_fn(params, key, ids, mask, labels):
        logits = logits_fn.apply(params, key, ids, mask, is_training=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, opt_state, key, ids, mask, labels):
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, sub, ids, mask, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    state = [params, opt_state, jax.random.PRNGKey(1)]

    def run():
        state[0], state[1], state[2], loss = step(*state, ids, mask, labels)
        loss.block_until_ready()

    return run


def haiku_forward(config, batch: dict):
    import jax

    from benchmarks.haiku_original import build_haiku_model, mask_3d

    logits_fn, _ = build_haiku_model(config, "classifier", 2)
    ids, mask = batch["input_ids"], mask_3d(batch["attention_mask"])
    params = logits_fn.init(jax.random.PRNGKey(0), ids, mask)
    forward = jax.jit(lambda p, i, m: logits_fn.apply(p, None, i, m))
    return lambda: forward(params, ids, mask).block_until_ready()


def zoo_steps(settings: Settings, dropout_prng: str = "threefry2x32", dropout: float | None = None,
              precision: str = "float32"):
    """(Steps, base key): the zoo's trainer step at the seed's optimizer settings."""
    import jax
    from flax import nnx

    from zoo.model import build_model, set_dropout_rate
    from zoo.nn import set_precision
    from zoo.tasks import CLASSIFICATION
    from zoo.train import Steps, TrainConfig, make_optimizer

    cfg = TrainConfig(model=settings.model, head=settings.head, optimizer="adam",
                      learning_rate=SEED_LR, dropout_prng=dropout_prng)
    model = build_model(cfg.model, cfg.head, seed=0)
    if dropout is not None:
        set_dropout_rate(model, dropout)
    set_precision(model, precision)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg, 1), wrt=nnx.Param)
    return Steps(model, optimizer, CLASSIFICATION), jax.random.key(0, impl=cfg.dropout_prng)


def zoo_train_step(settings: Settings, batch: dict, **kw):
    import jax

    steps, base = zoo_steps(settings, **kw)
    counter = [0]

    def run():
        key = jax.random.fold_in(base, counter[0])
        counter[0] += 1
        steps.model_state, steps.opt_state, update, _ = steps.train(
            steps.model_state, steps.opt_state, batch, key)
        jax.block_until_ready(update)

    return run


def zoo_forward(settings: Settings, batch: dict):
    import jax
    from flax import nnx

    from zoo.model import build_model

    model = build_model(settings.model, settings.head, seed=0)
    graph, state = nnx.split(model)
    forward = jax.jit(lambda s, i, m: nnx.merge(graph, s)(i, m))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    return lambda: forward(state, ids, mask).block_until_ready()


def interleaved(runners: dict[str, Callable[[], None]], rounds: int, per_rep: int,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each runner, measured round-robin (A, B, C, A, B, C, ...)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(per_rep):
                run()
            times[name].append((time.perf_counter() - start) / per_rep)
    return times


def pairwise(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator)]


# ------------------------------------------------------------------------------ sections


def bench_train_step(settings: Settings, data: Data, config) -> tuple[list[dict], list[str], dict]:
    rows, medians = [], {}
    for length in settings.paddings:
        log(f"train step, fixed padding {length}: compiling {2 + len(settings.variants)} variants")
        batch = fixed_batch(data, length)
        runners = {"haiku": haiku_train_step(config, batch), "zoo": zoo_train_step(settings, batch)}
        if "zoo-rbg" in settings.variants:
            runners["zoo-rbg"] = zoo_train_step(settings, batch, dropout_prng="rbg")
        if "zoo-nodrop" in settings.variants:
            runners["zoo-nodrop"] = zoo_train_step(settings, batch, dropout=0.0)
        if "zoo-bf16" in settings.variants:
            runners["zoo-bf16"] = zoo_train_step(settings, batch, precision="bf16")
        log(f"train step, fixed padding {length}: {settings.pairs} interleaved rounds")
        t = interleaved(runners, settings.pairs, settings.steps_per_rep)
        medians[length] = {k: statistics.median(v) for k, v in t.items()}
        ms = {k: [x * 1e3 for x in v] for k, v in t.items()}
        speed = pairwise(t["haiku"], t["zoo"])
        rows += [
            row(f"Haiku original, L={length}", "ms/step", ms["haiku"]),
            row(f"zoo (threefry dropout), L={length}", "ms/step", ms["zoo"], ratio=speed,
                ratio_label="faster than Haiku", target="≥ 1.0×",
                met=statistics.median(speed) >= 1.0),
        ]
        if "zoo-rbg" in t:
            rows.append(row(f"zoo, rbg dropout keys, L={length}", "ms/step", ms["zoo-rbg"],
                            ratio=pairwise(t["zoo"], t["zoo-rbg"]), ratio_label="faster than threefry zoo"))
        if "zoo-nodrop" in t:
            rows.append(row(f"zoo, dropout off (its cost = difference), L={length}", "ms/step",
                            ms["zoo-nodrop"], ratio=pairwise(t["zoo"], t["zoo-nodrop"]),
                            ratio_label="zoo-with-dropout / this"))
        if "zoo-bf16" in t:
            rows.append(row(f"zoo, --precision bf16, L={length}", "ms/step", ms["zoo-bf16"],
                            ratio=pairwise(t["haiku"], t["zoo-bf16"]),
                            ratio_label="faster than Haiku (float32)"))
    notes = [
        f"Batch {BATCH}, the first {BATCH} SST-2 training sentences tokenised and padded to a "
        f"fixed length (the seed's way); clip_by_global_norm(1) + adam({SEED_LR}); dropout on; "
        f"both jitted. Haiku: default threefry keys, split every step (not reused). "
        f"Zoo: zoo.train.Steps, default dropout PRNG unless stated.",
        f"Each timing is one of {settings.pairs} interleaved rounds (Haiku, zoo, "
        f"{', '.join(settings.variants)}) of {settings.steps_per_rep} steps after warm-up; "
        "ratios are per round.",
    ]
    if "zoo-bf16" in settings.variants:
        notes.append("bf16: zoo.nn.set_precision (bfloat16 compute, float32 parameters and "
                     "optimizer state, float32 softmax and LayerNorm statistics).")
    return rows, notes, medians


def bench_eval(settings: Settings, data: Data, config) -> tuple[list[dict], list[str]]:
    length = settings.paddings[0]
    log(f"eval throughput at L={length}")
    batch = fixed_batch(data, length)
    big = {k: np.concatenate([v] * 4) for k, v in batch.items()}
    runners = {"haiku": haiku_forward(config, batch), "zoo": zoo_forward(settings, batch)}
    if settings.eval_256:
        runners["zoo-256"] = zoo_forward(settings, big)
    t = interleaved(runners, settings.pairs, settings.steps_per_rep * 2)
    rate = {name: [len(b["input_ids"]) / x for x in t[name]]
            for name, b in (("haiku", batch), ("zoo", batch), ("zoo-256", big)) if name in t}
    rows = [
        row(f"Haiku original, batch {BATCH}, L={length}", "sentences/s", rate["haiku"]),
        row(f"zoo, batch {BATCH}, L={length}", "sentences/s", rate["zoo"],
            ratio=pairwise(rate["zoo"], rate["haiku"]), ratio_label="vs Haiku"),
    ]
    if "zoo-256" in rate:
        rows.append(row(f"zoo, batch {4 * BATCH}, L={length}", "sentences/s", rate["zoo-256"],
                        ratio=pairwise(rate["zoo-256"], rate["haiku"]), ratio_label="vs Haiku b64"))
    return rows, ["Forward only (eval mode), jitted, interleaved rounds; ratios per round."]


def bench_epoch(settings: Settings, data: Data, haiku_step_s: float
                ) -> tuple[list[dict], list[str], dict]:
    import jax

    import zoo
    from zoo.batching import DEFAULT_BUCKETS, BucketBatcher, buckets_for
    from zoo.text import special_ids

    config = zoo.get_encoder(settings.model).config
    buckets = buckets_for(config.max_len, DEFAULT_BUCKETS)
    batcher = BucketBatcher(data.train_ids, data.train_labels, batch_size=BATCH,
                            buckets=buckets, pad_id=special_ids(data.tokenizer)["pad"])
    plan = batcher.epoch_plan(0, seed=0)
    steps, base = zoo_steps(settings)
    bucket_of = [int(batcher.bucket_of[b].max()) for b in plan]

    def one(i):
        batch = batcher.make_batch(plan[i])
        arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "labels": batch.labels, "weights": batch.weights}
        steps.model_state, steps.opt_state, update, _ = steps.train(
            steps.model_state, steps.opt_state, arrays, jax.random.fold_in(base, i))
        jax.block_until_ready(update)

    log(f"bucketed epoch: warming up {len(set(bucket_of))} bucket shapes")
    for b in sorted(set(bucket_of)):
        for _ in range(2):
            one(bucket_of.index(b))
    counts = np.bincount(bucket_of, minlength=len(buckets))
    estimates = []
    for run in range(settings.epoch_runs):
        offset = (run * settings.epoch_stride) // settings.epoch_runs
        sample = range(offset, len(plan), settings.epoch_stride)
        log(f"bucketed epoch: sample {run + 1}/{settings.epoch_runs} ({len(sample)} of "
            f"{len(plan)} batches)")
        per_bucket: dict[int, list[float]] = {}
        for i in sample:
            start = time.perf_counter()
            one(i)
            per_bucket.setdefault(bucket_of[i], []).append(time.perf_counter() - start)
        # Per-bucket mean x that bucket's batch count (a bucket the sample missed: its
        # nearest longer measured bucket, an over-estimate).
        total = 0.0
        for b, count in enumerate(counts):
            if count:
                near = next((c for c in range(b, len(buckets)) if c in per_bucket),
                            max(per_bucket))
                total += count * statistics.mean(per_bucket[near])
        estimates.append(total)
    rows_n = len(data.train_ids)
    fixed_batches = math.ceil(rows_n / BATCH)
    fixed_len = settings.paddings[0]
    original = fixed_batches * haiku_step_s
    tokens = sum(min(len(r), fixed_len) for r in data.train_ids)
    original_padding = 1 - tokens / (rows_n * fixed_len)
    compiled = steps.compiled_shapes()
    rows = [
        row(f"Haiku original epoch (fixed {fixed_len}, {fixed_batches} batches × median step)",
            "s", value=original),
        row(f"zoo bucketed epoch ({len(plan)} batches, buckets {buckets})", "s", estimates,
            ratio=[original / e for e in estimates], ratio_label="faster than original",
            target="≥ 8×", met=statistics.median(original / e for e in estimates) >= 8.0),
        row("padding fraction, original (fixed)", "fraction", value=round(original_padding, 4)),
        row("padding fraction, zoo (buckets)", "fraction",
            value=round(batcher.padding_fraction(plan), 4)),
        row("compiled train-step shapes after the epoch loop", "programs", value=compiled,
            target=f"≤ {len(buckets)} (buckets)", met=compiled <= len(buckets)),
    ]
    notes = [
        f"{rows_n} SST-2 training rows, max_len {config.max_len}, batch {BATCH}. Each zoo "
        f"estimate times every {settings.epoch_stride}-th batch of the epoch plan (a different "
        f"offset per run, after every bucket shape was warmed up), host batching included, and "
        f"extrapolates per bucket to the whole plan. The original's epoch uses the median "
        f"Haiku L={fixed_len} step of the train-step section; ratios use that median.",
    ]
    return rows, notes, {"buckets": list(buckets), "compiled_shapes": compiled}


def bench_time_to_accuracy(runs_dir: Path) -> tuple[list[dict], list[str]]:
    if not runs_dir.is_dir():
        return [row(f"time to {DEV_TARGET} dev accuracy", "s", value="not run")], [
            f"No runs under {runs_dir} (run `nox -s sst2` first)."]
    rows = []
    for path in sorted(runs_dir.rglob("metrics.jsonl")):
        name = str(path.parent.relative_to(runs_dir)) or path.parent.name
        best, reached = None, None
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("split") != "dev" or "accuracy" not in record:
                continue
            acc = float(record["accuracy"])
            best = acc if best is None else max(best, acc)
            if acc >= DEV_TARGET and reached is None:
                reached = record
        if best is None:
            continue  # not a classification run (e.g. MLM pre-training): nothing to reach
        if reached is not None:
            rows.append(row(f"{name}: time to {DEV_TARGET} dev accuracy", "s",
                            value=float(reached.get("time", float("nan"))),
                            target=f"reach {DEV_TARGET}", met=True)
                        | {"step": reached.get("step")})
        else:
            text = f"not reached (best {best:.4f})"
            rows.append(row(f"{name}: time to {DEV_TARGET} dev accuracy", "s", value=text,
                            target=f"reach {DEV_TARGET}", met=False))
    if not rows:
        rows.append(row(f"time to {DEV_TARGET} dev accuracy", "s", value="not run"))
    return rows, [f"First dev record with accuracy ≥ {DEV_TARGET} in each metrics.jsonl under "
                  f"{runs_dir}; 'time' is training seconds (evaluation excluded)."]


def bench_predict(settings: Settings, data: Data) -> tuple[list[dict], list[str], dict]:
    rows, notes, results = [], [], {}
    for name in settings.predict_models:
        r, n, res = _bench_predict_model(settings, data, name)
        rows += r
        notes += n
        results[name] = res
    return rows, notes, results


def _bench_predict_model(settings: Settings, data: Data, name: str):
    from zoo.model import build_model

    model = build_model(name, settings.head, seed=0)
    model.tokenizer = data.tokenizer
    sentence = data.dev_texts[0]
    texts = data.dev_texts[:settings.predict_rows]
    log(f"predict ({name}): warm-up")
    model.predict(texts)
    for _ in range(5):
        model.predict(sentence)
    log(f"predict ({name}): latency over {settings.latency_calls} calls")
    latencies = []
    for _ in range(settings.latency_calls):
        start = time.perf_counter()
        model.predict(sentence)
        latencies.append((time.perf_counter() - start) * 1e3)
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    rates = []
    for _ in range(settings.throughput_runs):
        start = time.perf_counter()
        model.predict(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    profile = _profile_predict(model, sentence)
    rows = [
        row(f"{name}: predict one sentence, p50", "ms", value=p50, target="≤ 5 ms",
            met=p50 <= 5.0),
        row(f"{name}: predict one sentence, p95", "ms", value=p95),
        row(f"{name}: predict {len(texts)} dev sentences in one call", "sentences/s", rates,
            target="≥ 2000/s", met=statistics.median(rates) >= 2000),
    ]
    notes = [f"{name}: after warm-up (every shape compiled); {settings.latency_calls} "
             f"single-sentence calls; throughput median of {settings.throughput_runs} calls on "
             f"{len(texts)} dev sentences. Single-call breakdown (ms, median of 20): "
             + ", ".join(f"{k} {v:.2f}" for k, v in profile.items())]
    return rows, notes, {"p50_ms": p50, "p95_ms": p95, "profile_ms": profile}


def _profile_predict(model, sentence: str) -> dict:
    """Where one ``predict`` call spends its time (ms, median of 20)."""
    from zoo import inference
    from zoo.batching import DEFAULT_BUCKETS, buckets_for, pad_to_bucket
    from zoo.text import encode

    max_len = model.config.max_len
    forward, cast_state = inference._forward(model)
    state = cast_state()
    ids, mask = pad_to_bucket(encode(model.tokenizer, [sentence], max_len),
                              buckets_for(max_len, DEFAULT_BUCKETS))
    parts = {
        "tokenise": lambda: encode(model.tokenizer, [sentence], max_len),
        "forward-cache look-up": lambda: inference._forward(model),
        "jitted forward": lambda: np.asarray(forward(state, ids, mask)),
        "whole predict": lambda: model.predict(sentence),
    }
    out = {}
    for name, fn in parts.items():
        fn()
        times = []
        for _ in range(20):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        out[name] = statistics.median(times)
    return out


def bench_convert(settings: Settings) -> tuple[list[dict], list[str]]:
    import zoo
    from benchmarks.haiku_original import make_training_state, random_params, write_training_state
    from convert.haiku_to_flax import convert_file

    model = "encoder-m2l-tiny" if settings.quick else "encoder-mlm-v1"
    config = zoo.get_encoder(model).config
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_training_state(Path(tmp) / "state.pkl",
                                    make_training_state(random_params(config, "mlm")))
        size = path.stat().st_size / 2**20
        for i in range(settings.convert_runs):
            log(f"conversion {i + 1}/{settings.convert_runs}")
            start = time.perf_counter()
            convert_file(path, Path(tmp) / f"out{i}", model=model)
            times.append(time.perf_counter() - start)
    return [row(f"convert a {size:.1f} MiB MLM TrainingState ({model})", "s", times)], [
        "A plain-NumPy 2022-format pickle (params + Adam state) written by "
        "benchmarks.haiku_original; convert_file reads it with the restricted unpickler, checks "
        "and maps names, and writes a model directory."]


def bench_memory(settings: Settings, data_dir: str | None) -> tuple[list[dict], list[str]]:
    log("peak memory: one child process per implementation")
    args = ["--quick"] if settings.quick else []
    if data_dir:
        args += ["--data-dir", data_dir]
    procs = {part: subprocess.Popen([sys.executable, "-m", "benchmarks.bench", "--part", part, *args],
                                    stdout=subprocess.PIPE, text=True)
             for part in ("haiku-train", "zoo-train")}
    peaks = {}
    for part, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"bench child {part} failed (exit {proc.returncode})")
        peaks[part] = json.loads(out.strip().splitlines()[-1])
    h, z = peaks["haiku-train"], peaks["zoo-train"]
    h_delta = h["max_rss_mib"] - h["before_model_mib"]
    z_delta = z["max_rss_mib"] - z["before_model_mib"]
    return [
        row("peak RSS, Haiku original train step process", "MiB", value=h["max_rss_mib"]),
        row("peak RSS, zoo train step process", "MiB", value=z["max_rss_mib"],
            ratio=[z["max_rss_mib"] / h["max_rss_mib"]], ratio_label="of Haiku's"),
        row("  of which above the RSS after imports + data, Haiku", "MiB", value=h_delta),
        row("  of which above the RSS after imports + data, zoo", "MiB", value=z_delta,
            ratio=[z_delta / h_delta] if h_delta > 0 else None, ratio_label="of Haiku's"),
    ], [f"Each child loads SST-2, builds its model, compiles and runs 3 train steps at L="
        f"{settings.paddings[0]} (batch {BATCH}) and reports its own ru_maxrss (whole process, "
        "jax runtime included; one run each, the two children run concurrently)."
        + (" Quick mode: the children reuse the parent's persistent compilation cache, so "
           "compiler memory is mostly not counted." if settings.quick else "")]


def run_part(part: str, settings: Settings, data_dir: str | None) -> int:
    """A child of ``bench_memory``: one implementation's train step; prints its peak RSS."""
    import zoo

    data = load_data(settings, data_dir, encode_rows=BATCH)
    batch = fixed_batch(data, settings.paddings[0])
    before = _current_rss_mib()
    if part == "haiku-train":
        run = haiku_train_step(zoo.get_encoder(settings.model).config, batch)
    else:
        run = zoo_train_step(settings, batch)
    for _ in range(3):
        run()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    print(json.dumps({"part": part, "max_rss_mib": rss_mib, "before_model_mib": before}))
    return 0


def _current_rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


# ------------------------------------------------------------------------------ driver


def header(settings: Settings) -> dict:
    import flax
    import haiku
    import jax

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": " ".join(platform.uname()),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "versions": {"jax": jax.__version__, "flax": flax.__version__,
                     "dm-haiku": haiku.__version__, "python": platform.python_version()},
        "mode": "quick" if settings.quick else "full",
        "model": f"{settings.model} + {settings.head}",
    }


TITLES = {
    "train_step": "Train step at the seed's settings",
    "eval": "Eval throughput",
    "epoch": "Length-bucketed epoch vs the original's fixed-padding epoch",
    "time_to_accuracy": f"Time to {DEV_TARGET} dev accuracy",
    "predict": "predict",
    "convert": "Checkpoint conversion",
    "memory": "Peak memory",
}


def render(result: dict) -> str:
    h = result["header"]
    lines = [
        f"# zoo benchmark ({h['mode']} mode)", "",
        f"- date: {h['date']}",
        f"- machine: {h['machine']} ({h['cpu_count']} CPUs)",
        f"- jax backend: {h['jax_backend']}, device: {h['device']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()),
        f"- model: {h['model']}", f"- total bench time: {result['seconds']:.0f} s", "",
    ]
    from zoo.report import markdown_table

    for key, title in TITLES.items():
        section = result["sections"].get(key)
        if section is None:
            continue
        lines += [f"## {title}", "", markdown_table([_display(r) for r in section["rows"]],
                                                    _columns(section["rows"])), ""]
        lines += [f"- {note}" for note in section["notes"]] + [""]
    missed = [r["measure"] for s in result["sections"].values() for r in s["rows"]
              if r.get("met") is False]
    lines += ["## Targets", ""]
    lines += ([f"- NOT met: {m}" for m in missed] if missed else ["- all targets shown are met"])
    return "\n".join(lines) + "\n"


def _columns(rows: list[dict]) -> list[str]:
    shown = {k for r in rows for k in _display(r)}
    return [c for c in COLUMNS if c in shown]


BENCH_FILES = frozenset({"bench.md", "bench.json"})


def _is_bench_dir(path: Path) -> bool:
    """An earlier output of this benchmark: bench.json and bench.md, nothing else."""
    from zoo.fsutil import entries_are

    return (path / "bench.json").is_file() and entries_are(path, BENCH_FILES.__contains__)


def _check_out(out: Path, overwrite: bool) -> None:
    from zoo.fsutil import check_output

    check_output(out, overwrite=overwrite, owned=_is_bench_dir, what="a benchmark output folder")


def run_bench(settings: Settings, out: Path, data_dir: str | None, runs_dir: Path,
              overwrite: bool = False) -> dict:
    """Every section, then bench.md + bench.json written into ``out`` as one atomic folder."""
    import jax

    from zoo.fsutil import atomic_directory

    import zoo

    started = time.perf_counter()
    config = zoo.get_encoder(settings.model).config
    log(f"{'quick' if settings.quick else 'full'} mode, {settings.model}, "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind})")
    log("loading SST-2 and the tokenizer")
    data = load_data(settings, data_dir)
    sections: dict[str, dict] = {}

    def add(key, rows, notes):
        sections[key] = {"rows": rows, "notes": notes}

    rows, notes, medians = bench_train_step(settings, data, config)
    add("train_step", rows, notes)
    add("eval", *bench_eval(settings, data, config))
    rows, notes, _ = bench_epoch(settings, data, medians[settings.paddings[0]]["haiku"])
    add("epoch", rows, notes)
    add("time_to_accuracy", *bench_time_to_accuracy(runs_dir))
    rows, notes, _ = bench_predict(settings, data)
    add("predict", rows, notes)
    add("convert", *bench_convert(settings))
    add("memory", *bench_memory(settings, data_dir))
    result = {"header": header(settings), "sections": sections,
              "seconds": time.perf_counter() - started}
    text = render(result)
    with atomic_directory(out, overwrite=overwrite, owned=_is_bench_dir,
                          what="a benchmark output folder") as tmp:
        (tmp / "bench.md").write_text(text)
        (tmp / "bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few repetitions (seconds)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where bench.md / bench.json go")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier benchmark output in --out")
    p.add_argument("--data-dir", default=None, help="SST-2 folder (default $ZOO_SST2_DIR)")
    p.add_argument("--sst2-runs", default=str(DEFAULT_RUNS),
                   help="run directories with metrics.jsonl (time to 0.80 dev accuracy)")
    p.add_argument("--bf16", action="store_true",
                   help="also time --precision bf16 (always on a GPU/TPU)")
    p.add_argument("--part", choices=("haiku-train", "zoo-train"), help=argparse.SUPPRESS)
    return p


def _quick_compile_cache() -> dict:
    """Quick mode only: a persistent compilation cache, so the memory children (which compile
    the programs the parent already compiled) start fast. Full mode compiles everything.
    Returns the previous settings (``main`` restores them: the config is process-global)."""
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    previous = {name: getattr(jax.config, name) for name in names}
    path = os.environ.setdefault("ZOO_BENCH_JAX_CACHE",
                                 str(Path(tempfile.gettempdir()) / "zoo-bench-jax-cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return previous


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(None if argv is None else [str(a) for a in argv])
    _require_haiku()
    settings = QUICK if args.quick else FULL
    import jax

    if jax.default_backend() != "cpu" or args.bf16:  # bf16 pays off on GPUs/TPUs, not on CPUs
        settings = dataclasses.replace(settings, variants=settings.variants + ("zoo-bf16",))
    previous = _quick_compile_cache() if settings.quick else {}
    try:
        data_dir = _data_dir(args.data_dir)
        if args.part:
            return run_part(args.part, settings, data_dir)
        try:
            _check_out(Path(args.out), args.overwrite)  # before minutes of measuring
        except OSError as err:  # OutputExistsError: one line, as the zoo's commands do
            print(f"error: {err}", file=sys.stderr)
            return 2
        result = run_bench(settings, Path(args.out), data_dir, Path(args.sst2_runs),
                           overwrite=args.overwrite)
        print(render(result))
        return 0
    finally:
        if previous:
            import jax

            for name, value in previous.items():
                jax.config.update(name, value)


if __name__ == "__main__":
    sys.exit(main())
