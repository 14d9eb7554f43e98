"""XLA's compiled programs kept on disk between runs of the command line.

The zoo compiles one program per padded shape: a first ``python -m zoo predict`` over the
SST-2 dev set spends most of its 10 s compiling 10 shapes, and every later command would
compile them again. ``python -m zoo`` therefore turns on jax's persistent compilation cache
in ``$ZOO_CACHE_DIR/xla`` (default ``~/.cache/zoo/xla``), keeping programs that took at
least ``MIN_COMPILE_S`` to compile, the least recently used dropped beyond ``MAX_BYTES``
(when the ``filelock`` package is there, as huggingface_hub and datasets require). jax keys
each entry on the program, its compile options, the jax/jaxlib versions and the device, so
a stale entry is never used.

Only the command line does this (``zoo.cli.main(compile_cache=True)``, which makes its
warnings one line): ``import zoo`` leaves jax's configuration to the program that imports
it, which can call :func:`use_compilation_cache` itself. ``ZOO_COMPILATION_CACHE=off`` turns
it off; a ``JAX_COMPILATION_CACHE_DIR`` (or a cache jax already has) is left as it is; a
cache folder that cannot be created is skipped with a warning.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

from zoo.hub import cache_root

ENV = "ZOO_COMPILATION_CACHE"
MIN_COMPILE_S = 0.2  # all-MiniLM-L6-v2's shapes compile in 0.3-0.9 s; jax's default is 1 s
MAX_BYTES = 2 << 30


def cache_dir() -> Path:
    return cache_root() / "xla"


def use_compilation_cache() -> Path | None:
    """Turn jax's persistent compilation cache on in ``cache_dir()`` (see the module);
    returns the folder, or None when it stays off."""
    setting = os.environ.get(ENV, "on").strip().lower()
    if setting in ("off", "0", "false", "no"):
        return None
    if setting not in ("on", "1", "true", "yes", ""):
        warnings.warn(f"{ENV}={os.environ[ENV]!r}: expected on or off; the compilation cache "
                      "stays on", RuntimeWarning, stacklevel=2)
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return None  # the user's own cache stands
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder}: not writable")
    except OSError as err:
        warnings.warn(f"compiled programs are not cached between runs ({err}); set "
                      f"ZOO_CACHE_DIR to a writable folder or {ENV}=off", RuntimeWarning,
                      stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    # jax evicts old entries under a file lock, through filelock (which huggingface_hub and
    # datasets require); without it, a size limit would fail the first compile
    if importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return folder
