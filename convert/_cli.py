"""What the converter commands share: one line per fixable error, a summary on success."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from zoo.checkpoint import CheckpointMismatchError, read_manifest
from zoo.errors import USER_ERRORS, one_line


def add_output_args(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out`` and ``--overwrite``, the same for every converter."""
    parser.add_argument("--out", type=Path, help=f"output directory (default: {default})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out when it already holds a zoo model directory")


def run(work: Callable, *, source: str) -> int:
    """Run ``work()`` (which returns the written model directory) and report it."""
    try:
        out = work()
        manifest = read_manifest(out)
    except CheckpointMismatchError as err:
        print(f"error: {err}", file=sys.stderr)  # the multi-line report is the message
        return 2
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    heads = ", ".join(f"{name} ({meta['kind']})" for name, meta in manifest["heads"].items())
    print(f"converted {source} -> {out}\n"
          f"  model {manifest['model']}, heads: {heads or 'none'}, "
          f"{manifest['num_params']:,} parameters")
    return 0
