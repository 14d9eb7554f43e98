"""The optimizer of a run: global-norm clipping, then AdamW, SGD or Adam, with warm-up and
the configured decay schedule (``make_optimizer``)."""

from __future__ import annotations

import jax
import optax

from zoo.errors import InvalidArgumentError
from zoo.train_config import OPTIMIZERS, TrainConfig


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW with warm-up and decay; ``adam`` is the seed's recipe."""
    cfg = cfg.resolved()
    if cfg.optimizer == "adam":
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(cfg.learning_rate))
    if cfg.optimizer not in OPTIMIZERS:
        raise InvalidArgumentError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not "
                                   f"{cfg.optimizer!r}")
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup)
    after = {
        "linear": optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
        "cosine": optax.cosine_decay_schedule(cfg.learning_rate, decay_steps),
        "constant": optax.constant_schedule(cfg.learning_rate),
    }
    if cfg.schedule not in after:
        raise InvalidArgumentError(f"schedule must be one of {sorted(after)}, not {cfg.schedule!r}")
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, warmup), after[cfg.schedule]], [warmup]
    )

    def decay_mask(params):  # no weight decay on biases and LayerNorm scales
        return jax.tree.map(lambda p: p.ndim > 1, params)

    if cfg.optimizer == "sgd":
        return optax.chain(
            optax.clip_by_global_norm(cfg.clip_norm),
            optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=0.9),
        )

    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
