"""Distillation: the loss, the teacher-logit cache, augmentation, a tiny run, the CLI."""

import json
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import distill
from zoo.cli import main as cli_main
from zoo.distill import DistillConfig, augment, distill_loss, distill_run
from zoo.errors import InvalidArgumentError
from zoo.run import train_run
from zoo.train import TrainConfig

from zoo_tests.sst2_files import write_slice


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    """A GLUE-layout folder with a few dozen rows of the shared SST-2 files."""
    return write_slice(tmp_path_factory.mktemp("sst2"), 96, 32, 8)


pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py


def _write_teacher(path: Path, texts: list[str], seed: int = 7, scale: float = 8.0) -> Path:
    """An untrained tiny classifier with confident, input-dependent logits and its own
    tokenizer (a smaller vocabulary than the student's): the teacher of these tests."""
    from zoo.run import export_model
    from zoo.text import train_tokenizer

    model = zoo.build_model("encoder-m2l-tiny", "sst2", seed=seed)
    model.head.classifier.kernel.value = model.head.classifier.kernel.value * scale
    tokenizer = train_tokenizer(texts, 300)
    tokenizer_path = path.parent / f"{path.name}-tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    return export_model(model, path, tokenizer_path, source={"kind": "test"})


@pytest.fixture(scope="module")
def teacher_dir(sst2_slice, tmp_path_factory):
    from zoo.data import load_sst2

    texts = list(load_sst2(sst2_slice)["train"]["sentence"])
    return _write_teacher(tmp_path_factory.mktemp("teacher") / "model", texts)


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_equals_numpy():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 3)) * 3, rng.normal(size=(6, 3)) * 3
    labels = np.array([0, 2, 1, 1, 0, 2])
    has_label = np.array([1, 0, 1, 0, 1, 1], np.float32)
    weights = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row is filler
    T, alpha = 2.5, 0.7
    p_t = np.exp(_np_log_softmax(t / T))
    kl = (p_t * (_np_log_softmax(t / T) - _np_log_softmax(s / T))).sum(-1)
    ce = -_np_log_softmax(s)[np.arange(6), labels]
    per = alpha * T ** 2 * kl + (1 - alpha) * has_label * ce
    expected = (per * weights).sum() / weights.sum()
    loss, per_example, kl_out = distill_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(labels),
                                             jnp.asarray(has_label), jnp.asarray(weights), T, alpha)
    np.testing.assert_allclose(np.asarray(kl_out), kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(per_example), per, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # alpha = 0 is plain cross-entropy on the labelled rows; alpha = 1 ignores the labels
    loss0 = distill_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(labels),
                         jnp.asarray(has_label), jnp.asarray(weights), T, 0.0)[0]
    assert float(loss0) == pytest.approx((has_label * ce * weights).sum() / 5, rel=1e-5)


def test_cache_hit_and_invalidation(teacher_dir, tmp_path, monkeypatch):
    teacher = zoo.load(str(teacher_dir))
    texts = ["a gorgeous , witty film", "dull", "the plot is thin but the acting sings"] * 5
    calls = []
    real = distill.compute_outputs
    monkeypatch.setattr(distill, "compute_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, info1 = distill.cached_teacher_logits(teacher, texts, tmp_path, show_progress=False)
    second, info2 = distill.cached_teacher_logits(teacher, texts, tmp_path, show_progress=False)
    assert (info1["cache"], info2["cache"], len(calls)) == ("miss", "hit", 1)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (15, 2) and first.dtype == np.float32
    # the same as an eager forward, in the texts' order (sorting by length is undone)
    direct = zoo.load(str(teacher_dir)).predict(texts)
    np.testing.assert_allclose(np.exp(_np_log_softmax(first))[:, 1],
                               [p.probabilities["positive"] for p in direct], atol=1e-5)
    # other texts, or a changed teacher, miss
    assert distill.cache_path(teacher, texts[:-1], tmp_path) != Path(info1["path"])
    teacher.head.classifier.bias.value = teacher.head.classifier.bias.value + 1.0
    third, info3 = distill.cached_teacher_logits(teacher, texts, tmp_path, show_progress=False)
    assert info3["cache"] == "miss" and info3["path"] != info1["path"] and len(calls) == 2
    np.testing.assert_allclose(third, first + 1.0, atol=1e-5)  # the new parameters were used
    # a damaged cache entry is recomputed, not trusted
    Path(info3["path"]).write_bytes(b"junk")
    assert distill.cached_teacher_logits(teacher, texts, tmp_path, show_progress=False
                                         )[1]["cache"] == "miss"


def test_augment_is_deterministic_and_sized():
    texts = ["a gorgeous , witty film", "dull and lifeless", "one"]
    a = augment(texts, 4, seed=3)
    assert a == augment(texts, 4, seed=3) and len(a) == 12
    assert a != augment(texts, 4, seed=4)
    assert augment(texts, 0, seed=3) == []
    assert len(augment(texts, 2, seed=3, min_words=3)) == 4  # "one" is too short
    vocab = {w for t in texts for w in t.split()} | {"[MASK]"}
    assert all(set(s.split()) <= vocab for s in a)
    masked = augment(texts * 50, 2, seed=0, p_mask=1.0, p_ngram=0.0)
    assert all(set(s.split()) == {"[MASK]"} for s in masked)
    cut = augment(["w1 w2 w3 w4 w5 w6 w7 w8"] * 50, 1, seed=0, p_mask=0, p_replace=0, p_ngram=1)
    assert all(1 <= len(s.split()) <= 5 and s in "w1 w2 w3 w4 w5 w6 w7 w8" for s in cut)


def test_tiny_run_moves_the_student_toward_the_teacher(sst2_slice, teacher_dir, tmp_path):
    train = TrainConfig(model="encoder-m2l-tiny", head="sst2", batch_size=16, max_steps=30,
                        learning_rate=3e-3, eval_every=10, data_dir=str(sst2_slice), max_len=32)
    cfg = DistillConfig(str(teacher_dir), train, temperature=2.0, alpha=0.9, augment=1)
    run = tmp_path / "student"
    summary = distill_run(cfg, run, show_progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    kl = [r["kl_loss"] for r in records if r["split"] == "train"]
    assert kl[-1] < 0.5 * kl[0], kl
    assert summary["teacher_logits_cache"] == "miss" and summary["transfer_examples"] == 192
    assert {"dev_accuracy", "train_seconds", "teacher_logits_seconds"} <= set(summary)
    saved = json.loads((run / "config.json").read_text())
    assert saved["distill"]["alpha"] == 0.9 and saved["model"] == "encoder-m2l-tiny"
    student = zoo.load(str(run))  # an ordinary run: loads, predicts with its own tokenizer
    assert student.tokenizer.get_vocab_size() != zoo.load(str(teacher_dir)).tokenizer.get_vocab_size()
    assert student.predict("a fine film")[0].label in ("negative", "positive")
    # the next run's data reuses the cached logits; `zoo train --resume` refuses this run
    again = distill._prepare(student, train, None, distill.read_distill_config(run), False)
    assert again.info["teacher_logits_cache"] == again.info["augment_logits_cache"] == "hit"
    assert again.train.extras["has_label"].sum() == 96 and len(again.train) == 192
    with pytest.raises(InvalidArgumentError, match="zoo distill"):
        train_run(train, run, resume=True, show_progress=False)


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "0"], "--temperature must be"),
    (["--temperature", "nan"], "--temperature must be"),
    (["--alpha", "1.5"], "--alpha must be"),
    (["--augment", "-1"], "--augment must be"),
    (["--augment", "1.5"], "invalid int value"),
    (["--hint", "-1"], "--hint must be"),
    (["--hint", "inf"], "--hint must be"),
    (["--min-words", "-2"], "--min-words must be"),
    (["--embeddings", "glove"], "invalid choice"),
])
def test_cli_flags_are_validated(flags, message, tmp_path, capsys):
    try:
        code = cli_main(["distill", "--teacher", str(tmp_path), "--out", str(tmp_path / "o"),
                         *flags])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error:")
    assert not (tmp_path / "o").exists()


def test_hint_loss_and_targets_equal_numpy():
    rng = np.random.default_rng(1)
    student, targets = rng.normal(size=(5, 8)), rng.normal(size=(5, 6))
    expected = ((student[:, :6] - targets) ** 2).mean(-1)  # a narrower target: first dims
    np.testing.assert_allclose(np.asarray(distill.hint_loss(jnp.asarray(student),
                                                            jnp.asarray(targets))),
                               expected, rtol=1e-5)
    # correlated features of very unequal scales -> uncorrelated components, mean variance 1
    features = rng.normal(size=(400, 10)) @ rng.normal(size=(10, 10)) * 3.0 + 5.0
    out, info = distill.hint_targets(features, 4)
    assert out.shape == (400, 4) and out.dtype == np.float32 and info["components"] == 4
    cov = np.cov(out, rowvar=False, bias=True)
    assert np.trace(cov) / 4 == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-4)
    variances = np.diag(cov)
    assert all(variances[:-1] >= variances[1:])  # the top components, in order
    eig = np.sort(np.linalg.svd(features - features.mean(0), compute_uv=False) ** 2)[::-1]
    assert info["explained_variance"] == pytest.approx(eig[:4].sum() / eig.sum(), abs=1e-4)
    assert distill.hint_targets(features, 32)[0].shape == (400, 10)  # at most the teacher's width


def test_teacher_features_are_cached_beside_the_logits(teacher_dir, tmp_path):
    teacher = zoo.load(str(teacher_dir))
    texts = ["a gorgeous , witty film", "dull", "the plot is thin but the acting sings"]
    logits, info = distill.cached_teacher_logits(teacher, texts, tmp_path, show_progress=False)
    # features asked for later: recomputed once (both files), then hit
    first = distill.cached_teacher_outputs(teacher, texts, tmp_path, features=True,
                                           show_progress=False)
    second = distill.cached_teacher_outputs(teacher, texts, tmp_path, features=True,
                                            show_progress=False)
    assert (first[2]["cache"], second[2]["cache"]) == ("miss", "hit")
    np.testing.assert_array_equal(first[0], logits)
    assert second[1].dtype == np.float16 and second[1].shape == (3, teacher.config.hidden_size)
    # the features are the encoder's final state at position 0, as an eager forward gives it
    from zoo.text import encode

    for row, ids in enumerate(encode(teacher.tokenizer, texts, 64)):
        ids = np.asarray([ids], np.int32)
        hidden = np.asarray(teacher.encoder(ids, np.ones_like(ids)))[0, 0]
        np.testing.assert_allclose(second[1][row].astype(np.float32), hidden, rtol=2e-3,
                                   atol=2e-3)


def test_hinted_run_moves_the_student_state_toward_the_teacher(sst2_slice, teacher_dir,
                                                                tmp_path):
    train = TrainConfig(model="encoder-m2l-tiny", head="sst2", batch_size=16, max_steps=80,
                        learning_rate=1e-2, eval_every=10, data_dir=str(sst2_slice), max_len=32)
    cfg = DistillConfig(str(teacher_dir), train, alpha=0.9, hint=10.0)
    run = tmp_path / "hinted"
    summary = distill_run(cfg, run, show_progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    hint = [r["hint_loss"] for r in records if r["split"] == "train"]
    assert np.mean(hint[-2:]) < 0.6 * hint[0], hint
    assert summary["hint"] == 10.0 and summary["hint_projection"]["components"] == 32
    assert zoo.load(str(run)).predict("a fine film")[0].label in ("negative", "positive")


def test_transfer_embeddings_projects_the_teachers_table(sst2_slice, teacher_dir):
    """Across vocabularies: each student token gets the mean teacher embedding of its teacher
    pieces, projected on the top principal components (checked through inner products, which
    do not depend on the components' signs) and scaled to the student table's spread."""
    import dataclasses

    from zoo.data import load_sst2
    from zoo.registry import get_encoder
    from zoo.text import SUBWORD_PREFIX, train_tokenizer

    teacher = zoo.load(str(teacher_dir))
    texts = list(load_sst2(sst2_slice)["train"]["sentence"])
    tokenizer = train_tokenizer(texts[::-1] + ["zqxj"], 200)  # another vocabulary
    config = dataclasses.replace(get_encoder("encoder-m2l-tiny").config, d_model=16)
    student = zoo.build_model("encoder-m2l-tiny", "sst2", seed=3, config=config)
    before = np.asarray(student.encoder.token_embeddings()[...]).copy()
    info = distill.transfer_embeddings(teacher, student, tokenizer)
    after = np.asarray(student.encoder.token_embeddings()[...])

    table = np.asarray(teacher.encoder.token_embeddings()[...])
    unknown = teacher.tokenizer.token_to_id("[UNK]")
    specials = set(tokenizer.get_added_tokens_decoder())
    found, vectors = [], []
    for i in range(tokenizer.get_vocab_size()):
        if i in specials:
            continue
        token = tokenizer.id_to_token(i).removeprefix(SUBWORD_PREFIX)
        pieces = [j for j in teacher.tokenizer.encode(token, add_special_tokens=False).ids
                  if j != unknown]
        if pieces:
            found.append(i)
            vectors.append(table[pieces].mean(0))
    assert (info["tokens"], info["components"]) == (len(found), 16) and len(found) > 50
    untouched = [i for i in range(before.shape[0]) if i not in found]
    np.testing.assert_array_equal(after[untouched], before[untouched])  # specials, [UNK]-only
    assert 0 < len(specials) <= len(untouched)
    x = np.stack(vectors).astype(np.float64)
    x -= x.mean(0)
    values, vecs = np.linalg.eigh(x.T @ x)
    top = vecs[:, np.argsort(values)[::-1][:16]]
    y = after[found].astype(np.float64)
    assert y.std() == pytest.approx(before.std(), rel=1e-4)
    scale = y.std() / (x @ top).std()
    np.testing.assert_allclose(y @ y.T, scale ** 2 * (x @ top) @ (x @ top).T, atol=1e-5)
    assert info["explained_variance"] == pytest.approx(values[-16:].sum() / values.sum(),
                                                       abs=1e-4)
    # the student still runs, and a family without the table is refused in one line
    assert np.isfinite(np.asarray(student(np.array([[2, 7, 3]]), np.ones((1, 3), np.int32)))).all()
    with pytest.raises(InvalidArgumentError, match="token_embeddings"):
        distill.transfer_embeddings(teacher, types.SimpleNamespace(encoder=object()), tokenizer)


@pytest.mark.parametrize("fields, message", [
    (dict(augment_seed=1.5), "augment_seed must be an integer"),
    (dict(embeddings="glove"), "--embeddings must be one of random, teacher"),
    (dict(hint=float("nan")), "--hint must be"),
])
def test_python_config_is_validated(fields, message):
    with pytest.raises(InvalidArgumentError, match=message):
        DistillConfig("runs/teacher", **fields).validated()


def test_pairs_distil_from_a_teacher_that_reads_token_types(tmp_path):
    """MRPC-style pairs: a BERT-family teacher sees both texts with segment ids; the M2L
    student learns its logits; --augment (single sentences only) is refused for pairs."""
    from zoo.run import export_model
    from zoo.text import train_tokenizer

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "MRPC"
    (tmp_path / "MRPC").mkdir()
    for name, rows in (("train.tsv", 64), ("dev.tsv", 16)):
        lines = (shared / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp_path / "MRPC" / name).write_text("".join(lines[:rows + 1]), encoding="utf-8")
    teacher = zoo.build_model("bert-tiny", "classifier", seed=3)
    teacher.info = teacher.info.__class__(**(vars(teacher.info) | {
        "labels": ("not_equivalent", "equivalent")}))
    texts = [line.split("\t")[3] for line in
             (tmp_path / "MRPC" / "train.tsv").read_text().splitlines()[1:]]
    train_tokenizer(texts, 300).save(str(tmp_path / "tok.json"))
    teacher_dir = export_model(teacher, tmp_path / "teacher", tmp_path / "tok.json",
                               source={"kind": "test"})
    loaded = zoo.load(str(teacher_dir))
    pair = ("the cat sat", "a dog ran")
    # The teacher's cached logits of a pair are those of its own forward with token types.
    logits = distill.compute_logits(loaded, [pair, (pair[0], pair[0])], show_progress=False)
    probabilities = np.exp(logits[0] - logits[0].max())
    probabilities /= probabilities.sum()
    expected = list(loaded.predict([pair])[0].probabilities.values())
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert not np.allclose(logits[0], logits[1])  # the second text reaches the teacher
    train = TrainConfig(model="encoder-m2l-tiny", dataset="glue/mrpc",
                        data_dir=str(tmp_path / "MRPC"), batch_size=16, max_steps=8,
                        learning_rate=3e-3, eval_every=4, max_len=48)
    with pytest.raises(InvalidArgumentError, match="--augment"):
        distill_run(DistillConfig(str(teacher_dir), train, augment=1), tmp_path / "a",
                    show_progress=False)
    summary = distill_run(DistillConfig(str(teacher_dir), train, alpha=1.0), tmp_path / "s",
                          show_progress=False)
    assert summary["transfer_examples"] == 64 and summary["task"] == "classification"
    student = zoo.load(str(tmp_path / "s"))
    assert student.info.labels == ("not_equivalent", "equivalent")
    assert student.predict([pair])[0].label in student.info.labels
