"""The generic trainer end to end on a small SST-2 slice, with the tiny encoder."""

import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

import zoo
from zoo import checkpoint
from zoo.cli import main as cli_main
from zoo.run import train_run
from zoo.train import TrainConfig, Trainer

from zoo_tests.sst2_files import write_slice


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    """GLUE-layout folder with the first rows of the shared SST-2 files."""
    return write_slice(tmp_path_factory.mktemp("sst2"), 600, 120, 30)


pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py


def _cfg(data_dir, **overrides) -> TrainConfig:
    values = dict(model="encoder-m2l-tiny", head="sst2", batch_size=16, epochs=2.0,
                  learning_rate=3e-3, eval_every=20, seed=0, data_dir=str(data_dir),
                  max_len=32)  # two buckets (16, 32): few compilations keep the suite fast
    return TrainConfig(**(values | overrides))


def _latest_params(run_dir: Path) -> dict:
    manager = ocp.CheckpointManager(run_dir / "checkpoints" / "latest")
    step = manager.latest_step()
    tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, checkpoint.flatten(tree["state"])


def test_end_to_end_loss_falls_and_outputs_exist(sst2_slice, tmp_path):
    summary = train_run(_cfg(sst2_slice, epochs=4.0), tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0]
    for name in ("model/zoo.json", "dev_report.txt", "dev_confusion.png", "curves.png",
                 "summary.json", "tokenizer.json", "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert any((tmp_path / "run" / "tb").iterdir())
    assert summary["compiled_train_shapes"] <= len(zoo.batching.buckets_for(32)) == 2
    assert summary["dev_accuracy"] == pytest.approx(summary["best_dev_accuracy"], abs=1e-6)


def test_dev_metrics_equal_a_numpy_computation(sst2_slice, tmp_path):
    train_run(_cfg(sst2_slice, max_steps=15), tmp_path / "run", show_progress=False)
    model = zoo.load(str(tmp_path / "run"))
    dev = zoo.data.load_sst2(sst2_slice)["validation"]
    max_len = 32  # the run's max_len (see _cfg)
    token_ids = zoo.text.encode(model.tokenizer, dev["sentence"], max_len)
    ids = np.zeros((len(token_ids), max_len), np.int32)  # one shape, no buckets, no filler rows
    for row, seq in enumerate(token_ids):
        ids[row, :len(seq)] = seq
    logits = np.asarray(model(ids, (ids != 0).astype(np.int32)))
    labels = np.asarray(dev["label"])
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected_loss = -log_probs[np.arange(len(labels)), labels].mean()
    expected_accuracy = (logits.argmax(-1) == labels).mean()
    report = json.loads((tmp_path / "run" / "dev_report.json").read_text())
    assert report["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    from zoo.run import evaluate_run

    result = evaluate_run(tmp_path / "run", str(sst2_slice))
    assert result["dev_accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    assert result["dev_loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_resume_is_bit_for_bit(sst2_slice, tmp_path, monkeypatch):
    cfg = _cfg(sst2_slice, max_steps=30, eval_every=10)
    train_run(cfg, tmp_path / "straight", show_progress=False)

    original = Trainer.batches_from

    def interrupted(self, step):
        for i, item in enumerate(original(self, step)):
            if item[0] == 17:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Trainer, "batches_from", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "resumed", show_progress=False)
    step, _ = _latest_params(tmp_path / "resumed")
    assert step == 17  # nothing lost: the interrupt saved the latest state
    monkeypatch.setattr(Trainer, "batches_from", original)
    train_run(cfg, tmp_path / "resumed", resume=True, show_progress=False)

    step_a, a = _latest_params(tmp_path / "straight")
    step_b, b = _latest_params(tmp_path / "resumed")
    assert step_a == step_b == 30
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_existing_run_is_not_overwritten(sst2_slice, tmp_path):
    train_run(_cfg(sst2_slice, max_steps=2), tmp_path / "run", show_progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_run(_cfg(sst2_slice, max_steps=2), tmp_path / "run", show_progress=False)


def test_mlm_pretraining_then_finetune(sst2_slice, tmp_path):
    train_run(_cfg(sst2_slice, head="mlm", max_steps=40, eval_every=10, learning_rate=1e-2),
              tmp_path / "mlm", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "mlm" / "metrics.jsonl").open()]
    dev = [r for r in records if r["split"] == "dev"]
    assert {"masked_accuracy", "loss"} <= dev[0].keys()
    assert dev[-1]["loss"] < dev[0]["loss"]
    with pytest.warns(zoo.HeadInitializedWarning):
        summary = train_run(_cfg(sst2_slice, weights=str(tmp_path / "mlm" / "model"),
                                 max_steps=10), tmp_path / "ft", show_progress=False)
    assert 0.0 <= summary["dev_accuracy"] <= 1.0
    # the fine-tuned run kept the pre-training tokenizer
    assert (tmp_path / "ft" / "tokenizer.json").read_text() == \
        (tmp_path / "mlm" / "tokenizer.json").read_text()


def test_seed_adam_recipe_is_reachable(sst2_slice, tmp_path):
    summary = train_run(_cfg(sst2_slice, optimizer="adam", learning_rate=5e-5, max_steps=5),
                        tmp_path / "adam", show_progress=False)
    assert summary["steps"] == 5


def test_predict_bad_inputs(sst2_slice, tmp_path):
    train_run(_cfg(sst2_slice, max_steps=5), tmp_path / "run", show_progress=False)
    model = zoo.load(str(tmp_path / "run"))
    empty, long = model.predict(["", "good " * 1000])
    for p in (empty, long):
        assert p.label in ("negative", "positive") and 0.5 <= p.probability <= 1.0
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert model.predict([]) == []
    assert len(model.predict("one string")) == 1
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        model.predict(["fine", 3])
    with pytest.raises(TypeError):
        model.predict(None)
    batch = model.predict([f"text number {i}" for i in range(300)])
    singles = [model.predict(f"text number {i}")[0] for i in (0, 299)]
    assert batch[0].probability == pytest.approx(singles[0].probability, abs=1e-5)
    assert batch[299].probability == pytest.approx(singles[1].probability, abs=1e-5)


def test_cli_smoke(sst2_slice, tmp_path, capsys):
    assert cli_main(["list", "*tiny"]) == 0
    assert "encoder-m2l-tiny" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli_main(["train", "--model", "encoder-m2l-tiny", "--data-dir", str(sst2_slice),
                     "--out", str(run), "--max-steps", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["predict", str(run), "a fine film", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["label"] in ("negative", "positive")
    assert cli_main(["evaluate", str(run), "--data-dir", str(sst2_slice)]) == 0
    assert "dev_accuracy" in capsys.readouterr().out
    assert cli_main(["predict", str(tmp_path / "nope"), "x"]) == 2
    assert "neither a zoo model directory" in capsys.readouterr().err
    assert cli_main(["train", "--model", "encoder-nope", "--out", str(tmp_path / "x"),
                     "--data-dir", str(sst2_slice)]) == 2
    assert "unknown model" in capsys.readouterr().err
