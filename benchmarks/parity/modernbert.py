"""ModernBERT parity checkpoints: small random transformers models of every task class,
written with ``save_pretrained`` beside a tokenizer of the family's real kind.

Needs torch and transformers (the bench environment); the zoo never imports them.

``checkpoints(root)`` writes the parity set and returns ``(label, folder)`` pairs. Options
covered:

- tokenizer: byte-level BPE as ModernBERT's (OLMo / GPT-NeoX style: NFC, ByteLevel
  pre-tokenizer and decoder, ``<|endoftext|>`` and ``<|padding|>`` first), its specials
  ``[UNK] [CLS] [SEP] [PAD] [MASK]`` at the *end* of the vocabulary (``[MASK]`` with
  lstrip), ``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B [SEP]``; the model's vocabulary is
  padded past the tokenizer's to a multiple of 64, as the published models' (50,368 for
  50,285 tokens);
- task classes: base model, ForSequenceClassification with 3 labels (``id2label``) and with
  1 (regression), ForTokenClassification (5 tags), ForMaskedLM (tied decoder: transformers 5
  leaves ``decoder.weight`` out of safetensors; the ``.bin`` keeps it), an untied MLM decoder
  without bias;
- config.json spellings: transformers 5 (``layer_types``, ``rope_parameters``, ``dtype``) and
  the published 4.x one (``global_attn_every_n_layers``, ``global_rope_theta`` /
  ``local_rope_theta``, ``torch_dtype``, duplicate ``layer_norm_eps``, ``reference_compile``);
- weight files: ``model.safetensors`` and ``pytorch_model.bin`` (the whole state dict, as
  transformers 4 wrote it; transformers 5 ignores ``safe_serialization=False``, so it is
  written with ``torch.save``);
- architecture options: global every 3rd / 2nd layer and an explicit ``layer_types`` whose
  layer 0 is local; sliding windows of 1, 8 and 16 tokens (SST-2 sentences are longer, and
  padded positions far from every real token see no key at all); rotary bases per layer
  type; ``attention_bias``, ``mlp_bias``, ``norm_bias``, ``classifier_bias`` on and off;
  ``decoder_bias`` on and off; ``hidden_activation`` gelu, gelu_pytorch_tanh, silu and
  quick_gelu; ``classifier_activation`` gelu, silu, relu, gelu_new and tanh; ``classifier_pooling`` cls and
  mean; ``max_position_embeddings`` 8192 and 512.

Random weights use ``initializer_range`` 0.2; every LayerNorm weight is ~ 1 + N(0, 0.3) and
every bias ~ N(0, 0.1) (transformers initialises them to 1 / 0), so a misplaced tensor shows.

``write_golden(root)`` writes the tiny golden folders of ``zoo_tests/test_modernbert.py``:
safetensors checkpoints plus ``expected.npz`` (transformers' input ids, attention mask and
outputs on ``GOLDEN_SENTENCES``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.parity.common import cli, perturb, save_expected, sentences

SEED = 20241219
LEADING = ("<|endoftext|>", "<|padding|>")      # OLMo's first two tokens
SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # appended last, as ModernBERT's
GOLDEN_SENTENCES = (
    "a gorgeous , witty , seductive movie .",
    "unflinchingly bleak and desperate",
    "the film is strictly routine .",
    "it 's a charming and often affecting journey that never quite finds its footing .",
    "Hello World! Café au lait, naïve résumé.",
    "the [MASK] is the best part",
    "ok",
    "this is a film well worth seeing , talking and singing heads and all .",
)


# ----------------------------------------------------------------------------- tokenizer


def modernbert_tokenizer(vocab_size: int, texts: list[str]):
    """A byte-level BPE of ``vocab_size`` tokens shaped like ModernBERT's tokenizer.json."""
    from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size - len(SPECIALS), special_tokens=list(LEADING),
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.add_special_tokens([AddedToken(t, special=True, lstrip=t == "[MASK]")
                                  for t in SPECIALS])
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    size = tokenizer.get_vocab_size()
    assert size == vocab_size and list(ids.values()) == list(range(size - 5, size)), (size, ids)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return tokenizer


def _save_tokenizer(tokenizer, folder: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]", model_max_length=8192,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=True).save_pretrained(str(folder))


# ----------------------------------------------------------------------------- models

TASKS = {
    "base": "ModernBertModel",
    "classifier": "ModernBertForSequenceClassification",
    "regressor": "ModernBertForSequenceClassification",
    "token": "ModernBertForTokenClassification",
    "mlm": "ModernBertForMaskedLM",
}


def _config(tokenizer, **options):
    from transformers import ModernBertConfig

    size = tokenizer.get_vocab_size()
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    values = dict(vocab_size=-(-size // 64) * 64, hidden_size=64, num_hidden_layers=4,
                  num_attention_heads=4, intermediate_size=96, local_attention=16,
                  initializer_range=0.2, pad_token_id=ids["[PAD]"],
                  bos_token_id=ids["[CLS]"], cls_token_id=ids["[CLS]"],
                  eos_token_id=ids["[SEP]"], sep_token_id=ids["[SEP]"])
    values.update(options)
    return ModernBertConfig(**values)


def _model(task: str, config, generator):
    import transformers

    model = getattr(transformers, TASKS[task])(config)
    perturb(model, generator, ("norm.weight",))
    return model.eval()


def _hub_4x_config(folder: Path) -> None:
    """Rewrite config.json as the published (transformers 4.48) files spell it."""
    config = json.loads((folder / "config.json").read_text())
    types = config.pop("layer_types")
    rope = config.pop("rope_parameters")
    every = next(n for n in range(1, len(types) + 1) if types == [
        "full_attention" if i % n == 0 else "sliding_attention" for i in range(len(types))])
    config.update(
        global_attn_every_n_layers=every,
        global_rope_theta=rope["full_attention"]["rope_theta"],
        local_rope_theta=rope["sliding_attention"]["rope_theta"],
        torch_dtype=config.pop("dtype"), layer_norm_eps=config["norm_eps"],
        position_embedding_type="absolute", reference_compile=None,
        repad_logits_with_grad=False, gradient_checkpointing=False,
        transformers_version="4.48.0")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write(model, folder: Path, tokenizer, *, bin_file: bool = False,
           hub_4x: bool = False) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if bin_file:  # transformers 4's pytorch_model.bin: the whole state dict, tied copies too
        torch.save(dict(model.state_dict()), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    if hub_4x:
        _hub_4x_config(folder)
    _save_tokenizer(tokenizer, folder)
    return folder


_CLASSES3 = {"num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"}}
_PATTERN = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

# (label, task, config options, write options)
VARIANTS = (
    ("modernbert-base-hub4x", "base",
     {"num_hidden_layers": 5, "classifier_pooling": "mean", "global_rope_theta": 160000.0,
      "local_rope_theta": 10000.0}, {"hub_4x": True}),
    ("modernbert-classifier-biases", "classifier",
     {**_CLASSES3, "classifier_pooling": "mean", "attention_bias": True, "mlp_bias": True,
      "norm_bias": True, "classifier_bias": True, "classifier_activation": "silu",
      "global_attn_every_n_layers": 2, "global_rope_theta": 5000.0,
      "local_rope_theta": 500.0}, {}),
    ("modernbert-regressor-bin", "regressor",
     {"num_labels": 1, "classifier_pooling": "cls", "hidden_activation": "gelu_pytorch_tanh",
      "classifier_dropout": 0.1}, {"bin_file": True}),
    ("modernbert-token", "token",
     {"num_labels": 5, "classifier_activation": "relu", "hidden_activation": "silu",
      "local_attention": 8, "layer_types": _PATTERN, "max_position_embeddings": 512,
      "norm_bias": True}, {}),
    ("modernbert-mlm", "mlm", {"classifier_bias": True}, {}),
    ("modernbert-mlm-bin", "mlm", {"local_attention": 8}, {"bin_file": True}),
    ("modernbert-mlm-untied-nobias", "mlm",
     {"tie_word_embeddings": False, "decoder_bias": False, "classifier_activation": "gelu_new",
      "attention_bias": True}, {}),
    ("modernbert-classifier-tanh-window1", "classifier",
     {**_CLASSES3, "classifier_activation": "tanh", "local_attention": 1,
      "hidden_activation": "quick_gelu"}, {}),
)


def _build(root: Path, variants, *, vocab: int, sizes: dict | None = None
           ) -> list[tuple[str, Path]]:
    import torch

    tokenizer = modernbert_tokenizer(vocab, sentences())
    out = []
    for label, task, options, write in variants:
        generator = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        config = _config(tokenizer, **{**(sizes or {}), **options})
        model = _model(task, config, generator)
        out.append((label, _write(model, root / label, tokenizer, **write)))
    return out


def checkpoints(root: Path) -> list[tuple[str, Path]]:
    """The parity set (labels and folders), written under ``root``."""
    return _build(Path(root), VARIANTS, vocab=2000)


# ----------------------------------------------------------------------------- golden files

GOLDEN = (
    ("modernbert-base", "base", {"classifier_pooling": "mean"}, {"hub_4x": True}),
    ("modernbert-classifier", "classifier",
     {**_CLASSES3, "classifier_pooling": "mean", "attention_bias": True, "mlp_bias": True,
      "norm_bias": True, "classifier_bias": True}, {}),
    ("modernbert-regressor", "regressor",
     {"num_labels": 1, "classifier_pooling": "cls", "classifier_activation": "silu"}, {}),
    ("modernbert-token", "token",
     {"num_labels": 5, "hidden_activation": "gelu_pytorch_tanh",
      "layer_types": ["sliding_attention", "full_attention"]}, {}),
    ("modernbert-mlm", "mlm", {"classifier_bias": True}, {}),
)
GOLDEN_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 48, "local_attention": 4, "global_attn_every_n_layers": 2,
                "global_rope_theta": 1000.0, "local_rope_theta": 100.0,
                "max_position_embeddings": 128}


def golden_positions(attention_mask: np.ndarray) -> np.ndarray:
    """(row, column) pairs whose MLM logits a golden file keeps (all vocabulary columns):
    each row's first, middle and last real token and its first padded position -- the head
    is position-wise, and the base model's file checks the encoder everywhere."""
    pairs = []
    for row, mask in enumerate(np.asarray(attention_mask)):
        n = int(mask.sum())
        cols = {0, (n - 1) // 2, n - 1} | ({n} if n < mask.shape[0] else set())
        pairs += [(row, col) for col in sorted(cols)]
    return np.array(pairs, np.int32)


def write_golden(root: Path) -> list[Path]:
    """Tiny checkpoints + ``expected.npz`` under ``root/<label>`` (``zoo_tests/golden``)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    root = Path(root)
    folders = []
    tasks = {label: task for label, task, _, _ in GOLDEN}
    for label, folder in _build(root, GOLDEN, vocab=380, sizes=GOLDEN_SIZES):
        task = tasks[label]
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        batch = tokenizer(list(GOLDEN_SENTENCES), padding=True, return_tensors="pt")
        model = getattr(transformers, TASKS[task]).from_pretrained(str(folder)).eval()
        with torch.no_grad():
            result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        save_expected(folder, batch, result, task, GOLDEN_SENTENCES, positions=golden_positions)
        folders.append(folder)
    return folders


if __name__ == "__main__":
    cli(__doc__, checkpoints, write_golden)
