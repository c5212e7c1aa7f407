"""Decoder-only transformer: RMSNorm, RoPE, grouped-query SDPA attention, SwiGLU / ReLU² MLP, no biases.

The model knows nothing of parallelism, precision policy or checkpoint formats (see smelt.distributed and
smelt.train.checkpoint). Build it on the `meta` device, move it with `to_empty(device=...)`, then call
`init_weights()`: large models never materialise a throwaway random init on the CPU.

Numerics follow HF transformers' Llama (RMSNorm in fp32, rotate-half RoPE) so the same weights give the same
logits; tests/test_hf_interop.py checks that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from smelt.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under bf16 autocast: the mean of squares loses too much precision otherwise.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(max_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (T, D). Rotate-half convention (HF Llama), computed in x's dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


@dataclass
class KVCache:
    """Pre-allocated keys/values for every layer: (layers, B, kv_heads, max_len, head_dim); `pos` = tokens stored."""
    k: torch.Tensor
    v: torch.Tensor
    pos: int = 0

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> "KVCache":
        shape = (cfg.n_layers, batch, cfg.kv_heads, max_len, cfg.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg = cfg
        self.layer_idx = layer_idx
        hd = cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * hd, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.kv_heads * hd, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.kv_heads * hd, bias=False)
        self.o = nn.Linear(cfg.n_heads * hd, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, doc_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        q = self.q(x).view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        is_causal, mask = T > 1, None
        if cache is not None:
            start = cache.pos
            cache.k[self.layer_idx, :, :, start:start + T] = k
            cache.v[self.layer_idx, :, :, start:start + T] = v
            k = cache.k[self.layer_idx, :, :, :start + T]
            v = cache.v[self.layer_idx, :, :, :start + T]
            if start > 0 and T > 1:
                # New queries see every cached key plus the causal part of their own block.
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                is_causal = False
            elif start > 0:
                is_causal = False
        if doc_mask is not None:  # packed documents: causal within each, nothing across (see Transformer.forward)
            mask, is_causal = doc_mask, False
        p = cfg.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal,
                                           enable_gqa=cfg.kv_heads != cfg.n_heads)
        return self.o(y.transpose(1, 2).reshape(B, T, cfg.n_heads * cfg.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        if cfg.mlp == "swiglu":
            self.gate = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.down = nn.Linear(cfg.hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None, doc_mask: torch.Tensor | None = None):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, cache, doc_mask))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # Tied embeddings reuse embed.weight in forward instead of sharing a Parameter object: sharing breaks
        # on `to_empty()` from the meta device and under FSDP, and the state dict stays unambiguous.
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> "Transformer":
        """(Re)initialise every parameter and buffer in place; works after `to_empty()` from the meta device."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.embed.weight.device).manual_seed(seed)
        cfg = self.cfg
        std, resid_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("attn.o.weight", "mlp.down.weight")):
                p.normal_(0.0, resid_std, generator=gen)
            else:
                p.normal_(0.0, std, generator=gen)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)
        return self

    def num_params(self, exclude_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.embed.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, return_hidden: bool = False,
                segments: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) token ids → logits (B, T, vocab_size) (or final hidden states (B, T, d_model)).

        `segments` (B, T) marks which packed document each position belongs to: attention then stays inside a
        document (an explicit mask, so SDPA uses a masked kernel instead of the causal flash path)."""
        B, T = idx.shape
        doc_mask = None
        if segments is not None:
            if cache is not None:
                raise ValueError("segments (packed documents) cannot be combined with a KV cache")
            same = segments[:, :, None] == segments[:, None, :]
            causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
            doc_mask = (same & causal)[:, None]  # (B, 1, T, T), broadcast over heads
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.embed(idx)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, doc_mask)
        if cache is not None:
            cache.pos += T
        x = self.norm(x)
        if return_hidden:
            return x
        return self.logits(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        w = self.embed.weight if self.head is None else self.head.weight
        return F.linear(hidden, w[: self.cfg.vocab_size])


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int | None = 0) -> Transformer:
    """Meta-device construction, then real storage on `device`, then init: the one way models are made."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    return model.init_weights(seed)
