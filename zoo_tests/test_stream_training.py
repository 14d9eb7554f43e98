"""``pretrain --stream``: a streamed corpus trains like any run, and a killed run resumes at
the exact example (same metrics and parameters as an uninterrupted run)."""

import json

import numpy as np
import pytest

from zoo_tests.faults_support import (assert_one_error_line, latest_params, metric_records,
                                      run_cli, subprocess_env, write_sst2)

FLAGS = ["--model", "encoder-m2l-tiny", "--batch-size", "16", "--max-len", "32",
         "--max-steps", "10", "--eval-every", "4", "--lr", "3e-3", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("stream")
    data = write_sst2(base / "sst2")
    lines = [row.split("\t")[0] for row in (data / "train.tsv").read_text().splitlines()[1:]]
    text = base / "corpus.txt"
    text.write_text("\n\n".join(lines * 3) + "\n", encoding="utf-8")  # blank lines between
    return base, data, text


def _pretrain(base, data, text, out, **env):
    return run_cli(["pretrain", *FLAGS, "--data-dir", str(data), "--stream", str(text),
                    "--out", str(out)], subprocess_env(base, **env), timeout=240)


def test_killed_streamed_run_resumes_at_the_same_example(corpus):
    base, data, text = corpus
    whole = _pretrain(base, data, text, base / "whole")
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    summary = json.loads(whole.stdout)
    assert summary["steps"] == 10 and summary["head"] == "mlm"
    assert summary["epochs"] == pytest.approx(10 / 30, abs=1e-3)  # 480 lines, batches of 16

    killed = _pretrain(base, data, text, base / "killed", ZOO_TEST_CRASH_AT="step:7")
    assert killed.returncode == 137
    resumed = run_cli(["pretrain", *FLAGS, "--data-dir", str(data), "--stream", str(text),
                       "--out", str(base / "killed"), "--resume"], subprocess_env(base),
                      timeout=240)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert metric_records(base / "killed") == metric_records(base / "whole")
    step_a, a = latest_params(base / "whole")
    step_b, b = latest_params(base / "killed")
    assert step_a == step_b == 10
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def test_stream_errors_are_one_line(corpus, tmp_path):
    base, data, text = corpus
    missing = run_cli(["pretrain", *FLAGS, "--data-dir", str(data), "--stream",
                       str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r")],
                      subprocess_env(base))
    assert missing.returncode == 2
    assert_one_error_line(missing.stderr, "nope.txt")
    both = run_cli(["pretrain", *FLAGS, "--data-dir", str(data), "--stream", str(text),
                    "--text-file", str(text), "--out", str(tmp_path / "r")], subprocess_env(base))
    assert both.returncode == 2
    assert_one_error_line(both.stderr, "--stream")
    assert not (tmp_path / "r").exists()
