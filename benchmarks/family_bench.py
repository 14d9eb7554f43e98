"""One row per architecture family at base size: the zoo against PyTorch + transformers.

    python -m benchmarks.family_bench [--only roberta,modernbert] [--out runs/family-bench]

The published base checkpoints cannot be downloaded here, so each family's row runs random
weights of the real base shapes (roberta-base, deberta-v3-base, modernbert-base), written by
transformers' ``save_pretrained`` beside a tokenizer of the family's kind trained on SST-2.
Speed does not depend on the weights' values. For each: ``benchmarks.bert_bench --short``
(train step 32 x 64 with dropout and AdamW, ``predict`` over the SST-2 dev set at batch 64,
one-sentence latency; interleaved, ratios pair by pair), and the time ``zoo.load`` takes on
the converted model directory in a fresh process after imports (median of 3). Writes
``--table`` (default ``benchmarks/results/families-cpu.md``). torch and transformers are
benchmark-only dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# family -> (title, base-size config options of transformers' config class)
FAMILIES = {
    "roberta": ("RoBERTa-base shape", "RobertaConfig", dict(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "deberta_v2": ("DeBERTa-v3-base shape", "DebertaV2Config", dict(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
        position_buckets=256, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0)),
    "modernbert": ("ModernBERT-base shape", "ModernBertConfig", dict(
        vocab_size=50368, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
        intermediate_size=1152, global_attn_every_n_layers=3, local_attention=128,
        classifier_pooling="mean")),
}


def log(message: str) -> None:
    print(f"[family_bench] {message}", file=sys.stderr, flush=True)


def write_checkpoint(family: str, folder: Path) -> Path:
    """A base-size random ForSequenceClassification checkpoint + the family's tokenizer."""
    import torch
    import transformers

    from benchmarks.parity import deberta_v2, modernbert, roberta
    from benchmarks.parity.common import sentences

    texts = sentences()
    _, config_class, options = FAMILIES[family]
    if family == "roberta":
        tokenizer = roberta.roberta_tokenizer(8000, texts)
        save = lambda: roberta._save_tokenizer(tokenizer, folder, 512)  # noqa: E731
    elif family == "deberta_v2":
        tokenizer = deberta_v2.deberta_v3_tokenizer(8000, texts)
        save = lambda: deberta_v2._save_tokenizer(tokenizer, folder, 512)  # noqa: E731
    else:
        tokenizer = modernbert.modernbert_tokenizer(8000, texts)
        ids = {t: tokenizer.token_to_id(t) for t in modernbert.SPECIALS}
        options = dict(options, pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"],
                       cls_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
                       sep_token_id=ids["[SEP]"])
        save = lambda: modernbert._save_tokenizer(tokenizer, folder)  # noqa: E731
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(num_labels=2, **options)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    save()
    return folder


def load_seconds(model_dir: Path, runs: int = 3) -> list[float]:
    """``zoo.load`` of a converted model directory, first call in a fresh process."""
    code = ("import time, zoo, jax; jax.devices(); t = time.perf_counter(); "
            f"zoo.load({str(model_dir)!r}); print(time.perf_counter() - t)")
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.family_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument("--out", default="runs/family-bench")
    parser.add_argument("--table", help="default: benchmarks/results/families-cpu.md "
                        "(-bf16.md with --precision bf16)")
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                        help="bf16: both sides compute matmuls in bfloat16 (the zoo's "
                        "set_precision, torch.autocast)")
    parser.add_argument("--skip-load", action="store_true", help="no load timing")
    args = parser.parse_args(argv)
    suffix = "" if args.precision == "float32" else f"-{args.precision}"
    args.table = args.table or f"benchmarks/results/families-cpu{suffix}.md"
    families = args.only.split(",") if args.only else list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--only: unknown families {', '.join(unknown)}")

    from benchmarks.bert_bench import machine
    from zoo.fsutil import atomic_write_text

    rows = []
    with tempfile.TemporaryDirectory(prefix="family-bench-") as tmp:
        for family in families:
            title = FAMILIES[family][0]
            folder = write_checkpoint(family, Path(tmp) / family)
            loads: list[float] = []  # --skip-load: none
            if not args.skip_load:
                log(f"{family}: checkpoint written; converting for the load timing")
                converted = Path(tmp) / f"{family}-zoo"
                subprocess.run([sys.executable, "-m", "convert.hf_to_flax", str(folder),
                                "--out", str(converted)], cwd=ROOT, check=True,
                               capture_output=True)
                loads = load_seconds(converted)
                log(f"{family}: load {statistics.median(loads):.2f} s")
            out = Path(args.out) / f"{family}{suffix}"
            log(f"{family}: bench_bert --short --precision {args.precision}")
            subprocess.run([sys.executable, "-m", "benchmarks.bert_bench", "--short",
                            "--only", "train", "--only", "predict", "--weights", str(folder),
                            "--precision", args.precision, "--title", title, "--out",
                            str(out)], cwd=ROOT, check=True)
            result = json.loads((out / "bert_bench.json").read_text())
            train, predict = result["train"][0], result["predict"]
            rows.append((family, title, train, predict, loads))
    info = machine()
    flags = (f" --precision {args.precision}" if args.precision != "float32" else "") + (
        " --skip-load" if args.skip_load else "")
    lines = [
        "# Architecture families at base size: zoo vs PyTorch + transformers (CPU)", "",
        f"`python -m benchmarks.family_bench{flags}` on {info['cpu']} ({info['usable_cores']} usable "
        f"cores), nothing else running. Random weights of the real base shapes, written by "
        "transformers; each side in its own worker process, measurements interleaved, ratios "
        "pair by pair (median [min–max]); > 1 means the zoo is faster. Train step: batch "
        "32 x 64 tokens, dropout on, AdamW, 5 pairs after 2 warm-up steps. predict: the 872 "
        "SST-2 dev sentences at batch 64, 3 rounds (torch in dataset order, and sorted by "
        "length as the zoo does). Load: "
        + ("not measured (`--skip-load`)" if args.skip_load else "`zoo.load` of the converted "
           "model directory, first call in a fresh process after imports, median of 3")
        + ". Precision: "
        + ("float32" if args.precision == "float32" else
           "**bf16** (the zoo: `set_precision(\"bf16\")`, bf16 products with float32 "
           "accumulation, the rest float32; torch: `torch.autocast(\"cpu\", "
           "torch.bfloat16)`); parameters and optimizer float32 on both sides")
        + ". XLA flags: "
        + (f"`{os.environ['XLA_FLAGS']}`" if os.environ.get("XLA_FLAGS") else "jax's defaults")
        + f"; load average {info['loadavg_start'][0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.", "",
        "| family | train step zoo / torch (s) | train speed-up | predict zoo / torch sorted "
        "(sent./s) | predict speed-up vs sorted | vs dataset order | latency p50 zoo / torch "
        "(ms) | load (s) |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for family, title, train, predict, loads in rows:
        sp = train["speedup"]
        pt = predict["throughput"]
        ps, po = predict["speedup"]["torch_sorted"], predict["speedup"]["torch"]
        lat = predict["latency"]
        lines.append(
            f"| {title} | {train['zoo']['median']:.2f} / {train['torch']['median']:.2f} | "
            f"{sp['median']:.2f}× [{sp['min']:.2f}–{sp['max']:.2f}] | "
            f"{pt['zoo']['median']:.0f} / {pt['torch_sorted']['median']:.0f} | "
            f"{ps['median']:.2f}× [{ps['min']:.2f}–{ps['max']:.2f}] | {po['median']:.2f}× | "
            f"{lat['zoo']['p50'] * 1e3:.1f} / {lat['torch']['p50'] * 1e3:.1f} | "
            f"{'—' if args.skip_load else f'{statistics.median(loads):.2f}'} |")
    lines += ["", "Parity of the two sides' probabilities on the dev set (max |diff|): "
              + ", ".join(f"{t}: {p['parity']['max_abs_prob_diff']:.1e}"
                          for _, t, _, p, _ in rows) + "."]
    atomic_write_text(Path(args.table), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
