"""zoo: a Flax NNX model zoo for small text Transformer encoders.

    >>> import zoo
    >>> zoo.list_models()
    >>> model = zoo.load("encoder-mlm-v1", head="sst2")
    >>> logits = model(input_ids, attention_mask)        # (B, 2)
"""

from zoo import catalog as _catalog  # noqa: F401  (registers the presets)
from zoo.checkpoint import CheckpointMismatchError
from zoo.hub import HeadInitializedWarning, WeightsNotFoundError, load, weights_store
from zoo.model import ModelInfo, Prediction, ZooModel, build_model
from zoo.registry import get_encoder, get_head, list_heads, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointMismatchError", "HeadInitializedWarning", "ModelInfo", "Prediction",
    "WeightsNotFoundError", "ZooModel", "build_model", "get_encoder", "get_head",
    "list_heads", "list_models", "load", "weights_store",
]
