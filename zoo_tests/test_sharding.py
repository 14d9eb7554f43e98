"""Sharded training on simulated devices: SPMD steps, collectives, meshes, checkpoints moved
between device counts, and two processes on localhost.

jax fixes its device count at start-up, so everything with several devices runs in
subprocesses (``XLA_FLAGS=--xla_force_host_platform_device_count=N``): one per device
configuration, each computing several results (``zoo_tests/sharding_worker.py``, or the
command line). The module starts the independent ones at once in the background (the
``jobs`` fixture) and the tests read what they wrote; the fast in-process checks come first
and run meanwhile.

Subprocesses compile with ``--xla_backend_optimization_level=0``: it halves XLA's compile
time here and changes nothing the tests look at (SPMD partitioning and the collectives it
inserts happen in XLA's HLO passes, before the backend; both sides of every comparison use
the same flags).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import zoo
from zoo import checkpoint, sharding
from zoo.cli import main as cli_main
from zoo.errors import InvalidArgumentError
from zoo_tests.faults_support import (ROOT, TRAIN, assert_one_error_line, cli_flags,
                                      metric_records, subprocess_env, write_sst2)

FAST_XLA = "--xla_backend_optimization_level=0"
CRASH_STEP = 6  # TRAIN evaluates (and checkpoints) every 4 steps: killed after step 4's save
TIMEOUT = 240
SGD = {"optimizer": "sgd"}
FAMILIES = ["m2l", "bert", "roberta", "deberta_v2", "modernbert"]  # sharding_worker.build


# ------------------------------------------------------------------------------ background jobs


def tail(text: str | bytes, lines: int = 25) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Jobs:
    """The module's subprocesses, each started from a thread so that independent ones overlap.

    ``result(name)`` waits for a job and returns its value, or raises its failure (with the
    stderr tail of the subprocess that failed) in every test that needs it.
    """

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.futures: dict[str, Future] = {}
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.closed = False

    def env(self, devices: int, **extra: str) -> dict[str, str]:
        env = subprocess_env(self.base, **extra)
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_XLA}"
        return env

    def popen(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        """``python ARGS`` with stdout and stderr in files (pipes could fill and block)."""
        logs = self.base / "logs"
        logs.mkdir(exist_ok=True)
        with self.lock:
            if self.closed:
                raise RuntimeError("the module is tearing down")
            with open(logs / f"{log}.out", "wb") as out, open(logs / f"{log}.err", "wb") as err:
                proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT,
                                        stdout=out, stderr=err)
            proc.logs = (logs / f"{log}.out", logs / f"{log}.err")
            self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> tuple[str, str]:
        return tuple(path.read_text(encoding="utf-8", errors="replace") for path in proc.logs)

    def run(self, args: list[str], env: dict[str, str], what: str, expect: int = 0
            ) -> tuple[str, str]:
        proc = self.popen(args, env, re.sub(r"[^A-Za-z0-9]+", "-", what).strip("-"))
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{what}: no result in {TIMEOUT} s\n"
                                 f"{tail(self.output(proc)[1])}") from None
        out, err = self.output(proc)
        if proc.returncode != expect:
            raise AssertionError(f"{what}: exit status {proc.returncode} (expected {expect})\n"
                                 f"{tail(err)}")
        return out, err

    def start(self, name: str, fn, *deps: str) -> None:
        if name in self.futures:
            return
        self.futures[name] = self.pool.submit(self._after, deps, fn)

    def _after(self, deps, fn):
        for dep in deps:
            self.futures[dep].result()
        return fn()

    def result(self, name: str):
        return self.futures[name].result()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- the jobs ------------------------------------------------------------------

    def spmd(self) -> tuple[dict, dict]:
        """Tests 1-3 and the batch-size check, computed on 8 devices."""
        out = self.base / "spmd"
        out.mkdir()
        self.run(["-m", "zoo_tests.sharding_worker", "spmd", str(out), str(self.data)],
                 self.env(8), "spmd worker (8 devices)")
        with np.load(out / "params.npz") as params:
            arrays = dict(params)
        return json.loads((out / "results.json").read_text()), arrays

    def eight(self) -> dict[str, Path]:
        """An uninterrupted 8-device run, and one killed at step ``CRASH_STEP``."""
        flags = ["train", *cli_flags(self.data, **SGD), "--mesh", "data=8"]
        ref, crashed = self.base / "ref-8", self.base / "crashed-8"
        self.run(["-m", "zoo", *flags, "--out", str(ref)], self.env(8), "8-device run")
        self.run(["-m", "zoo", *flags, "--out", str(crashed)],
                 self.env(8, ZOO_TEST_CRASH_AT=f"step:{CRASH_STEP}"), "8-device run killed at "
                 f"step {CRASH_STEP}", expect=137)
        return {"ref": ref, "crashed": crashed}

    def resumed(self) -> dict:
        """The killed run resumed on 4 devices (worker) and on 1 (command line), at once."""
        crashed = self.result("eight")["crashed"]
        out4, run1 = self.base / "four", self.base / "resumed-1"
        out4.mkdir()
        shutil.copytree(crashed, run1)
        one = self.pool.submit(self.run, ["-m", "zoo", "train", "--out", str(run1), "--resume",
                                          "--quiet", "--mesh", "data=1"],
                               self.env(1), "resume on 1 device")
        self.run(["-m", "zoo_tests.sharding_worker", "four", str(out4), str(self.data),
                  str(crashed)], self.env(4), "4-device worker")
        one.result()
        return {"four": json.loads((out4 / "results.json").read_text()), "four_dir": out4,
                "resumed-4": out4 / "resumed-4", "resumed-1": run1,
                "one-process-4": out4 / "one-process-4"}

    def two_processes(self) -> dict:
        """``--distributed``: 2 processes x 2 devices, ``--mesh data=4``, on localhost."""
        run = self.base / "two-processes"
        port = free_port()
        args = ["-m", "zoo", "train", *cli_flags(self.data, **SGD), "--mesh", "data=4",
                "--distributed", "--out", str(run)]
        procs = [self.popen(args, self.env(2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                           JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
                            f"process-{i}") for i in range(2)]
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):  # the other would wait forever
                deadline = min(deadline, time.monotonic() + 15)
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                p.kill()
        outputs = [(p.wait(), *self.output(p)) for p in procs]
        if any(rc != 0 for rc, _, _ in outputs):
            raise AssertionError("two-process run failed:\n" + "\n".join(
                f"--- process {i}: exit status {rc}\n{tail(err)}"
                for i, (rc, _, err) in enumerate(outputs)))
        # gloo announces its connections on stdout, from its own threads, at start-up, so one
        # announcement can come split over several lines ("[Gloo] Rank 1 is connected to " /
        # "3" / " peer ranks..."); the zoo's output is the summary JSON that follows them
        def zoo_output(out: str) -> str:
            lines = out.splitlines()
            start = next((i for i, line in enumerate(lines) if line.startswith("{")),
                         len(lines))
            return "\n".join(lines[start:])

        stdout = [zoo_output(out) for _, out, _ in outputs]
        return {"run": run, "stdout": stdout}


JOBS = {  # fixture -> (job, its function, the jobs it waits for)
    "spmd": [("spmd", Jobs.spmd, ())],
    "eight": [("eight", Jobs.eight, ())],
    "resumed": [("eight", Jobs.eight, ()), ("resumed", Jobs.resumed, ("eight",))],
    "two_processes": [("eight", Jobs.eight, ()), ("resumed", Jobs.resumed, ("eight",)),
                      ("two", Jobs.two_processes, ())],
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Data and private caches (this process's too: the CLI tests here train in-process)."""
    root = tmp_path_factory.mktemp("sharding")
    write_sst2(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE_DIR", str(root / "cache"))
        mp.setenv("ZOO_WEIGHTS_DIR", str(root / "weights"))
        yield root


@pytest.fixture(scope="module", autouse=True)
def jobs(request, base):
    """Starts, in the background, the jobs that this module's selected tests need."""
    jobs = Jobs(base)
    wanted = set()
    for item in request.session.items:
        if item.module is request.module:
            wanted |= set(getattr(item, "fixturenames", ()))
    for fixture, chain in JOBS.items():
        if fixture in wanted:
            for name, fn, deps in chain:
                jobs.start(name, lambda fn=fn: fn(jobs), *deps)
    yield jobs
    jobs.close()


@pytest.fixture(scope="module")
def spmd(jobs):
    return jobs.result("spmd")


@pytest.fixture(scope="module")
def eight(jobs):
    return jobs.result("eight")


@pytest.fixture(scope="module")
def resumed(jobs):
    return jobs.result("resumed")


@pytest.fixture(scope="module")
def two_processes(jobs, resumed):
    return jobs.result("two") | {"reference": resumed["one-process-4"]}


# ------------------------------------------------------------------------------ helpers


def saved_state(run_dir: Path, kind: str = "latest") -> tuple[int, dict[str, np.ndarray]]:
    """(step, {path: array}) of a run's checkpoint, whatever device count wrote it."""
    folder = run_dir / "checkpoints" / kind
    step = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as reader:
        meta = reader.metadata(folder / str(step) / "state")
        meta = getattr(meta, "item_metadata", meta)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                                             sharding=one), meta)
        tree = reader.restore(folder / str(step) / "state", target)
    return step, {k: np.asarray(v) for k, v in checkpoint.flatten(tree).items()}


def exported_params(run_dir: Path) -> dict[str, np.ndarray]:
    model = zoo.load(str(run_dir))
    return {k: np.asarray(v) for k, v in checkpoint.module_params(model).items()}


def assert_close_trees(got: dict, want: dict, atol: float, what: str) -> None:
    assert got.keys() == want.keys(), (what, sorted(set(got) ^ set(want))[:5])
    worst = max(want, key=lambda k: float(np.abs(got[k] - want[k]).max()))
    diff = float(np.abs(got[worst] - want[worst]).max())
    assert diff <= atol, f"{what}: {worst} differs by {diff:.3g} (> {atol})"


def assert_same_metrics(got: list[dict], want: list[dict], atol: float = 1e-5) -> None:
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys(), (a, b)
        for key in a:
            if isinstance(b[key], float):
                assert abs(a[key] - b[key]) <= atol, (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)


# ------------------------------------------------------------------------------ 6. errors
# (first: the in-process ones are fast and run while the background jobs compile)


def test_mesh_larger_than_the_devices_names_the_flag():
    n = jax.device_count() + 2
    with pytest.raises(InvalidArgumentError, match=f"--mesh data={n}.*device"):
        sharding.make_mesh(f"data={n}")
    with pytest.raises(InvalidArgumentError, match="--mesh"):
        sharding.make_mesh("data=1,model=2", devices=jax.devices()[:1])


@pytest.mark.parametrize("spec", ["data=x", "rows=2", "data=0", "data=2,data=2", "data",
                                  "data=-1", "model=2,"])
def test_malformed_mesh_is_refused(spec):
    with pytest.raises(InvalidArgumentError, match="--mesh.*data=N"):
        sharding.parse_mesh(spec)


def test_mesh_specs_parse():
    assert sharding.parse_mesh("data=4,model=2") == sharding.MeshConfig(4, 2)
    assert sharding.parse_mesh(" model=2 ") == sharding.MeshConfig(None, 2)
    assert sharding.parse_mesh(None) == sharding.parse_mesh("") == sharding.MeshConfig()
    assert sharding.MeshConfig(None, 2).sizes(8) == (4, 2)


def test_cli_bad_mesh_exits_2_with_one_line(base, tmp_path, capsys):
    rc = cli_main(["train", *cli_flags(base / "data"), "--mesh", "rows=2",
                   "--out", str(tmp_path / "run")])
    assert rc == 2
    assert_one_error_line(capsys.readouterr().err, "--mesh", "rows=2")
    assert not (tmp_path / "run").exists()


def test_cli_batch_not_divisible_by_the_data_axis_names_batch_size(spmd):
    result = spmd[0]["cli"]["batch_size"]  # 12 rows on --mesh data=8, 8 devices
    assert result["rc"] == 2, result
    assert_one_error_line(result["stderr"], "--batch-size 12", "data axis", "(8)")


def test_cli_mesh_of_more_devices_than_jax_sees_exits_2(spmd):
    result = spmd[0]["cli"]["mesh"]  # --mesh data=16, 8 devices
    assert result["rc"] == 2, result
    assert_one_error_line(result["stderr"], "--mesh data=16", "8 device(s)")


# ------------------------------------------------------------------------------ 1. SPMD steps


@pytest.mark.parametrize("mesh", ["data=8", "data=4,model=2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_sgd_steps_equal_single_device_steps(spmd, family, mesh):
    results, params = spmd
    one, many = results["train"][f"{family}|1|sgd"], results["train"][f"{family}|{mesh}|sgd"]
    assert one["devices"] == [1] and many["devices"] == [8]
    if "model" in mesh:  # the model axis really splits parameters
        # the word embeddings and four kernels per layer at least (ModernBERT has no biases)
        assert len(many["split_params"]) >= 9, many["split_params"]
    else:
        assert many["split_params"] == []
    # dropout was active: the training loss of step 1 is not the deterministic one
    assert abs(one["losses"][0] - one["eval_loss"]) > 1e-3, one
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=0, atol=1e-6)
    prefix = {name: f"{family}|{name}|" for name in ("1", mesh)}
    want = {k[len(prefix["1"]):]: v for k, v in params.items() if k.startswith(prefix["1"])}
    got = {k[len(prefix[mesh]):]: v for k, v in params.items() if k.startswith(prefix[mesh])}
    assert len(want) > 10
    assert_close_trees(got, want, 1e-5, f"{family} after 3 steps on {mesh}")
    assert one["moved"] > 1e-3  # the steps did train


def test_sharded_adam_losses_equal_single_device_losses(spmd):
    train = spmd[0]["train"]
    one, many = train["m2l|1|adam"], train["m2l|data=8|adam"]
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=0, atol=1e-5)
    assert one["losses"] != train["m2l|1|sgd"]["losses"]


# ------------------------------------------------------------------------------ 2. collectives


@pytest.mark.parametrize("family", FAMILIES)
def test_data_parallel_step_communicates_only_gradients(spmd, family):
    ops = dict(spmd[0]["train"][f"{family}|data=8|sgd"]["collectives"])
    assert ops.pop("all-reduce", 0) >= 1, ops  # the gradients (and the loss and metrics)
    assert ops == {}, f"data-parallel step has other collectives: {ops}"
    assert spmd[0]["train"][f"{family}|1|sgd"]["collectives"] == {}


def test_dropout_on_a_batch_sharded_input_is_sharding_invariant(spmd):
    result = spmd[0]["dropout"]
    assert result["identical"], "dropout draws depend on the sharding"
    assert result["out_spec"].startswith("P('data'")
    assert result["collectives"] == {}, result["collectives"]
    assert abs(result["dropped_fraction"] - 0.3) < 0.02


# ------------------------------------------------------------------------------ 3. meshes


FORWARDS = [f"{kind}/{what}/{how}" for kind in ("explicit", "auto")
            for what in ("embeddings", "forward") for how in ("eager", "jit")
            if (kind, what, how) != ("auto", "forward", "eager")]  # eager: as jit under auto


@pytest.mark.parametrize("case", FORWARDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_under_a_mesh_equals_the_unsharded_forward(spmd, family, case):
    kind, what, how = case.split("/")
    result = spmd[0]["forward"][f"{family}/{kind}/{what}/{how}"]
    assert "error" not in result, f"{family} {what} ({how}) under an {kind} mesh: " \
                                  f"{result.get('error')}"
    assert result["diff"] <= 1e-5, result
    assert result["spec"].startswith("P('data'"), result  # stays batch-sharded


# ------------------------------------------------------------------------------ 4. checkpoints


def test_killed_8_device_run_left_a_mid_run_checkpoint(eight):
    step, _ = saved_state(eight["crashed"])
    assert step == 4 < CRASH_STEP
    assert {r["step"] for r in metric_records(eight["crashed"])} == {4}
    assert not (eight["crashed"] / "model").exists()


@pytest.mark.parametrize("devices", [4, 1])
def test_8_device_checkpoint_resumes_on_fewer_devices(eight, resumed, devices):
    run, ref = resumed[f"resumed-{devices}"], eight["ref"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["devices"].startswith(f"{devices} x cpu (1 process(es)"), summary["devices"]
    assert json.loads((ref / "summary.json").read_text())["devices"].startswith("8 x cpu")
    assert summary["steps"] == TRAIN["max_steps"]
    assert_close_trees(exported_params(run), exported_params(ref), 1e-5,
                       f"export resumed on {devices}")
    step, got = saved_state(run)
    ref_step, want = saved_state(ref)
    assert step == ref_step == TRAIN["max_steps"]
    assert_close_trees(got, want, 1e-5, f"latest checkpoint resumed on {devices}")
    assert_same_metrics(metric_records(run), metric_records(ref))


def test_trainer_restore_on_4_devices_gives_the_saved_values(eight, resumed):
    four = resumed["four"]
    assert four["restored_step"] == 4
    assert set(four["restored_devices"].values()) == {4}, four["restored_devices"]
    assert all(m == {"data": 4, "model": 1} for m in four["restored_mesh"].values())
    _, saved = saved_state(eight["crashed"])
    with np.load(resumed["four_dir"] / "restored.npz") as restored:
        restored = dict(restored)
    assert restored.keys() == {k for k in saved if not k.startswith("train_metrics")}
    for key, value in restored.items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)


# ------------------------------------------------------------------------------ 5. two processes


def test_two_processes_train_like_one_process_with_as_many_devices(two_processes):
    run, ref = two_processes["run"], two_processes["reference"]
    summary = json.loads((run / "summary.json").read_text())
    assert "(2 process(es), mesh {'data': 4, 'model': 1})" in summary["devices"], summary
    assert "(1 process(es), mesh {'data': 4" in json.loads(
        (ref / "summary.json").read_text())["devices"]
    assert_close_trees(exported_params(run), exported_params(ref), 1e-5, "two-process export")
    records = metric_records(run)
    written = [(r["step"], r["split"]) for r in records]
    assert len(written) == len(set(written)), written  # one process wrote each record once
    assert {step for step, _ in written} == {4, 8, 10, 12}  # every 4 steps, the epoch's end
    assert_same_metrics(records, metric_records(ref))
    # process 0 alone wrote files and printed the summary
    assert sorted(p.name for p in run.glob("metrics*")) == ["metrics.jsonl"]
    first, second = two_processes["stdout"]
    assert json.loads(first)["steps"] == TRAIN["max_steps"]
    assert second.strip() == ""
