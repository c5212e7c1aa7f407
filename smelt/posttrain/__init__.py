"""Post-training: SFT (full or LoRA), reward models, DPO and RL (PPO, GRPO), all through the one training loop.

Python entry points (each takes its stage config and returns the final metrics):
`run_sft(SFTConfig)`, `run_reward(RewardConfig)`, `run_dpo(DPOConfig)`, `run_rl(RLConfig)`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy so `import smelt.posttrain` stays cheap and a stage's imports load only when it is used.
    table = {"run_sft": ("sft", "run_sft"), "SFTConfig": ("sft", "SFTConfig"),
             "run_reward": ("reward", "run_reward"), "RewardConfig": ("reward", "RewardConfig"),
             "run_dpo": ("dpo", "run_dpo"), "DPOConfig": ("dpo", "DPOConfig"),
             "run_rl": ("rl", "run_rl"), "RLConfig": ("rl", "RLConfig")}
    if name not in table:
        raise AttributeError(name)
    import importlib
    mod, attr = table[name]
    return getattr(importlib.import_module(f"smelt.posttrain.{mod}"), attr)
