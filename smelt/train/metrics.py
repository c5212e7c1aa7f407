"""Honest numbers: FLOPs per token, MFU against the device's dense bf16 peak, and the metrics log."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from smelt.model.config import ModelConfig

# Dense (no sparsity) bf16 tensor-core peak, FLOP/s, from the vendors' datasheets.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of `device`, or None when unknown (CPU, unlisted GPUs): MFU is then reported as n/a."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name or key.replace(" ", "") in name.replace(" ", ""):
            return PEAK_BF16_FLOPS[key]
    return None


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6·N for the matmuls (forward + backward) plus the attention scores,
    12·layers·d_model·seq_len (the PaLM appendix B accounting; nanoGPT's estimate_mfu uses the same)."""
    d, h = cfg.d_model, cfg.hidden
    kv = cfg.kv_heads * cfg.head_dim
    per_layer = d * d * 2 + d * kv * 2 + d * h * (3 if cfg.mlp == "swiglu" else 2)
    n_matmul = cfg.n_layers * per_layer + cfg.vocab_size * d  # the output head is a matmul too
    return 6 * n_matmul + 12 * cfg.n_layers * d * seq_len


_STANDARD = {"step", "loss", "val_loss", "val_bpb", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_mb",
             "skipped_total", "skipped"}


def format_line(m: dict[str, Any]) -> str:
    parts = [f"step {m['step']}"]
    for key, fmt in [("loss", "{:.4f}"), ("val_loss", "{:.4f}"), ("val_bpb", "{:.4f}"), ("lr", "{:.2e}"),
                     ("grad_norm", "{:.3f}"), ("tokens_per_s", "{:,.0f}"), ("mfu", "{:.1%}"),
                     ("peak_mem_mb", "{:,.0f}MB")]:
        if key in m:
            v = m[key]
            parts.append(f"{key} " + (fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else str(v)))
    # Stage-specific numbers (DPO rewards, RL mean reward, ...) follow the standard ones.
    for key, v in m.items():
        if key not in _STANDARD and isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{key} {v:.4g}")
    if m.get("skipped"):
        parts.append("SKIPPED (non-finite loss)")
    return " | ".join(parts)


class MetricsLog:
    """Appends one JSON object per logged step to metrics.jsonl; optionally mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again, identically.
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("train.tensorboard = true needs the tensorboard extra: "
                                 "pip install 'smelt[tensorboard]'") from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, metrics: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, metrics["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
