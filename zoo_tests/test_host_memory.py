"""zoo.host_memory: ``import zoo`` keeps freed host memory in the process (glibc), so a
large block freed and allocated again is not faulted in again; ``ZOO_HOST_MEMORY=system``
and a backend started before ``import zoo`` leave glibc's defaults. Each case runs in a
fresh process (the policy is per process)."""

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "late":
    import jax.numpy as jnp
    jnp.ones(2).block_until_ready()  # a backend started before import zoo
import zoo
from zoo import host_memory
a = np.ones(50_000_000)  # 400 MB, faulted in
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(50_000_000)
print(host_memory.in_effect(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the policy is glibc's (Linux); elsewhere it is off")


def _probe(mode: str, **env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_a_freed_block_is_reused_without_page_faults():
    applied, faults = _probe("early")
    assert applied and faults < 20, faults
    applied, faults = _probe("early", ZOO_HOST_MEMORY="system")  # glibc: munmap, mmap again
    assert not applied and faults > 100, faults


def test_too_late_or_a_bad_value_leaves_glibcs_defaults():
    applied, faults = _probe("late")
    assert not applied and faults > 100, faults
    out = subprocess.run([sys.executable, "-c", "import zoo"], capture_output=True, text=True,
                         env={**os.environ, "ZOO_HOST_MEMORY": "lots"}, check=True)
    assert "ZOO_HOST_MEMORY='lots' is not one of retain, system" in out.stderr
