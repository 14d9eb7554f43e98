"""Sentence embeddings: ``model.encode`` on all-MiniLM-L6-v2's real weights against an
independent float64 NumPy forward with sentence-transformers' mean pooling and
normalisation; the other poolings, search, and ``python -m zoo embed``."""

import json

import numpy as np
import pytest

import zoo
from zoo.cli import main as cli_main
from zoo_tests import bert_reference as br

SENTENCES = [
    "A man is eating food.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
]


@pytest.fixture(scope="module")
def minilm():
    from safetensors.numpy import load_file

    folder = br.minilm_folder()
    return (zoo.load(str(folder)), load_file(str(folder / "model.safetensors")),
            json.loads((folder / "config.json").read_text()))


def _reference(minilm, texts, normalize=True):
    from tokenizers import Tokenizer

    model, tensors, config = minilm
    tokenizer = Tokenizer.from_str(model.tokenizer.to_str())
    tokenizer.no_truncation()
    out = []
    for text in texts:  # one at a time: no padding in the reference
        ids = tokenizer.encode(text).ids
        if len(ids) > 256:  # sentence-transformers keeps [CLS] ... [SEP] within 256
            ids = ids[:255] + ids[-1:]
        ids = np.array([ids], np.int32)
        hidden = br.hidden_states(tensors, config, ids, np.ones_like(ids))
        pooled = hidden.mean(1)[0]
        out.append(pooled / np.linalg.norm(pooled) if normalize else pooled)
    return np.stack(out)


def test_encode_equals_the_float64_reference_in_input_order(minilm):
    vectors = minilm[0].encode(SENTENCES, batch_size=2)  # batches mix lengths after sorting
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, _reference(minilm, SENTENCES), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    raw = minilm[0].encode(SENTENCES[:2], normalize=False)
    np.testing.assert_allclose(raw, _reference(minilm, SENTENCES[:2], normalize=False),
                               atol=1e-4)


def test_the_preset_reads_256_tokens_as_sentence_transformers_does(minilm):
    long = " ".join(["word"] * 400)
    np.testing.assert_allclose(minilm[0].encode([long]), _reference(minilm, [long]), atol=1e-5)


def test_cls_and_max_pooling_follow_the_hidden_states(minilm):
    model = minilm[0]
    ids = np.array([model.tokenizer.encode(SENTENCES[0]).ids], np.int32)
    hidden = np.asarray(model(ids, np.ones_like(ids)))[0]
    np.testing.assert_allclose(model.encode(SENTENCES[:1], pooling="cls", normalize=False)[0],
                               hidden[0], atol=1e-5)
    np.testing.assert_allclose(model.encode(SENTENCES[:1], pooling="max", normalize=False)[0],
                               hidden.max(0), atol=1e-5)
    with pytest.raises(zoo.errors.InvalidArgumentError, match="pooling must be one of"):
        model.encode(["x"], pooling="sum")


def test_search_and_similarity(minilm):
    model = minilm[0]
    [hits] = model.search("Someone is eating bread.", SENTENCES, top_k=2)
    assert [h.text for h in hits] == [SENTENCES[2], SENTENCES[0]]
    assert hits[0].score > hits[1].score
    vectors = model.encode(SENTENCES)
    np.testing.assert_allclose(zoo.similarity(vectors, vectors), vectors @ vectors.T, atol=1e-6)


def test_embed_command_writes_npy_atomically_and_refuses_to_clobber(tmp_path, capsys):
    folder = str(br.minilm_folder())
    out = tmp_path / "emb.npy"
    (tmp_path / "texts.txt").write_text("\n".join(SENTENCES[:3]) + "\n")
    assert cli_main(["embed", folder, "--file", str(tmp_path / "texts.txt"), "--out", str(out),
                     "--quiet"]) == 0
    saved = np.load(out)
    assert saved.shape == (3, 384)
    assert cli_main(["embed", folder, "x", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["embed", folder, "x", "--out", str(tmp_path / "e.txt"), "--quiet"]) == 2
    capsys.readouterr()
    assert cli_main(["embed", folder, SENTENCES[0], "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(line["embedding"], saved[0], atol=1e-5)
    assert cli_main(["embed", folder, SENTENCES[0], "--quiet", "--precision", "bf16"]) == 0
    low = np.asarray(json.loads(capsys.readouterr().out)["embedding"])
    assert low @ saved[0] > 0.999 and not np.allclose(low, saved[0], atol=1e-5)
