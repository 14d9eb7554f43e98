"""Mistakes a user can fix, refused up front with one line: counts beyond what fits memory,
an incomplete HF folder, and a run replaced with --overwrite keeps its old model readable
until the new one is written."""

import numpy as np
import pytest

import zoo
from zoo.cli import main as cli_main

from zoo_tests.sst2_files import write_slice

pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py


@pytest.mark.parametrize("argv, message", [
    (["distill", "--teacher", "t", "--out", "o", "--augment", "1000000000"],
     "--augment must be an integer in [0, 100]"),
    (["train", "--out", "o", "--batch-size", "100000000"], "--batch-size must be an integer in"),
    (["train", "--out", "o", "--vocab-size", "99999999"], "--vocab-size must be an integer in"),
    (["train", "--out", "o", "--dataset", "glue/nope"], "unknown GLUE task"),
    (["train", "--out", "o", "--train-file", "a.csv"], "needs --train-file and --validation-file"),
])
def test_bad_counts_and_names_are_refused_before_any_work(argv, message, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_hf_folder_without_config_names_what_it_lacks(tmp_path, capsys):
    from convert.hf_to_flax import main as convert_main

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "vocab.txt").write_text("[PAD]\n")
    assert convert_main([str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a complete HuggingFace checkpoint" in err
    assert "config.json" in err and "model.safetensors" in err and "Errno" not in err


def test_overwrite_keeps_the_old_model_until_the_new_one_replaces_it(tmp_path, monkeypatch):
    from zoo.run import train_run
    from zoo.train import TrainConfig, Trainer

    (tmp_path / "sst2").mkdir()
    data = write_slice(tmp_path / "sst2", 200, 40, 5)
    run = tmp_path / "run"
    cfg = TrainConfig(model="encoder-m2l-tiny", data_dir=str(data), batch_size=16, max_len=32,
                      max_steps=3)
    train_run(cfg, run, show_progress=False)
    before = zoo.load(str(run)).predict(["a fine film"])[0].probabilities

    def crash(self, resume=False, log=None):  # the replacing run dies in training
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "fit", crash)
        with pytest.raises(RuntimeError, match="killed"):
            train_run(TrainConfig(**(vars(cfg) | {"seed": 1})), run, show_progress=False,
                      overwrite=True)
    assert not (run / "summary.json").exists()  # the old run's other files are gone...
    assert zoo.load(str(run)).predict(["a fine film"])[0].probabilities == before  # ...not its model
    train_run(TrainConfig(**(vars(cfg) | {"seed": 1, "learning_rate": 0.05})), run,
              show_progress=False, overwrite=True)
    replaced = zoo.load(str(run)).predict(["a fine film"])[0].probabilities
    assert not np.allclose(list(replaced.values()), list(before.values()))
