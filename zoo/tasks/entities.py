"""Entity spans from tag sequences, and entity-level precision / recall / F1.

The chunking rules are those of the CoNLL evaluation script, which ``seqeval`` applies by
default: tags are ``B-``/``I-``/``E-``/``S-`` + a type, or ``O``; a chunk ends at ``O``, at
a new ``B``/``S``, after ``E``/``S``, or where the type changes, and an ``I`` that follows
``O`` (or another type) opens a chunk. A predicted entity counts only when its type and
exact span match a gold entity; precision, recall and F1 are micro-averaged over all
sentences (``seqeval.metrics.f1_score(y_true, y_pred)``).
"""

from __future__ import annotations

from typing import Sequence


def _split(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag, read as the CoNLL script does: ``B-PER`` -> (B, PER);
    ``O`` -> (O, _); a tag without a dash, ``PER`` -> (P, ER)."""
    return tag[:1], tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != tag_type


def _starts(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("E", "I") and prev in ("E", "S", "O"):
        return True
    return tag not in ("O", ".") and prev_type != tag_type


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, first, last)`` word positions of each entity in one sentence (inclusive)."""
    found = []
    prev, prev_type, begin = "O", "_", 0
    for i, tag in enumerate([*tags, "O"]):
        kind, kind_type = _split(tag)
        if _ends(prev, prev_type, kind, kind_type):
            found.append((prev_type, begin, i - 1))
        if _starts(prev, prev_type, kind, kind_type):
            begin = i
        prev, prev_type = kind, kind_type
    return found


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """Micro precision, recall and F1 of predicted entities against gold ones, and the
    token accuracy; sentences are paired in order and must have equal lengths."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct = n_gold = n_predicted = tokens = right = 0
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gold_set, predicted_set = set(entities(g)), set(entities(p))
        correct += len(gold_set & predicted_set)
        n_gold += len(gold_set)
        n_predicted += len(predicted_set)
        tokens += len(g)
        right += sum(a == b for a, b in zip(g, p))
    precision = correct / n_predicted if n_predicted else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": right / tokens if tokens else 0.0}
