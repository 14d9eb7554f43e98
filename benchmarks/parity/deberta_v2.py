"""DeBERTa-v2 / DeBERTa-v3 parity checkpoints: small random transformers models of every task
class, written with ``save_pretrained`` beside a DeBERTa-v3-style tokenizer.

Needs torch and transformers (the bench environment); the zoo never imports them.

``checkpoints(root)`` writes the parity set and returns ``(label, folder)`` pairs. Options
covered (one checkpoint each unless said):

- DeBERTa-v3 attention (the published models): relative attention only
  (``position_biased_input`` false), log buckets (``position_buckets`` 16 so that SST-2
  sentences reach the log range, and the real 256), ``max_relative_positions`` -1,
  ``pos_att_type`` c2p + p2c, ``share_att_key``, ``norm_rel_ebd`` layer_norm,
  ``type_vocab_size`` 0;
- DeBERTa-v2-style attention: separate ``pos_key_proj`` / ``pos_query_proj``
  (``share_att_key`` false), no buckets with ``max_relative_positions`` 24 (distances
  clamped), ``pos_att_type`` p2c alone and c2p alone, no rel-embedding LayerNorm, absolute
  positions added too, ``type_vocab_size`` 2;
- the ConvLayer of DeBERTa-v2-xlarge (``conv_kernel_size`` 3, ``conv_act`` gelu) and a
  grouped one (kernel 5, ``conv_groups`` 4, the default tanh);
- ``relative_attention`` false (learned absolute positions only; ``pos_att_type`` still
  scales the scores, as in transformers), ``embedding_size`` != ``hidden_size``
  (``embed_proj``);
- task classes: base model, ForSequenceClassification with 3 labels (``id2label``;
  ``pooler_hidden_act`` gelu, silu, and tanh with ``cls_dropout``) and with 1 (regression),
  ForTokenClassification (5 tags), ForMaskedLM in both layouts (``legacy`` true:
  ``cls.predictions.*`` tied, and untied with ``tie_word_embeddings`` false; ``legacy``
  false: ``lm_predictions.lm_head.*``);
- ``hidden_act`` gelu, gelu_new, gelu_fast, relu;
- tokenizers: ``tokenizer.json`` as transformers 5 saves it, and -- as the hub's
  ``microsoft/deberta-v3-*`` ship it -- ``spm.model`` alone (a SentencePiece Unigram model
  trained here with the sentencepiece library, DeBERTa's special ids, its NFKC character
  map), once with ``do_lower_case``, ``split_by_punct``, ``add_prefix_space`` false, an
  identity normaliser and an ``added_tokens.json``;
- weight files: ``model.safetensors`` as transformers 5 writes it, and ``pytorch_model.bin``
  as transformers 4 wrote it (the whole state dict plus the ``position_ids`` buffer,
  ``config.json`` with ``pos_att_type: "p2c|c2p"`` and ``torch_dtype``) -- one of them
  shaped like the hub's DeBERTa-v3 files (``lm_predictions`` MLM head, an unused absolute
  position table, the replaced-token-detection head ``mask_predictions.*``).

Random weights use ``initializer_range`` 0.2 and every LayerNorm and bias is perturbed
(transformers initialises them to 1 / 0), so a misplaced tensor shows in the outputs.

``write_golden(root)`` writes the tiny golden folders of ``zoo_tests/test_deberta_v2.py``:
safetensors checkpoints plus ``expected.npz`` (transformers' input ids, attention mask,
token types and outputs on ``GOLDEN_SENTENCES``); for a folder with ``spm.model``, also
``token_ids.json`` (transformers' ids of ``spm_texts()``), and the tokenizer-only folder
``spm-options``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.parity.common import SST2_TRAIN, cli, perturb, save_expected, sentences

SEED = 1234
SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")  # ids 0..3; [MASK] last, as DeBERTa-v3's
GOLDEN_SENTENCES = (
    "a gorgeous , witty , seductive movie .",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the film is strictly routine .",
    "a masterpiece four years in the making , and more than worth the long wait for it .",
    "Hello World! Café au lait, naïve résumé.",
    "[MASK] is the best part",
    "this is a film well worth seeing , talking and singing heads and all .",
)
# The pair inputs of the golden files with token types (``type_vocab_size`` 2).
GOLDEN_PAIRS = tuple(zip(GOLDEN_SENTENCES, GOLDEN_SENTENCES[1:] + GOLDEN_SENTENCES[:1]))


# ----------------------------------------------------------------------------- tokenizer


def deberta_v3_tokenizer(vocab_size: int, texts: list[str]):
    """Unigram + Metaspace as DeBERTa-v3's (``[PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3``, ``[MASK]``
    last, ``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B [SEP]`` with type ids 0/1). The normaliser
    is transformers' stand-in for a missing SentencePiece charsmap: whitespace runs to one
    space, NFC, right strip."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
        normalizers.Strip(left=False, right=True)])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size - 1, special_tokens=list(SPECIALS),
                             unk_token="[UNK]", show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.add_special_tokens([AddedToken("[MASK]", special=True)])
    assert [tokenizer.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3]
    assert tokenizer.token_to_id("[MASK]") == tokenizer.get_vocab_size() - 1
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return tokenizer


MRPC = SST2_TRAIN.parents[1] / "MRPC"
# Texts the SentencePiece checks add to SST-2's: spacing, NFKC, accents, specials in the text.
SPM_EXTRAS = ("Hello  World!\tCafé   ﬁne ①", " leading and trailing  ", "[MASK] is [CLS] x",
              "", "ＡＢＣ full width", "it's [MASK] <mask> x <extra>", "two  spaces\n\nnew",
              "x [UNK] y", "Ünïcödé façade — “quotes” …", "emoji 😀 and 中文字符")
# label -> (SentencePiece normalisation, tokenizer_config.json, added_tokens.json or None).
# The hub's DeBERTa-v3 config is the first; the second turns every option of transformers'
# DebertaV2Tokenizer the other way.
SPM_HUB = ("nmt_nfkc", {"do_lower_case": False, "vocab_type": "spm"}, None)
SPM_OPTIONS = ("identity", {"do_lower_case": True, "split_by_punct": True,
                            "add_prefix_space": False, "vocab_type": "spm"},
               {"[MASK]": None, "<extra>": None})


def _mrpc(split: str) -> list[str]:
    lines = (MRPC / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [text for line in lines for text in line.split("\t")[3:5]]


def spm_texts() -> list[str]:
    """What the golden SentencePiece token ids are checked on: 150 SST-2 dev sentences, 60 MRPC
    dev sentences (mixed case), ``SPM_EXTRAS``. (The parity session checks the whole SST-2
    dev set and 200 MRPC pairs.)"""
    dev = (SST2_TRAIN.parent / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:151]
    return [line.split("\t")[0] for line in dev] + _mrpc("dev")[:60] + list(SPM_EXTRAS)


def write_spm(folder: Path, pieces: int, setup: tuple) -> None:
    """``spm.model`` (a SentencePiece Unigram model of ``pieces`` pieces trained on SST-2 and
    MRPC train text, DeBERTa's ``[PAD] [CLS] [SEP] [UNK]`` = 0..3) + ``tokenizer_config.json``
    (+ ``added_tokens.json`` after the pieces) in ``folder``, replacing any tokenizer files."""
    import io

    import sentencepiece

    normalization, config, added = setup
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    model = io.BytesIO()
    texts = sentences(20_000) + _mrpc("train")[:4_000]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=pieces,
        model_type="unigram", normalization_rule_name=normalization, pad_id=0, bos_id=1,
        eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", num_threads=1, minloglevel=2)
    (folder / "spm.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    if added:
        (folder / "added_tokens.json").write_text(json.dumps(
            {token: pieces + i for i, token in enumerate(added)}))


def _save_tokenizer(tokenizer, folder: Path, max_len: int) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
        cls_token="[CLS]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]",
        model_max_length=max_len,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(str(folder))


# ----------------------------------------------------------------------------- models

# DeBERTa-v3's attention (microsoft/deberta-v3-*), with fewer buckets by default.
V3 = {"relative_attention": True, "position_buckets": 16, "max_relative_positions": -1,
      "pos_att_type": "p2c|c2p", "share_att_key": True, "norm_rel_ebd": "layer_norm",
      "position_biased_input": False, "type_vocab_size": 0}
# DeBERTa-v2-style: separate position projections, no buckets, absolute positions too.
V2 = {"relative_attention": True, "position_buckets": -1, "max_relative_positions": 24,
      "pos_att_type": ["p2c"], "share_att_key": False, "position_biased_input": True,
      "type_vocab_size": 2}
# No relative attention: learned absolute positions (pos_att_type still sets the scale).
ABSOLUTE = {"relative_attention": False, "position_biased_input": True,
            "pos_att_type": ["p2c", "c2p"], "type_vocab_size": 2}

TASKS = {
    "base": "DebertaV2Model",
    "classifier": "DebertaV2ForSequenceClassification",
    "regressor": "DebertaV2ForSequenceClassification",
    "token": "DebertaV2ForTokenClassification",
    "mlm": "DebertaV2ForMaskedLM",
}


def _config(vocab_size: int, **options):
    from transformers import DebertaV2Config

    values = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=128, max_position_embeddings=512,
                  layer_norm_eps=1e-7, initializer_range=0.2, pad_token_id=0)
    values.update(options)
    return DebertaV2Config(**values)


def _model(task: str, config, generator):
    import transformers

    model = getattr(transformers, TASKS[task])(config)
    perturb(model, generator, ("LayerNorm.weight",))
    return model.eval()


def _write_bin(model, folder: Path, extra: dict) -> None:
    """transformers 4's files: the whole state dict (tied copies too) + the position_ids
    buffer in ``pytorch_model.bin``, and ``config.json`` as 4.x wrote it."""
    import torch

    state = dict(model.state_dict())
    prefix = "deberta." if hasattr(model, "deberta") else ""
    positions = model.config.max_position_embeddings
    state[f"{prefix}embeddings.position_ids"] = torch.arange(positions).expand((1, -1))
    generator = torch.Generator().manual_seed(SEED + 1)
    for name, shape in extra.items():
        state[name] = 0.2 * torch.randn(shape, generator=generator)
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None)
    config["torch_dtype"] = "float32"
    config["transformers_version"] = "4.46.0"
    if isinstance(config.get("pos_att_type"), list):
        config["pos_att_type"] = "|".join(config["pos_att_type"])
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _hub_extras(model) -> dict:
    """Tensors the hub's DeBERTa-v3 files carry that transformers ignores on load."""
    h = model.config.hidden_size
    e = getattr(model.config, "embedding_size", h)
    return {"deberta.embeddings.position_embeddings.weight":
            (model.config.max_position_embeddings, e),
            "mask_predictions.dense.weight": (h, h), "mask_predictions.dense.bias": (h,),
            "mask_predictions.LayerNorm.weight": (h,), "mask_predictions.LayerNorm.bias": (h,),
            "mask_predictions.classifier.weight": (1, h),
            "mask_predictions.classifier.bias": (1,)}


# (label, task, config options, write pytorch_model.bin, hub-like extras in the .bin)
VARIANTS = (
    ("v3-base", "base", {**V3}, False, False),
    ("v3-base-buckets256", "base", {**V3, "position_buckets": 256, "num_hidden_layers": 3},
     False, False),
    ("v3-classifier-bin", "classifier",
     {**V3, "num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"}},
     True, False),
    ("v3-regressor", "regressor", {**V3, "num_labels": 1}, False, False),
    ("v3-token", "token", {**V3, "num_labels": 5}, False, False),
    ("v3-mlm", "mlm", {**V3}, False, False),
    ("v3-mlm-untied", "mlm", {**V3, "tie_word_embeddings": False}, False, False),
    ("v3-mlm-new-head-hub-bin", "mlm", {**V3, "legacy": False}, True, True),
    ("v2-base-p2c-gelu-new", "base", {**V2, "hidden_act": "gelu_new"}, False, False),
    ("v2-classifier-c2p-tanh", "classifier",
     {**V2, "pos_att_type": ["c2p"], "num_labels": 3, "pooler_hidden_act": "tanh",
      "cls_dropout": 0.2, "id2label": {0: "bad", 1: "meh", 2: "good"}}, False, False),
    ("v2-token-bin-relu", "token",
     {**V2, "pos_att_type": ["c2p", "p2c"], "num_labels": 5, "hidden_act": "relu"}, True,
     False),
    ("absolute-base-embed-proj", "base", {**ABSOLUTE, "embedding_size": 32}, False, False),
    ("absolute-mlm-bin", "mlm", {**ABSOLUTE, "max_position_embeddings": 128}, True, False),
    ("v3-classifier-gelu-fast-pooler-silu", "classifier",
     {**V3, "hidden_act": "gelu_fast", "pooler_hidden_act": "silu"}, False, False),
    ("v3-classifier-spm-bin", "classifier",
     {**V3, "num_labels": 2, "id2label": {0: "negative", 1: "positive"}}, True, True),
    ("v2-token-spm-options", "token", {**V2, "num_labels": 3}, False, False),
    # DeBERTa-v2-xlarge's ConvLayer: v3-style attention + a kernel-3 GELU convolution (its
    # MNLI classifier), hub-like .bin; and a grouped kernel of 5 with the default tanh
    ("v2-xlarge-conv-classifier-bin", "classifier",
     {**V3, "conv_kernel_size": 3, "conv_act": "gelu", "num_labels": 3,
      "id2label": {0: "entailment", 1: "neutral", 2: "contradiction"}}, True, True),
    ("v2-conv-groups-token", "token",
     {**V2, "conv_kernel_size": 5, "conv_groups": 4, "num_labels": 5}, False, False),
)
# The variants whose folder holds spm.model instead of tokenizer.json (see write_spm).
SPM_VARIANTS = {"v3-classifier-spm-bin": SPM_HUB, "v2-token-spm-options": SPM_OPTIONS,
                "deberta-v2-v3-classifier-spm": SPM_HUB}


def _build(root: Path, variants, *, vocab: int, sizes: dict | None = None
           ) -> list[tuple[str, Path]]:
    import torch

    tokenizer = deberta_v3_tokenizer(vocab, sentences())
    out = []
    for label, task, options, bin_file, hub in variants:
        generator = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        config = _config(tokenizer.get_vocab_size(), **{**(sizes or {}), **options})
        model = _model(task, config, generator)
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder))
        if bin_file:
            _write_bin(model, folder, _hub_extras(model) if hub else {})
        _save_tokenizer(tokenizer, folder, model.config.max_position_embeddings)
        if label in SPM_VARIANTS:  # pieces + [MASK] (+ the added tokens) fill the vocabulary
            setup = SPM_VARIANTS[label]
            write_spm(folder, model.config.vocab_size - 1 - len(setup[2] or ()), setup)
        out.append((label, folder))
    return out


def checkpoints(root: Path) -> list[tuple[str, Path]]:
    """The parity set (labels and folders), written under ``root``."""
    return _build(Path(root), VARIANTS, vocab=2000)


# ----------------------------------------------------------------------------- golden files

GOLDEN = (
    ("v3-base", "base", {**V3}, False, False),
    ("v3-classifier", "classifier",
     {**V3, "num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"}},
     False, False),
    ("v3-regressor", "regressor", {**V3, "num_labels": 1}, False, False),
    ("v3-token", "token", {**V3, "num_labels": 5}, False, False),
    ("v3-mlm", "mlm", {**V3}, False, False),
    ("v3-mlm-new-head", "mlm", {**V3, "legacy": False}, False, False),
    ("v2-base-pairs", "base",
     {**V2, "pos_att_type": ["c2p", "p2c"], "hidden_act": "gelu_new"}, False, False),
    ("absolute-base", "base", {**ABSOLUTE, "embedding_size": 8}, False, False),
    ("v3-classifier-spm", "classifier",
     {**V3, "num_labels": 2, "id2label": {0: "negative", 1: "positive"}}, False, False),
    ("v2-conv-classifier", "classifier",
     {**V3, "conv_kernel_size": 3, "conv_act": "gelu", "conv_groups": 2, "num_labels": 2,
      "id2label": {0: "negative", 1: "positive"}}, False, False),
)
GOLDEN_SIZES = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 32, "position_buckets": 8, "max_position_embeddings": 128}


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
    """Tiny checkpoints + ``expected.npz`` under ``root/deberta-v2-<label>``
    (``zoo_tests/golden``)."""
    import torch
    import transformers
    from transformers import AutoTokenizer, DebertaV2Tokenizer

    root = Path(root)
    golden = tuple((f"deberta-v2-{label}", *rest) for label, *rest in GOLDEN)
    folders = []
    for label, folder in _build(root, golden, vocab=300, sizes=GOLDEN_SIZES):
        task = next(t for name, t, *_ in golden if name == label)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = getattr(transformers, TASKS[task]).from_pretrained(str(folder)).eval()
        pairs = model.config.type_vocab_size >= 2
        texts = ([a for a, _ in GOLDEN_PAIRS], [b for _, b in GOLDEN_PAIRS]) if pairs \
            else (list(GOLDEN_SENTENCES),)
        batch = tokenizer(*texts, padding=True, return_tensors="pt",
                          return_token_type_ids=True)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if pairs:
            inputs["token_type_ids"] = batch["token_type_ids"]
        with torch.no_grad():
            result = model(**inputs)
        extra = {"token_type_ids": batch["token_type_ids"].numpy().astype(np.int32)} \
            if pairs else {}
        save_expected(folder, batch, result, task, GOLDEN_SENTENCES, positions=golden_positions,
                      **extra)
        if (folder / "spm.model").is_file():
            _save_token_ids(folder, tokenizer)
        folders.append(folder)
    options = root / "spm-options"  # a tokenizer without a model
    options.mkdir(parents=True, exist_ok=True)
    write_spm(options, 297, SPM_OPTIONS)
    _save_token_ids(options, DebertaV2Tokenizer.from_pretrained(str(options)))
    return folders + [options]


def _save_token_ids(folder: Path, tokenizer) -> None:
    """``token_ids.json``: transformers' ids of ``spm_texts()``, alone and as MRPC pairs."""
    texts = spm_texts()
    pairs = list(zip(texts[150:210:2], texts[151:210:2]))
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs],
                        return_token_type_ids=True)
    (folder / "token_ids.json").write_text(json.dumps({
        "texts": texts, "ids": tokenizer(texts)["input_ids"], "pairs": pairs,
        "pair_ids": encoded["input_ids"], "pair_type_ids": encoded["token_type_ids"]},
        ensure_ascii=False, separators=(",", ":")))


if __name__ == "__main__":
    cli(__doc__, checkpoints, write_golden)
