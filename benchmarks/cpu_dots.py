"""XLA's CPU dot libraries against PyTorch's on the matrix products of the zoo's encoders.

    python -m benchmarks.cpu_dots [--rounds 11] [--out benchmarks/results/cpu-dots.md]

Why ``zoo.nn.compiler_options`` compiles float32 programs with Eigen's dots: each product
of a base-size encoder (2,048 tokens x hidden 768, BERT/RoBERTa's and ModernBERT's widths)
runs in one process as XLA's default (YNNPACK), as Eigen's (``ZOO_XLA_CPU_DOTS=eigen``, the
zoo's float32 choice) and as ``torch.nn.functional.linear`` (oneDNN / MKL), interleaved;
bf16 products (float32 accumulation, as ``set_precision("bf16")`` computes them) as XLA's
default and Eigen's. Medians in GFLOP/s; torch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

# (tokens, in, out): BERT/RoBERTa FFN in and out, Q/K/V/O; ModernBERT fused QKV and GeGLU
SHAPES = ((2048, 768, 3072), (2048, 3072, 768), (2048, 768, 768), (2048, 768, 2304),
          (2048, 1152, 768), (512, 768, 768))
# zoo.nn.EIGEN_DOTS (on a lone product the same program as turning YNNPACK off altogether)
EIGEN = {"xla_cpu_experimental_ynn_fusion_type":
         "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_dots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", default="benchmarks/results/cpu-dots.md")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks.bert_bench import machine
    from zoo.fsutil import atomic_write_text

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    info = machine()

    def product(x, w):
        return jnp.einsum("mk,kn->mn", x, w, preferred_element_type=jnp.float32)

    xla, eigen = jax.jit(product), jax.jit(product, compiler_options=EIGEN)
    rows = []
    for m, k, n in SHAPES:
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
        flops = 2 * m * k * n
        ta, tb = torch.from_numpy(a), torch.from_numpy(np.ascontiguousarray(b.T))
        sides = {"f32 xla": (xla, jnp.asarray(a), jnp.asarray(b)),
                 "f32 eigen": (eigen, jnp.asarray(a), jnp.asarray(b)),
                 "bf16 xla": (xla, jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)),
                 "bf16 eigen": (eigen, jnp.asarray(a, jnp.bfloat16),
                                jnp.asarray(b, jnp.bfloat16))}
        times: dict[str, list[float]] = {name: [] for name in [*sides, "f32 torch"]}
        for fn, x, w in sides.values():  # compile and warm
            fn(x, w).block_until_ready()
        torch.nn.functional.linear(ta, tb)
        for _ in range(args.rounds):
            for name, (fn, x, w) in sides.items():
                start = time.perf_counter()
                fn(x, w).block_until_ready()
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            torch.nn.functional.linear(ta, tb)
            times["f32 torch"].append(time.perf_counter() - start)
        rate = {name: flops / np.median(t) / 1e9 for name, t in times.items()}
        rows.append(((m, k, n), rate))
        print(f"[cpu_dots] {m}x{k}x{n}: " + ", ".join(f"{k_} {v:.0f}" for k_, v in rate.items()),
              file=sys.stderr, flush=True)
    lines = [
        "# XLA's CPU dot libraries against PyTorch (GFLOP/s, median)", "",
        f"`python -m benchmarks.cpu_dots` on {info['cpu']} ({info['usable_cores']} usable "
        f"cores), jax {info['versions']['jax']}, torch {info['versions']['torch']}; "
        f"{args.rounds} interleaved rounds per shape after a warm-up; load average "
        f"{info['loadavg_start'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. "
        "`xla`: XLA's default (YNNPACK); `eigen`: YNNPACK's dots off (`zoo.nn.EIGEN_DOTS`), "
        "what `zoo.nn.compiler_options` gives wide float32 programs on the CPU; bf16: "
        "bfloat16 operands, float32 accumulation.", "",
        "| tokens x in x out | f32 XLA default | f32 Eigen (the zoo) | f32 torch | Eigen / default "
        "| Eigen / torch | bf16 XLA default | bf16 Eigen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (m, k, n), r in rows:
        lines.append(
            f"| {m} x {k} x {n} | {r['f32 xla']:.0f} | {r['f32 eigen']:.0f} | "
            f"{r['f32 torch']:.0f} | {r['f32 eigen'] / r['f32 xla']:.2f}× | "
            f"{r['f32 eigen'] / r['f32 torch']:.2f}× | {r['bf16 xla']:.0f} | "
            f"{r['bf16 eigen']:.0f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
