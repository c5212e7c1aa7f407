"""LoRA: low-rank adapters on chosen linear projections (Hu et al. 2021), trained while the base stays frozen.

`LoRALinear` keeps the wrapped layer's weight under the same name (`...attn.q.weight`), so a LoRA-wrapped model's
state dict is the base state dict plus `lora_a` / `lora_b` tensors; merging folds `scale · B @ A` into the weight
and puts a plain `nn.Linear` back. A LoRA run's checkpoints hold only the adapters (and any trainable head):
`adapter.safetensors` + `adapter_config.json`, which names the base model it was trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Literal
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from smelt.config import check, doc

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Projection names in smelt.model.transformer: attention q/k/v/o, MLP gate/up/down.
KNOWN_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class LoraConfig:
    rank: int = doc(0, "LoRA rank; 0 = full fine-tuning (every weight trains)")
    alpha: float = doc(16.0, "scale numerator: the adapter output is multiplied by alpha / rank")
    dropout: float = doc(0.0, "dropout on the adapter's input during training")
    targets: list[str] = doc(["q", "k", "v", "o"], "projections that get adapters (q, k, v, o, gate, up, down)")
    quantize_base: Literal["none", "int8"] = doc("none", "store the frozen weights of the adapted projections as "
                                                 "int8 with a per-row scale (QLoRA-style memory saving)")

    def validate(self) -> None:
        check(self.rank >= 0, "lora.rank", f"must be >= 0, got {self.rank}")
        check(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")
        bad = [t for t in self.targets if t not in KNOWN_TARGETS]
        check(not bad, "lora.targets", f"unknown projections {bad}; choose from {list(KNOWN_TARGETS)}")
        check(self.rank == 0 or bool(self.targets), "lora.targets", "must name at least one projection")


class LoRALinear(nn.Module):
    """y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ with W frozen. B starts at zero, so training starts from the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, quantize: str = "none"):
        super().__init__()
        assert base.bias is None, "smelt linears have no bias"
        self.in_features, self.out_features = base.in_features, base.out_features
        dev, dt = base.weight.device, base.weight.dtype
        self.quantized = quantize == "int8"
        if self.quantized:
            # Symmetric per-output-row int8: 1 byte per weight instead of 4 (fp32) or 2 (bf16); dequantised on the
            # fly in forward, so only one projection's full-precision copy exists at a time.
            w = base.weight.detach().float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            self.register_buffer("weight_q", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
            self.register_buffer("weight_scale", scale.to(dt))
            self.weight_dtype = dt
        else:
            self.weight = base.weight
            self.weight.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear / PEFT initialise A
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)

    def base_weight(self) -> torch.Tensor:
        if self.quantized:
            return self.weight_q.to(self.weight_dtype) * self.weight_scale[:, None]
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.base_weight().to(x.dtype) if self.quantized else self.weight
        return F.linear(x, w) + F.linear(F.linear(self.drop(x), self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        base = self.base_weight().detach()
        lin = nn.Linear(self.in_features, self.out_features, bias=False, device=base.device, dtype=base.dtype)
        with torch.no_grad():
            # Sum in fp32 so a bf16 base does not lose the (small) adapter update to rounding twice.
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            lin.weight.copy_((base.float() + delta).to(base.dtype))
        return lin


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Freeze every parameter of `model`, wrap the target projections with adapters; returns the wrapped names."""
    cfg.validate()
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, cfg.rank, cfg.alpha, cfg.dropout, cfg.quantize_base))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"lora.targets: none of {cfg.targets} matched a linear layer of the model")
    return wrapped


def frozen_bytes(model: nn.Module) -> int:
    """Bytes held by frozen parameters and buffers (what quantising the base shrinks)."""
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    return frozen + sum(b.numel() * b.element_size() for b in model.buffers())


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear with a plain Linear holding W + scale·BA (in place); returns how many merged."""
    n = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
                n += 1
    return n


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor (adapters, plus any trainable head): exactly what a LoRA checkpoint must keep."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(folder: Path, model: nn.Module, cfg: LoraConfig, base: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(folder / ADAPTER_FILE))
    meta = {"base": str(base), "lora": asdict(cfg)}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def load_adapter(model: nn.Module, folder: Path) -> None:
    """Load adapter tensors into a model already wrapped with `apply_lora` (same config)."""
    weights = load_file(str(Path(folder) / ADAPTER_FILE), device=str(next(model.parameters()).device))
    # A trainable head (reward, value) may sit beside the adapters; its stage loads it (see HEADS_PREFIX).
    weights = {k: v for k, v in weights.items() if not k.startswith("heads.") or hasattr(model, "heads")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    want = {n for n, _ in model.named_parameters() if ".lora_" in n}
    if unexpected or want & set(missing):
        raise ValueError(f"{folder / ADAPTER_FILE}: adapters do not match the model (missing "
                         f"{sorted(want & set(missing))[:5]}, unexpected {unexpected[:5]})")


def read_adapter_config(folder: Path) -> tuple[str, LoraConfig]:
    meta = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    return meta["base"], LoraConfig(**meta["lora"])


def load_lora_checkpoint(ckpt: Path, device: str | torch.device = "cpu", merge: bool = True):
    """(model, tokenizer) for a LoRA checkpoint: its base model with the adapters applied (and merged)."""
    from smelt.train.checkpoint import find_tokenizer_dir, load_pretrained

    ckpt = Path(ckpt)
    base, cfg = read_adapter_config(ckpt)
    if not Path(base).exists():
        raise FileNotFoundError(f"{ckpt / ADAPTER_CONFIG}: base model {base} no longer exists")
    model, tok = load_pretrained(base, device=device)
    apply_lora(model, cfg)
    load_adapter(model, ckpt)
    if merge:
        merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(True)
    tok_dir = find_tokenizer_dir(ckpt)
    if tok_dir is not None:
        from smelt.tokenizer import Tokenizer
        tok = Tokenizer.load(tok_dir)
    return model.eval(), tok
