"""The ModernBERT presets: architecture as data plus the HuggingFace id of the weights.

``modernbert-custom`` has no weights of its own: an HF ``modernbert`` folder whose shape
matches no preset is loaded under it, with the folder's own config.
"""

from __future__ import annotations

import zoo.hf
from zoo.models.modernbert.convert import ARCHITECTURE
from zoo.models.modernbert.modeling import ModernBertConfig, ModernBertEncoder
from zoo.registry import EncoderSpec, register_encoder

FAMILY = zoo.hf.make_family(ARCHITECTURE)
VOCAB = 50_368  # the OLMo-style BPE's 50,280 tokens + 5 specials, padded to a multiple of 64


def _modernbert(layers: int, hidden: int, heads: int, intermediate: int) -> ModernBertConfig:
    # The published config.json files: global attention every third layer (theta 160,000),
    # sliding windows of 128 tokens (theta 10,000), no biases, mean pooling for classifiers.
    return ModernBertConfig(vocab_size=VOCAB, hidden_size=hidden, num_layers=layers,
                            num_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=8192, classifier_pooling="mean")


def _preset(name: str, config: ModernBertConfig, description: str,
            source: zoo.hf.HFSource | None, learning_rate: float = 5e-5) -> None:
    register_encoder(EncoderSpec(name=name, config=config, module=ModernBertEncoder,
                                 description=description, family=FAMILY, source=source,
                                 finetune_defaults={"learning_rate": learning_rate}))


_preset("modernbert-base", _modernbert(22, 768, 12, 1152),
        "ModernBERT-base (Warner et al. 2024): 22 layers, H 768, rotary positions, "
        "local/global attention, GeGLU, 8192 tokens; 149M parameters.",
        zoo.hf.HFSource("answerdotai/ModernBERT-base"))
_preset("modernbert-large", _modernbert(28, 1024, 16, 2624),
        "ModernBERT-large: 28 layers, H 1024, rotary positions, local/global attention, "
        "GeGLU, 8192 tokens; 395M parameters.",
        zoo.hf.HFSource("answerdotai/ModernBERT-large"), learning_rate=3e-5)
_preset("modernbert-custom", _modernbert(22, 768, 12, 1152),
        "Any HF modernbert checkpoint: the architecture comes from the folder's config.json "
        "(weights=DIR).", None)
