"""``zoo export --format hf``: models written back as transformers folders (and the M2L
family's own folder), checked against what transformers itself wrote.

The golden folders (``zoo_tests/golden``) are checkpoints transformers' ``save_pretrained``
wrote, with transformers' outputs: an export of the model the zoo loads from one must hold
the same tensors under the same names, name the same classes and labels, and give
transformers' outputs again. all-MiniLM-L6-v2 (written by sentence-transformers) checks the
BERT family and the sentence-transformers files. Transformers itself reading the exports is
``nox -s export_parity`` (torch is not a test dependency).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.cli import main as cli_main
from zoo.export import MARKER, encoder_only, export, is_export_dir
from zoo.hf.files import read_safetensors
from zoo.registry import get_encoder, list_models
from zoo_tests import bert_reference as br

GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_FOLDERS = sorted(p for p in GOLDEN.iterdir() if (p / "config.json").is_file())


def _head(folder: Path) -> str | None:
    """MLM checkpoints export as their encoder (transformers' MLM classes are not written)."""
    return "none" if "mlm" in folder.name else None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{golden folder name: export folder}, each written once for the module."""
    root = tmp_path_factory.mktemp("exports")
    for folder in GOLDEN_FOLDERS:
        export(str(folder), root / folder.name, head=_head(folder))
    return {folder.name: root / folder.name for folder in GOLDEN_FOLDERS}


@pytest.mark.parametrize("folder", GOLDEN_FOLDERS, ids=[p.name for p in GOLDEN_FOLDERS])
def test_export_holds_transformers_own_tensors_and_names(folder, exported):
    from zoo.hf.architecture import architecture_of

    out = exported[folder.name]
    theirs = json.loads((folder / "config.json").read_text())
    original = read_safetensors(folder / "model.safetensors")
    if _head(folder) is not None:  # a bare model's names lack the task model's prefix
        table = architecture_of(theirs, str(folder)).table
        original = {table.strip(name): value for name, value in original.items()}
    written = read_safetensors(out / "model.safetensors")
    foreign = sorted(set(written) - set(original))
    assert not foreign, f"names transformers did not write: {foreign}"
    for name, value in written.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    ours = json.loads((out / "config.json").read_text())
    assert ours["model_type"] == theirs["model_type"]
    task_model = _head(folder) is None
    want = theirs["architectures"][0] if task_model else \
        theirs["architectures"][0].split("For")[0] + "Model"
    assert ours["architectures"] == [want]
    if "ForSequenceClassification" in want or "ForTokenClassification" in want:
        labels = [ours["id2label"][str(i)] for i in range(len(ours["id2label"]))]
        assert [label.lower() for label in labels] == [
            str(theirs["id2label"][str(i)]).lower() for i in range(len(labels))]
    else:  # a bare encoder: every encoder tensor is there
        assert len(written) == len([n for n in original if not n.startswith(
            ("pooler.", "lm_head", "cls.", "lm_predictions", "head.", "decoder."))
            and "position_ids" not in n]) or folder.name.startswith("deberta-v2-absolute")
    marker = json.loads((out / MARKER).read_text())
    assert set(marker["files"]) >= {"config.json", "model.safetensors", "tokenizer.json",
                                    "tokenizer_config.json", MARKER} - {MARKER}
    assert is_export_dir(out)


@pytest.mark.parametrize("folder", GOLDEN_FOLDERS, ids=[p.name for p in GOLDEN_FOLDERS])
def test_export_gives_transformers_outputs_again(folder, exported):
    """The export read back gives transformers' own outputs (expected.npz) and the token ids
    of the original folder's tokenizer."""
    expected = np.load(folder / "expected.npz", allow_pickle=False)
    model, original = zoo.load(str(exported[folder.name])), zoo.load(str(folder))
    for sentence in expected["sentences"]:
        assert model.tokenizer.encode(str(sentence)).ids == \
            original.tokenizer.encode(str(sentence)).ids
    args = [jnp.asarray(expected["input_ids"]), jnp.asarray(expected["attention_mask"])]
    if "token_type_ids" in expected:
        args.append(jnp.asarray(expected["token_type_ids"]))
    output = np.asarray(model(*args))
    if _head(folder) is not None:  # the bare encoder of an MLM checkpoint: vs the original
        np.testing.assert_array_equal(output, np.asarray(encoder_only(original)(*args)))
        return
    want = expected["output"]
    keep = expected["attention_mask"].astype(bool) if want.ndim == 3 else slice(None)
    np.testing.assert_allclose(output.reshape(want.shape)[keep], want[keep], rtol=0,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_minilm_exports_as_sentence_transformers_folder(tmp_path):
    folder = br.minilm_folder()
    out = tmp_path / "minilm"
    summary = export(zoo.load("all-minilm-l6-v2", weights=folder), out)
    assert summary["architectures"] == ["BertModel"]
    original = read_safetensors(folder / "model.safetensors")
    written = read_safetensors(out / "model.safetensors")
    assert set(written) <= set(original)
    assert len(written) == len([n for n in original if not n.startswith("pooler.")
                                and "position_ids" not in n])
    for name, value in written.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling",
                                                             "Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert pooling["word_embedding_dimension"] == 384
    special = json.loads((out / "special_tokens_map.json").read_text())
    assert special == {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
                       "sep_token": "[SEP]", "unk_token": "[UNK]"}
    texts = ["A man is eating food.", "Someone is playing a guitar loudly."]
    np.testing.assert_allclose(zoo.load(str(out)).encode(texts, progress=False),
                               zoo.load("all-minilm-l6-v2", weights=folder).encode(
                                   texts, progress=False), atol=1e-6)


def _hf_presets() -> list[str]:
    return [n for n in list_models() if get_encoder(n).family.export is not None
            and get_encoder(n).family.name != "m2l"]


@pytest.mark.parametrize("name", _hf_presets())
def test_config_to_hf_inverts_config_from_hf(name):
    from zoo.hf.architecture import _shape, architecture_of

    config = get_encoder(name).config
    arch = architecture_of({"model_type": config.model_type}, name)
    back = arch.config_from_hf(arch.config_to_hf(config) | {"model_type": config.model_type},
                               name)
    assert _shape(back) == _shape(config)


def test_m2l_exports_its_own_folder_and_loads_it_back(tmp_path):
    model = zoo.load("encoder-m2l-tiny", head="sst2", pretrained=False, seed=3)
    summary = export(model, tmp_path / "m2l")
    assert summary["format"].startswith("zoo-m2l-safetensors")
    back = zoo.load(str(tmp_path / "m2l"))
    assert back.info.head == "sst2" and back.info.labels == ("negative", "positive")
    ids = jnp.asarray([[1, 7, 9, 11, 2, 0]])
    mask = (ids > 0).astype(jnp.int32)
    np.testing.assert_array_equal(np.asarray(model(ids, mask)), np.asarray(back(ids, mask)))


def test_export_command_and_its_refusals(tmp_path, capsys):
    folder = str(GOLDEN / "roberta-classifier")
    out = tmp_path / "out"
    assert cli_main(["export", folder, "--out", str(out)]) == 0
    assert "RobertaForSequenceClassification" in capsys.readouterr().out
    assert cli_main(["export", folder, "--out", str(out)]) == 2  # no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["export", folder, "--out", str(out), "--overwrite",
                     "--head", "none"]) == 0
    assert json.loads((out / "config.json").read_text())["architectures"] == ["RobertaModel"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli_main(["export", folder, "--out", str(foreign)]) == 2
    assert "not a zoo export" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    assert cli_main(["export", folder, "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli_main(["export", folder, "--out", str(tmp_path / "file" / "below")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert cli_main(["export", str(GOLDEN / "roberta-mlm"), "--out",
                     str(tmp_path / "mlm")]) == 2
    assert "--head none" in capsys.readouterr().err
    assert not (tmp_path / "mlm").exists()
    assert cli_main(["export", str(GOLDEN / "roberta-base"), "--head", "classifier",
                     "--out", str(tmp_path / "random-head")]) == 2  # it would start random
    assert "no trained 'classifier' head" in capsys.readouterr().err
    assert not (tmp_path / "random-head").exists()
    with pytest.raises(SystemExit) as exit_status:  # argparse's own refusal
        cli_main(["export", folder, "--format", "tflite", "--out", str(tmp_path / "x")])
    assert exit_status.value.code == 2 and "tflite" in capsys.readouterr().err


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    folder = str(GOLDEN / "roberta-token")
    out = tmp_path / "out"
    export(folder, out)
    before = (out / "model.safetensors").read_bytes()
    import safetensors.numpy

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        export(str(GOLDEN / "roberta-classifier"), out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["config"].update(vocab_size="x"), "vocab_size must be a positive integer"),
    (lambda d: d.update(model="no-such-encoder"), "unknown model 'no-such-encoder'"),
    (lambda d: d.update(heads=["sst2"]), "'heads' must be an object"),
])
def test_a_damaged_m2l_export_fails_in_one_line_naming_its_config(tmp_path, edit, message):
    from zoo.errors import ConfigError

    export(zoo.load("encoder-m2l-tiny", head="sst2", pretrained=False), tmp_path / "m2l")
    manifest = json.loads((tmp_path / "m2l" / "config.json").read_text())
    edit(manifest)
    (tmp_path / "m2l" / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=message) as error:
        zoo.load(str(tmp_path / "m2l"))
    assert str(error.value).startswith(str(tmp_path / "m2l" / "config.json"))
