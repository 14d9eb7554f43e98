"""The RoBERTa-family presets: architecture as data plus the HuggingFace id of the weights.

``roberta-custom`` / ``xlm-roberta-custom`` have no weights of their own: an HF folder of
that model_type whose shape matches no preset is loaded under them, with its own config.
"""

from __future__ import annotations

import zoo.hf
from zoo.hf import HFSource
from zoo.models.roberta.convert import ARCHITECTURE
from zoo.models.roberta.modeling import RobertaConfig, RobertaEncoder
from zoo.registry import EncoderSpec, register_encoder

FAMILY = zoo.hf.make_family(ARCHITECTURE)
FINETUNE = {"learning_rate": 2e-5}
ROBERTA_VOCAB = 50_265
XLMR_VOCAB = 250_002


def _config(vocab: int, layers: int, hidden: int, heads: int, model_type: str = "roberta"
            ) -> RobertaConfig:
    # The published models' config.json: 514 positions (512 usable after the pad offset),
    # one token type, LayerNorm eps 1e-5, pad id 1, exact GELU.
    return RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                         num_heads=heads, intermediate_size=4 * hidden,
                         max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                         pad_token_id=1, model_type=model_type)


def _preset(name: str, config: RobertaConfig, description: str, source: HFSource | None,
            finetune: dict | None = None, embedding: dict | None = None) -> None:
    register_encoder(EncoderSpec(name=name, config=config, module=RobertaEncoder,
                                 description=description, family=FAMILY, source=source,
                                 finetune_defaults=finetune or FINETUNE,
                                 embedding=embedding or {}))


_preset("roberta-base", _config(ROBERTA_VOCAB, 12, 768, 12),
        "RoBERTa-base (Liu et al. 2019): 12 layers, H 768, byte-level BPE, 125M parameters.",
        HFSource("FacebookAI/roberta-base"))
_preset("distilroberta-base", _config(ROBERTA_VOCAB, 6, 768, 12),
        "DistilRoBERTa-base, distilled from RoBERTa-base: 6 layers, H 768, 82M parameters.",
        HFSource("distilbert/distilroberta-base"), finetune={"learning_rate": 3e-5})
_preset("xlm-roberta-base", _config(XLMR_VOCAB, 12, 768, 12, "xlm-roberta"),
        "XLM-RoBERTa-base (Conneau et al. 2020): 100 languages, 12 layers, H 768, "
        "SentencePiece vocabulary of 250k, 278M parameters.",
        HFSource("FacebookAI/xlm-roberta-base"))
for _type, _vocab in (("roberta", ROBERTA_VOCAB), ("xlm-roberta", XLMR_VOCAB)):
    _preset(f"{_type}-custom", _config(_vocab, 12, 768, 12, _type),
            f"Any HF {_type} checkpoint: the architecture comes from the folder's config.json "
            "(weights=DIR).", None)


