"""Metrics written as they come: a JSONL file (for people and plots) and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` and mirrors scalars to ``tb/``.

    TensorBoard files come from tensorboardX, which needs no TensorFlow. Lines are flushed
    at once, so a crash loses nothing that was already measured.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            split = record.get("split", "train")
            for key, value in record.items():
                if key not in ("step", "split", "epoch") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{split}/{key}", value, record["step"])

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step`` (and any torn last line) from a metrics log, atomically.

    A resumed run continues from its last checkpoint; what was logged after it (a crash
    between logging and checkpointing) is logged again, so without this the log would hold
    those steps twice.
    """
    from zoo.fsutil import atomic_write_text

    path = Path(path)
    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and isinstance(record.get("step"), (int, float)) \
                and record["step"] <= step
        except ValueError:
            keep = False
        if keep:
            kept.append(line)
        else:
            changed = True
    if changed:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
