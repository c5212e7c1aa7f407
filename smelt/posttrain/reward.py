"""`smelt reward [config.toml] [--section.key value ...]`: train a reward model on chosen/rejected pairs.

The reward model is the transformer with a scalar head (`heads.reward`, a d_model → 1 linear layer) read at the
last token of the reply (its `<|end|>`). The Bradley–Terry loss −log σ(r(chosen) − r(rejected)) is averaged over
pairs; reward.center_coef adds c·(r_c + r_r)² to keep scores centred near 0 (as TRL's
center_rewards_coefficient), which PPO appreciates. Logs loss, accuracy (fraction of pairs with r_c > r_r),
margin, and the same on held-out pairs (val_loss, val_accuracy, val_margin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from smelt.config import check, doc
from smelt.model import ModelConfig
from smelt.posttrain.common import (StageData, amp_context, load_pair_fields, maybe_lora, save_run_files,
                                    setup_model, stage_main, validate_common)
from smelt.posttrain.data import BadRows, RowSource, iter_batches
from smelt.posttrain.lora import LoraConfig
from smelt.train.config import OptimConfig, TrainConfig
from smelt.train.loop import Trainer


@dataclass
class RewardSection:
    center_coef: float = doc(0.0, "weight of (r_chosen + r_rejected)² that keeps rewards centred (0 = off)")


@dataclass
class RewardConfig:
    model: ModelConfig = doc(ModelConfig(preset="debug"), "model shape (ignored with train.init_from)")
    data: StageData = doc(StageData(batch_size=8), "preference pairs {prompt, chosen, rejected}, HH-RLHF or "
                                                   "AlpacaEval annotations")
    optim: OptimConfig = doc(OptimConfig(lr=1e-4, warmup_steps=10, weight_decay=0.0, schedule="linear",
                                         min_lr_ratio=0.0), "optimizer and LR schedule")
    train: TrainConfig = doc(TrainConfig(out_dir="runs/reward", steps=200, eval_every=50, ckpt_every=0),
                             "loop, precision, logging, checkpoints")
    reward: RewardSection = doc(RewardSection(), "reward-model loss")
    lora: LoraConfig = doc(LoraConfig(), "LoRA adapters (rank 0 = full fine-tuning; the head always trains)")

    def validate(self) -> None:
        validate_common(self)
        check(bool(self.data.train), "data.train", "set the preference file(s) to train on")
        check(self.reward.center_coef >= 0, "reward.center_coef", "must be >= 0")


def add_head(model: nn.Module, name: str, zero: bool = False, seed: int = 0) -> nn.Linear:
    """Attach a d_model → 1 head as `model.heads[name]` (state-dict prefix `heads.`, ignored by plain loaders)."""
    if not hasattr(model, "heads"):
        model.heads = nn.ModuleDict()
    p = next(model.parameters())
    head = nn.Linear(model.cfg.d_model, 1, bias=False, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        if zero:
            head.weight.zero_()
        else:
            gen = torch.Generator(device=p.device).manual_seed(seed)  # independent of test/run order
            head.weight.normal_(0.0, 1.0 / (model.cfg.d_model + 1) ** 0.5, generator=gen)
    model.heads[name] = head
    return head


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last 1 in each row of a (B, T) mask."""
    t = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * t).max(-1).values


def score(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scalar reward per row, read from the final hidden state at the reply's last token."""
    width = int(last_index(mask).max()) + 1
    hidden = model(ids[:, :width], return_hidden=True)
    at = hidden[torch.arange(ids.shape[0], device=ids.device), last_index(mask)]
    return model.heads["reward"](at).squeeze(-1).float()


class BradleyTerry:
    def __init__(self, center_coef: float = 0.0):
        self.center_coef = center_coef

    def count(self, batch: dict) -> int:
        return int(batch["chosen"].shape[0])

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        n = batch["chosen"].shape[0]
        r = score(model, torch.cat([batch["chosen"], batch["rejected"]]),
                  torch.cat([batch["chosen_mask"], batch["rejected_mask"]]))
        rc, rr = r[:n], r[n:]
        losses = -F.logsigmoid(rc - rr)
        if self.center_coef:
            losses = losses + self.center_coef * (rc + rr) ** 2
        return losses.sum(), {"accuracy": float((rc > rr).float().sum()), "margin": float((rc - rr).sum().detach())}


def make_rm_evaluator(fields: dict[str, torch.Tensor], cfg: Any, device: torch.device):
    objective = BradleyTerry(0.0)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        tot = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
        n = 0
        for chunk in iter_batches(fields, cfg.data.batch_size):
            batch = {k: v.to(device) for k, v in chunk.items()}
            with amp_context(cfg, device):
                loss, m = objective.loss(model, batch)
            tot["loss"] += float(loss)
            tot["accuracy"] += m["accuracy"]
            tot["margin"] += m["margin"]
            n += objective.count(batch)
        model.train(was)
        return {f"val_{k}": v / max(n, 1) for k, v in tot.items()}

    return evaluate


def run_reward(cfg: RewardConfig, model: nn.Module | None = None, tokenizer=None) -> dict[str, Any]:
    """Python API: train a reward model; returns final metrics plus `before` (held-out metrics at the start)."""
    model, tok = setup_model(cfg, tokenizer, model)
    device = next(model.parameters()).device
    add_head(model, "reward", seed=cfg.train.seed)
    bad = BadRows()
    train, val = load_pair_fields(cfg, tok, bad)
    save_run_files(cfg.train.out_dir, tok, bad, {"train_pairs": int(train["chosen"].shape[0])})
    evaluate = make_rm_evaluator(val, cfg, device) if val is not None else None
    before = evaluate(model) if evaluate else {}
    save_extra, trainable_only = maybe_lora(cfg, model, keep_trainable=("heads.",))
    trainer = Trainer(cfg, model, BradleyTerry(cfg.reward.center_coef), RowSource(train, cfg.data.batch_size,
                      cfg.train.seed), evaluate=evaluate, save_extra=save_extra, stage="reward",
                      tokens_per_batch=lambda b: int(b["chosen_mask"].numel() * 2), save_trainable_only=trainable_only)
    result = trainer.fit()
    result["before"] = before
    result["skipped"] = bad.as_dict()["counts"]
    return result


def load_reward_model(path: str | Path, device: str | torch.device = "cpu"):
    """(reward model with heads.reward, tokenizer) from a `smelt reward` run or checkpoint (LoRA runs too)."""
    from safetensors.torch import load_file

    from smelt.train.checkpoint import load_pretrained, resolve_checkpoint
    ckpt = resolve_checkpoint(path)
    model, tok = load_pretrained(ckpt, device=device)
    add_head(model, "reward")
    for f in ("adapter.safetensors", "model.safetensors"):
        if (ckpt / f).exists():
            w = load_file(str(ckpt / f), device=str(device))
            if "heads.reward.weight" in w:
                model.heads["reward"].weight.data.copy_(w["heads.reward.weight"])
                return model.eval(), tok
    raise ValueError(f"{ckpt}: no reward head (heads.reward.weight) found; is this a `smelt reward` run?")


def main(argv: list[str]) -> int:
    return stage_main(argv, RewardConfig, __doc__, run_reward,
                      ("step", "loss", "accuracy", "before", "val_loss", "val_accuracy", "val_margin", "skipped"))
