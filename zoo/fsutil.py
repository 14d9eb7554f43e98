"""Safe file-system writes: never delete what the zoo did not create, never leave half a result.

``atomic_directory`` builds a result in a new temporary sibling folder and renames it into
place at the end; a crash leaves at most a hidden ``.NAME.partial-*`` folder beside it.
An existing target is replaced only when it is empty or when ``owned(target)`` says it is
the tool's own output *and* the caller passed ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from zoo.errors import ZooError


class OutputExistsError(ZooError, FileExistsError):
    """The output path holds something the tool must not replace."""


def check_output(target: Path, *, overwrite: bool, owned: Callable[[Path], bool],
                 what: str, flag: str = "--overwrite") -> None:
    """Refuse, with one line, an output path that must not be replaced (before any work)."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; choose another output path")
    if not any(target.iterdir()):
        return
    if not owned(target):
        raise OutputExistsError(
            f"{target} is not empty and is not {what}; refusing to replace it (choose a new or "
            "empty folder)")
    if not overwrite:
        raise OutputExistsError(f"{target} already holds {what}; pass {flag} to replace it")


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool, owned: Callable[[Path], bool],
                     what: str) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``target``; on success rename it into place."""
    target = Path(target).absolute()
    check_output(target, overwrite=overwrite, owned=owned, what=what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        check_output(target, overwrite=overwrite, owned=owned, what=what)  # still true?
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "previous")  # a rename: nothing is lost if we stop here
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
