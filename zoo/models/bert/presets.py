"""The BERT-family presets: architecture as data plus the HuggingFace id of the weights.

``*-custom`` entries have no weights of their own: an HF folder whose shape matches no
preset is loaded under them, with the folder's own config.
"""

from __future__ import annotations

from zoo.hf import HFSource
from zoo.models.bert.family import FAMILY
from zoo.models.bert.modeling import BertConfig, BertEncoder
from zoo.registry import EncoderSpec, register_encoder

FINETUNE = {"learning_rate": 5e-5}
VOCAB = 30_522


def _bert(layers: int, hidden: int, heads: int, **extra) -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=heads,
                      intermediate_size=4 * hidden, **extra)


def _preset(name: str, config: BertConfig, description: str, source: HFSource | None,
            embedding: dict | None = None) -> None:
    register_encoder(EncoderSpec(name=name, config=config, module=BertEncoder,
                                 description=description, family=FAMILY, source=source,
                                 finetune_defaults=FINETUNE, embedding=embedding or {}))


def _google(layers: int, hidden: int, heads: int) -> HFSource:
    return HFSource(f"google/bert_uncased_L-{layers}_H-{hidden}_A-{heads}")


_preset("bert-tiny", _bert(2, 128, 2), "BERT-Tiny (Turc et al. 2019): 2 layers, H 128, 4.4M "
        "parameters.", _google(2, 128, 2))
_preset("bert-mini", _bert(4, 256, 4), "BERT-Mini: 4 layers, H 256, 11M parameters.",
        _google(4, 256, 4))
_preset("bert-small", _bert(4, 512, 8), "BERT-Small: 4 layers, H 512, 29M parameters.",
        _google(4, 512, 8))
_preset("bert-base-uncased", _bert(12, 768, 12), "BERT-Base, uncased: 12 layers, H 768, 110M "
        "parameters.", HFSource("google-bert/bert-base-uncased"))
_preset("minilm-l12-h384", _bert(12, 384, 12), "MiniLM-L12-H384 (uncased), distilled from "
        "UniLMv2: 33M parameters.", HFSource("microsoft/MiniLM-L12-H384-uncased"))
_preset("all-minilm-l6-v2", _bert(6, 384, 12), "all-MiniLM-L6-v2 sentence embeddings (mean "
        "pooling): 6 layers, H 384, 22.7M parameters.",
        HFSource("sentence-transformers/all-MiniLM-L6-v2"),
        # its sentence-transformers modules: Pooling(mean), Normalize, max_seq_length 256
        embedding={"pooling": "mean", "normalize": True, "max_len": 256})
# intfloat/multilingual-e5-small is a BERT checkpoint with XLM-R's vocabulary (its config.json
# says model_type "bert": positions from 0, two token types, eps 1e-12).
_preset("multilingual-e5-small", BertConfig(
    vocab_size=250_037, hidden_size=384, num_layers=12, num_heads=12, intermediate_size=1536),
    "multilingual-e5-small sentence embeddings (mean pooling, ~100 languages, XLM-R "
    "vocabulary): 12 layers, H 384, 118M parameters. Prefix texts with 'query: ' or "
    "'passage: '.", HFSource("intfloat/multilingual-e5-small"),
    # its sentence-transformers modules: Pooling(mean), Normalize, max_seq_length 512
    embedding={"pooling": "mean", "normalize": True, "max_len": 512})
_preset("electra-small", BertConfig(
    vocab_size=VOCAB, hidden_size=256, num_layers=12, num_heads=4, intermediate_size=1024,
    embedding_size=128, model_type="electra"),
    "ELECTRA-Small discriminator: 12 layers, H 256, embeddings 128 projected, 13.5M parameters.",
    HFSource("google/electra-small-discriminator"))
_preset("distilbert-sst2", BertConfig(
    vocab_size=VOCAB, hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072,
    type_vocab_size=0, classifier_dropout=0.2, model_type="distilbert"),
    "DistilBERT-base fine-tuned on SST-2 (its classifier is the sst2 head: 0.91 dev, no "
    "training).", HFSource("distilbert/distilbert-base-uncased-finetuned-sst-2-english",
                           classifier_head="sst2"))
for _type, _config in (
    ("bert", _bert(12, 768, 12)),
    ("electra", BertConfig(vocab_size=VOCAB, hidden_size=256, num_layers=12, num_heads=4,
                           intermediate_size=1024, embedding_size=128, model_type="electra")),
    ("distilbert", BertConfig(vocab_size=VOCAB, hidden_size=768, num_layers=6, num_heads=12,
                              intermediate_size=3072, type_vocab_size=0,
                              model_type="distilbert")),
):
    _preset(f"{_type}-custom", _config, f"Any HF {_type} checkpoint: the architecture comes "
            "from the folder's config.json (weights=DIR).", None)
