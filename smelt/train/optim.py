"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import torch

from smelt.train.config import OptimConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear weights, embeddings); never norms or other vectors — decaying a norm gain towards 0
    fights the normalisation it exists for."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name in ("adamw", "adam"):
        # Fused kernels exist for CUDA tensors; on CPU the foreach path is the fastest available.
        kw = {"fused": True} if device_type == "cuda" else {"foreach": True}
        if cfg.name == "adam":  # plain Adam: L2 penalty in the gradient, as torch defines it
            return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kw)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kw)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.beta1, nesterov=cfg.beta1 > 0)
    if cfg.name == "adafactor":
        return torch.optim.Adafactor(groups, lr=cfg.lr, eps=(None, 1e-3))
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}")


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warmup, then the chosen decay down to lr·min_lr_ratio."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "wsd":
        decay_steps = max(1, int(round(cfg.decay_frac * total_steps)))
        start = total_steps - decay_steps
        if step < start:
            return peak
        frac = min(1.0, (step - start + 1) / decay_steps)
        return peak + (floor - peak) * frac
    span = max(1, total_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps + 1) / span)
    if cfg.schedule == "linear":
        return peak + (floor - peak) * frac
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * frac))
