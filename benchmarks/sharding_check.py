"""Sharded training steps on simulated CPU devices: equal to one device, and what they send.

    python -m benchmarks.sharding_check [--devices 8] [--steps 3] [--out FILE.md]

For each preset (random init) and mesh, the zoo's train step (``zoo.train.Steps``, dropout
on, SGD so parameters can be compared exactly) runs ``--steps`` steps on the mesh and on one
device from the same start; the table gives the largest parameter difference, the loss
difference, and the collectives XLA put in the compiled step (counted in its HLO), for the
classification and the masked-LM task. Timings on simulated devices share the same CPU cores
and say nothing about real speed-ups, so none are reported.

jax fixes its device count at start-up: the script re-runs itself in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

PRESETS = ("encoder-m2l-mini", "bert-mini")
MESHES = ("data={n}", "data={half},model=2")
COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|all-to-all|collective-permute|"
                        r"reduce-scatter)(?:-start)?\(")


def _measure(devices: int, steps: int) -> list[dict]:
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from zoo import sharding
    from zoo.model import build_model
    from zoo.tasks import MaskingConfig, task_for
    from zoo.train import Steps

    def batch(vocab: int) -> dict:
        rng = np.random.default_rng(0)
        rows, length = 32, 32
        ids = rng.integers(5, vocab, (rows, length)).astype(np.int32)
        mask = (np.arange(length)[None, :] < rng.integers(4, length + 1, rows)[:, None])
        return {"input_ids": np.where(mask, ids, 0).astype(np.int32),
                "attention_mask": mask.astype(np.int32),
                "labels": rng.integers(0, 2, rows).astype(np.int32),
                "weights": np.ones(rows, np.float32)}

    def run(preset: str, head: str, mesh):
        model = build_model(preset, head, seed=0)
        vocab = model.config.vocab_size
        task = task_for("classification") if head == "sst2" else task_for(
            "mlm", MaskingConfig(mask_id=4, vocab_size=vocab, special_ids=(0, 1, 2, 3, 4)))
        optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
        step = Steps(model, optimizer, task, mesh)
        arrays = sharding.global_batch(batch(vocab), mesh)
        hlo = step.train.lower(step.model_state, step.opt_state, arrays,
                               jax.random.key(0)).compile().as_text()
        losses = []
        for i in range(steps):
            step.model_state, step.opt_state, _, loss = step.train(
                step.model_state, step.opt_state, arrays, jax.random.key(i))
            losses.append(float(loss))
        return losses, sharding.to_host(jax.tree.leaves(step.model_state)), hlo

    rows = []
    one = sharding.make_mesh(None, devices=jax.devices()[:1])
    for preset in PRESETS:
        for head in ("sst2", "mlm"):
            ref_losses, ref_params, _ = run(preset, head, one)
            for spec in MESHES:
                spec = spec.format(n=devices, half=devices // 2)
                losses, params, hlo = run(preset, head, sharding.make_mesh(spec))
                counts = Counter(COLLECTIVE.findall(hlo))
                rows.append({
                    "preset": preset, "task": "classification" if head == "sst2" else "masked LM",
                    "mesh": spec,
                    "largest parameter difference": max(float(np.abs(a - b).max())
                                            for a, b in zip(params, ref_params)),
                    "largest loss difference": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                    "collectives in the step": ", ".join(
                        f"{n} {k}" for k, n in sorted(counts.items())) or "none",
                })
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _table(rows: list[dict], devices: int, steps: int) -> str:
    import jax

    columns = list(rows[0])
    lines = [f"Sharded train steps on {devices} simulated CPU devices vs one device "
             f"({steps} SGD steps, dropout on, batch 32 x 32; jax {jax.__version__}, "
             f"{os.cpu_count()} CPU cores).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.1e}" if isinstance(r[c], float) else str(r[c])
                                        for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharding_check")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices < 2 or args.devices % 2:
        parser.error("--devices must be an even number >= 2")
    if not args.inner:
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
            os.environ.get("XLA_FLAGS", "") +
            f" --xla_force_host_platform_device_count={args.devices}").strip())
        cmd = [sys.executable, "-m", "benchmarks.sharding_check", "--inner",
               "--devices", str(args.devices), "--steps", str(args.steps)]
        if args.out:
            cmd += ["--out", args.out]
        return subprocess.run(cmd, env=env).returncode
    text = _table(_measure(args.devices, args.steps), args.devices, args.steps)
    print(text)
    if args.out:
        from zoo.fsutil import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
