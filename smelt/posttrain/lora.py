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

    def validate(self) -> None:
        check(self.rank >= 0, "lora.rank", f"must be >= 0, got {self.rank}")
        check(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")
        bad = [t for t in self.targets if t not in KNOWN_TARGETS]
        check(not bad, "lora.targets", f"unknown projections {bad}; choose from {list(KNOWN_TARGETS)}")
        check(self.rank == 0 or bool(self.targets), "lora.targets", "must name at least one projection")


class LoRALinear(nn.Module):
    """y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ with W frozen. B starts at zero, so training starts from the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        assert base.bias is None, "smelt linears have no bias"
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear / PEFT initialise A
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + F.linear(F.linear(self.drop(x), self.lora_a), self.lora_b) * self.scale

    def merged(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=False, device=self.weight.device,
                        dtype=self.weight.dtype)
        with torch.no_grad():
            # Sum in fp32 so a bf16 base does not lose the (small) adapter update to rounding twice.
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            lin.weight.copy_((self.weight.float() + delta).to(self.weight.dtype))
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
                setattr(module, child_name, LoRALinear(child, cfg.rank, cfg.alpha, cfg.dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"lora.targets: none of {cfg.targets} matched a linear layer of the model")
    return wrapped


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
