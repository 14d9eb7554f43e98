"""The seed's SST-2 experiment in one command (``nox -s sst2``), side by side.

1. the TF-IDF + logistic-regression baseline (fit on train only);
2. fine-tuning from a random initialisation;
3. fine-tuning the published pre-trained encoder, when its weights can be had;
4. our own masked-LM pre-training on the SST-2 training sentences, then fine-tuning.

Prints a Markdown table (dev accuracy, training time) and writes it to ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
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


def _row(name: str, summary: dict | None, note: str = "") -> dict:
    summary = summary or {}
    return {
        "run": name,
        "dev accuracy": summary.get("dev_accuracy"),
        "train time (s)": summary.get("train_seconds"),
        "steps": summary.get("steps"),
        "notes": note,
    }


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
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet

    def run(name: str, recipe: dict, **extra) -> dict:
        cfg = TrainConfig(**{**recipe, **extra, "data_dir": args.data_dir})
        if cfg.time_limit is not None:
            cfg.time_limit *= args.scale
        print(f"\n== {name}: {cfg.model} + {cfg.head}", flush=True)
        run_dir = out / name
        resume = (run_dir / "checkpoints" / "latest").is_dir() and not (run_dir / "summary.json").is_file()
        if (run_dir / "summary.json").is_file():
            return json.loads((run_dir / "summary.json").read_text())
        return train_run(cfg, run_dir, resume=resume, show_progress=progress)

    rows = []
    started = time.perf_counter()
    baseline = run_baseline(load_sst2(args.data_dir), out / "baseline")
    rows.append(_row("tf-idf + logistic regression", {
        "dev_accuracy": baseline["dev_accuracy"], "train_seconds": round(baseline["train_seconds"], 1)},
        "fit on train only"))

    rows.append(_row("random init", run("random-init", RANDOM_INIT), RANDOM_INIT["model"]))

    try:
        resolve_weights("encoder-mlm-v1")
        rows.append(_row("published MLM encoder", run("published", PUBLISHED), "encoder-mlm-v1"))
    except WeightsNotFoundError as err:
        print(f"\n== published MLM encoder: skipped\n{err}", flush=True)
        rows.append(_row("published MLM encoder", None,
                         "weights unavailable offline: see README, 'Converting the tutorial's Haiku checkpoint'"))

    pretrained = run("own-pretraining-mlm", PRETRAIN)
    finetuned = run("own-pretraining", FINETUNE_OWN,
                    weights=str(out / "own-pretraining-mlm" / "model"))
    total = (pretrained.get("train_seconds") or 0) + (finetuned.get("train_seconds") or 0)
    rows.append(_row("own MLM pre-training + fine-tune", {**finetuned, "train_seconds": round(total, 1)},
                     f"MLM on SST-2 train sentences ({pretrained.get('train_seconds')} s), "
                     "then fine-tune"))

    table = markdown_table(rows, ["run", "dev accuracy", "train time (s)", "steps", "notes"])
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nSST-2 dev accuracy ({time.perf_counter() - started:.0f} s in all):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
