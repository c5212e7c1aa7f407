"""Hugging Face `LlamaForCausalLM` folders ⇄ smelt Transformers.

smelt's blocks are Llama blocks (RMSNorm in fp32, rotate-half RoPE, SwiGLU, no biases), so conversion is a
renaming plus one per-tensor transform: smelt pads the embedding (and untied head) to `cfg.padded_vocab` rows
while only the first `cfg.vocab_size` ever reach the logits. Export drops the padding rows; import pads with zeros.

The name map is data (`WEIGHT_MAP`): one table read in both directions, so export and import cannot drift apart.
Neither direction imports `transformers`: config.json is plain JSON and weights are safetensors.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smelt.config import ConfigError
from smelt.model import ModelConfig, Transformer
from smelt.model.transformer import rope_tables

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class WeightRule:
    """One tensor family: its smelt state-dict name, its HF name (`{i}` = layer index) and the transform between."""
    smelt: str
    hf: str
    transform: str = "same"


# The whole map. Order is irrelevant; every smelt parameter must match exactly one rule and so must every HF
# tensor (apart from HF_IGNORED). `head.weight` exists only for untied models (see Transformer.logits).
WEIGHT_MAP: tuple[WeightRule, ...] = (
    WeightRule("embed.weight", "model.embed_tokens.weight", "vocab_rows"),
    WeightRule("layers.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    WeightRule("layers.{i}.attn.q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    WeightRule("layers.{i}.attn.k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    WeightRule("layers.{i}.attn.v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    WeightRule("layers.{i}.attn.o.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    WeightRule("layers.{i}.mlp_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    WeightRule("layers.{i}.mlp.gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    WeightRule("layers.{i}.mlp.up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    WeightRule("layers.{i}.mlp.down.weight", "model.layers.{i}.mlp.down_proj.weight"),
    WeightRule("norm.weight", "model.norm.weight"),
    WeightRule("head.weight", "lm_head.weight", "vocab_rows"),
)

# Tensors some HF checkpoints carry that hold no learned state (older versions saved the RoPE frequencies).
HF_IGNORED = (re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$"),)


def _drop_pad_rows(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    return t[: cfg.vocab_size]


def _pad_rows(t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    if t.shape[0] != cfg.vocab_size:
        raise ValueError(f"vocabulary tensor has {t.shape[0]} rows, config.json vocab_size is {cfg.vocab_size}")
    pad = t.new_zeros(cfg.padded_vocab - cfg.vocab_size, *t.shape[1:])
    return torch.cat([t, pad]) if pad.numel() else t


# transform name → (smelt → HF, HF → smelt)
TRANSFORMS: dict[str, tuple[Callable[[torch.Tensor, ModelConfig], torch.Tensor], ...]] = {
    "same": (lambda t, cfg: t, lambda t, cfg: t),
    "vocab_rows": (_drop_pad_rows, _pad_rows),
}


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_RULES = [(rule, _pattern(rule.smelt), _pattern(rule.hf)) for rule in WEIGHT_MAP]


def hf_name(smelt_name: str) -> tuple[str, str]:
    """smelt state-dict name → (HF name, transform)."""
    for rule, sp, _ in _RULES:
        if m := sp.match(smelt_name):
            return rule.hf.format(**m.groupdict()), rule.transform
    raise KeyError(f"no HF name for smelt tensor {smelt_name!r} (add a rule to WEIGHT_MAP)")


def smelt_name(hf_tensor: str) -> tuple[str, str] | None:
    """HF tensor name → (smelt name, transform); None for tensors in HF_IGNORED."""
    if any(p.match(hf_tensor) for p in HF_IGNORED):
        return None
    for rule, _, hp in _RULES:
        if m := hp.match(hf_tensor):
            return rule.smelt.format(**m.groupdict()), rule.transform
    raise KeyError(hf_tensor)


# ---- configs --------------------------------------------------------------------------------------------------

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def hf_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32, tokenizer: Any = None) -> dict[str, Any]:
    """The config.json of a LlamaForCausalLM equal to a smelt model with `cfg`."""
    if cfg.mlp != "swiglu":
        raise ValueError(f"model.mlp={cfg.mlp!r} has no Llama equivalent (LlamaForCausalLM uses a SwiGLU MLP); "
                         f"only swiglu models export to the HF Llama format")
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        # transformers < 5 reads `rope_theta`; 5.x reads `rope_parameters` (and still accepts the old key).
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_embeddings,
        "use_cache": True,
        "torch_dtype": _dtype_name(dtype),  # transformers < 5
        "dtype": _dtype_name(dtype),        # transformers >= 5
    }
    if tokenizer is not None:
        out.update(_special_ids(tokenizer))
    return out


def _special_ids(tokenizer: Any) -> dict[str, Any]:
    ids: dict[str, Any] = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
                           "pad_token_id": tokenizer.pad_id}
    end = _end_id(tokenizer)
    if end is not None:  # chat replies close with <|end|>: HF generate should stop there too
        ids["eos_token_id"] = [tokenizer.eos_id, end]
    return ids


def _end_id(tokenizer: Any) -> int | None:
    try:
        return tokenizer.token_id("<|end|>")
    except (AttributeError, ValueError, KeyError):
        return None


def _get(d: dict, key: str, default: Any) -> Any:
    # A key that is present but null means "use the default" in HF configs.
    v = d.get(key, default)
    return default if v is None else v


def model_config_from_hf(d: dict[str, Any], f: Path) -> ModelConfig:
    """Validate an HF config.json dict and translate it; every rejection names the field and the file."""
    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{f}: {field}={d.get(field)!r}: {why}")

    archs = d.get("architectures") or []
    model_type = d.get("model_type")
    # Mistral is Llama plus an optional sliding window; without the window the weights are a Llama's.
    if model_type not in ("llama", "mistral") and "LlamaForCausalLM" not in archs:
        raise bad("model_type", "only Llama-architecture models (model_type llama) can be imported")
    if archs and not any(a in ("LlamaForCausalLM", "MistralForCausalLM") for a in archs):
        raise bad("architectures", "expected LlamaForCausalLM")
    if _get(d, "hidden_act", "silu") != "silu":
        raise bad("hidden_act", "smelt's SwiGLU MLP uses silu")
    for field in ("attention_bias", "mlp_bias"):
        if d.get(field):
            raise bad(field, "smelt layers have no biases")
    if d.get("sliding_window") is not None and d.get("use_sliding_window", True):
        raise bad("sliding_window", "sliding-window attention is not supported (smelt attends to the full context)")
    if d.get("layer_types") and any(t != "full_attention" for t in d["layer_types"]):
        raise bad("layer_types", "only full_attention layers are supported")
    if float(_get(d, "partial_rotary_factor", 1.0)) != 1.0:
        raise bad("partial_rotary_factor", "smelt rotates the whole head dimension")
    if d.get("quantization_config"):
        raise bad("quantization_config", "quantized checkpoints cannot be imported; use unquantized weights")
    rope_theta = float(_get(d, "rope_theta", 10000.0))
    for field in ("rope_scaling", "rope_parameters"):
        rp = d.get(field)
        if not rp:
            continue
        if not isinstance(rp, dict):
            raise bad(field, "expected a table")
        kind = rp.get("rope_type", rp.get("type", "default"))
        factor = float(rp.get("factor", 1.0))
        # Linear/dynamic scaling with factor 1 is the plain RoPE; everything else changes the frequencies.
        if kind != "default" and not (kind in ("linear", "dynamic") and factor == 1.0):
            raise bad(field, f"RoPE scaling type {kind!r} is not supported (only plain RoPE)")
        if "rope_theta" in rp:
            rope_theta = float(rp["rope_theta"])
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(d.get(field), int) or d[field] <= 0:
            raise bad(field, "required positive integer")
    n_heads = d["num_attention_heads"]
    if d.get("head_dim") not in (None, d["hidden_size"] // n_heads):
        raise bad("head_dim", f"must equal hidden_size / num_attention_heads = {d['hidden_size'] // n_heads}")
    cfg = ModelConfig(
        vocab_size=d["vocab_size"], n_layers=d["num_hidden_layers"], d_model=d["hidden_size"], n_heads=n_heads,
        n_kv_heads=int(_get(d, "num_key_value_heads", n_heads)), ffn_hidden=d["intermediate_size"],
        mlp="swiglu", max_seq_len=int(_get(d, "max_position_embeddings", 2048)), rope_theta=rope_theta,
        norm_eps=float(_get(d, "rms_norm_eps", 1e-6)),
        tie_embeddings=bool(_get(d, "tie_word_embeddings", False)),  # LlamaConfig's default is untied
        init_std=float(_get(d, "initializer_range", 0.02)),
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise ValueError(f"{f}: translated config is invalid: {e}") from None
    return cfg


# ---- export ---------------------------------------------------------------------------------------------------

def hf_state_dict(model: Transformer, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under HF names, on the CPU, in `dtype` (default: the model's own)."""
    out = {}
    for name, t in model.state_dict().items():
        target, transform = hf_name(name)
        t = TRANSFORMS[transform][0](t.detach(), model.cfg)
        out[target] = t.to(device="cpu", dtype=dtype or t.dtype).contiguous()
    return out


def export_hf(model: Transformer, out_dir: str | Path, tokenizer: Any = None,
              dtype: torch.dtype | None = None) -> Path:
    """Write a folder `LlamaForCausalLM.from_pretrained` loads (and, with a tokenizer, `PreTrainedTokenizerFast`)."""
    out = Path(out_dir)
    config = hf_config(model.cfg, dtype or next(model.parameters()).dtype, tokenizer)  # raises for relu2 first
    tensors = hf_state_dict(model, dtype)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        _export_tokenizer(tokenizer, out, model.cfg)
    return out


def _chat_template() -> str:
    # Mirrors Tokenizer.render_chat: <|bos|>, then <|role|> content <|end|> per message, then <|assistant|>.
    return ("{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] "
            "+ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def _export_tokenizer(tokenizer: Any, out: Path, cfg: ModelConfig) -> None:
    tokenizer.save(out)  # writes tokenizer.json (plus smelt's own small metadata file, harmless to HF)
    special = {"bos_token": tokenizer.id_to_token(tokenizer.bos_id),
               "eos_token": tokenizer.id_to_token(tokenizer.eos_id),
               "pad_token": tokenizer.id_to_token(tokenizer.pad_id)}
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": False,
        # smelt adds <|bos|> explicitly (encode(bos=True) / the chat template); the HF side should not add more.
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if _end_id(tokenizer) is not None:
        tok_config["chat_template"] = _chat_template()
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(_special_ids(tokenizer), indent=2) + "\n")


# ---- import ---------------------------------------------------------------------------------------------------

def read_hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded (index.json) safetensors checkpoint, on the CPU."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: not a safetensors index (missing or invalid weight_map: {e})") from None
        files = sorted(set(weight_map.values()))
    elif (folder / WEIGHTS_FILE).exists():
        files = [WEIGHTS_FILE]
    else:
        found = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {found}; re-save with safe_serialization=True)" if found else ""
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{index}: shard {name} is missing")
        with safe_open(str(path), framework="pt") as sf:
            for key in sf.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                tensors[key] = sf.get_tensor(key)
    return tensors


def import_hf(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load a Llama-architecture HF folder as (Transformer in eval mode, smelt Tokenizer or None)."""
    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} (not a Hugging Face model folder)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from None
    cfg = model_config_from_hf(raw, cfg_path)
    state = {}
    for key, t in read_hf_tensors(folder).items():
        try:
            mapped = smelt_name(key)
        except KeyError:
            raise ValueError(f"{folder}: unexpected tensor {key!r} (not part of a Llama model with this "
                             f"config.json)") from None
        if mapped is None or (cfg.tie_embeddings and mapped[0] == "head.weight"):
            continue  # tied models reuse the embedding; a saved lm_head copy is redundant
        name, transform = mapped
        try:
            state[name] = TRANSFORMS[transform][1](t.to(dtype), cfg)
        except ValueError as e:
            raise ValueError(f"{folder}: tensor {key}: {e}") from None
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        names = [hf_name(m)[0] for m in missing[:5]], [hf_name(u)[0] for u in unexpected[:5]]
        raise ValueError(f"{folder}: weights do not match {CONFIG_FILE}: missing {names[0]}, unexpected {names[1]}")
    for name, p in model.state_dict().items():
        if tuple(state[name].shape) != tuple(p.shape):
            raise ValueError(f"{folder}: tensor {hf_name(name)[0]} has shape {tuple(state[name].shape)}, "
                             f"{CONFIG_FILE} implies {tuple(p.shape)}")
    model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    # RoPE tables are non-persistent buffers: recompute them instead of running a full (random) init_weights().
    with torch.no_grad():
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=model.rope_cos.device)
        model.rope_cos.copy_(cos)
        model.rope_sin.copy_(sin)
    return model.eval(), _import_tokenizer(folder, cfg)


def _import_tokenizer(folder: Path, cfg: ModelConfig):
    if not (folder / "tokenizer.json").exists():
        return None
    try:
        from smelt.tokenizer import Tokenizer  # lazy: weights import without the tokenizer module
        tok = Tokenizer.load(folder)
    except (ImportError, ValueError) as e:
        # A foreign tokenizer (other special tokens / ids) cannot drive smelt's chat template or stop tokens.
        warnings.warn(f"{folder / 'tokenizer.json'}: not usable as a smelt tokenizer ({e}); imported the weights "
                      f"without a tokenizer", stacklevel=3)
        return None
    if tok.vocab_size > cfg.vocab_size:
        warnings.warn(f"{folder}: tokenizer has {tok.vocab_size} tokens but config.json vocab_size is "
                      f"{cfg.vocab_size}", stacklevel=3)
    return tok


__all__ = ["TRANSFORMS", "WEIGHT_MAP", "WeightRule", "export_hf", "hf_config", "hf_name", "hf_state_dict",
           "import_hf", "model_config_from_hf", "read_hf_tensors", "smelt_name"]
