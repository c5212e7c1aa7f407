"""Model shape: one typed dataclass and the named presets (debug → ~1B)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from smelt.config import ConfigError, check, doc


@dataclass
class ModelConfig:
    preset: str = doc("", "named preset the other fields start from (debug, gpt2-124m, 350m, 1b); empty = use fields as given")
    vocab_size: int = doc(4096, "tokenizer vocabulary size (the embedding is padded up to pad_vocab_to)")
    pad_vocab_to: int = doc(64, "pad the embedding rows to a multiple of this (64/128 keeps matmuls aligned)")
    n_layers: int = doc(4, "number of transformer blocks")
    d_model: int = doc(128, "residual stream width")
    n_heads: int = doc(4, "attention query heads")
    n_kv_heads: int = doc(0, "key/value heads for grouped-query attention; 0 = n_heads (plain multi-head)")
    ffn_hidden: int = doc(0, "MLP hidden width; 0 = 8/3·d_model for swiglu (rounded to 64), 4·d_model for relu2")
    mlp: Literal["swiglu", "relu2"] = doc("swiglu", "MLP type: SwiGLU (Llama) or squared ReLU")
    max_seq_len: int = doc(256, "longest sequence the RoPE tables cover")
    rope_theta: float = doc(10000.0, "RoPE base frequency")
    norm_eps: float = doc(1e-5, "RMSNorm epsilon")
    tie_embeddings: bool = doc(True, "share the input embedding and output head weights")
    dropout: float = doc(0.0, "dropout on attention probabilities and residual branches during training")
    init_std: float = doc(0.02, "std of the normal init; residual output projections are scaled by 1/sqrt(2·n_layers)")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.mlp == "swiglu":
            return 64 * ((int(8 * self.d_model / 3) + 63) // 64)
        return 4 * self.d_model

    @property
    def padded_vocab(self) -> int:
        m = self.pad_vocab_to
        return ((self.vocab_size + m - 1) // m) * m

    def validate(self) -> None:
        p = "model."
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_seq_len", "pad_vocab_to"):
            check(getattr(self, name) > 0, p + name, f"must be > 0, got {getattr(self, name)}")
        check(self.d_model % self.n_heads == 0, p + "n_heads",
              f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        check(self.head_dim % 2 == 0, p + "d_model", f"head_dim={self.head_dim} must be even for RoPE")
        check(self.n_kv_heads >= 0 and self.n_heads % self.kv_heads == 0, p + "n_kv_heads",
              f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        check(0.0 <= self.dropout < 1.0, p + "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.mlp in ("swiglu", "relu2"), p + "mlp", f"must be swiglu or relu2, got {self.mlp!r}")
        check(self.ffn_hidden >= 0, p + "ffn_hidden", "must be >= 0")


# Named presets. `debug` is for tests and CPU demos; the rest are real sizes for GPUs.
PRESETS: dict[str, dict] = {
    "debug": dict(vocab_size=4096, n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, max_seq_len=256),
    # GPT-2-small shape (124M with tied 50304-row embedding) with Llama-style blocks.
    "gpt2-124m": dict(vocab_size=50257, pad_vocab_to=128, n_layers=12, d_model=768, n_heads=12, n_kv_heads=12,
                      ffn_hidden=2048, max_seq_len=1024),
    "350m": dict(vocab_size=50257, pad_vocab_to=128, n_layers=24, d_model=1024, n_heads=16, n_kv_heads=16,
                 ffn_hidden=2816, max_seq_len=2048),
    # Llama-3.2-1B-like shape with a 64k vocabulary.
    "1b": dict(vocab_size=65536, pad_vocab_to=128, n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8,
               ffn_hidden=8192, max_seq_len=2048, rope_theta=500000.0),
}


def resolve_preset(cfg: ModelConfig, explicit: dict | None = None) -> ModelConfig:
    """Apply `cfg.preset` underneath the fields the user set explicitly (`explicit` = the user's raw dict)."""
    if not cfg.preset:
        return cfg
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {cfg.preset!r}; known: {sorted(PRESETS)}")
    values = dict(PRESETS[cfg.preset])
    explicit = explicit or {}
    for k in explicit:
        if k != "preset":
            values[k] = getattr(cfg, k)
    return dataclasses.replace(ModelConfig(preset=cfg.preset), **values)


def preset(name: str, **overrides) -> ModelConfig:
    cfg = resolve_preset(ModelConfig(preset=name))
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg
