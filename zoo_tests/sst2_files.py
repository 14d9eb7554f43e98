"""The shared SST-2 files and small slices of them in GLUE's layout, for tests that train."""

from __future__ import annotations

import os
from pathlib import Path

SST2 = Path(os.environ.get("ZOO_SST2_DIR")
            or Path(__file__).resolve().parents[2] / "shared/data/SST-2")


def write_slice(out: Path, train: int, dev: int, test: int) -> Path:
    """The first rows of each shared file (header kept) written into ``out``."""
    for name, rows in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        lines = (SST2 / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (out / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out
