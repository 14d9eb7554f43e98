"""Host memory that XLA frees stays in the process (glibc's malloc), so a training step does
not fault in its temporaries again every time.

Why: XLA's CPU runtime allocates one block for a program's temporaries per execution and
frees it after. For a train step that block is large (2.6 GB for ModernBERT-base at 32 x 64
tokens, 2.0 GB for RoBERTa-base), so glibc serves it with ``mmap`` and returns it with
``munmap``, and the kernel zeroes and faults in every page again on the next step: 480,000 to
640,000 page faults and about a second of system time per step on a 2-core EPYC. Kept in the
heap instead, the block is reused: RoBERTa-base's step took 5.6-5.7 s instead of 6.17 s,
ModernBERT-base's 7.9 s instead of 8.2 s alone and instead of 10 s with another process
running between steps (measured in ``benchmarks/results/families-cpu.md``). ``predict`` is
not affected (its blocks are small).

How: ``mallopt`` before the first computation starts XLA's threads: one arena for every
thread (``M_ARENA_MAX`` 1: other threads' arenas would still ``mmap`` large blocks), no
``mmap`` for large blocks (``M_MMAP_MAX`` 0) and no trimming of the heap's free top
(``M_TRIM_THRESHOLD`` unlimited). The cost: the process keeps its peak heap (its resident
memory does not shrink after a large step), as allocators such as jemalloc do by default.

``import zoo`` calls :func:`retain_freed_memory` once; it does nothing when jax has already
started a backend (too late: XLA's threads have their arenas), off glibc (macOS, musl,
Windows), or with ``ZOO_HOST_MEMORY=system`` in the environment (another value: a warning,
and glibc's defaults).
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "ZOO_HOST_MEMORY"  # "retain" (the default) or "system" (glibc's own defaults)
CHOICES = ("retain", "system")
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8

_applied: bool | None = None  # None: not tried yet


def _glibc():
    """The C library when it is glibc (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # musl and others have no gnu_get_libc_version
        return None
    version.restype = ctypes.c_char_p
    return libc


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - jax is a dependency
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else bool(getattr(xla_bridge, "_backends", {}))


def retain_freed_memory() -> bool:
    """Apply the policy above once per process; returns whether it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get(ENV, "retain").strip().lower() or "retain"
    if choice not in CHOICES:
        import warnings

        warnings.warn(f"{ENV}={os.environ[ENV]!r} is not one of {', '.join(CHOICES)}: glibc's "
                      "defaults are kept", RuntimeWarning, stacklevel=2)
        choice = "system"
    libc = _glibc() if choice == "retain" else None
    if libc is None or _backend_started():
        _applied = False
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))  # -1: no limit
    _applied = ok
    return ok


def in_effect() -> bool:
    """Whether this process runs with freed memory retained (False before the first call)."""
    return bool(_applied)
