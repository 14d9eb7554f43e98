"""Faults while training and on disk: kills, signals, concurrent trainers, bit flips, and
output folders that belong to someone else.

Every case is a row of a table (what is done -> what must happen). Training runs use the
tiny encoder on a synthetic SST-2 folder; one uninterrupted reference run (module fixture)
is what every interrupted-and-resumed run must equal, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import random
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import zoo
from zoo.checkpoint import IntegrityError
from zoo.cli import main as cli_main
from zoo.fsutil import InUseError, OutputExistsError
from zoo.run import train_run
from zoo.train import ORBAX_TMP, TrainConfig, committed_steps, verify_step_checksums
from zoo_tests.faults_support import (TRAIN, assert_one_error_line, biggest_file, cli_flags,
                                      flip_byte, latest_params, metric_records, run_cli,
                                      snapshot, subprocess_env, write_sst2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Data, private caches, and a persistent jax compilation cache for this module."""
    root = tmp_path_factory.mktemp("faults")
    write_sst2(root / "data")
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    previous = {name: getattr(jax.config, name) for name in names}
    for name, value in zip(names, (str(root / "jax-cache"), 0.0, 0)):
        jax.config.update(name, value)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE_DIR", str(root / "cache"))
        mp.setenv("ZOO_WEIGHTS_DIR", str(root / "weights"))
        yield root
    for name, value in previous.items():
        jax.config.update(name, value)


def _cfg(base: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TRAIN, "data_dir": str(base / "data"), **overrides})


@pytest.fixture(scope="module")
def reference(base):
    """One uninterrupted run, with a user's file right next to it."""
    (base / "ref-parent").mkdir()
    beside = base / "ref-parent" / "notes.txt"
    beside.write_text("mine")
    run = base / "ref-parent" / "run"
    train_run(_cfg(base), run, show_progress=False)
    return run


@pytest.fixture
def env(base):
    return subprocess_env(base)


def _copy_run(reference: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def _assert_same_as_reference(run: Path, reference: Path) -> None:
    assert metric_records(run) == metric_records(reference)
    step_a, a = latest_params(reference)
    step_b, b = latest_params(run)
    assert step_a == step_b == TRAIN["max_steps"]
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_reference_run_is_whole_and_touches_nothing_beside_it(reference):
    assert (reference.parent / "notes.txt").read_text() == "mine"
    leftovers = [p.name for p in (*reference.iterdir(), *reference.parent.iterdir())
                 if ".partial-" in p.name or ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers
    for kind in ("latest", "best"):
        (step,) = committed_steps(reference / "checkpoints" / kind)
        verify_step_checksums(reference / "checkpoints" / kind / str(step))
    manifest = json.loads((reference / "model" / "zoo.json").read_text())
    assert manifest["checksums"] and json.loads((reference / "config.json").read_text())[
        "format"] == "zoo-run/1"


# ------------------------------------------------------------------------ kill and resume

STEP = random.Random(8).randrange(5, TRAIN["max_steps"])  # between two checkpoints, drawn once
KILLS = [
    # id, ZOO_TEST_CRASH_AT, how the folder is restarted (each on its own copy) and the
    # warning that restart gives
    ("first-checkpoint-write", "checkpoint-write:1",
     {"resume": "no completed checkpoint", "fresh": None}),
    (f"step-{STEP}", f"step:{STEP}", {"resume": None}),
    # the best checkpoint of the first evaluation committed, its latest not: a resume starts
    # from step 0 and must write that best step again
    ("between-best-and-latest", "checkpoint-write:2", {"resume": "no completed checkpoint"}),
    ("after-commit-before-checksums", "checksums:2", {"resume": "cannot be verified"}),
]


@pytest.mark.parametrize("crash_at, restarts", [k[1:] for k in KILLS], ids=[k[0] for k in KILLS])
def test_killed_run_restarts_and_ends_as_if_never_killed(base, reference, env, tmp_path,
                                                         crash_at, restarts):
    crashed = tmp_path / "crashed"
    done = run_cli(["train", "--out", str(crashed), *cli_flags(base / "data")],
                   env | {"ZOO_TEST_CRASH_AT": crash_at})
    assert done.returncode == 137, done.stderr.decode()
    committed = committed_steps(crashed / "checkpoints" / "latest")
    if crash_at == "checkpoint-write:1":  # killed inside orbax's first write
        assert not committed and not committed_steps(crashed / "checkpoints" / "best")
        assert any(ORBAX_TMP in p.name for p in (crashed / "checkpoints").rglob("*"))
    elif crash_at.startswith("step:"):
        assert committed and committed[-1] < STEP
    for restart, warning in restarts.items():
        run = tmp_path / restart
        shutil.copytree(crashed, run)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_run(_cfg(base), run, resume=restart == "resume", show_progress=False)
        if warning:
            assert any(warning in str(w.message) for w in caught), [str(w.message)
                                                                    for w in caught]
        _assert_same_as_reference(run, reference)
        assert not any(ORBAX_TMP in p.name for p in (run / "checkpoints").rglob("*"))


def _wait_for(proc: subprocess.Popen, text: bytes, timeout: float = 90) -> bytes:
    """Read the process's stderr until a line holds ``text``; fail on exit or timeout."""
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {text!r}: {seen.decode()}"
        ready, _, _ = select.select([proc.stderr], [], [], left)
        chunk = proc.stderr.readline() if ready else b""
        assert chunk or proc.poll() is None, f"exited {proc.returncode}: {seen.decode()}"
        seen += chunk
    return seen


def test_second_trainer_is_refused_and_sigterm_checkpoints(base, reference, env, tmp_path,
                                                           capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "train", "--out", str(run), *cli_flags(base / "data")],
        env=env | {"ZOO_TEST_PAUSE_AT": "step:6"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        _wait_for(proc, b"paused at step 6")
        in_use = f"in use by another training process (pid {proc.pid})"
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(InUseError, match=rf"\(pid {proc.pid}\)"):
                train_run(_cfg(base), run, show_progress=False, **kwargs)
        assert cli_main(["train", "--out", str(run), "--resume"]) == 2
        assert_one_error_line(capsys.readouterr().err, in_use)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("terminated: the latest checkpoint")
    assert committed_steps(run / "checkpoints" / "latest") == [6]
    verify_step_checksums(run / "checkpoints" / "latest" / "6")
    train_run(_cfg(base), run, resume=True, show_progress=False)
    _assert_same_as_reference(run, reference)


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(base, tmp_path, capsys):
    run = tmp_path / "run"
    # Warm-up starts at rate 0: step 1 is sound, step 2 multiplies by ~1e29.
    flags = cli_flags(base / "data", learning_rate=1e30, eval_every=1, warmup_fraction=0.5)
    assert cli_main(["train", "--out", str(run), *flags]) == 2
    assert_one_error_line(capsys.readouterr().err, "training diverged at step 2",
                          "last good checkpoint (step 1)", "lower --lr")
    step, params = latest_params(run)
    assert step == 1 and all(np.isfinite(v).all() for v in params.values())
    assert not (run / "model").exists()


# ------------------------------------------------------------------------ bit flips

FLIPS = [
    # id, what is corrupted (a folder: its largest file), what is done, the error names it
    ("model-params/load", "model/params", "load"),
    ("model-params/predict", "model/params", "predict"),
    ("model-params/evaluate", "model/params", "evaluate"),
    ("model-params-metadata/load", "model/params/_METADATA", "load"),
    ("model-tokenizer/predict", "model/tokenizer.json", "predict"),
    ("latest-checkpoint/resume", "checkpoints/latest/12", "resume"),
    ("latest-checkpoint-metadata/resume", "checkpoints/latest/12/_CHECKPOINT_METADATA",
     "resume"),
    ("best-checkpoint/resume", "checkpoints/best/*", "resume"),
    ("checkpoint-checksums/resume", "checkpoints/latest/12/zoo_checksums.json", "resume"),
    ("model-params/predict-subprocess", "model/params", "predict-subprocess"),
    ("latest-checkpoint/resume-subprocess", "checkpoints/latest/12", "resume-subprocess"),
]


@pytest.mark.parametrize("target, action", [f[1:] for f in FLIPS], ids=[f[0] for f in FLIPS])
def test_a_flipped_bit_is_refused_naming_the_file(base, reference, env, tmp_path, capsys,
                                                  target, action):
    run = _copy_run(reference, tmp_path)
    (path,) = run.glob(target)
    path = biggest_file(path) if path.is_dir() else path
    flip_byte(path)
    named = "zoo_checksums.json" if "checksums" in target else str(path)
    where = "checkpoints" if "checksums" in target else named  # a flip there may name a sibling
    if action == "load":
        with pytest.raises(IntegrityError) as err:
            zoo.load(str(run))
        assert named in str(err.value)
    elif action == "resume":
        with pytest.raises(IntegrityError) as err:
            train_run(_cfg(base), run, resume=True, show_progress=False)
        assert where in str(err.value)
    elif action in ("predict", "evaluate"):
        args = ["predict", str(run), "a good film"] if action == "predict" else [
            "evaluate", str(run), "--data-dir", str(base / "data")]
        assert cli_main(args) == 2
        assert_one_error_line(capsys.readouterr().err, named)
    else:  # the real command line: one line, no traceback, no orbax noise after it
        args = ["predict", str(run), "a good film"] if action == "predict-subprocess" else [
            "train", "--out", str(run), "--resume", "--quiet"]
        done = run_cli(args, env)
        assert done.returncode == 2 and not done.stdout
        assert_one_error_line(done.stderr, named, "corrupted")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_params_file_is_refused_before_it_is_read(reference, tmp_path, capfd,
                                                               monkeypatch):
    """The manifest records every file's size, compared before orbax reads anything: one
    IntegrityError naming the file, and none of the asyncio noise orbax prints when it reads
    a truncated file (which it did while large files were hashed on the thread)."""
    import gc

    from zoo import checkpoint

    run = _copy_run(reference, tmp_path)
    path = biggest_file(run / "model" / "params")
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    monkeypatch.setattr(checkpoint, "_BACKGROUND_BYTES", 0)  # every file hashed on the thread
    with pytest.raises(IntegrityError, match=r"bytes, recorded \d+: the file is truncated") as err:
        zoo.load(str(run))
    assert str(path) in str(err.value)
    gc.collect()
    assert "Traceback" not in capfd.readouterr().err


# ------------------------------------------------------------------------ output folders


def _user_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious")
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return folder


def _setup(case: str, tmp: Path, reference: Path) -> tuple[Path, list[str]]:
    """Build the folder state of ``case``; return (--out, extra flags)."""
    if case == "user-folder":
        return _user_folder(tmp), []
    if case == "user-folder/overwrite":
        return _user_folder(tmp), ["--overwrite"]
    if case == "user-folder/resume":
        return _user_folder(tmp), ["--resume"]
    if case == "user-file":
        (tmp / "file.txt").write_text("precious")
        return tmp / "file.txt", []
    if case == "foreign-config-json":
        folder = _user_folder(tmp)
        (folder / "config.json").write_text(json.dumps({"hidden_size": 4, "model_type": "bert"}))
        return folder, []
    if case == "dotdot-path":
        _user_folder(tmp)
        (tmp / "x").mkdir()
        return Path(f"{tmp}/x/../mine"), []
    if case == "symlink-to-user-folder":
        (tmp / "link").symlink_to(_user_folder(tmp), target_is_directory=True)
        return tmp / "link", []
    if case == "missing/resume":
        return tmp / "nothing-here", ["--resume"]
    run = tmp / "run"
    shutil.copytree(reference, run)
    if case == "existing-run":
        return run, []
    if case == "run-model-is-user-folder/overwrite":
        shutil.rmtree(run / "model")
        (run / "model").mkdir()
        (run / "model" / "notes.txt").write_text("precious")
        return run, ["--overwrite"]
    if case == "weights-inside-out/overwrite":
        return run, ["--overwrite", "--weights", str(run / "model")]
    if case == "broken-run-config":
        (run / "config.json").write_text("{not json")
        return run, ["--resume"]
    raise AssertionError(case)


REFUSED = [
    # id, the folder --out names (see _setup), the words of the one-line error
    ("user-folder", "is not empty and is not a zoo run"),
    ("user-folder/overwrite", "is not empty and is not a zoo run"),
    ("user-folder/resume", "is not empty and is not a zoo run"),
    ("user-file", "exists and is not a folder"),
    ("foreign-config-json", "is not empty and is not a zoo run"),
    ("dotdot-path", "is not empty and is not a zoo run"),
    ("symlink-to-user-folder", "is not empty and is not a zoo run"),
    ("missing/resume", "does not exist"),
    ("existing-run", "pass --resume to continue it, --overwrite to replace it"),
    ("run-model-is-user-folder/overwrite", "is not a zoo model directory"),
    ("weights-inside-out/overwrite", "lies inside the run files"),
    ("broken-run-config", "config.json: not valid JSON"),
]


@pytest.mark.parametrize("case, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_train_refuses_an_out_it_must_not_write(base, reference, tmp_path, capsys, case,
                                                message):
    out, extra = _setup(case, tmp_path, reference)
    before = snapshot(tmp_path)
    assert cli_main(["train", "--out", str(out), *cli_flags(base / "data"), *extra]) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    assert snapshot(tmp_path) == before  # not a byte changed, not a file added (no .lock)


def test_overwrite_replaces_only_the_runs_own_files(base, reference, tmp_path):
    run = _copy_run(reference, tmp_path)
    (run / "my-notes.txt").write_text("precious")
    (run / "metrics.jsonl").write_text('{"step": 99, "split": "dev", "accuracy": 1}\n')
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train_run(_cfg(base), run, show_progress=False)
    train_run(_cfg(base), run, show_progress=False, overwrite=True)
    assert (run / "my-notes.txt").read_text() == "precious"
    _assert_same_as_reference(run, reference)  # the old metrics did not survive to mix in


BASELINE = [
    # id, state of --out, flags, expected exit status, error words
    ("new", "absent", [], 0, None),
    ("user-folder", "user", [], 2, "is not a baseline report folder"),
    ("user-folder/overwrite", "user", ["--overwrite"], 2, "is not a baseline report folder"),
    ("earlier-output", "baseline", [], 2, "pass --overwrite"),
    ("earlier-output/overwrite", "baseline", ["--overwrite"], 0, None),
    ("earlier-output-with-user-file/overwrite", "baseline+user", ["--overwrite"], 2,
     "is not a baseline report folder"),
]


@pytest.mark.parametrize("state, flags, status, message", [b[1:] for b in BASELINE],
                         ids=[b[0] for b in BASELINE])
def test_baseline_out(base, tmp_path, capsys, state, flags, status, message):
    (tmp_path / "beside.txt").write_text("precious")
    out = tmp_path / "out"
    if state == "user":
        out = _user_folder(tmp_path)
    elif state.startswith("baseline"):
        assert cli_main(["baseline", "--data-dir", str(base / "data"), "--out", str(out)]) == 0
        if state.endswith("+user"):
            (out / "notes.txt").write_text("precious")
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert cli_main(["baseline", "--data-dir", str(base / "data"), "--out", str(out),
                     *flags]) == status
    if status:
        assert_one_error_line(capsys.readouterr().err, message)
        assert snapshot(tmp_path) == before
    else:
        assert json.loads((out / "baseline.json").read_text())["model"] == "tfidf-logreg"
        assert (tmp_path / "beside.txt").read_text() == "precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt", "out"]


def test_bench_refuses_a_user_folder_before_measuring(tmp_path, capsys):
    from benchmarks import bench

    folder = _user_folder(tmp_path)
    before = snapshot(tmp_path)
    assert bench.main(["--quick", "--out", str(folder)]) == 2
    # the only line: bench logs "[bench ...]" lines on stderr once it starts measuring
    assert_one_error_line(capsys.readouterr().err, "is not a benchmark output folder")
    assert snapshot(tmp_path) == before


def test_config_is_recorded_as_resolved(reference):
    saved = json.loads((reference / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(saved) == fields | {"format"} and saved["learning_rate"] == TRAIN["learning_rate"]
