"""From a run's config to what the trainer eats: the data read and checked, the model with
the head its task needs, the tokenizer, and bucketed batchers for train and dev.

Labelled data (any task with labels: classification, regression, token classification)
comes from a ``zoo.dataset.DatasetSpec``; its task decides how examples are tokenised and
labelled (``Task.encode_examples``). Masked-LM pre-training reads text (SST-2 sentences, a
``--text-file`` or a ``--stream``) and scores itself on SST-2's dev sentences.
"""

from __future__ import annotations

import dataclasses
from typing import Any


from zoo.batching import DEFAULT_BUCKETS, BucketBatcher, buckets_for
from zoo.errors import InvalidArgumentError
from zoo.hub import cache_root, load
from zoo.model import ZooModel, build_model, set_dropout_rate
from zoo.tasks import IGNORE, MaskingConfig, Task, get_task

EVAL_BATCH_SIZE = 64  # small batches run faster on CPU (cache-sized activations)
# A streamed corpus is shuffled in windows of this many examples, whatever the process count
# (each process's share of a window is STREAM_WINDOW / processes), so a run resumed with
# another number of processes sees the same global batches.
STREAM_WINDOW = 16_384
TOKENIZER_SAMPLE = 100_000  # texts of a streamed corpus a tokenizer is trained on


@dataclasses.dataclass
class PreparedData:
    tokenizer: object
    train: BucketBatcher
    dev: BucketBatcher
    dev_labels: Any  # the dev split's gold labels (class ids, scores, tag-id lists) or None
    masking: MaskingConfig | None
    info: dict = dataclasses.field(default_factory=dict)  # merged into summary.json
    task: Task | None = None  # the trainable task, bound to this data
    task_data: Any = None  # the zoo.dataset.TaskData it came from (labelled tasks)


@dataclasses.dataclass(frozen=True)
class StreamSample:
    """A streamed corpus: its source, and its first texts (to train a tokenizer on)."""

    source: object
    texts: list[str]


def head_task(head: str) -> Task:
    from zoo.registry import get_head

    return get_task(get_head(head).kind)


def reads_text(cfg) -> bool:
    """Whether the run's head trains on plain text (masked-LM) rather than labelled data."""
    return cfg.head is not None and head_task(cfg.head).label_kind is None


def read_data(cfg) -> Any:
    """The run's data, read before a model is built (bad data fails in a moment, not after
    the weights are loaded): a ``TaskData`` for labelled tasks; for masked-LM, (SST-2, the
    ``text_file`` lines, a ``StreamSample`` of ``stream``, or None)."""
    from zoo.data import load_sst2, read_text_lines
    from zoo.dataset import load_task_data, spec_from_config

    if not reads_text(cfg):
        if cfg.stream is not None:
            raise InvalidArgumentError("--stream is for masked-LM pre-training (`zoo pretrain`); "
                                       f"head {cfg.head!r} trains on labelled data")
        return load_task_data(spec_from_config(cfg))
    lines = read_text_lines(cfg.text_file) if cfg.text_file else None
    if cfg.stream is not None:
        from zoo.streaming import parse_source, sample_texts

        source = parse_source(cfg.stream)
        lines = StreamSample(source, sample_texts(source, TOKENIZER_SAMPLE))
    return load_sst2(cfg.data_dir), lines


def resolve_head(cfg, raw) -> Any:
    """``cfg`` with ``head`` and ``task`` filled from the data (a labelled task's default
    head, or the GLUE spec's), after checking that a given head fits the data's task."""
    from zoo.dataset import TaskData

    if not isinstance(raw, TaskData):
        return cfg
    task = get_task(raw.task)
    head = cfg.head
    if head is None:
        glue = raw.spec.glue
        own = glue is not None and glue.head and glue.task == task.name  # e.g. glue/sst2
        head = glue.head if own else task.head
    elif head_task(head).name != task.name:
        raise InvalidArgumentError(
            f"--head {head} is a {head_task(head).name} head but {raw.spec.name} is a "
            f"{task.name} task; use --head {task.head} (or drop --head), or pass --task "
            f"{head_task(head).name}")
    return dataclasses.replace(cfg, head=head, task=raw.task)


def make_model(cfg, raw: Any = None) -> ZooModel:
    """The model a run starts from: pre-trained weights when asked, else a random init; for
    labelled data, a head sized and named by the data's labels."""
    from zoo.dataset import TaskData

    num_classes = labels = None
    if isinstance(raw, TaskData):
        num_classes = get_task(raw.task).head_size(raw.label_names)
        labels = raw.label_names
    if cfg.pretrained or cfg.weights:
        model = load(cfg.model, head=cfg.head, weights=cfg.weights, seed=cfg.seed,
                     num_classes=num_classes)
    else:
        model = build_model(cfg.model, cfg.head, num_classes=num_classes, seed=cfg.seed)
    if labels and model.info.num_classes == len(labels):
        model.info = dataclasses.replace(model.info, labels=tuple(labels))
    if cfg.dropout is not None:
        set_dropout_rate(model, cfg.dropout)
    return model


def tokenizer_for(model: ZooModel, texts: list[str], cfg):
    """The encoder's own tokenizer when it has one, else the tutorial's recipe trained here."""
    from zoo.text import cached_tokenizer

    vocab_size = model.config.vocab_size
    tokenizer = model.tokenizer
    if tokenizer is None:
        tokenizer, _ = cached_tokenizer(
            texts, cfg.vocab_size or vocab_size, cache_root() / "tokenizers")
    if tokenizer.get_vocab_size() > vocab_size:
        raise InvalidArgumentError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but {cfg.model} embeds "
            f"only {vocab_size}" + (" (lower vocab_size)" if cfg.vocab_size else "")
        )
    return tokenizer


def max_len_and_buckets(model: ZooModel, cfg) -> tuple[int, tuple[int, ...]]:
    max_len = min(cfg.max_len or model.info.input_len, model.config.max_len)
    return max_len, buckets_for(max_len, tuple(cfg.buckets or DEFAULT_BUCKETS))


def corpus_texts(examples) -> list[str]:
    """Every text of a split as plain strings (words joined), e.g. to train a tokenizer on."""
    texts = [t if isinstance(t, str) else " ".join(t) for t in examples.texts]
    return texts + list(examples.pairs or [])


def batcher_for(task: Task, examples, tokenizer, model: ZooModel, *, batch_size: int,
                max_len: int, buckets) -> BucketBatcher:
    """A split tokenised by its task, with token types where the encoder reads them and the
    split's gold labels kept as ``batcher.reference`` (for metrics over the whole split)."""
    from zoo.inference import uses_token_types
    from zoo.text import special_ids

    encoded, labels = task.encode_examples(tokenizer, examples, max_len)
    fields = {}
    if uses_token_types(model.config):
        fields["token_type_ids"] = ([e.type_ids for e in encoded], 0)
    per_example = labels
    if task.label_kind == "tags" and labels is not None:
        fields["labels"] = (labels, IGNORE)
        per_example = None
    # A task that encodes the second text on its own (a bi-encoder) gives it as Encoded.pair.
    pair_ids = [e.pair.ids for e in encoded] if encoded and encoded[0].pair is not None \
        else None
    batcher = BucketBatcher([e.ids for e in encoded], per_example, batch_size=batch_size,
                            buckets=buckets, pad_id=special_ids(tokenizer)["pad"],
                            token_fields=fields, pair_ids=pair_ids)
    batcher.reference = examples.labels
    return batcher


def prepare_data(model: ZooModel, cfg, raw: Any = None) -> PreparedData:
    from zoo.dataset import TaskData

    raw = raw if raw is not None else read_data(cfg)
    if isinstance(raw, TaskData):
        return _prepare_labelled(model, cfg, raw)
    return _prepare_text(model, cfg, raw)


def _prepare_labelled(model: ZooModel, cfg, data) -> PreparedData:
    task = get_task(data.task).bind(data=data)
    max_len, buckets = max_len_and_buckets(model, cfg)
    tokenizer = tokenizer_for(model, corpus_texts(data.splits["train"]), cfg)
    train = batcher_for(task, data.splits["train"], tokenizer, model,
                        batch_size=cfg.batch_size, max_len=max_len, buckets=buckets)
    dev = batcher_for(task, data.splits["validation"], tokenizer, model,
                      batch_size=EVAL_BATCH_SIZE, max_len=max_len, buckets=buckets)
    _check_ids(model, cfg, {"train": train, "dev": dev})
    return PreparedData(tokenizer, train, dev, data.splits["validation"].labels, None,
                        info=data.summary(), task=task, task_data=data)


def _prepare_text(model: ZooModel, cfg, raw) -> PreparedData:
    """Masked-LM pre-training data (SST-2 sentences, a text file or a stream)."""
    from zoo.text import encode, special_ids, tokenize_splits

    max_len, buckets = max_len_and_buckets(model, cfg)
    dataset, lines = raw
    stream = None
    dev_texts = dataset["validation"]["sentence"]
    if isinstance(lines, StreamSample):
        tokenizer = tokenizer_for(model, lines.texts, cfg)
        stream = _open_stream(lines.source, tokenizer, cfg, max_len, buckets)
        train_ids = None
    elif lines is not None:
        tokenizer = tokenizer_for(model, lines, cfg)
        train_ids = encode(tokenizer, lines, max_len)
    else:
        tokenizer = tokenizer_for(model, dataset["train"]["sentence"], cfg)
        tokenized = tokenize_splits(dataset, tokenizer, max_len, cache_root() / "datasets")
        train_ids = tokenized["train"]["input_ids"]
    dev_ids = encode(tokenizer, dev_texts, max_len)
    ids = special_ids(tokenizer)
    masking = MaskingConfig(mask_id=ids["mask"], vocab_size=model.config.vocab_size,
                            special_ids=tuple(sorted(ids.values())))
    train = stream or BucketBatcher(train_ids, None, batch_size=cfg.batch_size,
                                    buckets=buckets, pad_id=ids["pad"])
    dev = BucketBatcher(dev_ids, None, batch_size=EVAL_BATCH_SIZE, buckets=buckets,
                        pad_id=ids["pad"])
    _check_ids(model, cfg, {"dev": dev} if stream else {"train": train, "dev": dev})
    task = head_task(model.info.head).bind(masking=masking)
    return PreparedData(tokenizer, train, dev, None, masking, task=task)


def _check_ids(model: ZooModel, cfg, batchers: dict) -> None:
    """Inside jit nothing checks ids: a bad one gives NaN. (A stream checks as it reads.)"""
    for split, batcher in batchers.items():
        low, high = batcher.id_range()
        if low < 0 or high >= model.config.vocab_size:
            raise InvalidArgumentError(
                f"{split} token ids span [{low}, {high}], outside the vocabulary of "
                f"{cfg.model} (0..{model.config.vocab_size - 1}); the tokenizer does not fit the "
                f"model, or the token cache under {cache_root()} is damaged (delete it)")


def _open_stream(source, tokenizer, cfg, max_len: int, buckets):
    """This process's share of a streamed corpus, as batches of ``cfg.batch_size`` rows."""
    import jax

    from zoo.streaming import TextStream
    from zoo.text import special_ids

    processes = jax.process_count()
    stream = TextStream(source, tokenizer, batch_size=cfg.batch_size, max_len=max_len,
                        pad_id=special_ids(tokenizer)["pad"], seed=cfg.seed,
                        process_index=jax.process_index(), process_count=processes,
                        shuffle_window=max(1, STREAM_WINDOW // processes),
                        buckets=buckets if processes == 1 else None)
    if stream.steps_per_epoch is None and cfg.max_steps is None:
        stream.close()
        raise InvalidArgumentError(f"--stream {cfg.stream}: a hub stream has no known length; "
                                   "pass --max-steps")
    return stream
