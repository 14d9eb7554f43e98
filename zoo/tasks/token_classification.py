"""Token classification (named entities): one tag per word.

A word's first sub-word token carries its tag; its other pieces and the special tokens are
labelled ``IGNORE`` and take no part in loss or metrics. Metrics: token accuracy over the
scored tokens (exact, merged across batches) and, per split, entity-level precision, recall
and F1 as ``seqeval`` computes them (``zoo.tasks.entities``). Words cut off by ``max_len``
are scored as predicted ``O``, so a split's figures are always over all its gold entities.
"""


import dataclasses
import json
import re
from pathlib import Path
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from zoo.tasks.base import IGNORE, Task, head_forward, weighted_mean
from zoo.tasks.entities import entities, entity_scores

# Words of a raw text for prediction: runs of word characters (keeping inner . ' - &, as in
# "U.S", "O'Neil", "Rolls-Royce") or single other non-space characters, as CoNLL splits text.
WORD = re.compile(r"\w+(?:[.'’&-]\w+)*|[^\w\s]")


@flax.struct.dataclass
class TokenMetrics(metrics.Collection):
    accuracy: metrics.Average.from_output("correct")  # over scored tokens (first pieces)
    loss: metrics.Average.from_output("loss")


@dataclasses.dataclass(frozen=True)
class Entity:
    text: str
    label: str
    start: int  # character offsets in the input text: text[start:end] == entity text
    end: int
    score: float  # mean probability of the entity's word tags


@dataclasses.dataclass(frozen=True)
class Tagged:
    text: str | tuple[str, ...]
    entities: list[Entity]
    tags: list[str]  # one per word
    words: list[str]

    def row(self) -> str:
        found = " ".join(f"[{e.label} {e.text!r} {e.start}:{e.end}]" for e in self.entities)
        return f"{found or '-'}\t{self.text if isinstance(self.text, str) else ' '.join(self.text)}"


def words_of(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The words of a raw text and their character spans."""
    found = [(m.group(), m.span()) for m in WORD.finditer(text)]
    return [w for w, _ in found], [s for _, s in found]


class TokenClassification(Task):
    name = "token-classification"
    hf_class = "ForTokenClassification"
    head = "token-classifier"
    metrics = TokenMetrics
    best_metric = "f1"
    higher_is_better = True
    has_classes = True
    label_kind = "tags"
    collect = ("tags", "scored")

    def output_shape(self, batch, length, config, size) -> tuple:
        return (batch, length, size)

    def forward(self, model, batch, key):
        logits = head_forward(model, batch, key)  # (B, L, C)
        labels = batch["labels"]
        scored = (labels != IGNORE) & (batch["weights"][:, None] > 0)
        safe = jnp.where(scored, labels, 0)
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        predictions = jnp.argmax(logits, -1)
        correct = (predictions == safe).astype(jnp.float32)
        mask = scored.reshape(-1)
        update = TokenMetrics.single_from_model_output(
            correct=correct.reshape(-1), loss=per_token.reshape(-1), mask=mask)
        loss = weighted_mean(per_token, scored.astype(jnp.float32))
        return loss, update, {"tags": predictions.astype(jnp.int32), "scored": scored}

    @staticmethod
    def word_tags(collected, labels: Sequence[str], reference) -> tuple[list, list]:
        """(gold, predicted) tag names per sentence; words past the truncation are ``O``."""
        gold, predicted = [], []
        for tags, scored, truth in zip(collected["tags"], collected["scored"], reference):
            ids = np.asarray(tags)[np.asarray(scored, bool)][:len(truth)]
            names = [labels[int(i)] for i in ids] + ["O"] * (len(truth) - len(ids))
            gold.append([labels[int(i)] for i in truth])
            predicted.append(names)
        return gold, predicted

    def finalize(self, collected, reference, labels) -> dict[str, float]:
        gold, predicted = self.word_tags(collected, labels, reference)
        scores = entity_scores(gold, predicted)
        return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}

    def encode_examples(self, tokenizer, examples, max_len: int) -> tuple[list, list | None]:
        """Word lists tokenised; each word's first piece carries its tag, the rest IGNORE."""
        from zoo.text import encode_words

        encoded = encode_words(tokenizer, examples.texts, max_len)
        if examples.labels is None:
            return encoded, None
        rows = []
        for e, tags in zip(encoded, examples.labels):
            row, previous = [], None
            for word in e.word_ids:
                row.append(IGNORE if word is None or word == previous else tags[word])
                previous = word
            rows.append(row)
        return encoded, rows

    def encode_items(self, tokenizer, items, max_len: int) -> list:
        """Raw texts (split into words with their character spans) or lists of words."""
        from zoo.text import check_unicode, encode_words

        words, spans = [], []
        for i, item in enumerate(items):
            if isinstance(item, str):
                check_unicode(item, f"texts[{i}]")
                found, where = words_of(item)
                words.append(found)
                spans.append(where)
            else:
                words.append(list(item))
                spans.append(None)
        encoded = encode_words(tokenizer, words, max_len)
        for e, where in zip(encoded, spans):
            e.spans = where
        return encoded

    def predict_outputs(self, head_outputs, attention_mask):
        return jax.nn.softmax(head_outputs, -1)

    def decode(self, items, outputs, model, encodings) -> list[Tagged]:
        labels = model.info.labels
        results = []
        for item, probabilities, encoding in zip(items, outputs, encodings):
            words, spans = encoding.words, encoding.spans
            first = {}
            for position, word in enumerate(encoding.word_ids):
                if word is not None and word not in first:
                    first[word] = position
            tags, confidence = [], []
            for w in range(len(words)):
                if w in first:
                    p = probabilities[first[w]]
                    tags.append(labels[int(p.argmax())])
                    confidence.append(float(p.max()))
                else:  # cut off by max_len
                    tags.append("O")
                    confidence.append(0.0)
            found = []
            for kind, a, b in entities(tags):
                if spans is not None:
                    start, end = spans[a][0], spans[b][1]
                    text = item[start:end]
                else:
                    start, end, text = a, b + 1, " ".join(words[a:b + 1])
                found.append(Entity(text, kind, start, end,
                                    float(np.mean(confidence[a:b + 1]))))
            results.append(Tagged(item if isinstance(item, str) else tuple(item), found, tags,
                                  list(words)))
        return results

    def report(self, run_dir, collected, reference, labels, title: str) -> dict:
        gold, predicted = self.word_tags(collected, labels, reference)
        overall = entity_scores(gold, predicted)
        types = sorted({kind for sentence in gold for kind, _, _ in entities(sentence)})
        per_type = {}
        for kind in types:
            keep = [[t if t[2:] == kind else "O" for t in s] for s in gold]
            guess = [[t if t[2:] == kind else "O" for t in s] for s in predicted]
            support = sum(len(entities(s)) for s in keep)
            per_type[kind] = {**entity_scores(keep, guess), "support": support}
        summary = {"overall": overall, "per_type": per_type,
                   "sentences": len(gold), "entities": sum(v["support"]
                                                           for v in per_type.values())}
        if run_dir is not None:
            from zoo.fsutil import atomic_write_text

            lines = [title, "", f"{'type':>8} {'precision':>10} {'recall':>8} {'f1':>8} "
                     f"{'support':>8}"]
            for kind, s in per_type.items():
                lines.append(f"{kind:>8} {s['precision']:>10.4f} {s['recall']:>8.4f} "
                             f"{s['f1']:>8.4f} {s['support']:>8}")
            lines.append(f"{'micro':>8} {overall['precision']:>10.4f} {overall['recall']:>8.4f} "
                         f"{overall['f1']:>8.4f} {summary['entities']:>8}")
            lines.append(f"\ntoken accuracy {overall['accuracy']:.4f} over "
                         f"{sum(map(len, gold))} words")
            atomic_write_text(Path(run_dir) / "dev_report.txt", "\n".join(lines) + "\n")
            atomic_write_text(Path(run_dir) / "dev_report.json",
                              json.dumps(summary, indent=2) + "\n")
        return {"dev_f1": overall["f1"], "dev_precision": overall["precision"],
                "dev_recall": overall["recall"]}
