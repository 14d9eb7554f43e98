"""Distillation trials: named student recipes, one table with dev accuracy by sentence length.

    python -m benchmarks.distill_trials --teacher runs/sst2/minilm --out runs/distill-trials \
        [--only t3,h1] [--seeds 0,1,2] [--append] [--data-dir ../shared/data/SST-2] \
        [--table FILE.md]

Each recipe is one ``zoo.distill.distill_run`` (a finished trial folder is reused, so the
table can be rebuilt or extended one trial at a time); the teacher's logits and features are
cached, so only the first trial of a transfer set pays for them. The table, written to
``OUT/trials.md`` and ``OUT/trials.json``, gives each trial's best dev accuracy (the
checkpoint ``zoo.load`` returns) and its accuracy on dev sentences grouped by word count,
beside the teacher's: SST-2's training set is mostly short phrases (9.4 words on average),
its dev set whole sentences (19.5), and a small student loses most on the long ones.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# name -> (what it tries, DistillConfig fields, TrainConfig fields). Every trial trains its
# student (encoder-m2l-mini unless named) from random init, batch 32, AdamW 1e-3, for at
# most 300 s.
RECIPES: dict[str, tuple[str, dict, dict]] = {
    "s1": ("soft + gold labels", dict(temperature=2.0, alpha=0.5), dict(epochs=2.0)),
    "t3": ("x2 augmentation, mostly soft", dict(temperature=2.0, alpha=0.9, augment=2),
           dict(epochs=0.75)),
    "l1": ("x3 augmentation of sentences >= 10 words",
           dict(temperature=2.0, alpha=0.9, augment=3, min_words=10), dict(epochs=1.0)),
    "h1": ("l1 + hidden-state hint 1.0",
           dict(temperature=2.0, alpha=0.9, augment=3, min_words=10, hint=1.0),
           dict(epochs=1.0)),
    "e1": ("t3 + embeddings from the teacher",
           dict(temperature=2.0, alpha=0.9, augment=2, embeddings="teacher"),
           dict(epochs=0.75)),
    "he1": ("h1 + embeddings from the teacher, 300 s",
            dict(temperature=2.0, alpha=0.9, augment=3, min_words=10, hint=1.0,
                 embeddings="teacher"), dict(epochs=1.4)),
    "v1": ("t3 with an 8,000-token student vocabulary (more shared subwords)",
           dict(temperature=2.0, alpha=0.9, augment=2), dict(epochs=0.75, vocab_size=8000)),
    "ve1": ("v1 + embeddings from the teacher",
            dict(temperature=2.0, alpha=0.9, augment=2, embeddings="teacher"),
            dict(epochs=0.75, vocab_size=8000)),
    "m1": ("t3 with the 6-block encoder-m2l-small as student (not the issue's model)",
           dict(temperature=2.0, alpha=0.9, augment=2),
           dict(epochs=0.75, model="encoder-m2l-small")),
}
LENGTHS = ((0, 10), (10, 20), (20, 30), (30, None))  # dev sentence length groups, in words
TIME_LIMIT = 300.0


def by_length(model, texts: list[str], labels: np.ndarray) -> dict[str, float]:
    """Accuracy of ``model`` on ``texts`` overall and per word-count group."""
    predicted = np.array([int(model.info.labels.index(p.label)) if model.info.labels else
                          int(p.label) for p in model.predict(texts)])
    correct = predicted == labels
    words = np.array([len(t.split()) for t in texts])
    out = {"all": round(float(correct.mean()), 4)}
    for low, high in LENGTHS:
        pick = (words >= low) & (words < (high or 10**9))
        out[_group(low, high)] = round(float(correct[pick].mean()), 4) if pick.any() else None
    return out


def _group(low: int, high: int | None) -> str:
    return f"{low}-{high - 1} words" if high else f"{low}+ words"


def main(argv: list[str] | None = None) -> int:
    import zoo
    from zoo.data import load_sst2
    from zoo.distill import DEFAULT_STUDENT, DistillConfig, distill_run
    from zoo.experiment import predict_speed
    from zoo.train import TrainConfig

    from benchmarks.bert_bench import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher run or model dir")
    parser.add_argument("--out", default="runs/distill-trials")
    parser.add_argument("--only", help=f"comma-separated recipes of {', '.join(RECIPES)}")
    parser.add_argument("--data-dir", default=os.environ.get("ZOO_SST2_DIR"))
    parser.add_argument("--table", help="also write the markdown table to this file")
    parser.add_argument("--seeds", default="0",
                        help="student seeds per recipe, comma-separated (default 0); the "
                             "augmented transfer set stays that of seed 0, so its teacher "
                             "outputs are computed once")
    parser.add_argument("--append", action="store_true",
                        help="keep the other recipes' rows of OUT/trials.json in the table "
                             "(e.g. some recipes with 3 seeds, others with 1)")
    args = parser.parse_args(argv)
    if not Path(args.teacher).is_dir():
        parser.error(f"--teacher {args.teacher}: no such run or model directory (the SST-2 job "
                     "makes one: `nox -s sst2 -- --only minilm` writes runs/sst2/minilm)")
    names = args.only.split(",") if args.only else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"--only: unknown recipe(s) {', '.join(unknown)}; "
                     f"known: {', '.join(RECIPES)}")

    dataset = load_sst2(args.data_dir)
    texts = list(dataset["validation"]["sentence"])
    labels = np.asarray(dataset["validation"]["label"])
    out = Path(args.out)
    started = time.perf_counter()
    rows = [{"trial": "teacher", "what": f"{Path(args.teacher).name} (fine-tuned)",
             **by_length(zoo.load(args.teacher), texts, labels)}]
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    trained = 0
    for name in names:
        what, distill_fields, train_fields = RECIPES[name]
        best, groups, last = [], [], {}
        for seed in seeds:
            run_dir = out / (name if seed == 0 else f"{name}-seed{seed}")
            summary_path = run_dir / "summary.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
            else:
                train = TrainConfig(**DEFAULT_STUDENT | {"data_dir": args.data_dir,
                                                         "time_limit": TIME_LIMIT, "seed": seed}
                                    | train_fields)
                cfg = DistillConfig(teacher=args.teacher, train=train, augment_seed=0,
                                    **distill_fields)
                print(f"\n== {name}, seed {seed}: {what}", flush=True)
                summary = distill_run(cfg, run_dir, overwrite=True)
                trained += 1
            best.append(summary.get("best_dev_accuracy", float("nan")))
            groups.append(by_length(zoo.load(str(run_dir)), texts, labels))
            if not last:
                last = {"steps": summary.get("steps"), "train s": summary.get("train_seconds"),
                        "predict /s": round(predict_speed(run_dir, texts))}
        means = {key: round(float(np.mean([g[key] for g in groups])), 4) for key in groups[0]}
        rows.append({"trial": name, "what": what, **last, "seeds": len(seeds),
                     "best dev (each seed)": " / ".join(f"{b:.4f}" for b in best),
                     "best dev (mean)": round(float(np.mean(best)), 4), **means})
    previous = out / "trials.json"
    if args.append and previous.is_file():
        kept = {r["trial"]: r for r in json.loads(previous.read_text())["rows"]}
        kept.update({r["trial"]: r for r in rows})
        rows = [kept["teacher"]] + [kept[n] for n in RECIPES if n in kept]
    columns = ["trial", "what", "steps", "train s", "predict /s", "best dev (each seed)",
               "best dev (mean)", "all", *(_group(low, high) for low, high in LENGTHS)]
    words = np.array([len(t.split()) for t in texts])
    counts = ", ".join(f"{_group(low, high)}: {int(((words >= low) & (words < (high or 10**9))).sum())}"
                       for low, high in LENGTHS)
    info = machine()
    lines = [f"Distillation trials on {info['cpu']} ({info['usable_cores']} usable cores), "
             f"load average at start {info['loadavg_start'][0]:.1f}; "
             f"this invocation {time.perf_counter() - started:.0f} s, {trained} trial(s) trained "
             "(finished trial folders are reused).", "",
             f"Dev sentences per group: {counts}. Steps, train s and predict /s are the first "
             "seed's ('predict /s': dev sentences per second through `predict`, batch 64, "
             "median of 3); 'all' and the length groups are the exported (best) models' dev "
             "accuracy through `predict`, the mean over seeds. Every seed trains on the same "
             "transfer set (the augmentation of seed 0).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in columns) + " |"
              for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    (out / "trials.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
