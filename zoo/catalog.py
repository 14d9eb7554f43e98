"""The registered models and heads. Add a preset here to make it loadable, listed and tested."""

from __future__ import annotations

from zoo.heads import ClassificationHead, MLMHead
from zoo.models.m2l import M2LConfig, M2LEncoder
from zoo.registry import EncoderSpec, HeadSpec, HubSource, register_encoder, register_head

M2L_V1 = M2LConfig(
    vocab_size=25_000, d_model=128, num_layers=6, num_heads=8, d_ff=256,
    max_len=128, dropout=0.1, positional="none",
)

register_encoder(EncoderSpec(
    name="encoder-mlm-v1",
    config=M2L_V1,
    module=M2LEncoder,
    description="M2L 2022 tutorial encoder, masked-LM pre-trained (362k steps). "
    "positional='none' reproduces the tutorial's all-zero position table.",
    source=HubSource(
        repo_id="morenolq/m2l_2022_nlp",
        checkpoint="v1_mlm_train_state_362000.pkl",
        tokenizer="v1_en_tokenizer_1M.json",
    ),
))

register_encoder(EncoderSpec(
    name="encoder-m2l-small",
    config=M2LConfig(
        vocab_size=25_000, d_model=128, num_layers=6, num_heads=8, d_ff=256,
        max_len=128, dropout=0.1, positional="sinusoidal", embed_init_stddev=128**-0.5,
    ),
    module=M2LEncoder,
    description="The v1 architecture with working sinusoidal positions, for training from scratch.",
))

register_encoder(EncoderSpec(
    name="encoder-m2l-mini",
    config=M2LConfig(
        vocab_size=25_000, d_model=128, num_layers=2, num_heads=4, d_ff=512,
        max_len=128, dropout=0.1, positional="sinusoidal", embed_init_stddev=128**-0.5,
    ),
    module=M2LEncoder,
    description="Two wide-FF M2L blocks: trains from scratch on a laptop CPU in minutes.",
))

register_encoder(EncoderSpec(
    name="encoder-m2l-tiny",
    config=M2LConfig(
        vocab_size=512, d_model=32, num_layers=2, num_heads=4, d_ff=64,
        max_len=64, dropout=0.1, positional="sinusoidal", embed_init_stddev=32**-0.5,
    ),
    module=M2LEncoder,
    description="A tiny M2L encoder for fast tests.",
))

register_head(HeadSpec(
    name="mlm",
    kind="mlm",
    description="Masked-LM head: Linear -> ReLU -> LayerNorm -> Linear(vocab) on every position.",
    factory=lambda cfg, *, num_classes, rngs: MLMHead(cfg.hidden_size, cfg.vocab_size, rngs=rngs),
))

register_head(HeadSpec(
    name="classifier",
    kind="classification",
    description="Generic [CLS] classification head; pass num_classes.",
    factory=lambda cfg, *, num_classes, rngs: ClassificationHead(
        cfg.hidden_size, num_classes, rngs=rngs
    ),
    num_classes=2,
))

register_head(HeadSpec(
    name="sst2",
    kind="classification",
    description="SST-2 sentiment: the [CLS] classification head with 2 classes.",
    factory=lambda cfg, *, num_classes, rngs: ClassificationHead(
        cfg.hidden_size, num_classes, rngs=rngs
    ),
    num_classes=2,
    labels=("negative", "positive"),
))
