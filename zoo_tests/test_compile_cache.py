"""``python -m zoo`` keeps XLA's compiled programs in ``$ZOO_CACHE_DIR/xla``
(``zoo.compile_cache``): a second command loads them and gives the same outputs; off, or
with a cache of the user's own, or an unwritable folder, it stays out of the way."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo import compile_cache
from zoo_tests import bert_reference as br

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["A man is eating food.", "The girl is carrying a baby.",
         "Stock markets fell sharply on Monday after the central bank raised rates again."]


def _embed(tmp_path, name: str, stderr: list | None = None, **env) -> np.ndarray:
    out = tmp_path / f"{name}.npy"
    environ = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "zoo", "embed", str(br.minilm_folder()), *TEXTS, "--out",
         str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=environ | {"JAX_PLATFORMS": "cpu"} | env)
    assert done.returncode == 0, done.stderr
    if stderr is not None:
        stderr.append(done.stderr)
    return np.load(out)


def test_the_command_line_reuses_compiled_programs(tmp_path):
    cache = tmp_path / "cache"
    first = _embed(tmp_path, "first", ZOO_CACHE_DIR=str(cache))
    entries = sorted(p.name for p in (cache / "xla").iterdir())
    assert any("cache" in name for name in entries), entries  # the forward's program
    second = _embed(tmp_path, "second", ZOO_CACHE_DIR=str(cache))
    np.testing.assert_array_equal(second, first)
    assert sorted(p.name for p in (cache / "xla").iterdir()) == entries  # loaded, not redone
    off = tmp_path / "off"
    np.testing.assert_array_equal(
        _embed(tmp_path, "off", ZOO_CACHE_DIR=str(off), ZOO_COMPILATION_CACHE="off"), first)
    assert not (off / "xla").exists()
    errors: list = []  # a mistake in the setting: one line, and the cache stays on
    np.testing.assert_array_equal(_embed(tmp_path, "bad", errors, ZOO_CACHE_DIR=str(cache),
                                         ZOO_COMPILATION_CACHE="sometimes"), first)
    assert ("warning: ZOO_COMPILATION_CACHE='sometimes': expected on or off; the compilation "
            "cache stays on\n") in errors[0] and "RuntimeWarning" not in errors[0]


@pytest.fixture
def config_updates(monkeypatch):
    """jax.config.update recorded, not applied (the test process keeps its configuration)."""
    calls = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: calls.__setitem__(name, value))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    return calls


def test_the_cache_stays_out_of_the_way(tmp_path, monkeypatch, config_updates):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo"))
    assert compile_cache.use_compilation_cache() == tmp_path / "zoo" / "xla"
    assert config_updates == {"jax_compilation_cache_dir": str(tmp_path / "zoo" / "xla"),
                              "jax_persistent_cache_min_compile_time_secs": 0.2,
                              "jax_compilation_cache_max_size": 2 << 30}
    config_updates.clear()
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.use_compilation_cache() is None and not config_updates
    monkeypatch.setenv(compile_cache.ENV, "on")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.use_compilation_cache() is None and not config_updates
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "file"))
    with pytest.warns(RuntimeWarning, match="compiled programs are not cached between runs .*"
                      "set ZOO_CACHE_DIR to a writable folder or ZOO_COMPILATION_CACHE=off"):
        assert compile_cache.use_compilation_cache() is None
    assert not config_updates
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv(compile_cache.ENV, "sometimes")
    with pytest.warns(RuntimeWarning, match="ZOO_COMPILATION_CACHE='sometimes': expected on "
                      "or off"):
        assert compile_cache.use_compilation_cache() == tmp_path / "zoo" / "xla"
