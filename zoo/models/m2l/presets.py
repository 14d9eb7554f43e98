"""The M2L presets. Add a preset here to make it loadable, listed and tested."""

from __future__ import annotations

from zoo.models.m2l.family import FAMILY, HubSource
from zoo.models.m2l.modeling import M2LConfig, M2LEncoder
from zoo.registry import EncoderSpec, register_encoder

M2L_V1 = M2LConfig(
    vocab_size=25_000, d_model=128, num_layers=6, num_heads=8, d_ff=256,
    max_len=128, dropout=0.1, positional="none",
)


def _preset(name: str, config: M2LConfig, description: str, source: HubSource | None = None):
    return register_encoder(EncoderSpec(name=name, config=config, module=M2LEncoder,
                                        description=description, family=FAMILY, source=source))


_preset(
    "encoder-mlm-v1", M2L_V1,
    "M2L 2022 tutorial encoder, masked-LM pre-trained (362k steps). "
    "positional='none' reproduces the tutorial's all-zero position table.",
    HubSource(repo_id="morenolq/m2l_2022_nlp", checkpoint="v1_mlm_train_state_362000.pkl",
              tokenizer="v1_en_tokenizer_1M.json"),
)
_preset(
    "encoder-m2l-small",
    M2LConfig(vocab_size=25_000, d_model=128, num_layers=6, num_heads=8, d_ff=256, max_len=128,
              dropout=0.1, positional="sinusoidal", embed_init_stddev=128**-0.5),
    "The v1 architecture with working sinusoidal positions, for training from scratch.",
)
_preset(
    "encoder-m2l-mini",
    M2LConfig(vocab_size=25_000, d_model=128, num_layers=2, num_heads=4, d_ff=512, max_len=128,
              dropout=0.1, positional="sinusoidal", embed_init_stddev=128**-0.5),
    "Two wide-FF M2L blocks: trains from scratch on a laptop CPU in minutes.",
)
_preset(
    "encoder-m2l-tiny",
    M2LConfig(vocab_size=512, d_model=32, num_layers=2, num_heads=4, d_ff=64, max_len=64,
              dropout=0.1, positional="sinusoidal", embed_init_stddev=32**-0.5),
    "A tiny M2L encoder for fast tests.",
)
