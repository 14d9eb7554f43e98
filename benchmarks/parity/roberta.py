"""RoBERTa / XLM-RoBERTa parity checkpoints: small random transformers models of every task
class, written with ``save_pretrained`` beside a tokenizer of the family's real kind.

Needs torch and transformers (the bench environment); the zoo never imports them.

``checkpoints(root)`` writes the parity set and returns ``(label, folder)`` pairs. Options
covered (one checkpoint each unless said):

- model types ``roberta`` (byte-level BPE tokenizer with ``RobertaProcessing``, ``<s> <pad>
  </s> <unk> <mask>``, pad id 1) and ``xlm-roberta`` (Unigram + Metaspace tokenizer, ``<s>
  $A </s>`` / ``<s> $A </s> </s> $B </s>`` templates, ``<mask>`` last);
- task classes: base model (its unused pooler in the file), ForSequenceClassification with
  3 labels (``id2label``) and with 1 (regression), ForTokenClassification (5 tags),
  ForMaskedLM (tied decoder; 5.x files keep only ``lm_head.bias``);
- weight files: ``model.safetensors`` as transformers 5 writes it, and ``pytorch_model.bin``
  as transformers 4 wrote it (the whole state dict: tied ``lm_head.decoder.*`` copies and
  the ``embeddings.position_ids`` buffer) -- transformers 5's ``save_pretrained`` ignores
  ``safe_serialization=False``, so the ``.bin`` is written with ``torch.save``;
- safetensors shards with their ``model.safetensors.index.json`` (``max_shard_size``);
- ``hidden_act`` gelu, gelu_new, relu, silu and quick_gelu; ``type_vocab_size`` 1 (the published models) and
  2 (transformers' default); ``classifier_dropout`` set and unset; max_position_embeddings
  514 and 130 (128 usable positions); an untied MLM decoder (``tie_word_embeddings`` false,
  whose ``lm_head.decoder.bias`` differs from the then unused ``lm_head.bias``).

Random weights use ``initializer_range`` 0.2 and every LayerNorm and bias is perturbed
(transformers initialises them to 1 / 0), so a misplaced tensor shows in the outputs.

``write_golden(root)`` writes the tiny golden folders of ``zoo_tests/test_roberta.py``
(``zoo_tests/golden/roberta-*``; the XLM-RoBERTa ones are ``roberta-xlm-*``):
safetensors checkpoints plus ``expected.npz`` (transformers' input ids, attention mask and
outputs on ``GOLDEN_SENTENCES``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from benchmarks.parity.common import cli, perturb, save_expected, sentences

# The tokenizers are trained on SST-2's train sentences: $ZOO_SST2_DIR, else the shared copy.
SST2_DIR = Path(os.environ.get("ZOO_SST2_DIR")
                or Path(__file__).resolve().parents[3] / "shared/data/SST-2")
SEED = 1234
SPECIALS_ROBERTA = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
GOLDEN_SENTENCES = (
    "a gorgeous , witty , seductive movie .",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the film is strictly routine .",
    "a masterpiece four years in the making .",
    "Hello World! Café au lait, naïve résumé.",
    "<mask> is the best part",
    "this is a film well worth seeing , talking and singing heads and all .",
)


# ----------------------------------------------------------------------------- tokenizers


def roberta_tokenizer(vocab_size: int, texts: list[str]):
    """Byte-level BPE as RoBERTa's: no normaliser, ByteLevel pre-tokenizer and decoder,
    ``RobertaProcessing`` (``<s> A </s>`` / ``<s> A </s> </s> B </s>``, no token types)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS_ROBERTA),
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS_ROBERTA}
    assert list(ids.values()) == [0, 1, 2, 3, 4], ids
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=False)
    return tokenizer


def xlm_roberta_tokenizer(vocab_size: int, texts: list[str]):
    """Unigram with Metaspace as XLM-RoBERTa's (``<s>=0 <pad>=1 </s>=2 <unk>=3``, ``<mask>``
    last); NFKC and space squeezing stand in for its precompiled SentencePiece normaliser."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size - 1, special_tokens=["<s>", "<pad>", "</s>",
                                                                        "<unk>"],
                             unk_token="<unk>", show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # The trainer's scores differ between runs in their last digits and ties come in any
    # order: rounded and sorted (after the 4 special tokens), the files come out the same.
    state = json.loads(tokenizer.to_str())
    vocab = [(piece, round(score, 3)) for piece, score in state["model"]["vocab"]]
    state["model"]["vocab"] = vocab[:4] + sorted(vocab[4:], key=lambda v: (-v[1], v[0]))
    tokenizer = Tokenizer.from_str(json.dumps(state))
    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    assert tokenizer.token_to_id("<mask>") == tokenizer.get_vocab_size() - 1
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    return tokenizer


def _save_tokenizer(tokenizer, folder: Path, max_len: int) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=max_len).save_pretrained(str(folder))


# ----------------------------------------------------------------------------- models


def _write(model, folder: Path, tokenizer, *, bin_file: bool | str = False) -> Path:
    """``bin_file``: True writes ``pytorch_model.bin``; "sharded", safetensors shards and
    their index (``max_shard_size`` as a model above it gets)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), **({"max_shard_size": "100KB"}
                                          if bin_file == "sharded" else {}))
    if bin_file is True:
        # transformers 4's pytorch_model.bin: the whole state dict (tied copies included)
        # plus the position_ids buffer its files carried.
        state = dict(model.state_dict())
        prefix = "roberta." if hasattr(model, "roberta") else ""
        positions = model.config.max_position_embeddings
        state[f"{prefix}embeddings.position_ids"] = torch.arange(positions).expand((1, -1))
        torch.save(state, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    _save_tokenizer(tokenizer, folder, model.config.max_position_embeddings
                    - model.config.pad_token_id - 1)
    return folder


def _config(model_type: str, vocab_size: int, **options):
    from transformers import RobertaConfig, XLMRobertaConfig

    cls = RobertaConfig if model_type == "roberta" else XLMRobertaConfig
    values = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=128, max_position_embeddings=514,
                  type_vocab_size=1, layer_norm_eps=1e-5, initializer_range=0.2,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2)
    values.update(options)
    return cls(**values)


TASKS = {
    "base": "Model",
    "classifier": "ForSequenceClassification",
    "regressor": "ForSequenceClassification",
    "token": "ForTokenClassification",
    "mlm": "ForMaskedLM",
}


def _model(model_type: str, task: str, config, generator):
    import transformers

    prefix = "Roberta" if model_type == "roberta" else "XLMRoberta"
    model = getattr(transformers, prefix + TASKS[task])(config)
    perturb(model, generator, ("LayerNorm.weight", "layer_norm.weight"))
    return model.eval()


# (label, model_type, task, config options, write pytorch_model.bin / "sharded")
VARIANTS = (
    ("roberta-base", "roberta", "base", {}, False),
    ("roberta-classifier-bin", "roberta", "classifier",
     {"num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"},
      "classifier_dropout": 0.2}, True),
    ("roberta-regressor", "roberta", "regressor", {"num_labels": 1}, False),
    ("roberta-token-gelu-new", "roberta", "token",
     {"num_labels": 5, "hidden_act": "gelu_new", "max_position_embeddings": 130}, False),
    ("roberta-mlm", "roberta", "mlm", {}, False),
    ("roberta-mlm-bin", "roberta", "mlm", {}, True),
    ("xlm-roberta-base", "xlm-roberta", "base", {"num_hidden_layers": 3}, False),
    ("xlm-roberta-classifier-types2", "xlm-roberta", "classifier",
     {"num_labels": 3, "id2label": {0: "bad", 1: "meh", 2: "good"}, "type_vocab_size": 2},
     False),
    ("xlm-roberta-regressor", "xlm-roberta", "regressor", {"num_labels": 1}, False),
    ("xlm-roberta-token-relu", "xlm-roberta", "token",
     {"num_labels": 5, "hidden_act": "relu"}, False),
    ("xlm-roberta-mlm-untied", "xlm-roberta", "mlm", {"tie_word_embeddings": False}, False),
    ("roberta-classifier-silu-sharded", "roberta", "classifier", {"hidden_act": "silu"},
     "sharded"),
    ("xlm-roberta-base-quick-gelu", "xlm-roberta", "base", {"hidden_act": "quick_gelu"}, False),
    # problem_type multi_label_classification (GoEmotions-style): a sigmoid per label
    ("roberta-multi-label-bin", "roberta", "classifier",
     {"num_labels": 4, "problem_type": "multi_label_classification",
      "id2label": {0: "anger", 1: "fear", 2: "joy", 3: "sadness"}}, True),
)


def _build(root: Path, variants, *, vocab: int, sizes: dict | None = None
           ) -> list[tuple[str, Path]]:
    import torch

    texts = sentences()
    tokenizers = {"roberta": roberta_tokenizer(vocab, texts),
                  "xlm-roberta": xlm_roberta_tokenizer(vocab, texts)}
    out = []
    for index, (label, model_type, task, options, bin_file) in enumerate(variants):
        seed = SEED + index  # different weights in every folder
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        tokenizer = tokenizers[model_type]
        config = _config(model_type, tokenizer.get_vocab_size(), **(sizes or {}), **options)
        model = _model(model_type, task, config, generator)
        out.append((label, _write(model, root / label, tokenizer, bin_file=bin_file)))
    return out


def checkpoints(root: Path) -> list[tuple[str, Path]]:
    """The parity set (labels and folders), written under ``root``."""
    return _build(Path(root), VARIANTS, vocab=2000)


# ----------------------------------------------------------------------------- golden files

GOLDEN = (
    ("roberta-base", "roberta", "base", {}, False),
    ("roberta-classifier", "roberta", "classifier",
     {"num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"}}, False),
    ("roberta-regressor", "roberta", "regressor", {"num_labels": 1}, False),
    ("roberta-token", "roberta", "token", {"num_labels": 5, "hidden_act": "gelu_new"}, False),
    ("roberta-mlm", "roberta", "mlm", {}, False),
    ("roberta-xlm-base", "xlm-roberta", "base", {}, False),
    ("roberta-xlm-mlm-untied", "xlm-roberta", "mlm",
     {"tie_word_embeddings": False, "type_vocab_size": 2}, False),
    ("roberta-multi-label", "roberta", "classifier",
     {"num_labels": 4, "problem_type": "multi_label_classification",
      "id2label": {0: "anger", 1: "fear", 2: "joy", 3: "sadness"}}, False),
)
GOLDEN_SIZES = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 32, "max_position_embeddings": 66}


def golden_positions(attention_mask: np.ndarray) -> np.ndarray:
    """(row, column) pairs where an MLM golden file keeps logits (all vocabulary columns):
    each row's first, middle and last real token -- the head is position-wise, and the
    encoder is checked at every position by the base model's file."""
    pairs = []
    for row, mask in enumerate(np.asarray(attention_mask)):
        last = int(mask.sum()) - 1
        pairs += [(row, col) for col in sorted({0, last // 2, last})]
    return np.array(pairs, np.int32)


def write_golden(root: Path) -> list[Path]:
    """Tiny checkpoints + ``expected.npz`` under ``root/<label>`` (``zoo_tests/golden``)."""
    import torch
    from transformers import AutoTokenizer

    root = Path(root)
    folders = []
    for label, folder in _build(root, GOLDEN, vocab=320, sizes=GOLDEN_SIZES):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        batch = tokenizer(list(GOLDEN_SENTENCES), padding=True, return_tensors="pt",
                          return_token_type_ids=False)
        config = json.loads((folder / "config.json").read_text())
        model_type, task = next((m, t) for name, m, t, _, _ in GOLDEN if name == label)
        model = _model_from(folder, model_type, task)
        with torch.no_grad():
            result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        save_expected(folder, batch, result, task, GOLDEN_SENTENCES, positions=golden_positions,
                      model_type=np.array(config["model_type"]))
        folders.append(folder)
    return folders


def _model_from(folder: Path, model_type: str, task: str):
    import transformers

    prefix = "Roberta" if model_type == "roberta" else "XLMRoberta"
    return getattr(transformers, prefix + TASKS[task]).from_pretrained(str(folder)).eval()


if __name__ == "__main__":
    cli(__doc__, checkpoints, write_golden)
