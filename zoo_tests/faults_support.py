"""Shared pieces of the fault and bad-input suite (``test_faults*.py``).

A tiny synthetic SST-2 folder, the tiny encoder with two buckets, a persistent jax
compilation cache (each training subprocess would otherwise spend ~10 s compiling the same
programs), and helpers to run the command line in a subprocess and read what it printed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import orbax.checkpoint as ocp

from zoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
POSITIVE = ["good", "great", "fine", "lovely", "superb", "witty", "gorgeous"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible", "lifeless", "boring"]
NEUTRAL = ["the", "movie", "film", "plot", "acting", "was", "a", "story", "and", "it", "is"]
# Training flags of every run in the suite: 160 examples, batches of 16, buckets 16/32,
# 12 steps with an evaluation (best + latest checkpoints) every 4.
TRAIN = dict(model="encoder-m2l-tiny", head="sst2", batch_size=16, max_len=32, max_steps=12,
             eval_every=4, learning_rate=3e-3, seed=0)


def cli_flags(data_dir: Path, **overrides) -> list[str]:
    """``TRAIN`` (plus overrides) as command-line flags."""
    values = {**TRAIN, **overrides}
    flags = ["--data-dir", str(data_dir), "--quiet"]
    for key, value in values.items():
        if key != "head":
            flags += ["--lr" if key == "learning_rate" else "--" + key.replace("_", "-"),
                      str(value)]
    return flags


def write_sst2(folder: Path, n_train: int = 160, n_dev: int = 40, seed: int = 0) -> Path:
    """A GLUE-layout SST-2 folder of synthetic sentences whose words give their label."""
    rng = random.Random(seed)

    def sentence(label: int) -> str:
        words = rng.sample(NEUTRAL, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
        rng.shuffle(words)
        return " ".join(words)

    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        labels = [rng.randrange(2) for _ in range(n)]
        rows = [f"{sentence(y)}\t{y}" for y in labels]
        (folder / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    test = [f"{i}\t{sentence(rng.randrange(2))}" for i in range(8)]
    (folder / "test.tsv").write_text("index\tsentence\n" + "\n".join(test) + "\n",
                                     encoding="utf-8")
    return folder


def jax_cache_env(cache: Path) -> dict[str, str]:
    """Environment variables giving subprocesses a persistent compilation cache."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def subprocess_env(base: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: private caches and weights store, CPU only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_TEST_")}
    env |= {"ZOO_CACHE_DIR": str(base / "cache"), "ZOO_WEIGHTS_DIR": str(base / "weights"),
            "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env |= jax_cache_env(base / "jax-cache")
    return env | extra


def run_cli(args: list[str], env: dict[str, str], *, stdin: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m zoo ARGS`` to completion (bytes out, so bad encodings stay visible)."""
    return subprocess.run([sys.executable, "-m", "zoo", *args], env=env, input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def stderr_lines(stderr: bytes | str) -> list[str]:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(stderr: bytes | str, *fragments: str) -> str:
    """Exactly one non-blank stderr line, ``error: ...``, holding every fragment."""
    lines = stderr_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def latest_params(run_dir: Path, kind: str = "latest") -> tuple[int, dict]:
    """(step, flat params and optimizer state) of a run's checkpoint."""
    with ocp.CheckpointManager(run_dir / "checkpoints" / kind) as manager:
        step = manager.latest_step()
        tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, checkpoint.flatten(tree["state"])


def metric_records(run_dir: Path) -> list[dict]:
    """The metrics log without its wall-clock times (which differ between runs)."""
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one bit of one byte of ``path`` (the middle byte unless ``offset`` is given)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def biggest_file(folder: Path) -> Path:
    """The largest file under ``folder`` (for a checkpoint: a parameter data file)."""
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}
