"""A checkpoint that does not fit the target preset is refused with one report naming keys."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.models.m2l.convert import convert_file
from zoo.checkpoint import CheckpointMismatchError
from zoo_tests import haiku_reference as hr

ROOT = Path(__file__).resolve().parents[1]
TINY = zoo.get_encoder("encoder-m2l-tiny").config
BLOCK0 = "transformer_encoder/~/encoder_block/~/"


def _pickle(tmp_path, config=TINY, head="mlm", edit=None) -> Path:
    params = hr.reference_params(config, head)[2]
    params = {module: dict(leaves) for module, leaves in params.items()}  # cached: copy
    if edit:
        edit(params)
    return hr.write_2022_pickle(tmp_path / "state.pkl", hr.make_training_state(params))


def _refusal(path, **kwargs) -> str:
    with pytest.raises(CheckpointMismatchError) as err:
        convert_file(path, out=path.parent / "out", **kwargs)
    assert not (path.parent / "out").exists()
    return str(err.value)


def test_more_layers_are_unexpected(tmp_path):
    report = _refusal(_pickle(tmp_path, dataclasses.replace(TINY, num_layers=3)),
                      model="encoder-m2l-tiny")
    assert "unexpected" in report
    assert "encoder/blocks/2/attention/query/kernel" in report
    assert "encoder/blocks/2/feed_forward_norm/bias" in report


def test_other_preset_reports_missing_and_misshaped_together(tmp_path):
    report = _refusal(_pickle(tmp_path), model="encoder-mlm-v1")
    assert "missing" in report and "wrong shape" in report
    # v1 has 6 layers, tiny 2: one line per tensor of the missing layers
    assert "encoder/blocks/{2..5}/attention/value/kernel (4 of them)" in report
    assert "encoder/embed/embedding: expected (25000, 128)" in report
    assert "heads/mlm/decoder/kernel" in report


def test_missing_key_is_named(tmp_path):
    path = _pickle(tmp_path, edit=lambda p: p.pop(BLOCK0 + "multihead_attention/~/linear_2"))
    report = _refusal(path, model="encoder-m2l-tiny")
    assert "2 missing" in report
    assert "encoder/blocks/0/attention/value/kernel" in report
    assert "encoder/blocks/0/attention/value/bias" in report


def test_unmappable_haiku_keys_are_named(tmp_path):
    def add_strays(params):
        params["pooler/~/linear"] = {"w": params["dec_lin_1"]["w"]}
        params[BLOCK0 + "layer_norm"]["gamma"] = params[BLOCK0 + "layer_norm"]["scale"]

    report = _refusal(_pickle(tmp_path, edit=add_strays), model="encoder-m2l-tiny")
    assert "2 Haiku keys with no zoo name" in report
    assert "pooler/~/linear/w (32, 32)" in report
    assert BLOCK0 + "layer_norm/gamma (32,)" in report


def test_head_of_the_wrong_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="classification head"):
        convert_file(_pickle(tmp_path), out=tmp_path / "out", model="encoder-m2l-tiny",
                     head="sst2")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "convert.haiku_to_flax", *map(str, args)], cwd=ROOT,
        capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def test_cli_reports_mismatch_without_traceback(tmp_path):
    result = _cli(_pickle(tmp_path), "--model", "encoder-mlm-v1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: state.pkl (as encoder-mlm-v1) does not fit the model:")
    assert "encoder/embed/embedding" in result.stderr


def test_cli_converts_and_summarises(tmp_path):
    result = _cli(_pickle(tmp_path, head="classifier"), "--model", "encoder-m2l-tiny",
                  "--head", "classifier", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "heads: classifier (classification)" in result.stdout
    assert str(tmp_path / "out") in result.stdout
    assert zoo.load(str(tmp_path / "out")).info.head == "classifier"


def test_layer_numbers_are_grouped_in_reports():
    from zoo.checkpoint import grouped

    items = sorted([f"encoder/blocks/{i}/mlp/kernel: expected (4, 8) float32" for i in
                    range(2, 1024)] + ["encoder/embed/embedding", "encoder/blocks/0/x/bias"]
                   + [f"bert.encoder.layer.{i}.output.dense.weight (8, 4)" for i in (1, 3, 9)]
                   + ["h/1/a/2/w", "h/1/a/3/w"])
    assert grouped(items) == [
        "bert.encoder.layer.{1,3,9}.output.dense.weight (8, 4) (3 of them)",
        "encoder/blocks/0/x/bias",
        "encoder/blocks/{2..1023}/mlp/kernel: expected (4, 8) float32 (1022 of them)",
        "encoder/embed/embedding", "h/1/a/2/w", "h/1/a/3/w"]  # fewer than 3: as they are
