"""Training objectives: how a batch becomes a summed loss. The loop divides by the step's total target count."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -1  # target id that contributes no loss (padding, prompt tokens in SFT)


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, T+1) token window → (inputs, targets); a dict with `inputs`/`targets` passes through."""
    if isinstance(batch, dict):
        return batch["inputs"], batch["targets"]
    return batch[:, :-1], batch[:, 1:]


def token_nll(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
              reduction: str = "sum") -> torch.Tensor:
    """Next-token negative log-likelihood in nats; logits are upcast to fp32 so bf16 does not bias the loss."""
    logits = model(inputs)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction=reduction)


class CausalLM:
    """Next-token prediction on every target that is not IGNORE (pre-training; SFT with a prompt mask)."""

    def count(self, batch: Any) -> int:
        _, targets = split_batch(batch)
        return int((targets != IGNORE).sum())

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, targets = split_batch(batch)
        return token_nll(model, inputs, targets), {}
