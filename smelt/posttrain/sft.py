"""`smelt sft [config.toml] [--section.key value ...]`: supervised fine-tuning (full or LoRA) on chat data.

Conversations are rendered with the tokenizer's chat template; the loss covers assistant tokens only (their
content and closing `<|end|>`), normalised by the number of such tokens in the whole optimizer step. Examples are
packed whole into rows (never cut; over-long ones are skipped and reported) and the rest of a row is padding.
Logs loss, lr, grad_norm, tokens/s and val_loss (assistant-token loss on held-out conversations); the run folder
gets config.toml, metrics.jsonl, checkpoints/ (adapter.safetensors for LoRA), tokenizer/ and skipped.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from smelt.config import check, doc
from smelt.model import ModelConfig
from smelt.objectives import IGNORE, CausalLM
from smelt.posttrain.common import (StageData, amp_context, maybe_lora, save_run_files, setup_model, stage_main,
                                    validate_common)
from smelt.posttrain.data import (BadRows, RowSource, encode_conversations, holdout, iter_batches, lm_batch,
                                  pack_rows, read_conversations)
from smelt.posttrain.lora import LoraConfig
from smelt.train.config import OptimConfig, TrainConfig
from smelt.train.loop import Trainer


@dataclass
class SFTData(StageData):
    packing: bool = doc(True, "pack several whole conversations into one row (best fit); false = one per row")
    doc_mask: bool = doc(True, "with packing, attention stays inside each conversation (an explicit mask: the "
                               "causal flash kernel is not used)")


@dataclass
class SFTConfig:
    model: ModelConfig = doc(ModelConfig(preset="debug"), "model shape (ignored with train.init_from)")
    data: SFTData = doc(SFTData(), "conversations / instructions to imitate")
    optim: OptimConfig = doc(OptimConfig(lr=1e-4, warmup_steps=10, weight_decay=0.0, schedule="linear",
                                         min_lr_ratio=0.0), "optimizer and LR schedule")
    train: TrainConfig = doc(TrainConfig(out_dir="runs/sft", steps=200, eval_every=50, ckpt_every=0),
                             "loop, precision, logging, checkpoints")
    lora: LoraConfig = doc(LoraConfig(), "LoRA adapters (rank 0 = full fine-tuning)")

    def validate(self) -> None:
        validate_common(self)
        check(bool(self.data.train), "data.train", "set the conversation file(s) to train on")


def lm_fields(tok, convs, cfg: SFTConfig, bad: BadRows) -> dict[str, torch.Tensor]:
    examples = encode_conversations(tok, convs, cfg.data.seq_len + 1, bad)
    ids, mask, seg = pack_rows(examples, cfg.data.seq_len + 1, tok.pad_id, cfg.data.packing)
    fields = {"ids": ids, "mask": mask}
    if cfg.data.packing and cfg.data.doc_mask:
        fields["seg"] = seg
    return fields


def sft_batch(fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return lm_batch(fields["ids"], fields["mask"], fields.get("seg"))


class PackedLM(CausalLM):
    """CausalLM whose forward keeps attention inside each packed conversation when the batch has segments."""

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if "segments" not in batch:
            return super().loss(model, batch)
        logits = model(batch["inputs"], segments=batch["segments"])
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch["targets"].reshape(-1),
                               ignore_index=IGNORE, reduction="sum"), {}


def make_lm_evaluator(fields: dict[str, torch.Tensor], cfg: Any, device: torch.device):
    """Mean loss per target token over every held-out row (same rows every time)."""
    objective = PackedLM()

    @torch.no_grad()
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        was = model.training
        model.eval()
        total, count = 0.0, 0
        for chunk in iter_batches(fields, cfg.data.batch_size):
            batch = {k: v.to(device) for k, v in sft_batch(chunk).items()}
            with amp_context(cfg, device):
                loss, _ = objective.loss(model, batch)
            total += float(loss)
            count += objective.count(batch)
        model.train(was)
        return {"val_loss": total / max(count, 1)}

    return evaluate


def run_sft(cfg: SFTConfig, model: torch.nn.Module | None = None, tokenizer=None) -> dict[str, Any]:
    """Python API: fine-tune per `cfg`; returns the final metrics plus `val_loss_before` and the skip report."""
    model, tok = setup_model(cfg, tokenizer, model)
    device = next(model.parameters()).device
    bad = BadRows()
    convs = read_conversations(cfg.data.train, bad, cfg.data.max_examples)
    if cfg.data.val:
        val_convs = read_conversations(cfg.data.val, bad)
    else:
        convs, val_convs = holdout(convs, cfg.data.val_fraction, cfg.train.seed)
    train = lm_fields(tok, convs, cfg, bad)
    val = lm_fields(tok, val_convs, cfg, bad) if val_convs else None
    save_extra, trainable_only = maybe_lora(cfg, model)
    save_run_files(cfg.train.out_dir, tok, bad, {"train_rows": int(train["ids"].shape[0]),
                                                 "train_conversations": len(convs)})
    print(f"SFT: {len(convs)} conversations packed into {train['ids'].shape[0]} rows of {cfg.data.seq_len + 1} "
          f"tokens ({float(train['mask'].float().mean()):.1%} are loss targets); {len(val_convs)} held out",
          file=sys.stderr)
    evaluate = make_lm_evaluator(val, cfg, device) if val is not None else None
    before = evaluate(model)["val_loss"] if evaluate else None
    source = RowSource(train, cfg.data.batch_size, cfg.train.seed, collate=sft_batch)
    trainer = Trainer(cfg, model, PackedLM(), source, evaluate=evaluate, save_extra=save_extra, stage="sft",
                      tokens_per_batch=lambda b: int(b["inputs"].numel()), save_trainable_only=trainable_only)
    result = trainer.fit()
    result["val_loss_before"] = before
    result["skipped"] = bad.as_dict()["counts"]
    return result


def main(argv: list[str]) -> int:
    return stage_main(argv, SFTConfig, __doc__, run_sft, ("step", "loss", "val_loss_before", "val_loss", "skipped"))
