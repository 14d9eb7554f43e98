"""What keeps a run's checkpoints whole across crashes and signals.

Owns the checkpoint folder's integrity record (``CHECKSUMS``, written after orbax commits
and checked before a restore), the cleanup of orbax's uncommitted step folders
(``ORBAX_TMP``), the signal handling that never interrupts a checkpoint write (``Signals``,
``Terminated``), and the fault-injection test hooks (``_crash_hook``, driven by
``ZOO_TEST_CRASH_AT`` / ``ZOO_TEST_PAUSE_AT``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from zoo import checkpoint

CHECKSUMS = "zoo_checksums.json"  # inside each orbax step folder, written after orbax commits
ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax's marker of a step folder that never committed
# Test hooks (zoo_tests/test_faults.py), read once; unset, they cost one string comparison.
# ZOO_TEST_CRASH_AT=EVENT:N ends the process as SIGKILL would (os._exit, no cleanup) at the
# Nth EVENT: "step" (global step N dispatched), "checkpoint-write" (the Nth save of this
# process: orbax's temporary step folder exists, not yet committed) or "checksums" (orbax
# committed, our checksums not yet written). ZOO_TEST_PAUSE_AT=step:N prints "paused" on
# stderr and sleeps, so a test can signal a trainer at a known point.
_CRASH_AT = os.environ.get("ZOO_TEST_CRASH_AT", "")
_PAUSE_AT = os.environ.get("ZOO_TEST_PAUSE_AT", "")


def _crash_hook(event: str, count: int) -> None:
    if _CRASH_AT and _CRASH_AT == f"{event}:{count}":
        os._exit(137)
    if _PAUSE_AT and _PAUSE_AT == f"{event}:{count}":
        print(f"paused at {event} {count} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(120)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (checkpoint, then exit) but told apart by the caller."""


def clean_uncommitted(directory: Path) -> list[Path]:
    """Remove orbax's uncommitted step folders (a crash mid-write) under ``directory``.

    Only folders orbax itself names ``<step>.orbax-checkpoint-tmp*`` are removed: they are
    never a usable checkpoint, and leaving them makes orbax warn on every later save.
    """
    import shutil

    removed = []
    if directory.is_dir():
        for kind in directory.iterdir():
            for entry in (kind.iterdir() if kind.is_dir() else ()):
                if ORBAX_TMP in entry.name and entry.is_dir():
                    shutil.rmtree(entry)
                    removed.append(entry)
    return removed


def committed_steps(directory: Path) -> list[int]:
    """Steps of ``directory`` (``checkpoints/<kind>``) whose orbax write committed."""
    if not directory.is_dir():
        return []
    return sorted(int(e.name) for e in directory.iterdir() if e.name.isdigit() and e.is_dir())


def write_step_checksums(step_dir: Path) -> None:
    """Record the sha256 of every file of a committed step folder (atomically, beside them)."""
    from zoo.fsutil import atomic_write_text

    sums = checkpoint.file_checksums(step_dir)
    sums.pop(CHECKSUMS, None)
    atomic_write_text(step_dir / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True) + "\n")


def verify_step_checksums(step_dir: Path) -> None:
    """Fail with one line naming the first file of the step folder that does not match.

    A step without a checksums file (written by an older zoo, or a crash in the instant
    between orbax's commit and our record) is accepted with a warning. The comparison itself
    is ``checkpoint.verify_checksums``'s, as for model directories.
    """
    record = step_dir / CHECKSUMS
    if not record.is_file():
        warnings.warn(f"{step_dir} has no {CHECKSUMS}; its files cannot be verified")
        return
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except ValueError:  # JSON and UTF-8 errors alike
        recorded = None
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise checkpoint.IntegrityError(f"{record}: corrupted (not a JSON map of checksums); "
                                        "the checkpoint cannot be trusted")
    checkpoint.verify_checksums(
        step_dir, recorded, what="the checkpoint", ignore=(CHECKSUMS,),
        remedy="restore the file, or delete this run's checkpoints/ and train again")


class Signals:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` (``Terminated``), but never inside a
    checkpoint write: a signal that arrives there is held until the write is done, so the
    checkpoint on disk is always whole. Installed only in the main thread; restored on exit.
    """

    def __init__(self):
        self.pending: type[BaseException] | None = None
        self.critical = 0
        self.previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if self.critical:
            self.pending = self.pending or kind
        else:
            raise kind()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    @contextlib.contextmanager
    def held(self):
        """Hold signals for the duration of the block; deliver a held one at its end."""
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1
        if not self.critical and self.pending is not None:
            kind, self.pending = self.pending, None
            raise kind()


_Signals = Signals  # its name before it moved here from zoo.train
