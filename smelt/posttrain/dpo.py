"""`smelt dpo [config.toml] [--section.key value ...]`: direct preference optimisation on chosen/rejected pairs.

Loss variants (Rafailov et al. 2023; Azar et al. 2023; Mitchell 2023), with h = (log π(c) − log π_ref(c)) −
(log π(r) − log π_ref(r)):
  sigmoid   −log σ(β h)                                   (DPO)
  sigmoid + dpo.label_smoothing = ε:  −(1−ε) log σ(β h) − ε log σ(−β h)   (conservative DPO, for noisy labels)
  ipo       (h − 1/(2β))², with log-probs averaged over completion tokens as TRL does
The reference model is the starting policy; its log-probs for every pair are computed once before training, so no
second model is kept in memory. Logs (like TRL) rewards/chosen = β(log π(c) − log π_ref(c)), rewards/rejected,
rewards/margins, rewards/accuracies, plus the same on held-out pairs (val_*) and the policy's own preference
val_logp_margin = mean(log π(c) − log π(r)) and val_pref_accuracy (its fraction > 0), which are meaningful
before training too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from smelt.config import check, doc
from smelt.model import ModelConfig
from smelt.posttrain.common import (StageData, amp_context, disable_dropout, load_pair_fields, maybe_lora,
                                    save_run_files, sequence_logps, setup_model, stage_main, validate_common)
from smelt.posttrain.data import BadRows, RowSource, iter_batches
from smelt.posttrain.lora import LoraConfig
from smelt.train.config import OptimConfig, TrainConfig
from smelt.train.loop import Trainer


@dataclass
class DPOSection:
    beta: float = doc(0.1, "β: strength of the implicit KL constraint to the reference")
    loss_type: Literal["sigmoid", "ipo"] = doc("sigmoid", "sigmoid = DPO (conservative with label_smoothing > 0), "
                                               "ipo = IPO's squared loss")
    label_smoothing: float = doc(0.0, "ε in [0, 0.5): assumed probability that a preference label is flipped")


@dataclass
class DPOConfig:
    model: ModelConfig = doc(ModelConfig(preset="debug"), "model shape (ignored with train.init_from)")
    data: StageData = doc(StageData(batch_size=4), "preference pairs {prompt, chosen, rejected}, HH-RLHF or "
                                                   "AlpacaEval annotations")
    optim: OptimConfig = doc(OptimConfig(lr=5e-6, warmup_steps=10, weight_decay=0.0, schedule="linear",
                                         min_lr_ratio=0.0), "optimizer and LR schedule")
    train: TrainConfig = doc(TrainConfig(out_dir="runs/dpo", steps=200, eval_every=50, ckpt_every=0),
                             "loop, precision, logging, checkpoints")
    dpo: DPOSection = doc(DPOSection(), "DPO loss")
    lora: LoraConfig = doc(LoraConfig(), "LoRA adapters (rank 0 = full fine-tuning)")

    def validate(self) -> None:
        validate_common(self)
        check(bool(self.data.train), "data.train", "set the preference file(s) to train on")
        check(self.dpo.beta > 0, "dpo.beta", f"must be > 0, got {self.dpo.beta}")
        check(0.0 <= self.dpo.label_smoothing < 0.5, "dpo.label_smoothing",
              f"must be in [0, 0.5), got {self.dpo.label_smoothing}")
        if self.dpo.loss_type == "ipo" and self.dpo.label_smoothing:
            print("warning: dpo.label_smoothing is ignored with loss_type = ipo", file=sys.stderr)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses, chosen rewards and rejected rewards from (summed or averaged) sequence log-probs."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"dpo.loss_type: unknown loss {loss_type!r}")
    return losses, beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], average: bool) -> tuple[torch.Tensor, ...]:
    """Chosen and rejected completion log-probs in one forward pass over the 2B rows."""
    n = batch["chosen"].shape[0]
    ids = torch.cat([batch["chosen"], batch["rejected"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    # Rows are right-padded: trim the all-padding tail shared by the batch to save compute.
    width = int(mask.any(0).nonzero().max()) + 1
    logps, counts = sequence_logps(model, ids[:, :width], mask[:, :width])
    if average:
        logps = logps / counts.clamp(min=1)
    return logps[:n], logps[n:], counts[:n], counts[n:]


class DPOObjective:
    def __init__(self, cfg: DPOSection):
        self.cfg = cfg
        self.average = cfg.loss_type == "ipo"

    def count(self, batch: dict) -> int:
        return int(batch["chosen"].shape[0])

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        pc, pr, nc, nr = pair_logps(model, batch, self.average)
        rc, rr = batch["ref_chosen"], batch["ref_rejected"]
        if self.average:
            rc, rr = rc / nc.clamp(min=1), rr / nr.clamp(min=1)
        losses, rew_c, rew_r = dpo_loss(pc, pr, rc, rr, self.cfg.beta, self.cfg.loss_type, self.cfg.label_smoothing)
        # Metrics are summed over pairs here; the loop divides by the step's pair count.
        return losses.sum(), {"rewards/chosen": float(rew_c.sum()), "rewards/rejected": float(rew_r.sum()),
                              "rewards/margins": float((rew_c - rew_r).sum()),
                              "rewards/accuracies": float((rew_c > rew_r).float().sum())}


@torch.no_grad()
def reference_logps(model: torch.nn.Module, fields: dict[str, torch.Tensor], batch_size: int, cfg: Any,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Summed completion log-probs of the (frozen) starting model for every pair, computed once."""
    was = model.training
    model.eval()
    out_c, out_r = [], []
    for chunk in iter_batches(fields, batch_size):
        with amp_context(cfg, device):
            pc, pr, _, _ = pair_logps(model, {k: v.to(device) for k, v in chunk.items()}, average=False)
        out_c.append(pc.float().cpu())
        out_r.append(pr.float().cpu())
    model.train(was)
    return {**fields, "ref_chosen": torch.cat(out_c), "ref_rejected": torch.cat(out_r)}


def make_pair_evaluator(fields: dict[str, torch.Tensor], cfg: DPOConfig, device: torch.device):
    objective = DPOObjective(cfg.dpo)

    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        sums: dict[str, float] = {}
        n, logp_margin, pref = 0, 0.0, 0.0
        for chunk in iter_batches(fields, cfg.data.batch_size):
            batch = {k: v.to(device) for k, v in chunk.items()}
            with amp_context(cfg, device):
                loss, metrics = objective.loss(model, batch)
                pc, pr, _, _ = pair_logps(model, batch, average=False)
            for k, v in {"loss": float(loss), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v
            logp_margin += float((pc - pr).sum())
            pref += float((pc > pr).float().sum())
            n += objective.count(batch)
        model.train(was)
        out = {f"val_{k.replace('/', '_')}": v / max(n, 1) for k, v in sums.items()}
        out.update(val_logp_margin=logp_margin / max(n, 1), val_pref_accuracy=pref / max(n, 1))
        return out

    return evaluate


def run_dpo(cfg: DPOConfig, model: torch.nn.Module | None = None, tokenizer=None) -> dict[str, Any]:
    """Python API: DPO per `cfg`; returns final metrics plus `before` (held-out metrics of the starting model)."""
    model, tok = setup_model(cfg, tokenizer, model)
    device = next(model.parameters()).device
    bad = BadRows()
    train, val = load_pair_fields(cfg, tok, bad)
    save_run_files(cfg.train.out_dir, tok, bad, {"train_pairs": int(train["chosen"].shape[0])})
    save_extra, trainable_only = maybe_lora(cfg, model)
    disable_dropout(model)
    cfg.model = model.cfg
    # The reference is the starting policy (with LoRA: the possibly quantised base, adapters still zero): score
    # every pair once, before any weight changes.
    train = reference_logps(model, train, cfg.data.batch_size, cfg, device)
    val = reference_logps(model, val, cfg.data.batch_size, cfg, device) if val is not None else None
    evaluate = make_pair_evaluator(val, cfg, device) if val is not None else None
    before = evaluate(model) if evaluate else {}
    source = RowSource(train, cfg.data.batch_size, cfg.train.seed)
    trainer = Trainer(cfg, model, DPOObjective(cfg.dpo), source, evaluate=evaluate, save_extra=save_extra,
                      stage="dpo", tokens_per_batch=lambda b: int(b["chosen_mask"].numel() * 2),
                      save_trainable_only=trainable_only)
    result = trainer.fit()
    result["before"] = before
    result["skipped"] = bad.as_dict()["counts"]
    return result


def main(argv: list[str]) -> int:
    return stage_main(argv, DPOConfig, __doc__, run_dpo,
                      ("step", "loss", "rewards/margins", "rewards/accuracies", "before", "val_rewards_margins",
                       "val_rewards_accuracies", "val_logp_margin", "val_pref_accuracy", "skipped"))
