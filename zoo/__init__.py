"""zoo: a Flax NNX model zoo for small text Transformer encoders.

    >>> import zoo
    >>> zoo.list_models()
    >>> model = zoo.load("encoder-mlm-v1", head="sst2")
    >>> logits = model(input_ids, attention_mask)        # (B, 2)
"""

from zoo import host_memory as _host_memory

_host_memory.retain_freed_memory()  # before jax starts XLA's threads: see zoo/host_memory.py

from zoo import heads as _heads  # noqa: E402,F401  (registers the heads)
from zoo import models as _models  # noqa: F401  (registers the families and their presets)
from zoo.checkpoint import CheckpointMismatchError, IntegrityError
from zoo.hub import HeadInitializedWarning, WeightsNotFoundError, load, weights_store
from zoo.embeddings import Hit, similarity
from zoo.inference import Prediction
from zoo.tasks import Entity, Score, Tagged, get_task, task_names
from zoo.model import ModelInfo, ZooModel, build_model
from zoo.registry import get_encoder, get_head, list_heads, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointMismatchError", "Entity", "Hit", "similarity", "HeadInitializedWarning", "IntegrityError", "ModelInfo",
    "Prediction", "Score", "Tagged", "get_task", "task_names",
    "WeightsNotFoundError", "ZooModel", "build_model", "get_encoder", "get_head",
    "list_heads", "list_models", "load", "weights_store",
]
