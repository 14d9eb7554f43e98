"""Knowledge distillation: a fine-tuned teacher's soft targets train a small, fast student.

A 2-block student trained on SST-2's 67k gold labels alone plateaus near the TF-IDF
baseline; a teacher's logits tell it, for every sentence, *how* positive or negative it is,
and (with augmentation, Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into
Simple Neural Networks") label sentences no annotator saw. The teacher runs once per
transfer set: its logits are cached under a hash of everything they depend on (its
parameters and labels, its tokenizer, the texts), so later student recipes start at once.

Teacher and student never share a vocabulary: each tokenises the raw text with its own
tokenizer. The student's run folder is an ordinary run (``zoo.load(RUN)``, ``predict``,
``evaluate`` and ``--resume`` work unchanged); ``config.json`` has a ``distill`` section.
"""

# No ``from __future__ import annotations``: clu reads the metric classes from annotations.
import dataclasses
import hashlib
import json
import math
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics
from flax import nnx

from zoo.batching import BucketBatcher, buckets_for
from zoo.errors import InvalidArgumentError
from zoo.model import ZooModel
from zoo.nn import compiler_options
from zoo.tasks import CLASSIFICATION, Task
from zoo.train import TrainConfig, _is_int, _is_real

CACHE_VERSION = 1  # bump when teacher_logits' output changes: old cache entries then miss
MASK_TOKEN = "[MASK]"  # every zoo tokenizer (and BERT's) knows it as a special token
SECTION = "distill"  # the config.json section of a distillation run
EMBEDDINGS = ("random", "teacher")  # how the student's token embeddings start
MAX_AUGMENT = 100  # augmented sentences per training sentence, at most
MAX_TRANSFER = 5_000_000  # training + augmented sentences, at most (memory: ids + logits)

# The student recipe chosen on a 2-core CPU (see README, "Distillation"): about 4 minutes.
DEFAULT_STUDENT = dict(model="encoder-m2l-mini", head=None, epochs=2.0, batch_size=32,
                       learning_rate=1e-3, eval_every=1000)


@dataclasses.dataclass
class DistillConfig:
    """A distillation run: the teacher, the loss mix, the augmentation, the student's training.

    ``train`` is an ordinary ``TrainConfig`` (student model and head, optimiser, epochs...).
    """

    teacher: str  # a fine-tuned run or model directory with a classification head
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(**DEFAULT_STUDENT))
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (teacher) loss; 1 - alpha weighs the gold labels
    augment: int = 0  # augmented sentences per training sentence (0: the training set only)
    p_mask: float = 0.1  # per word: replaced by [MASK]
    p_replace: float = 0.1  # per word: replaced by a random word of the training vocabulary
    p_ngram: float = 0.25  # per sentence: cut to a random n-gram, n in 1..max_ngram
    max_ngram: int = 5
    min_words: int = 0  # augment only sentences of at least this many words (dev's are long)
    augment_seed: int | None = None  # the augmentation's seed (None: the student's --seed)
    embeddings: str = "random"  # the student's token embeddings: "random" or "teacher"
    hint: float = 0.0  # weight of the hidden-state loss: student [CLS] vs the teacher's (PCA)
    teacher_batch_size: int = 64

    def settings(self) -> dict:
        """Everything but ``train`` (the ``distill`` section of ``config.json``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}

    def validated(self) -> "DistillConfig":
        """``self`` after checking every field (one-line errors naming the flag)."""
        def bad(flag: str, must: str, value) -> None:
            raise InvalidArgumentError(f"{flag} must be {must}, got {value!r}")

        def real(value, low, high, low_open=False):
            return _is_real(value) and math.isfinite(value) and (
                value > low if low_open else value >= low) and value <= high

        if not isinstance(self.teacher, str) or not self.teacher:
            bad("--teacher", "a run or model directory", self.teacher)
        if not real(self.temperature, 0.0, math.inf, low_open=True):
            bad("--temperature", "a finite number > 0", self.temperature)
        if not real(self.alpha, 0.0, 1.0):
            bad("--alpha", "a number in [0, 1]", self.alpha)
        if not real(self.hint, 0.0, math.inf):
            bad("--hint", "a finite number >= 0", self.hint)
        if not (_is_int(self.augment) and 0 <= self.augment <= MAX_AUGMENT):
            bad("--augment", f"an integer in [0, {MAX_AUGMENT}]", self.augment)
        for name in ("p_mask", "p_replace", "p_ngram"):
            if not real(getattr(self, name), 0.0, 1.0):
                bad(name, "a probability in [0, 1]", getattr(self, name))
        if self.p_mask + self.p_replace > 1.0:
            bad("p_mask + p_replace", "at most 1", self.p_mask + self.p_replace)
        for name in ("max_ngram", "teacher_batch_size"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                bad(name, "an integer >= 1", getattr(self, name))
        if self.embeddings not in EMBEDDINGS:
            bad("--embeddings", f"one of {', '.join(EMBEDDINGS)}", self.embeddings)
        if self.augment_seed is not None and not _is_int(self.augment_seed):
            bad("augment_seed", "an integer", self.augment_seed)
        if not (_is_int(self.min_words) and 0 <= self.min_words <= 10_000):
            bad("--min-words", "an integer in [0, 10000]", self.min_words)
        if self.max_ngram > 1_000 or self.teacher_batch_size > 8_192:
            bad("max_ngram / teacher_batch_size", "at most 1000 / 8192",
                (self.max_ngram, self.teacher_batch_size))
        self.train.validated()
        return self


# ------------------------------------------------------------------------------ the loss


def distill_loss(student_logits, teacher_logits, labels, has_label, weights, temperature: float,
                 alpha: float):
    """(mean loss, per-example loss, per-example KL) of Hinton et al.'s mix.

    Per example: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * has_label *
    CE(s, label)``; the mean weighs examples by ``weights`` (0 for filler rows). ``T^2``
    keeps the soft gradients' scale independent of T; ``has_label`` is 0 for augmented
    sentences, whose only target is the teacher.
    """
    s = student_logits.astype(jnp.float32) / temperature
    t = teacher_logits.astype(jnp.float32) / temperature
    log_p_teacher = jax.nn.log_softmax(t, -1)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - jax.nn.log_softmax(s, -1)), -1)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        student_logits.astype(jnp.float32), labels)
    per_example = alpha * temperature ** 2 * kl + (1.0 - alpha) * has_label * ce
    loss = jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return loss, per_example, kl


def hint_loss(student_hidden, targets):
    """Per-example mean squared error between the student's final [CLS] state and its target
    (the teacher's, projected to the student's width by ``hint_targets``).

    A teacher whose projection is narrower than the student is compared on the student's
    first dimensions.
    """
    width = targets.shape[-1]
    error = student_hidden[..., :width].astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(error ** 2, -1)


def hint_targets(features: np.ndarray, width: int) -> tuple[np.ndarray, dict]:
    """The teacher's [CLS] states ``features`` (N, H) as regression targets of width
    ``min(width, H)``: centred, projected on their top principal components, and scaled so the
    components' mean variance is 1 (the scale of a LayerNorm output). Returns (targets, info).

    A fixed projection needs no trainable parameters beside the student's (FitNets' hints use
    a learned one): the student's last layer learns the rotation.
    """
    x = np.asarray(features, np.float32)
    x = x - x.mean(0)
    k = min(width, x.shape[1])
    values, vectors = np.linalg.eigh(x.T @ x / max(len(x), 1))  # ascending eigenvalues
    top = np.argsort(values)[::-1][:k]
    scale = math.sqrt(max(float(values[top].mean()), 1e-12))
    targets = (x @ vectors[:, top]) / scale
    explained = float(values[top].sum() / max(float(values.sum()), 1e-12))
    return targets.astype(np.float32), {"components": k,
                                        "explained_variance": round(explained, 4)}


@flax.struct.dataclass
class LabelledAccuracy(metrics.Average):
    """Accuracy against the gold labels, over labelled examples only (augmented ones have none)."""

    @classmethod
    def from_model_output(cls, logits, labels, labelled, mask, **_) -> "LabelledAccuracy":
        use = mask & (labelled > 0)
        correct = (jnp.argmax(logits, -1) == labels) & use
        return cls(total=jnp.sum(correct.astype(jnp.float32)), count=jnp.sum(use, dtype=jnp.int32))


@flax.struct.dataclass
class DistillMetrics(metrics.Collection):
    accuracy: LabelledAccuracy
    loss: metrics.Average.from_output("loss")
    kl_loss: metrics.Average.from_output("kl")  # KL to the teacher at temperature T
    agreement: metrics.Average.from_output("agreement")  # argmax equal to the teacher's
    hint_loss: metrics.Average.from_output("hint")  # [CLS] state vs the teacher's (0: no hint)


def distill_task(temperature: float, alpha: float, hint: float = 0.0) -> Task:
    """Training on ``batch["teacher_logits"]`` and ``batch["has_label"]`` (and, with ``hint``,
    ``batch["teacher_hidden"]``); dev data (which has no teacher outputs) is scored as plain
    classification, the best checkpoint by accuracy."""
    def forward(model, batch, key):
        rngs = None if key is None else nnx.Rngs(dropout=key)
        if hint:
            hidden = model.encoder(batch["input_ids"], batch["attention_mask"], rngs=rngs)
            logits = model.head(hidden, rngs=rngs, attention_mask=batch["attention_mask"])
            logits = logits.astype(jnp.float32)
            hint_error = hint_loss(hidden[:, 0], batch["teacher_hidden"])
        else:
            logits = model(batch["input_ids"], batch["attention_mask"], rngs=rngs)
            logits = logits.astype(jnp.float32)
            hint_error = jnp.zeros(logits.shape[0], jnp.float32)
        loss, per_example, kl = distill_loss(
            logits, batch["teacher_logits"], batch["labels"], batch["has_label"],
            batch["weights"], temperature, alpha)
        if hint:
            per_example = per_example + hint * hint_error
            weights = batch["weights"]
            loss = loss + hint * jnp.sum(hint_error * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        agreement = (jnp.argmax(logits, -1) == jnp.argmax(batch["teacher_logits"], -1))
        update = DistillMetrics.single_from_model_output(
            logits=logits, labels=batch["labels"], labelled=batch["has_label"], loss=per_example,
            kl=kl, agreement=agreement.astype(jnp.float32), hint=hint_error,
            mask=batch["weights"] > 0)
        return loss, update, {"logits": logits}

    return Task("distill", DistillMetrics, "accuracy", True, forward, eval_task=CLASSIFICATION)


# ------------------------------------------------------------------------------ teacher logits


def teacher_fingerprint(teacher: ZooModel) -> str:
    """sha256 of what a teacher's outputs depend on: architecture, labels, parameters, tokenizer.

    Hashing the parameter values (not a directory's recorded checksums) works for any model,
    in memory or loaded, and changes with any retraining; it costs ~0.2 s for 22M parameters.
    """
    from zoo.checkpoint import module_params

    h = hashlib.sha256()
    h.update(json.dumps(teacher.info.to_dict(), sort_keys=True, default=str).encode())
    params = module_params(teacher.encoder, "encoder/")
    if teacher.head is not None:
        params |= module_params(teacher.head, "head/")
    for name in sorted(params):
        value = np.ascontiguousarray(np.asarray(params[name]))
        h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    h.update(teacher.tokenizer.to_str().encode() if teacher.tokenizer is not None else b"-")
    return h.hexdigest()


def _texts_digest(texts: Sequence) -> str:
    h = hashlib.sha256()
    for text in texts:
        # A pair hashes as its two texts after a separator no single text starts with.
        data = (text if isinstance(text, str) else "\x00pair\x00" + "\x00".join(text)
                ).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_path(teacher: ZooModel, texts: Sequence[str], cache_dir: str | Path | None = None,
               kind: str = "logits") -> Path:
    """Where ``teacher``'s ``kind`` ("logits" or "features") over ``texts`` are cached (under
    ``cache_root()/distill``)."""
    return _cache_paths(teacher, texts, cache_dir)[kind]


def _cache_paths(teacher: ZooModel, texts: Sequence[str], cache_dir: str | Path | None
                 ) -> dict[str, Path]:
    """{"logits": path, "features": path}: one fingerprint of the teacher (it hashes every
    parameter) for both files."""
    from zoo.hub import cache_root

    key = hashlib.sha256(f"v{CACHE_VERSION}:{teacher_fingerprint(teacher)}:"
                         f"{_texts_digest(texts)}".encode()).hexdigest()[:32]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "distill"
    return {kind: root / f"teacher-{kind}-v{CACHE_VERSION}-{key}.npy"
            for kind in ("logits", "features")}


def _load_cached(path: Path, shape: tuple[int, int], dtype) -> np.ndarray | None:
    """The cached array, or None when absent or damaged (then it is computed again)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.shape != shape or array.dtype != dtype or not np.isfinite(array).all():
        return None
    return array


_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _teacher_forward(teacher: ZooModel):
    """(jitted (logits, [CLS] hidden state)(state, ids, mask, types), state), made once per
    teacher: the training, augmented and dev texts then share its compiled shapes."""
    if teacher not in _FORWARDS:
        graph, state = nnx.split(teacher)  # zoo.load gives eval mode: no dropout

        def forward(state, ids, mask, types=None):
            model = nnx.merge(graph, state)
            hidden = model.encoder(ids, mask) if types is None else model.encoder(ids, mask,
                                                                                  types)
            logits = model.head(hidden, attention_mask=mask).astype(jnp.float32)
            return logits, hidden[:, 0].astype(jnp.float32)

        _FORWARDS[teacher] = (jax.jit(forward, compiler_options=compiler_options(teacher)),
                              state)
    return _FORWARDS[teacher]


def compute_outputs(teacher: ZooModel, texts: Sequence, batch_size: int = 64,
                    show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's logits (float32, (N, classes)) and final [CLS] hidden states (float32,
    (N, hidden)) over ``texts`` (strings, or (text, pair) tuples), in their order: one
    forward pass gives both.

    Texts are sorted by token count and batched so each batch pads only to its longest
    text rounded up to 8 (as ``predict`` does); rows are fixed at ``batch_size``, so the
    jitted forward compiles once per length bucket.
    """
    from tqdm.auto import tqdm

    from zoo.inference import pad_encoded, uses_token_types
    from zoo.text import special_ids

    if not _classifies(teacher) or teacher.tokenizer is None:
        raise InvalidArgumentError("the teacher must be a classifier with its tokenizer (a "
                                   "fine-tuned run or model directory)")
    max_len = teacher.info.input_len
    buckets = buckets_for(max_len, tuple(range(8, max_len + 1, 8)))
    pad = special_ids(teacher.tokenizer)["pad"]
    forward, state = _teacher_forward(teacher)
    encoded = teacher.task.encode_items(teacher.tokenizer, list(texts), max_len)
    types = uses_token_types(teacher.config)
    order = np.argsort([len(e.ids) for e in encoded], kind="stable")
    logits = np.zeros((len(texts), teacher.info.num_classes), np.float32)
    features = np.zeros((len(texts), teacher.config.hidden_size), np.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, disable=not show_progress, unit="batch", desc="teacher logits",
                      dynamic_ncols=True):
        chunk = order[start:start + batch_size]
        ids, mask, type_ids = pad_encoded([encoded[i] for i in chunk], buckets, pad, batch_size,
                                          types)
        out_logits, out_features = forward(state, ids, mask, type_ids)
        logits[chunk] = np.asarray(out_logits)[:len(chunk)]
        features[chunk] = np.asarray(out_features)[:len(chunk)]
    if not (np.isfinite(logits).all() and np.isfinite(features).all()):
        raise InvalidArgumentError("the teacher gives non-finite outputs: its weights are broken")
    return logits, features


def compute_logits(teacher: ZooModel, texts: Sequence[str], batch_size: int = 64,
                   show_progress: bool = True) -> np.ndarray:
    """The teacher's logits (float32, (N, classes)) over ``texts``, in their order."""
    return compute_outputs(teacher, texts, batch_size, show_progress)[0]


def cached_teacher_outputs(teacher: ZooModel, texts: Sequence[str],
                           cache_dir: str | Path | None = None, *, features: bool = False,
                           batch_size: int = 64, show_progress: bool = True
                           ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(logits, [CLS] features or None, info): ``compute_outputs`` once per (teacher, texts).

    The logits are cached as float32; the features, when asked for, as float16 beside them
    (half the disk; they are regression targets). info says hit or miss, the seconds spent
    and the logits' cache file.
    """
    from zoo.fsutil import atomic_file

    started = time.perf_counter()
    texts = list(texts)
    paths = _cache_paths(teacher, texts, cache_dir)
    path = paths["logits"]
    logits = _load_cached(path, (len(texts), teacher.info.num_classes), np.float32)
    hidden = None
    if features:
        hidden = _load_cached(paths["features"], (len(texts), teacher.config.hidden_size),
                              np.float16)
    hit = logits is not None and (hidden is not None or not features)
    if not hit:
        logits, hidden = compute_outputs(teacher, texts, batch_size, show_progress)
        hidden = hidden.astype(np.float16) if features else None
        for kind, array in (("logits", logits), ("features", hidden)):
            if array is not None:
                with atomic_file(paths[kind]) as tmp, \
                        open(tmp, "wb") as handle:
                    np.save(handle, array)
    return logits, hidden, {"cache": "hit" if hit else "miss", "examples": len(texts),
                            "seconds": round(time.perf_counter() - started, 2),
                            "path": str(path)}


def cached_teacher_logits(teacher: ZooModel, texts: Sequence[str],
                          cache_dir: str | Path | None = None, *, batch_size: int = 64,
                          show_progress: bool = True) -> tuple[np.ndarray, dict]:
    """(logits, info): the teacher's logits over ``texts``, computed once and cached."""
    logits, _, info = cached_teacher_outputs(teacher, texts, cache_dir, batch_size=batch_size,
                                             show_progress=show_progress)
    return logits, info


def teacher_logits(teacher_model: ZooModel, texts: Sequence[str],
                   cache_dir: str | Path | None = None, *, batch_size: int = 64,
                   show_progress: bool = True) -> np.ndarray:
    """The teacher's logits over ``texts`` (float32, (N, classes)), computed once and cached."""
    return cached_teacher_logits(teacher_model, texts, cache_dir, batch_size=batch_size,
                                 show_progress=show_progress)[0]


# ------------------------------------------------------------------------------ embeddings


def _table(encoder, role: str) -> nnx.Param:
    table = getattr(encoder, "token_embeddings", None)
    if table is None:
        raise InvalidArgumentError(
            f"the {role}'s encoder ({type(encoder).__name__}) has no token_embeddings() method, "
            "which embedding transfer needs (see README, 'Adding a family')")
    return table()


def transfer_embeddings(teacher: ZooModel, student: ZooModel, student_tokenizer) -> dict:
    """Initialise ``student``'s token embeddings from ``teacher``'s, across vocabularies.

    Each token of the student's vocabulary (its subword prefix removed) is encoded with the
    teacher's tokenizer, and its vector is the mean of the teacher's input embeddings of those
    pieces. The vectors are centred and projected on their top principal components down to
    the student's width, and scaled to the standard deviation of the student's current table,
    so the rest of its initialisation still fits. Special tokens, and tokens the teacher only
    knows as its unknown token, keep their values. Works in place; returns what was done.

    A student trained from random embeddings learns a token only from the training sentences
    that hold it; the teacher's table starts rare tokens (and the pieces unseen words split
    into) near the tokens they mean.
    """
    target = _table(student.encoder, "student")
    source = np.asarray(jax.device_get(_table(teacher.encoder, "teacher")[...]), np.float32)
    if teacher.tokenizer is None:
        raise InvalidArgumentError("the teacher has no tokenizer: embedding transfer needs it")
    current = np.array(jax.device_get(target[...]), np.float32)
    size = min(student_tokenizer.get_vocab_size(), current.shape[0])
    specials = set(student_tokenizer.get_added_tokens_decoder())
    prefix = getattr(student_tokenizer.model, "continuing_subword_prefix", None) or ""
    ids = [i for i in range(size) if i not in specials]
    strings = []
    for i in ids:
        token = student_tokenizer.id_to_token(i) or ""
        strings.append(token[len(prefix):] if prefix and token.startswith(prefix) else token)
    unknown = teacher.tokenizer.token_to_id("[UNK]")
    vectors, found = [], []
    for i, encoding in zip(ids, teacher.tokenizer.encode_batch(strings, add_special_tokens=False)):
        pieces = [j for j in encoding.ids if j != unknown and 0 <= j < source.shape[0]]
        if pieces:
            vectors.append(source[pieces].mean(0))
            found.append(i)
    if len(found) < 2:
        raise InvalidArgumentError("the teacher's tokenizer knows fewer than 2 of the student's "
                                   "tokens: nothing to transfer")
    vectors = np.stack(vectors)
    vectors -= vectors.mean(0)
    width = current.shape[1]
    k = min(width, *vectors.shape)
    _, singular, basis = np.linalg.svd(vectors, full_matrices=False)
    projected = np.zeros((len(found), width), np.float32)
    projected[:, :k] = vectors @ basis[:k].T
    scale = float(current.std()) / max(float(projected.std()), 1e-12)
    current[found] = projected * scale
    target[...] = jnp.asarray(current, target[...].dtype)
    variance = singular ** 2
    return {"tokens": len(found), "vocabulary": size, "components": k,
            "explained_variance": round(float(variance[:k].sum() / variance.sum()), 4)}


# ------------------------------------------------------------------------------ augmentation


def augment(texts: Sequence[str], n: int, seed: int, *, vocabulary: Sequence[str] | None = None,
            p_mask: float = 0.1, p_replace: float = 0.1, p_ngram: float = 0.25,
            max_ngram: int = 5, min_words: int = 0) -> list[str]:
    """``n`` new sentences per text of at least ``min_words`` words (all of the first such
    text's first), as in Tang et al. 2019.

    Per word: with ``p_mask`` it becomes ``[MASK]``, else with ``p_replace`` a word drawn
    uniformly from ``vocabulary`` (default: the words of ``texts``; the paper's same-POS
    constraint is left out); then with ``p_ngram`` the sentence is cut to a random n-gram,
    n uniform in 1..``max_ngram``. Words are whitespace-separated (SST-2 is pre-tokenised).
    ``min_words`` skips short texts: SST-2's training set is mostly short phrases (9.4 words
    on average), its dev set whole sentences (19.5), and a small student trails the teacher
    most on long ones. The result is a pure function of the arguments.
    """
    words_of = [text.split() for text in texts]
    vocab = sorted({w for words in words_of for w in words}) if vocabulary is None \
        else list(vocabulary)
    if not vocab:
        vocab = [MASK_TOKEN]
    rng = np.random.default_rng([seed, 0x7A4B])
    out = []
    for words in words_of:
        if len(words) < min_words:
            continue
        for _ in range(n):
            draw = rng.random(len(words))
            picks = rng.integers(len(vocab), size=len(words))
            new = [MASK_TOKEN if u < p_mask else vocab[j] if u < p_mask + p_replace else w
                   for w, u, j in zip(words, draw, picks)]
            if len(new) > 1 and rng.random() < p_ngram:
                k = int(rng.integers(1, min(max_ngram, len(new)) + 1))
                start = int(rng.integers(0, len(new) - k + 1))
                new = new[start:start + k]
            out.append(" ".join(new))
    return out


# ------------------------------------------------------------------------------ the run


def _classifies(model: ZooModel) -> bool:
    return model.task is not None and model.task.label_kind == "class"


def _items(examples) -> list:
    """A split's texts, or its (text, pair) tuples."""
    if examples.pairs is None:
        return list(examples.texts)
    return list(zip(examples.texts, examples.pairs))


def _prepare(model: ZooModel, train_cfg: TrainConfig, raw, cfg: DistillConfig,
             show_progress: bool):
    """``prepare.prepare_data`` plus the transfer set: the training examples (gold labels and
    the teacher's logits) and, with ``augment``, ``augment`` x as many teacher-labelled
    sentences (single-text tasks)."""
    from zoo.hub import load
    from zoo.prepare import prepare_data
    from zoo.text import encode

    data = prepare_data(model, train_cfg, raw)
    if data.task_data is None or not _classifies(model):
        raise InvalidArgumentError("distillation trains a classifier: give a classification "
                                   "dataset (e.g. --dataset glue/sst2 or glue/mrpc)")
    train_split = data.task_data.splits["train"]
    if cfg.augment and train_split.pairs is not None:
        raise InvalidArgumentError("--augment rewrites single sentences; this dataset has "
                                   "text pairs (use --augment 0)")
    if cfg.augment and len(train_split) * (cfg.augment + 1) > MAX_TRANSFER:
        raise InvalidArgumentError(
            f"--augment {cfg.augment} makes {len(train_split) * (cfg.augment + 1):,} transfer "
            f"sentences from {len(train_split):,}; at most {MAX_TRANSFER:,} fit in memory "
            f"(use --augment {max(0, MAX_TRANSFER // len(train_split) - 1)} or less)")
    teacher = load(cfg.teacher)
    if not _classifies(teacher):
        raise InvalidArgumentError(f"--teacher {cfg.teacher} has no classification head")
    if (teacher.info.num_classes, tuple(teacher.info.labels or ())) != \
            (model.info.num_classes, tuple(model.info.labels or ())):
        raise InvalidArgumentError(
            f"the teacher's labels {list(teacher.info.labels or ())} differ from the student "
            f"head's {list(model.info.labels or ())}")
    texts = _items(train_split)
    if len(texts) != len(data.train):
        raise AssertionError("the training sentences and the tokenised split differ")
    kwargs = dict(batch_size=cfg.teacher_batch_size, show_progress=show_progress,
                  features=cfg.hint > 0)
    logits, features, info = cached_teacher_outputs(teacher, texts, **kwargs)
    rows, labels = data.train.token_rows(), data.train.labels
    has_label = np.ones(len(texts), np.float32)
    summary = {"teacher": cfg.teacher, "temperature": cfg.temperature, "alpha": cfg.alpha,
               "augment": cfg.augment, "embeddings": cfg.embeddings, "hint": cfg.hint,
               "teacher_logits_seconds": info["seconds"], "teacher_logits_cache": info["cache"]}
    if cfg.embeddings == "teacher":
        summary["embedding_transfer"] = transfer_embeddings(teacher, model, data.tokenizer)
    if cfg.augment:
        seed = train_cfg.seed if cfg.augment_seed is None else cfg.augment_seed
        extra = augment(texts, cfg.augment, seed, p_mask=cfg.p_mask,
                        p_replace=cfg.p_replace, p_ngram=cfg.p_ngram, max_ngram=cfg.max_ngram,
                        min_words=cfg.min_words)
        extra_logits, extra_features, extra_info = cached_teacher_outputs(teacher, extra,
                                                                          **kwargs)
        rows = rows + encode(data.tokenizer, extra, data.train.buckets[-1])
        labels = np.concatenate([labels, np.zeros(len(extra), np.int32)])
        logits = np.concatenate([logits, extra_logits])
        if features is not None:
            features = np.concatenate([features, extra_features])
        has_label = np.concatenate([has_label, np.zeros(len(extra), np.float32)])
        summary |= {"augment_logits_seconds": extra_info["seconds"],
                    "augment_logits_cache": extra_info["cache"]}
    extras = {"teacher_logits": logits, "has_label": has_label}
    if features is not None:
        extras["teacher_hidden"], summary["hint_projection"] = hint_targets(
            features, model.config.hidden_size)
        del features
    # What the student is chasing: the teacher's own accuracy (dev logits are cached too).
    dev_logits, _ = cached_teacher_logits(teacher, _items(data.task_data.splits["validation"]),
                                          batch_size=cfg.teacher_batch_size,
                                          show_progress=show_progress)
    summary |= {"transfer_examples": len(rows),
                "teacher_train_accuracy": _accuracy(logits[:len(texts)], data.train.labels),
                "teacher_dev_accuracy": _accuracy(dev_logits, data.dev_labels)}
    fields = {}
    if "token_type_ids" in data.train.token_fields:
        types = data.train.token_rows("token_type_ids")
        # Augmented sentences are single texts: segment 0 throughout.
        fields["token_type_ids"] = (types + [[0] * len(r) for r in rows[len(types):]], 0)
    data.train = BucketBatcher(rows, labels, batch_size=train_cfg.batch_size,
                               buckets=data.train.buckets, pad_id=data.train.pad_id,
                               extras=extras, token_fields=fields)
    data.info = data.info | summary  # the dataset's (name, task, labels, sizes) and the method's
    del teacher  # its parameters are not needed while the student trains
    return data


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(float(np.mean(logits.argmax(-1) == labels)), 4)


def read_distill_config(run_dir: str | Path) -> DistillConfig:
    """The DistillConfig a distillation run was started with (its ``config.json``)."""
    from zoo.errors import ConfigError
    from zoo.run import CONFIG, read_run_config

    path = Path(run_dir) / CONFIG
    train_cfg = read_run_config(run_dir)
    section = json.loads(path.read_text(encoding="utf-8")).get(SECTION)
    fields = {f.name for f in dataclasses.fields(DistillConfig)} - {"train"}
    if not isinstance(section, dict) or not set(section) <= fields or "teacher" not in section:
        raise ConfigError(f"{path}: no valid '{SECTION}' section; it is not a distillation run")
    try:
        return DistillConfig(train=train_cfg, **section).validated()
    except InvalidArgumentError as err:
        raise ConfigError(f"{path}: {err}") from None


def distill_run(cfg: DistillConfig, out: str | Path, resume: bool = False,
                show_progress: bool = True, overwrite: bool = False) -> dict:
    """Distil ``cfg.teacher`` into ``cfg.train.model`` in the run folder ``out``; the summary.

    A normal run (``zoo.run.train_run``) with the teacher's logits as extra per-example
    inputs and the distillation task; ``resume`` continues from ``out/config.json``. The
    summary adds the teacher-logit seconds and cache hits to ``train_run``'s.
    """
    from zoo.run import train_run

    out = Path(out).expanduser().resolve()
    if resume:
        if not (out / "config.json").is_file():
            raise FileNotFoundError(f"--resume: {out} holds no run")
        cfg = read_distill_config(out)
    cfg = dataclasses.replace(cfg.validated(), teacher=str(Path(cfg.teacher).expanduser()
                                                           .resolve()))
    teacher = Path(cfg.teacher)
    if teacher == out or teacher.is_relative_to(out):
        raise InvalidArgumentError(f"--teacher {teacher} lies inside --out {out}, which the "
                                   "run replaces; choose another --out")
    return train_run(cfg.train, out, resume=resume, show_progress=show_progress,
                     overwrite=overwrite,
                     prepare=lambda model, train_cfg, raw: _prepare(model, train_cfg, raw, cfg,
                                                                    show_progress),
                     task=distill_task(cfg.temperature, cfg.alpha, cfg.hint),
                     method={SECTION: cfg.settings()})
