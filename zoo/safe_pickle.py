"""Format-neutral parts of an allow-listed unpickler, shared by the families' checkpoint readers.

Pickle is a code-execution format: any global it names is imported and called. A reader of
someone else's checkpoint therefore never lets ``pickle`` import anything. Instead:

1. ``prescan`` walks every opcode with ``pickletools.genops`` before anything runs: opcodes
   the format never needs are refused, length fields longer than the rest of the stream are
   refused before anything is allocated, and MARK nesting is capped;
2. ``AllowListUnpickler.find_class`` answers only from a per-load table
   ``{(module, name): stand-in}``; persistent ids go to a callback the format supplies (or
   are refused);
3. ``finish`` walks the result once (depth-capped, cycle-checked), swaps stand-in results
   for real values and refuses any object the stand-ins did not produce.

Each format (a family's pickle reader under ``zoo/models/<family>/``) supplies its
own stand-ins, which should be slot-only objects or per-load classes (see ``StandIn``) so a
hostile BUILD cannot alter them for later loads.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from typing import Any, Callable, Mapping

import numpy as np

from zoo.errors import ZooError

MAX_DEPTH = 32  # real checkpoints nest fewer than 10 levels

# Opcodes no checkpoint format needs unless its reader says so (e.g. persistent ids).
REFUSED_OPCODES: Mapping[str, str] = {
    "PERSID": "persistent id", "BINPERSID": "persistent id",
    "EXT1": "extension code", "EXT2": "extension code", "EXT4": "extension code",
    "INST": "INST (class instantiation)", "OBJ": "OBJ (class instantiation)",
    "NEXT_BUFFER": "out-of-band buffer", "READONLY_BUFFER": "out-of-band buffer",
}

LEAF_TYPES = (str, bytes, int, float, bool, type(None), np.ndarray)


class UnsafePickleError(ZooError, ValueError):
    """The file is not a checkpoint this reader accepts; nothing in it was executed."""


def prescan(data: bytes, *, refused: Mapping[str, str] = REFUSED_OPCODES,
            max_depth: int = MAX_DEPTH) -> tuple[int, tuple[str, ...]]:
    """Check every opcode before anything runs; return (protocol, GLOBAL names seen).

    ``refused`` maps opcode names to the reason given in the error.
    """
    protocol, globals_seen, marks = 0, set(), 0
    try:
        for opcode, arg, pos in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name in refused:
                raise UnsafePickleError(f"refused opcode {name} ({refused[name]}) at byte {pos}")
            if name == "PROTO":
                protocol = arg
            elif name == "GLOBAL":
                globals_seen.add(arg.replace(" ", "."))
            elif name == "MARK":
                marks += 1
                if marks > max_depth:
                    raise UnsafePickleError(f"nesting deeper than {max_depth} at byte {pos}")
            elif pickletools.markobject in opcode.stack_before:  # APPENDS, TUPLE, POP_MARK...
                marks -= 1
    except UnsafePickleError:
        raise
    except (ValueError, EOFError) as err:  # genops: truncated lengths, bad opcodes, no STOP
        if re.search(r"only \d+ remain|not enough data", str(err)):
            raise UnsafePickleError(
                f"refused length field longer than the rest of the file ({err})"
            ) from None
        raise UnsafePickleError(f"malformed pickle: {err}") from None
    return protocol, tuple(sorted(globals_seen))


class StandIn:
    """Base for slot-only stand-ins: BUILD on one is refused, so a pickle cannot alter it."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"refused BUILD on {type(self).__name__.lstrip('_')}")


class AllowListUnpickler(pickle.Unpickler):
    """Resolves globals only through ``standins``; persistent ids only through the callback."""

    def __init__(self, file, standins: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file)
        self._standins = standins
        self._persistent_load = persistent_load
        self.used: set[str] = set()

    def find_class(self, module, name):
        try:
            standin = self._standins[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(f"refused global {module}.{name}") from None
        self.used.add(f"{module}.{name}")
        return standin

    def persistent_load(self, pid):
        if self._persistent_load is None:  # normally refused by the pre-scan already
            raise UnsafePickleError("refused persistent id")
        return self._persistent_load(pid)


def unpickle(data: bytes, standins: Mapping[tuple[str, str], Any], *,
             persistent_load: Callable[[Any], Any] | None = None,
             refused: Mapping[str, str] = REFUSED_OPCODES,
             max_depth: int = MAX_DEPTH) -> tuple[Any, int, tuple[str, ...]]:
    """Pre-scan, then unpickle with the allow-list: (raw object, protocol, globals used).

    The object still holds stand-in results; pass it through ``finish``. Any error other
    than ``UnsafePickleError`` (a stand-in rejecting its arguments, a broken stream) is
    reported as a malformed pickle.
    """
    protocol, _ = prescan(data, refused=refused, max_depth=max_depth)
    unpickler = AllowListUnpickler(io.BytesIO(data), standins, persistent_load)
    try:
        obj = unpickler.load()
    except UnsafePickleError:
        raise
    except RecursionError:
        raise UnsafePickleError("nesting too deep") from None
    except Exception as err:
        raise UnsafePickleError(f"malformed pickle: {type(err).__name__}: {err}") from None
    return obj, protocol, tuple(sorted(unpickler.used))


def finish(obj, resolvers: Mapping[type, Callable[[Any], Any]] | None = None, *,
           leaf_types: tuple[type, ...] = LEAF_TYPES, max_depth: int = MAX_DEPTH):
    """Walk an unpickled object: stand-in results -> values, containers -> plain ones.

    ``resolvers`` maps a stand-in result type (exact type) to the function producing its
    final value. dicts (and dict subclasses) become ``dict``, lists ``list``, tuples
    ``tuple``, and tuples with ``_fields`` (per-load NamedTuple stand-ins) are rebuilt with
    their own type. Anything else, cycles and nesting deeper than ``max_depth`` are refused.
    """
    resolvers = resolvers or {}
    done: dict[int, Any] = {}
    active: set[int] = set()

    def walk(obj, depth: int):
        if depth > max_depth:
            raise UnsafePickleError(f"nesting deeper than {max_depth}")
        resolve = resolvers.get(type(obj))
        if resolve is not None:
            return resolve(obj)
        if isinstance(obj, leaf_types):
            return obj
        key = id(obj)
        if key in done:
            return done[key]
        if key in active:
            raise UnsafePickleError("cyclic structure")
        active.add(key)
        if isinstance(obj, dict):
            result = {walk(k, depth + 1): walk(v, depth + 1) for k, v in obj.items()}
        elif isinstance(obj, (list, tuple)):
            items = [walk(v, depth + 1) for v in obj]
            if isinstance(obj, list):
                result = items
            elif hasattr(obj, "_fields"):
                result = type(obj)(*items)
            else:
                result = tuple(items)
        else:
            raise UnsafePickleError(f"unexpected {type(obj).__name__} object in the file")
        active.discard(key)
        done[key] = result
        return result

    return walk(obj, 0)
