"""BERT / ELECTRA / DistilBERT parity checkpoints: small random transformers models of every
task class, written with ``save_pretrained`` beside a WordPiece tokenizer.

Needs torch and transformers (the bench environment); the zoo never imports them. The suite
checks this family without torch against an independent NumPy forward and the real
all-MiniLM-L6-v2 weights; this set adds transformers' own task heads and files. Covered:
model types bert, electra (embeddings 32 projected to 64) and distilbert; base model,
ForSequenceClassification (3 labels; 1 = regression), ForTokenClassification (5 tags),
ForMaskedLM; ``model.safetensors`` and a transformers-4 style ``pytorch_model.bin``; a
tokenizer as ``tokenizer.json`` and one as ``vocab.txt`` only.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.parity.common import perturb, sentences

SEED = 1234

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TASKS = {"base": "Model", "classifier": "ForSequenceClassification",
         "regressor": "ForSequenceClassification", "token": "ForTokenClassification",
         "mlm": "ForMaskedLM"}
PREFIX = {"bert": "Bert", "electra": "Electra", "distilbert": "DistilBert"}
# (label, model_type, task, config options, weights as pytorch_model.bin, vocab.txt only)
VARIANTS = (
    ("bert-base", "bert", "base", {}, False, False),
    ("bert-base-vocab-txt", "bert", "base", {}, False, True),
    ("bert-classifier-bin", "bert", "classifier",
     {"num_labels": 3, "id2label": {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}}, True, False),
    ("bert-regressor", "bert", "regressor", {"num_labels": 1}, False, False),
    ("bert-token", "bert", "token", {"num_labels": 5, "hidden_act": "gelu_new"}, False, False),
    ("bert-mlm", "bert", "mlm", {}, False, False),
    ("electra-base", "electra", "base", {"embedding_size": 32}, False, False),
    ("electra-classifier", "electra", "classifier", {"embedding_size": 32, "num_labels": 3},
     False, False),
    ("distilbert-base", "distilbert", "base", {}, False, False),
    ("distilbert-classifier-bin", "distilbert", "classifier", {"num_labels": 2}, True, False),
    ("distilbert-token", "distilbert", "token", {"num_labels": 5}, False, False),
    ("distilbert-mlm", "distilbert", "mlm", {}, False, False),
)


def wordpiece_tokenizer(vocab_size: int, texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def _config(model_type: str, vocab_size: int, options: dict):
    import transformers

    if model_type == "distilbert":
        values = dict(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                      max_position_embeddings=128, initializer_range=0.2)
    else:
        values = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                      initializer_range=0.2)
    values.update(options)
    return getattr(transformers, PREFIX[model_type] + "Config")(**values)


def _write(model, folder: Path, tokenizer, *, bin_file: bool, vocab_txt: bool) -> Path:
    import torch
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if bin_file:  # transformers 4's file: the whole state dict, tied copies included
        torch.save(dict(model.state_dict()), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", model_max_length=128,
    ).save_pretrained(str(folder))
    if vocab_txt:  # a folder as BERT's slow tokenizer wrote them: vocab.txt, no tokenizer.json
        vocab = tokenizer.get_vocab()
        (folder / "vocab.txt").write_text(
            "".join(f"{t}\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
        (folder / "tokenizer.json").unlink()
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.update(tokenizer_class="BertTokenizer", do_lower_case=True)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def checkpoints(root: Path) -> list[tuple[str, Path]]:
    """The parity set (labels and folders), written under ``root``."""
    import torch
    import transformers

    tokenizer = wordpiece_tokenizer(2000, sentences())
    out = []
    for label, model_type, task, options, bin_file, vocab_txt in VARIANTS:
        generator = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        config = _config(model_type, tokenizer.get_vocab_size(), options)
        model = getattr(transformers, PREFIX[model_type] + TASKS[task])(config)
        perturb(model, generator)
        out.append((label, _write(model.eval(), Path(root) / label, tokenizer,
                                  bin_file=bin_file, vocab_txt=vocab_txt)))
    return out
