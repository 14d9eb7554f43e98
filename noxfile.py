"""Sessions: `nox -s tests` (the suite), `nox -s sst2` (the main experiment), `nox -s bench`."""

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
SHARED_SST2 = ROOT.parent / "shared" / "data" / "SST-2"


def _env() -> dict:
    env = {"ZOO_SST2_DIR": os.environ.get("ZOO_SST2_DIR", str(SHARED_SST2))}
    env.setdefault("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    return env


@nox.session
def tests(session):
    """The test suite (CPU, a few minutes)."""
    session.install(".[test]")
    session.run("pytest", *(session.posargs or ["-q"]), env=_env())


@nox.session
def sst2(session):
    """The main job: baseline, random init, published and own pre-training on SST-2, one table."""
    session.install(".")
    session.run("python", "-m", "zoo.experiment", *session.posargs, env=_env())


@nox.session
def bench(session):
    """The benchmark of issue #4: Haiku original vs zoo (`-- --quick` for a fast smoke run)."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks.bench", *session.posargs, env=_env())
