"""Safe file-system writes: never delete what the zoo did not create, never leave half a result.

``atomic_directory`` builds a result in a new temporary sibling folder and renames it into
place at the end; a crash leaves at most a hidden ``.NAME.partial-*`` folder beside it.
An existing target is replaced only when it is empty or when ``owned(target)`` says it is
the tool's own output *and* the caller passed ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from zoo.errors import ConfigError, ZooError


MAX_JSON_BYTES = 64 << 20  # configs, manifests, indexes, vocabularies: far below this


def check_size(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> None:
    """One ``ConfigError`` line when ``path`` is larger than ``limit`` bytes: a file read
    whole (JSON, a tokenizer's vocabulary) that a hostile folder could make exhaust memory.
    ``OSError`` passes through."""
    size = Path(path).stat().st_size
    if size > limit:
        raise ConfigError(f"{path}: {size / 2**20:,.0f} MB, too large for {what} (at most "
                          f"{limit >> 20} MB)")


def read_json(path: Path) -> object:
    """A JSON file's value, or one ``ConfigError`` line naming the file: larger than
    ``MAX_JSON_BYTES`` (read whole, a hostile file could exhaust memory), not UTF-8, not JSON
    (with the line), nested too deeply for the parser. ``OSError`` passes through."""
    check_size(path, "a JSON file the zoo reads")
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (not UTF-8: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None


def json_or_none(path: Path) -> object:
    """For probes ("is this folder ours?"): the JSON value, or None when the file is absent,
    unreadable or not JSON."""
    try:
        return read_json(path)
    except (OSError, ConfigError):
        return None


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


class OutputExistsError(ZooError, FileExistsError):
    """The output path holds something the tool must not replace."""


def check_output(target: Path, *, overwrite: bool, owned: Callable[[Path], bool],
                 what: str, flag: str = "--overwrite") -> None:
    """Refuse, with one line, an output path that must not be replaced (before any work)."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        blocker = next((p for p in target.absolute().parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise OutputExistsError(f"{target}: {blocker} is a file, not a folder; choose "
                                    "another output path")
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
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would outlive the rename
        yield tmp
        check_output(target, overwrite=overwrite, owned=owned, what=what)  # still true?
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "previous")  # a rename: nothing is lost if we stop here
        os.rename(tmp, target)
    except BaseException:
        if old is not None and (old / "previous").exists() and not target.exists():
            os.rename(old / "previous", target)  # put the previous result back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def entries_are(folder: Path, own: Callable[[str], bool]) -> bool:
    """True when every entry of ``folder`` is one the tool writes (``own(name)``).

    ``owned`` predicates use it so that replacing a tool's output never takes a user's file
    that was dropped into that folder along with it.
    """
    return all(own(entry.name) for entry in Path(folder).iterdir())


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` in one rename.

    A reader (or a crash) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would outlive the rename
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def is_temporary_name(name: str) -> bool:
    """Names of the hidden leftovers ``atomic_file``/``atomic_directory`` may leave on a crash."""
    return name.startswith(".") and any(tag in name for tag in (".tmp-", ".partial-", ".old-"))


class InUseError(ZooError):
    """Another process holds the folder's lock (e.g. a trainer writing to the same run)."""


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``FOLDER/.lock``, held while the ``with`` block runs.

    The kernel drops the lock when the process dies (even by SIGKILL), so a crashed trainer
    never leaves a stale lock behind. The holder writes its pid into the file, so the error a
    second process gets names who is in the way. (On systems without ``fcntl`` it is a no-op.)
    """

    NAME = ".lock"

    def __init__(self, folder: Path, what: str = "another training process"):
        self.path = Path(folder) / self.NAME
        self.what = what
        self._handle = None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise InUseError(f"{self.path.parent} is in use by {self.what} (pid {pid}); wait for "
                             "it to finish or stop it, or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    @classmethod
    def holder(cls, folder: Path) -> str | None:
        """The pid holding ``folder``'s lock, or None; creates nothing (a peek, not a lock)."""
        try:
            import fcntl

            handle = open(Path(folder) / cls.NAME, "r", encoding="utf-8")
        except (ImportError, OSError):
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "unknown"
        return None

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
