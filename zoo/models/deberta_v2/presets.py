"""The DeBERTa-v3 presets: architecture as data plus the HuggingFace id of the weights.

All three share DeBERTa-v3's attention: relative positions only (no absolute position
embeddings), 256 log buckets over 512 positions, c2p + p2c scores with the content
projections shared for positions, LayerNorm'ed relative embeddings, no token types,
LayerNorm epsilon 1e-7, a 128,100-token SentencePiece (Unigram) vocabulary.
``deberta-v2-custom`` has no weights of its own: an HF ``deberta-v2`` folder whose shape
matches no preset is loaded under it, with the folder's own config.
"""

from __future__ import annotations

from zoo.hf import HFSource, make_family
from zoo.models.deberta_v2.convert import ARCHITECTURE
from zoo.models.deberta_v2.modeling import DebertaV2Config, DebertaV2Encoder
from zoo.registry import EncoderSpec, register_encoder

FAMILY = make_family(ARCHITECTURE)
FINETUNE = {"learning_rate": 2e-5}
VOCAB = 128_100


def _v3(layers: int, hidden: int, heads: int) -> DebertaV2Config:
    return DebertaV2Config(
        vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=512, type_vocab_size=0,
        layer_norm_eps=1e-7, hidden_act="gelu", relative_attention=True,
        max_relative_positions=-1, position_buckets=256, pos_att_type=("c2p", "p2c"),
        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False)


def _preset(name: str, config: DebertaV2Config, description: str,
            source: HFSource | None) -> None:
    register_encoder(EncoderSpec(name=name, config=config, module=DebertaV2Encoder,
                                 description=description, family=FAMILY, source=source,
                                 finetune_defaults=FINETUNE))


_preset("deberta-v3-xsmall", _v3(12, 384, 6), "DeBERTa-v3-XSmall (He et al. 2021): 12 layers, "
        "H 384, 22M backbone parameters + 49M in the 128k-token embedding.",
        HFSource("microsoft/deberta-v3-xsmall"))
_preset("deberta-v3-small", _v3(6, 768, 12), "DeBERTa-v3-Small: 6 layers, H 768, 44M backbone "
        "parameters + 98M in the embedding.", HFSource("microsoft/deberta-v3-small"))
_preset("deberta-v3-base", _v3(12, 768, 12), "DeBERTa-v3-Base: 12 layers, H 768, 86M backbone "
        "parameters + 98M in the embedding.", HFSource("microsoft/deberta-v3-base"))
_preset("deberta-v2-custom", _v3(12, 768, 12), "Any HF deberta-v2 / DeBERTa-v3 checkpoint "
        "(DeBERTa-v2-xlarge's convolution layer included): the architecture comes from the "
        "folder's config.json (weights=DIR).", None)
