"""Random small configs of every HF family against transformers' own forward (parity fuzzing).

``nox -s parity_fuzz`` (``-- --n 25 --seed 0 --families bert,roberta``; one case again with
``-- --only roberta:7``). The fixed parity set (``nox -s parity``) checks chosen variants;
this draws them: sizes, activations, position and attention options, task classes with
their label options, tied / untied decoders, safetensors or ``.bin``, transformers 4 or 5
config spellings. Each case is drawn from ``random.Random(f"{seed}-{family}-{index}")``.

Per case: the transformers model at random weights (LayerNorm weights perturbed as the parity
modules do), ``save_pretrained`` + the family's tokenizer (built by ``benchmarks/parity``);
transformers reloads it and runs 16 SST-2 dev sentences (padded) and 8 pairs (a config
transformers itself rejects is skipped: ``hf-rejects``); then ``zoo.load("<type>-custom",
weights=folder)``: a one-line ``ZooError`` is a ``refusal``, any other failure a ``crash``;
compared: token ids (and types where used), the encoder's hidden states and the head's
logits, max |diff| <= 1e-5 x max(1, max |reference|) (``MISMATCH`` otherwise), and
``predict`` on three sentences. One JSON line per case goes to ``OUT/results.jsonl``; the
folders of cases that are not ``ok`` stay under ``OUT/work`` to be looked at. Exit status 1
when any case is a crash or a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

TOL = 1e-5
VOCAB = 1000
FAMILIES = ("bert", "roberta", "deberta_v2", "modernbert")

COMMON_ACTS = ["gelu", "gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh"]
REFUSED_ACTS = ["prelu", "xielu"]  # learned parameters: the zoo refuses them


def act(rng):
    from zoo.nn import ACTIVATIONS

    r = rng.random()
    if r < 0.04:
        return rng.choice(REFUSED_ACTS)
    return rng.choice(sorted(ACTIVATIONS)) if r < 0.4 else rng.choice(COMMON_ACTS)


# ----------------------------------------------------------------------------- data


def texts_and_pairs(seed=0):
    from benchmarks.bert_bench import dev_file, read_dev

    dev = read_dev(dev_file(None))
    order = sorted(range(len(dev)), key=lambda i: (len(dev[i]), i))
    rng = random.Random(seed)
    # 16 sentences spread over the length range (shortest and longest included)
    picks = [order[0], order[-1]]
    for k in range(14):
        lo, hi = len(order) * k // 14, len(order) * (k + 1) // 14
        picks.append(order[rng.randrange(lo, hi)])
    texts = [dev[i] for i in picks]
    rest = [dev[i] for i in range(len(dev)) if i not in set(picks)]
    rng.shuffle(rest)
    pairs = (rest[:8], rest[8:16])
    return texts, pairs


# ----------------------------------------------------------------------------- tokenizers


def tokenizer_for(family: str, model_type: str, cache: Path):
    from tokenizers import Tokenizer

    from benchmarks.parity.common import sentences

    key = {"bert": "bert", "roberta": model_type, "deberta_v2": "deberta",
           "modernbert": "modernbert"}[family]
    path = cache / f"{key}-{VOCAB}.json"
    if path.is_file():
        return Tokenizer.from_str(path.read_text())
    texts = sentences()
    if key == "bert":
        from benchmarks.parity.bert import wordpiece_tokenizer
        tok = wordpiece_tokenizer(VOCAB, texts)
    elif key == "roberta":
        from benchmarks.parity.roberta import roberta_tokenizer
        tok = roberta_tokenizer(VOCAB, texts)
    elif key == "xlm-roberta":
        from benchmarks.parity.roberta import xlm_roberta_tokenizer
        tok = xlm_roberta_tokenizer(VOCAB, texts)
    elif key == "deberta":
        from benchmarks.parity.deberta_v2 import deberta_v3_tokenizer
        tok = deberta_v3_tokenizer(VOCAB, texts)
    else:
        from benchmarks.parity.modernbert import modernbert_tokenizer
        tok = modernbert_tokenizer(VOCAB, texts)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str())
    return tok


# ----------------------------------------------------------------------------- drawing configs


def sizes(rng):
    hidden = rng.choice([16, 24, 32, 48, 64])
    heads = rng.choice([h for h in (1, 2, 4, 8) if hidden % h == 0 and hidden // h >= 2])
    return dict(hidden_size=hidden, num_attention_heads=heads,
                num_hidden_layers=rng.choice([1, 2, 3]),
                intermediate_size=rng.choice([16, 32, 48, 64, 96, 128]),
                initializer_range=0.2)


def task_options(rng, spec):
    """task + label options (num_labels 1/2/3/5, problem types)."""
    task = rng.choice(["base", "classifier", "classifier", "token", "mlm"])
    opts = {}
    if task == "classifier":
        n = rng.choice([1, 2, 2, 3, 5])
        opts["num_labels"] = n
        r = rng.random()
        if r < 0.15:
            opts["problem_type"] = "regression"
        elif r < 0.25:
            opts["problem_type"] = "single_label_classification"
        elif r < 0.32:
            opts["problem_type"] = "multi_label_classification"
        if n > 1 and rng.random() < 0.4:
            opts["id2label"] = {i: f"lab{i}" for i in range(n)}
    elif task == "token":
        opts["num_labels"] = rng.choice([2, 3, 5])
    spec["task"] = task
    return opts


def _untie_and_store(rng, spec, options):
    """An MLM head untied 40 % of the time; the options stored; .bin 15 % of the time."""
    if spec["task"] == "mlm" and rng.random() < 0.4:
        options["tie_word_embeddings"] = False
    spec["options"] = options
    spec["bin"] = rng.random() < 0.15
    return spec


def draw_bert(rng):
    spec = {"family": "bert"}
    mt = rng.choices(["bert", "electra", "distilbert"], [6, 2, 2])[0]
    spec["model_type"] = mt
    s = sizes(rng)
    o = task_options(rng, spec)
    eps = rng.choice([1e-12, 1e-6, 1e-3, 0.05])
    mpe = rng.choice([512, 128, 64, 40, 24])
    if mt == "distilbert":
        o.update(dim=s["hidden_size"], n_heads=s["num_attention_heads"],
                 n_layers=s["num_hidden_layers"], hidden_dim=s["intermediate_size"],
                 initializer_range=0.2, max_position_embeddings=mpe,
                 activation=rng.choice(["gelu", "relu", "gelu", "silu", "gelu_new",
                                        "quick_gelu", "tanh"]))
        if rng.random() < 0.1:
            o["sinusoidal_pos_embds"] = True
        if rng.random() < 0.3:
            o["seq_classif_dropout"] = 0.3
    else:
        o.update(s)
        o.update(max_position_embeddings=mpe, layer_norm_eps=eps, hidden_act=act(rng),
                 type_vocab_size=rng.choice([1, 2, 2, 3]))
        if rng.random() < 0.3:
            o["classifier_dropout"] = 0.3
        if rng.random() < 0.08:
            o["position_embedding_type"] = rng.choice(["relative_key", "relative_key_query"])
        if mt == "electra":
            o["embedding_size"] = rng.choice([s["hidden_size"], s["hidden_size"] // 2, 8])
    return _untie_and_store(rng, spec, o)


def draw_roberta(rng):
    spec = {"family": "roberta"}
    mt = rng.choice(["roberta", "xlm-roberta"])
    spec["model_type"] = mt
    o = task_options(rng, spec)
    o.update(sizes(rng))
    o.update(max_position_embeddings=rng.choice([514, 130, 66, 40, 26]),
             type_vocab_size=rng.choice([1, 1, 2, 3]),
             layer_norm_eps=rng.choice([1e-5, 1e-12, 1e-3, 0.05]),
             hidden_act=act(rng), pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if rng.random() < 0.3:
        o["classifier_dropout"] = rng.choice([0.0, 0.3])
    if rng.random() < 0.1:
        o["position_embedding_type"] = rng.choice(["relative_key", "relative_key_query",
                                                   "absolute"])
    return _untie_and_store(rng, spec, o)


def draw_deberta(rng):
    spec = {"family": "deberta_v2", "model_type": "deberta-v2"}
    o = task_options(rng, spec)
    s = sizes(rng)
    o.update(s)
    rel = rng.random() < 0.75
    pat = rng.choice([["c2p", "p2c"], ["p2c", "c2p"], ["c2p"], ["p2c"], []])
    o.update(relative_attention=rel, pos_att_type=pat,
             position_buckets=rng.choice([-1, 0, 2, 4, 7, 8, 16, 256]),
             max_relative_positions=rng.choice([-1, 0, 3, 9, 16, 24, 64, 512]),
             share_att_key=rng.random() < 0.5,
             norm_rel_ebd=rng.choice(["layer_norm", "none", "none|layer_norm"]),
             position_biased_input=rng.random() < 0.5,
             type_vocab_size=rng.choice([0, 0, 1, 2]),
             max_position_embeddings=rng.choice([512, 128, 64, 40]),
             layer_norm_eps=rng.choice([1e-7, 1e-5, 1e-3, 0.05]),
             hidden_act=act(rng), pooler_hidden_act=act(rng), pad_token_id=0)
    if rng.random() < 0.25:
        o["embedding_size"] = rng.choice([8, s["hidden_size"] // 2, 2 * s["hidden_size"]])
    if rng.random() < 0.15:  # DeBERTa-v2-xlarge's ConvLayer
        o["conv_kernel_size"] = rng.choice([1, 3, 3, 5])
        o["conv_act"] = rng.choice(["gelu", "tanh", act(rng)])
        if rng.random() < 0.3:
            o["conv_groups"] = rng.choice([d for d in (2, 4) if s["hidden_size"] % d == 0]
                                          or [1])
    if rng.random() < 0.08:
        o["attention_head_size"] = rng.choice([4, s["hidden_size"] // s["num_attention_heads"]])
    if rng.random() < 0.1:
        o["pooler_hidden_size"] = s["hidden_size"]
    if rng.random() < 0.2:
        o["cls_dropout"] = 0.2
    if spec["task"] == "mlm":
        o["legacy"] = rng.random() < 0.6
        if rng.random() < 0.4:
            o["tie_word_embeddings"] = False
    spec["options"] = o
    spec["bin"] = rng.random() < 0.15
    spec["config4x"] = rng.random() < 0.2  # pos_att_type "a|b" string in config.json
    return spec


def draw_modernbert(rng, tok):
    spec = {"family": "modernbert", "model_type": "modernbert"}
    o = task_options(rng, spec)
    s = sizes(rng)
    # ModernBERT: even head size
    while (s["hidden_size"] // s["num_attention_heads"]) % 2:
        s = sizes(rng)
    s.pop("initializer_range")
    o.update(vocab_size=rng.choice([VOCAB, VOCAB + 24, 1088]), hidden_size=s["hidden_size"],
             num_hidden_layers=rng.choice([1, 2, 3]), num_attention_heads=s["num_attention_heads"],
             intermediate_size=s["intermediate_size"], initializer_range=0.2)
    n = o["num_hidden_layers"]
    if rng.random() < 0.5:
        o["layer_types"] = [rng.choice(["full_attention", "sliding_attention"]) for _ in range(n)]
    else:
        o["global_attn_every_n_layers"] = rng.choice([1, 2, 3])
    o.update(local_attention=rng.choice([2, 3, 4, 5, 7, 8, 16, 128]),
             norm_bias=rng.random() < 0.5, mlp_bias=rng.random() < 0.5,
             attention_bias=rng.random() < 0.5, classifier_bias=rng.random() < 0.5,
             classifier_pooling=rng.choice(["cls", "mean"]),
             classifier_activation=act(rng), hidden_activation=act(rng),
             norm_eps=rng.choice([1e-5, 1e-3, 0.05]),
             embedding_dropout=rng.choice([0.0, 0.1]),
             max_position_embeddings=rng.choice([8192, 512, 64, 32]))
    r = rng.random()
    if r < 0.5:
        o["global_rope_theta"] = rng.choice([10.0, 100.0, 5000.0, 160000.0])
        o["local_rope_theta"] = rng.choice([10.0, 50.0, 10000.0])
    elif r < 0.6:
        o["rope_parameters"] = {"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                   "rope_theta": 1000.0},
                                "sliding_attention": {"rope_type": "default",
                                                      "rope_theta": 100.0}}
    ids = {t: tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")}
    o.update(pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], cls_token_id=ids["[CLS]"],
             eos_token_id=ids["[SEP]"], sep_token_id=ids["[SEP]"])
    if spec["task"] == "mlm":
        o["decoder_bias"] = rng.random() < 0.7
        if rng.random() < 0.4:
            o["tie_word_embeddings"] = False
    if rng.random() < 0.2:
        o["classifier_dropout"] = 0.2
    spec["options"] = o
    spec["bin"] = rng.random() < 0.15
    spec["hub4x"] = rng.random() < 0.25
    return spec


# ----------------------------------------------------------------------------- building


SUFFIX = {"base": "Model", "classifier": "ForSequenceClassification",
          "token": "ForTokenClassification", "mlm": "ForMaskedLM"}
PREFIX = {"bert": "Bert", "electra": "Electra", "distilbert": "DistilBert",
          "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "deberta-v2": "DebertaV2",
          "modernbert": "ModernBert"}


def hf_config(spec, vocab_size):
    import transformers

    o = dict(spec["options"])
    o.setdefault("vocab_size", vocab_size)
    cls = getattr(transformers, PREFIX[spec["model_type"]] + "Config")
    return cls(**o)


def save_tokenizer(spec, tok, folder, config):
    from transformers import PreTrainedTokenizerFast

    fam = spec["family"]
    if fam == "bert":
        PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
            cls_token="[CLS]", mask_token="[MASK]",
            model_max_length=config.max_position_embeddings).save_pretrained(str(folder))
    elif fam == "roberta":
        from benchmarks.parity.roberta import _save_tokenizer
        _save_tokenizer(tok, folder, config.max_position_embeddings - config.pad_token_id - 1)
    elif fam == "deberta_v2":
        from benchmarks.parity.deberta_v2 import _save_tokenizer
        _save_tokenizer(tok, folder, config.max_position_embeddings)
    else:
        from benchmarks.parity.modernbert import _save_tokenizer
        _save_tokenizer(tok, folder)


def rewrite_config(spec, folder):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    if spec.get("config4x") and isinstance(cfg.get("pos_att_type"), list):
        cfg["pos_att_type"] = "|".join(cfg["pos_att_type"])
        cfg["torch_dtype"] = cfg.pop("dtype", "float32")
        cfg["transformers_version"] = "4.46.0"
        path.write_text(json.dumps(cfg, indent=2))
    if spec.get("hub4x"):
        types = cfg.get("layer_types")
        n = len(types)
        every = next((k for k in range(1, n + 1) if types == [
            "full_attention" if i % k == 0 else "sliding_attention" for i in range(n)]), None)
        rope = cfg.get("rope_parameters") or {}
        if every is not None and all((rope.get(t) or {}).get("rope_type", "default") == "default"
                                     for t in rope):
            from benchmarks.parity.modernbert import _hub_4x_config
            _hub_4x_config(folder)
            spec["hub4x_applied"] = every
    return json.loads(path.read_text())


def build(spec, tok, folder):
    import torch
    import transformers

    from benchmarks.parity.common import perturb

    vocab = tok.get_vocab_size()
    config = hf_config(spec, vocab)
    model = getattr(transformers, PREFIX[spec["model_type"]] + SUFFIX[spec["task"]])(config)
    gen = torch.Generator().manual_seed(spec["seed"])
    perturb(model, gen, ("LayerNorm.weight", "norm.weight"))
    model.eval()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.save_pretrained(str(folder))
    if spec.get("bin"):
        torch.save(dict(model.state_dict()), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    save_tokenizer(spec, tok, folder, config)
    return model, rewrite_config(spec, folder)


# ----------------------------------------------------------------------------- comparing


def hf_forward(model, ids, mask, types):
    import torch

    kw = {"input_ids": torch.tensor(ids, dtype=torch.long),
          "attention_mask": torch.tensor(mask, dtype=torch.long)}
    if types is not None:
        kw["token_type_ids"] = torch.tensor(types, dtype=torch.long)
    with torch.no_grad():
        base = model.base_model(**kw).last_hidden_state.numpy()
        logits = None if model.base_model is model else model(**kw).logits.numpy()
    return base, logits


def hf_uses_types(hfcfg: dict) -> bool:
    return hfcfg["model_type"] not in ("modernbert", "distilbert") and \
        (hfcfg.get("type_vocab_size") or 0) >= 2


def zoo_batches(ours, texts, pairs):
    from zoo.inference import pad_encoded
    from zoo.text import encode_texts, special_ids

    out = []
    for a, b in ((texts, None), pairs):
        enc = encode_texts(ours.tokenizer, a, b, ours.info.input_len)
        longest = max(len(e.ids) for e in enc)
        ids, mask, types = pad_encoded(enc, [longest], special_ids(ours.tokenizer)["pad"],
                                       len(enc), True)
        out.append((np.asarray(ids, np.int64), np.asarray(mask, np.int64),
                    np.asarray(types, np.int64)))
    return out


def token_check(ours, hf_tok, texts, pairs):
    from zoo.inference import uses_token_types
    from zoo.text import encode_texts

    n = ours.info.input_len
    bad = []
    for a, b in ((texts, None), pairs):
        mine = encode_texts(ours.tokenizer, a, b, n)
        theirs = hf_tok(a, b, truncation=True, max_length=n)
        use_types = "token_type_ids" in theirs and uses_token_types(ours.config)
        for i, e in enumerate(mine):
            if e.ids != theirs["input_ids"][i]:
                bad.append(f"{'pair' if b else 'text'} {i}: zoo {e.ids[:10]} vs hf "
                           f"{theirs['input_ids'][i][:10]}")
            elif use_types and e.type_ids != theirs["token_type_ids"][i]:
                bad.append(f"{'pair' if b else 'text'} {i}: types differ")
    return bad


def diff(got, ref, mask):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return {"shape": f"zoo {got.shape} vs hf {ref.shape}", "ok": False}
    if ref.ndim == 3:
        keep = mask.astype(bool)
        got, ref = got[keep], ref[keep]
    d = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref)))
    return {"diff": d, "scale": scale, "ok": bool(d <= TOL * max(1.0, scale))}


def run_case(family, index, seed, toks, texts, pairs, keep, work: Path, spec=None,
             post=None):
    import torch
    import transformers

    import zoo
    from zoo.errors import ZooError
    from zoo.inference import uses_token_types

    rng = random.Random(f"{seed}-{family}-{index}")
    if spec is not None:  # a hand-written case
        pass
    elif family == "bert":
        spec = draw_bert(rng)
    elif family == "roberta":
        spec = draw_roberta(rng)
    elif family == "deberta_v2":
        spec = draw_deberta(rng)
    else:
        spec = draw_modernbert(rng, toks[("modernbert", "modernbert")])
    spec["index"] = index
    spec.setdefault("seed", 1000 * FAMILIES.index(family) + index + 100000 * seed)
    torch.manual_seed(spec["seed"])
    tok = toks[(family, spec["model_type"])]
    folder = work / family / f"{index:03d}"
    result = {"spec": spec, "status": None}

    # transformers: build, save, reload, forward on its own tokenizer's ids
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built, hfcfg = build(spec, tok, folder)
            if post is not None:
                hfcfg = post(built, folder) or hfcfg
            auto = {"base": "AutoModel", "classifier": "AutoModelForSequenceClassification",
                    "token": "AutoModelForTokenClassification",
                    "mlm": "AutoModelForMaskedLM"}[spec["task"]]
            ref, info = getattr(transformers, auto).from_pretrained(
                str(folder), output_loading_info=True)
            ref.eval()
            hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
            limit = {"bert": hfcfg.get("max_position_embeddings", 512),
                     "roberta": hfcfg.get("max_position_embeddings", 514) - 2,
                     "deberta_v2": hfcfg.get("max_position_embeddings", 512),
                     "modernbert": 8192}[family]
            batch = hf_tok(texts, padding=True, truncation=True, max_length=limit,
                           return_tensors="np")
            hf_forward(ref, batch["input_ids"], batch["attention_mask"],
                       batch.get("token_type_ids") if hf_uses_types(hfcfg) else None)
        missing = [k for k in info.get("missing_keys", [])]
        if missing:
            result["hf_missing_keys"] = sorted(missing)[:6]
    except Exception as err:  # transformers rejects: not a finding
        result["status"] = "hf-rejects"
        result["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        return result

    # the zoo
    preset = f"{spec['model_type']}-custom"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = zoo.load(preset, weights=str(folder))
    except Exception as err:
        msg = str(err)
        result["error"] = f"{type(err).__name__}: {msg[:600]}"
        if isinstance(err, ZooError) and "\n" not in msg.strip():
            result["status"] = "refusal"
        else:
            result["status"] = "crash"
            result["traceback"] = traceback.format_exc()[-1500:]
        return result

    try:
        result["zoo_head"] = ours.info.head
        bad = token_check(ours, hf_tok, texts, pairs)
        result["token_ids"] = "ok" if not bad else bad[:3]
        checks = {}
        zoo_types = uses_token_types(ours.config)
        for name, (ids, mask, types) in zip(("single", "pair"), zoo_batches(ours, texts, pairs)):
            base, logits = hf_forward(ref, ids, mask, types if hf_uses_types(hfcfg) else None)
            zt = types if zoo_types else None
            hidden = ours.encoder(ids, mask, zt) if zt is not None else ours.encoder(ids, mask)
            checks[f"{name}/hidden"] = diff(hidden, base, mask)
            if logits is not None:
                got = ours(ids, mask, zt)
                checks[f"{name}/logits"] = diff(got, logits, mask)
        result["checks"] = checks
        if spec["task"] in ("classifier", "token"):
            try:
                ours.predict(texts[:3])
            except Exception as err:
                result["predict_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        ok = all(c["ok"] for c in checks.values()) and result["token_ids"] == "ok" \
            and "predict_error" not in result
        result["status"] = "ok" if ok else "MISMATCH"
    except Exception as err:
        result["status"] = "crash"
        result["error"] = f"{type(err).__name__}: {str(err)[:600]}"
        result["traceback"] = traceback.format_exc()[-1500:]
    finally:
        if not keep and result["status"] == "ok":
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parity_fuzz",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25, help="cases per family (default 25)")
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--only", nargs="*", metavar="FAMILY:INDEX", help="these cases only")
    parser.add_argument("--keep", action="store_true", help="keep the folders of ok cases")
    parser.add_argument("--out", default="runs/parity-fuzz")
    args = parser.parse_args(argv)
    if args.only:
        try:
            cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.only]
        except (IndexError, ValueError):
            parser.error(f"--only: expected FAMILY:INDEX, got {' '.join(args.only)}")
    else:
        cases = [(f, i) for f in args.families.split(",")
                 for i in range(args.start, args.start + args.n)]
    unknown = sorted({f for f, _ in cases} - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {', '.join(unknown)} (expected {', '.join(FAMILIES)})")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    texts, pairs = texts_and_pairs(args.seed)
    toks = {}
    for fam in sorted({f for f, _ in cases}):
        types = {"bert": ["bert"], "roberta": ["roberta", "xlm-roberta"],
                 "deberta_v2": ["deberta-v2"], "modernbert": ["modernbert"]}[fam]
        for mt in types:
            toks[(fam, mt)] = tokenizer_for(fam, mt, out / "tokenizers")
        if fam == "bert":
            toks[("bert", "electra")] = toks[("bert", "distilbert")] = toks[("bert", "bert")]
    counts: dict[str, int] = {}
    with (out / "results.jsonl").open("w") as fh:
        for fam, i in cases:
            t0 = time.perf_counter()
            r = run_case(fam, i, args.seed, toks, texts, pairs, args.keep, out / "work")
            r["seconds"] = round(time.perf_counter() - t0, 1)
            fh.write(json.dumps(r, default=str) + "\n")
            fh.flush()
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            s = r["spec"]
            line = f"[{fam}:{i}] {r['status']} {s['model_type']} {s['task']} ({r['seconds']}s)"
            if r.get("error"):
                line += " :: " + r["error"][:220].replace("\n", " | ")
            if r.get("checks"):
                bad = {k: v for k, v in r["checks"].items() if not v["ok"]}
                if bad:
                    line += " :: " + json.dumps(bad)
            if r.get("token_ids") not in (None, "ok"):
                line += f" :: token ids {r['token_ids']}"
            if r.get("predict_error"):
                line += f" :: predict {r['predict_error']}"
            print(line, flush=True)
    print(json.dumps(counts), f"results: {out / 'results.jsonl'}", flush=True)
    return 1 if counts.get("crash") or counts.get("MISMATCH") else 0


if __name__ == "__main__":
    sys.exit(main())
