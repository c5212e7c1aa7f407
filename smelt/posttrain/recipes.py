"""Ready-made stage configs on the data mirror's public files, for `smelt demo` and quick experiments.

    from smelt.posttrain import run_dpo, run_sft
    from smelt.posttrain.recipes import dpo_recipe, sft_recipe
    sft = run_sft(sft_recipe("runs/demo/pretrain", "runs/demo/sft"))
    dpo = run_dpo(dpo_recipe("runs/demo/sft", "runs/demo/dpo"))

Each returns a validated config; pass `overrides` (["--section.key", "value", ...]) to change any field.
"""

from __future__ import annotations

from smelt.datasets import data_dir
from smelt.posttrain.common import load_stage_config
from smelt.posttrain.dpo import DPOConfig
from smelt.posttrain.sft import SFTConfig

# Short chat and instruction data: ShareGPT-format conversations and self-instruct tasks.
SFT_FILES = ("sft/fastchat_dummy_conversation.json", "sft/self_instruct_seed_tasks.jsonl",
             "sft/self_instruct_user_oriented_instructions.jsonl")


def _sft_data() -> str:
    root = data_dir()
    if root is None or not all((root / f).exists() for f in SFT_FILES):
        raise FileNotFoundError(f"SFT recipe needs {list(SFT_FILES)} under $SMELT_DATA_DIR (the data mirror)")
    return ",".join(str(root / f) for f in SFT_FILES)


def sft_recipe(init_from: str, out_dir: str, steps: int = 150, device: str = "auto",
               overrides: list[str] | None = None) -> SFTConfig:
    """Full fine-tuning on the public chat/instruction files; 5% of conversations held out for val_loss."""
    return load_stage_config(SFTConfig, None, [
        "--train.init_from", init_from, "--data.train", _sft_data(), "--data.val_fraction", "0.05",
        "--data.seq_len", "255", "--data.batch_size", "8", "--optim.lr", "1e-3", "--train.steps", str(steps),
        "--train.eval_every", str(max(1, steps // 3)), "--train.log_every", str(max(1, steps // 10)),
        "--train.out_dir", out_dir, "--train.device", device, *(overrides or [])])


def dpo_recipe(init_from: str, out_dir: str, steps: int = 100, device: str = "auto",
               overrides: list[str] | None = None) -> DPOConfig:
    """DPO on HH-RLHF harmless pairs (10% held out), β = 0.1."""
    return load_stage_config(DPOConfig, None, [
        "--train.init_from", init_from, "--data.train", "hh_rlhf_harmless", "--data.val_fraction", "0.1",
        "--data.seq_len", "255", "--data.batch_size", "4", "--optim.lr", "1e-5", "--dpo.beta", "0.1",
        "--train.steps", str(steps), "--train.eval_every", str(max(1, steps // 2)),
        "--train.log_every", str(max(1, steps // 10)), "--train.out_dir", out_dir, "--train.device", device,
        *(overrides or [])])
