"""What the converter commands share: one line per fixable error, a summary on success."""

from __future__ import annotations

import sys
from typing import Callable

from zoo.checkpoint import CheckpointMismatchError, read_manifest
from zoo.errors import USER_ERRORS, one_line


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
