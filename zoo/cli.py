"""``python -m zoo``: list, train, evaluate, predict, embed, export, baseline, pretrain, distill.

Errors a user can fix (a bad path, an unknown name, a malformed file) end the program
with one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse with the zoo's error format: one line, ``error: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_training_args(parser: argparse.ArgumentParser, *, model: str, head: str | None,
                       epochs: float, lr: float, with_head: bool = True) -> None:
    from zoo.train import TrainConfig

    defaults = TrainConfig()
    parser.add_argument("--model", default=model, help="registered encoder (zoo list)")
    if with_head:
        parser.add_argument("--head", default=head, help="registered head (zoo list; default: "
                            "the task's: classifier, regressor, token-classifier or embedder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--pretrained", action="store_true",
                       help="start from the encoder's published (or stored) weights")
    group.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                       help="start from a random initialisation (default)")
    parser.add_argument("--weights", help="start from this model directory or run")
    parser.add_argument("--data-dir", help="the GLUE task's folder in GLUE's layout (default: "
                        "$ZOO_GLUE_DIR/<TASK>, for SST-2 also $ZOO_SST2_DIR, else the hub)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out exactly where it stopped")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the zoo run in --out (its own files only)")
    parser.add_argument("--epochs", type=float, default=epochs)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--time-limit", type=float, help="stop training after this many seconds")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--optimizer", choices=["adamw", "adam", "sgd"],
                        default=defaults.optimizer,
                        help="adamw: clipping + AdamW with warm-up and decay; adam: the "
                        "seed's constant-rate adam (use with --lr 5e-5); sgd: momentum 0.9 "
                        "with warm-up and decay")
    parser.add_argument("--lr", type=float, dest="learning_rate",
                        help="peak learning rate (default: 1e-3 from a random init, the "
                        "model's fine-tuning default from pre-trained weights, e.g. 5e-5)")
    parser.add_argument("--schedule", choices=["linear", "cosine", "constant"],
                        default=defaults.schedule)
    parser.add_argument("--warmup-fraction", type=float, default=defaults.warmup_fraction)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--max-len", type=int)
    parser.add_argument("--vocab-size", type=int, help="tokens of the tokenizer trained here "
                        "for an encoder that has none (default: the encoder's vocabulary)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--mesh", help="device mesh data=N[,model=M] (default: every device on "
                        "data; model > 1 splits parameters by the model's partition rules)")
    parser.add_argument("--precision", choices=["float32", "bf16"], default=defaults.precision,
                        help="bf16: bfloat16 matrix products, float32 parameters and the "
                        "rest (fast on GPUs, TPUs and CPUs with AMX)")
    parser.add_argument("--distributed", action="store_true",
                        help="one of several processes: call jax.distributed.initialize() "
                        "from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (or "
                        "SLURM / Cloud TPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    """The labelled data: a GLUE task, your own files, or a hub dataset (zoo.dataset)."""
    group = parser.add_argument_group("data (default: GLUE SST-2)")
    group.add_argument("--dataset", help="glue/TASK (sst2, mrpc, stsb, rte, qnli, mnli, qqp, "
                       "cola, wnli) or hf:NAME[/CONFIG] (a hub dataset)")
    group.add_argument("--train-file", help="your training data: .csv, .tsv, .jsonl/.json, "
                       ".parquet, or a CoNLL token file (.txt/.conll: token ... TAG lines)")
    group.add_argument("--validation-file", help="your dev data (same format)")
    group.add_argument("--test-file", help="labelled: scored at the end (summary test_*)")
    group.add_argument("--text-column", help="the text column (default: text)")
    group.add_argument("--text-pair-column", help="the second text of a pair task")
    group.add_argument("--label-column", help="the label column (default: label)")
    group.add_argument("--task", help="classification, multi-label-classification (a list "
                       "of labels per example, or comma-separated labels in a CSV / TSV cell), "
                       "regression, token-classification (default: inferred from the labels) "
                       "or sentence-embedding (a bi-encoder "
                       "on text pairs: scored pairs by cosine regression, unscored (anchor, "
                       "positive) pairs by in-batch negatives)")


def _config(args, **extra):
    """The TrainConfig the flags describe, range-checked before any work starts."""
    from zoo.train import TrainConfig

    fields = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(**{**values, **extra}).validated()


def _print_table(rows: list[dict], columns: list[str]) -> None:
    from zoo.report import markdown_table

    print(markdown_table(rows, columns))


def cmd_list(args) -> int:
    import zoo

    rows = [{"kind": "model", "name": n, "pretrained weights": "yes" if zoo.get_encoder(n).source
             else "no", "description": zoo.get_encoder(n).description}
            for n in zoo.list_models(args.pattern)]
    rows += [{"kind": "head", "name": n, "pretrained weights": "", "description":
              zoo.get_head(n).description} for n in zoo.list_heads(args.pattern)]
    _print_table(rows, ["kind", "name", "pretrained weights", "description"])
    return 0


def cmd_train(args, head: str | None = None) -> int:
    from zoo.run import train_run

    cfg = _config(args, **({"head": head} if head else {}))
    summary = train_run(cfg, args.out, resume=args.resume, show_progress=not args.quiet,
                        overwrite=args.overwrite)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    """The run's summary as JSON, once (by process 0 when several processes train)."""
    from zoo.sharding import is_primary

    if is_primary():
        print(json.dumps(summary, indent=2))


def cmd_pretrain(args) -> int:
    return cmd_train(args, head="mlm")


def cmd_distill(args) -> int:
    from zoo.distill import DEFAULT_STUDENT, DistillConfig, distill_run
    from zoo.train import TrainConfig

    flags = {"model": args.student, "epochs": args.epochs, "max_steps": args.max_steps,
             "time_limit": args.time_limit, "learning_rate": args.lr,
             "batch_size": args.batch_size, "eval_every": args.eval_every, "seed": args.seed,
             "data_dir": args.data_dir, "mesh": args.mesh, "precision": args.precision,
             **{k: getattr(args, k) for k in ("dataset", "train_file", "validation_file",
                                              "test_file", "text_column", "text_pair_column",
                                              "label_column", "task")}}
    train = TrainConfig(**DEFAULT_STUDENT | {k: v for k, v in flags.items() if v is not None})
    settings = {"temperature": args.temperature, "alpha": args.alpha, "augment": args.augment,
                "embeddings": args.embeddings, "hint": args.hint,
                "min_words": args.min_words}
    cfg = DistillConfig(args.teacher, train, **{k: v for k, v in settings.items()
                                                if v is not None}).validated()
    summary = distill_run(cfg, args.out, resume=args.resume, show_progress=not args.quiet,
                          overwrite=args.overwrite)
    _print_summary(summary)
    return 0


def cmd_evaluate(args) -> int:
    from zoo.run import evaluate_run

    result = evaluate_run(args.run, args.data_dir, args.data_file)
    metrics = {k: v for k, v in result.items() if not k.startswith("dev_")}
    if args.json:  # one object: the task's metric names (accuracy, f1, spearman, loss...)
        print(json.dumps(metrics, allow_nan=False))
        return 0
    if args.data_file is None:
        print(json.dumps(result, indent=2))
        return 0
    _print_table([{"metric": k, "value": f"{v:.4f}"} for k, v in metrics.items()],
                 ["metric", "value"])
    return 0


def _prediction_json(p) -> str:
    """One prediction as a JSON line (allow_nan=False: never print NaN, which is not JSON)."""
    fields = dataclasses.asdict(p)
    fields.pop("probabilities", None)  # the label's probability is enough on a line
    return json.dumps(fields, allow_nan=False, ensure_ascii=False)


def cmd_predict(args) -> int:
    import zoo

    from zoo.errors import InvalidArgumentError
    from zoo.run import model_config, predict_file

    if args.file is not None:
        if args.texts:
            raise InvalidArgumentError("give texts or --file, not both")
        _, predictions = predict_file(args.run, args.file, args.precision)
    else:
        for i, text in enumerate(args.texts, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # argv bytes that are not UTF-8 arrive as surrogates
                raise InvalidArgumentError(f"text argument {i} is not valid UTF-8") from None
        texts = list(args.texts) or _stdin_lines()
        if not texts:
            raise InvalidArgumentError("no text given: pass texts as arguments, lines on stdin "
                                       "or --file")
        model = zoo.load(args.run, precision=args.precision)
        run = Path(args.run).expanduser()
        if model_config(run, model).text_pair_column is not None:  # a pair: "text<TAB>pair"
            pairs = [tuple(t.split("\t", 1)) for t in texts]
            bad = next((i for i, p in enumerate(pairs, start=1) if len(p) != 2), None)
            if bad is not None:
                raise InvalidArgumentError(f"text {bad}: this model reads pairs; give "
                                           "'TEXT<TAB>PAIR'")
            texts = pairs
        predictions = model.predict(texts)
    for p in predictions:
        print(_prediction_json(p) if args.json else p.row())
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    import zoo
    from zoo.errors import InvalidArgumentError
    from zoo.fsutil import atomic_file

    if args.file is not None and args.texts:
        raise InvalidArgumentError("give texts or --file, not both")
    if args.file is not None:
        from zoo.data import read_text_lines

        texts = read_text_lines(args.file)
    else:
        texts = list(args.texts) or _stdin_lines()
    if not texts:
        raise InvalidArgumentError("no text given: pass texts as arguments, lines on stdin "
                                   "or --file")
    out = None
    if args.out is not None:
        out = Path(args.out).expanduser()
        if out.suffix != ".npy":
            raise InvalidArgumentError(f"--out {out}: expected a .npy file")
        if out.exists() and not args.overwrite:
            raise InvalidArgumentError(f"--out {out} exists; pass --overwrite to replace it")
        if out.exists() and not out.is_file():
            raise InvalidArgumentError(f"--out {out} exists and is not a file")
    model = zoo.load(args.model, precision=args.precision)
    vectors = model.encode(texts, pooling=args.pooling, normalize=args.normalize,
                           batch_size=args.batch_size, progress=not args.quiet)
    if out is not None:
        with atomic_file(out) as tmp, open(tmp, "wb") as handle:
            np.save(handle, vectors)
        print(f"{len(texts)} embeddings of width {vectors.shape[1]} -> {out}")
        return 0
    for text, vector in zip(texts, vectors):
        print(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vector]},
                         ensure_ascii=False))
    return 0


def _stdin_lines() -> list[str]:
    """The non-blank lines of stdin, decoded strictly: bad UTF-8 is named by its line."""
    from zoo.errors import InvalidArgumentError

    lines = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            raise InvalidArgumentError(f"stdin, line {number}: not valid UTF-8 ({err.reason})"
                                       ) from None
        if line.strip():
            lines.append(line)
    return lines


def cmd_export(args) -> int:
    from zoo.export import export

    summary = export(args.model, args.out, format=args.format, head=args.head,
                     overwrite=args.overwrite)
    what = summary.get("architectures", [summary.get("output", "")])[0]
    print(f"{args.model} -> {args.out} ({args.format}: {what}; "
          f"{', '.join(summary['files'])})")
    return 0


def cmd_baseline(args) -> int:
    from zoo.baseline import run_baseline
    from zoo.data import load_sst2

    out = Path(args.out) if args.out else None
    if out is not None:  # refuse a bad --out before reading any data
        from zoo.baseline import _WHAT, is_baseline_dir
        from zoo.fsutil import check_output

        check_output(out, overwrite=args.overwrite, owned=is_baseline_dir, what=_WHAT)
    result = run_baseline(load_sst2(args.data_dir), out, leaky=args.leaky,
                          overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


def _add_inference_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                        help="bf16: bfloat16 matrix products, float32 accumulation (fast on "
                        "GPUs and on CPUs with AMX; outputs differ from float32 by ~1e-3)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models and heads")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. '*v1'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="fine-tune on any labelled dataset (default GLUE SST-2)")
    _add_training_args(p, model="encoder-m2l-small", head=None, epochs=3.0, lr=1e-3)
    _add_data_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="masked-LM pre-training on SST-2 sentences or a text file")
    _add_training_args(p, model="encoder-m2l-small", head=None, epochs=3.0, lr=1e-3,
                       with_head=False)
    p.add_argument("--text-file", help="one sentence per line, read into memory (default: "
                   "SST-2 train sentences)")
    p.add_argument("--stream", help="a corpus larger than memory, streamed: a text file (one "
                   "example per line) or hf:NAME[/CONFIG]:SPLIT[:COLUMN] (a hub dataset)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="score a run on its dev split or on a labelled file")
    p.add_argument("run")
    p.add_argument("--data-dir", help="the GLUE task's folder (dev split re-evaluated)")
    p.add_argument("--data-file", help="any labelled file in the run's dataset format (the "
                   "same columns or layout as training)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object of the task's metrics (accuracy, f1, mcc, pearson, "
                        "spearman, precision, recall, loss)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability per text (or per stdin line)")
    p.add_argument("run", help="a run directory or model directory")
    p.add_argument("texts", nargs="*", help="texts (a pair model: TEXT<TAB>PAIR), else stdin "
                   "lines")
    p.add_argument("--file", help="a file in the run's dataset format (its text columns)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_inference_precision(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="sentence embeddings (as sentence-transformers gives them)")
    p.add_argument("model", help="a registered model, model directory, run or HF folder")
    p.add_argument("texts", nargs="*", help="texts, else stdin lines")
    p.add_argument("--file", help="a UTF-8 file, one text per line")
    p.add_argument("--out", help="write the (N, hidden) float32 array here (.npy); else one "
                   "JSON line per text")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--pooling", choices=["mean", "cls", "max"],
                   help="default: the preset's (mean)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help="keep the pooled vectors' lengths (default: L2-normalised)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_inference_precision(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="write a run or model for transformers (--format hf) or "
                       "ONNX Runtime (--format onnx)")
    p.add_argument("model", help="a run, model directory, registered model or HF folder")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: config.json + model.safetensors + tokenizer, as transformers "
                   "writes them (the M2L family: its own safetensors + config); onnx: "
                   "model.onnx + tokenizer files")
    p.add_argument("--out", required=True, help="a new or empty folder (or an earlier export "
                   "with --overwrite)")
    p.add_argument("--head", help="which stored head (default: the model's); 'none': the "
                   "encoder alone")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("baseline", help="TF-IDF + logistic regression on SST-2")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="write the report here (a new or empty folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier baseline report in --out")
    p.add_argument("--leaky", action="store_true",
                   help="fit TF-IDF on train+dev text as the original did (a leak)")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a small student")
    p.add_argument("--teacher", required=True, help="fine-tuned run or model directory")
    p.add_argument("--student", default="encoder-m2l-mini", help="registered encoder")
    p.add_argument("--out", required=True, help="run directory of the student")
    p.add_argument("--temperature", type=float, help="softmax temperature (default 2)")
    p.add_argument("--alpha", type=float, help="weight of the teacher loss, in [0, 1]")
    p.add_argument("--augment", type=int, help="augmented sentences per training sentence")
    p.add_argument("--min-words", type=int,
                   help="augment only training sentences of at least this many words")
    p.add_argument("--hint", type=float,
                   help="weight of the hidden-state loss: the student's final [CLS] state vs "
                        "the teacher's, PCA-projected to the student's width (default 0)")
    p.add_argument("--embeddings", choices=["random", "teacher"],
                   help="the student's token embeddings start random or from the teacher's "
                        "(projected across vocabularies)")
    for flag, kind in (("--epochs", float), ("--max-steps", int), ("--time-limit", float),
                       ("--lr", float), ("--batch-size", int), ("--eval-every", int),
                       ("--seed", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--data-dir", help="the GLUE task's folder")
    _add_data_args(p)
    p.add_argument("--mesh", help="device mesh of the student's training, data=N[,model=M]")
    p.add_argument("--precision", choices=["float32", "bf16"],
                   help="the student's compute precision (default float32)")
    p.add_argument("--distributed", action="store_true",
                   help="one of several processes (see `train --help`)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as ``warning: ...`` lines: the command line is not the place for source lines."""
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: list[str] | None = None, *, compile_cache: bool = False) -> int:
    """Run one command; a mistake the user can fix ends with one line and exit status 2.
    ``compile_cache``: keep XLA's compiled programs on disk (``zoo.compile_cache``; what
    ``python -m zoo`` asks for, a process of its own).

    Only the zoo's own error types (and path errors) are caught: any other exception is a
    bug in the zoo and keeps its traceback.
    """
    from zoo.checkpoint import CheckpointMismatchError
    from zoo.errors import USER_ERRORS, one_line

    args = build_parser().parse_args(argv)
    training = args.func in (cmd_train, cmd_pretrain, cmd_distill)
    previous, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        if compile_cache:  # here, so that its warnings are one line like the others
            from zoo.compile_cache import use_compilation_cache

            use_compilation_cache()
        if getattr(args, "distributed", False):  # before anything touches a device
            from zoo.sharding import initialize_distributed

            initialize_distributed()
        return args.func(args)
    except KeyboardInterrupt as err:
        from zoo.train import Terminated

        saved = (f": the latest checkpoint was saved in {args.out}; continue with --resume"
                 if training else "")
        print(f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}{saved}",
              file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    except USER_ERRORS as err:  # a mismatch report lists every key: it keeps its lines
        print(f"error: {err if isinstance(err, CheckpointMismatchError) else one_line(err)}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `zoo predict ... | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        warnings.showwarning = previous
