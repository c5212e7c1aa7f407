"""Parallelism lives here, never in the model: `parallelize()` applies activation checkpointing → torch.compile
per block → data parallelism (DDP) in that order (torchtitan's order; TP/FSDP2 slot in before/after the same way).

Launch with torchrun: `torchrun --nproc_per_node 2 -m smelt pretrain cfg.toml`. Each process reads RANK,
LOCAL_RANK and WORLD_SIZE from the environment; with none set, everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from smelt.train.config import TrainConfig


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo on CPU); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, local, world, torch.device("cuda", local) if use_cuda else torch.device("cpu"))


def all_reduce_sum(value: float, info: DistInfo) -> float:
    if info.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item())


def _checkpoint_forward(block: torch.nn.Module) -> None:
    """Recompute `block`'s activations during backward instead of storing them. Patches forward in place (no
    wrapper module) so parameter names, and therefore checkpoints, are the same with or without it."""
    inner = block.forward

    def forward(*args, **kwargs):
        if not block.training:
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward


def parallelize(model: torch.nn.Module, cfg: TrainConfig, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """Return the module the training loop calls. The original `model` keeps its parameters (shared, not copied),
    so checkpoints and evaluation use it directly."""
    layers = getattr(model, "layers", None)
    if layers is not None and not getattr(model, "_smelt_parallelized", False):
        for block in layers:
            if cfg.activation_checkpointing:
                _checkpoint_forward(block)
            if cfg.compile:
                # Per-block, in place: every block has the same shape so one graph is reused, compile time stays
                # flat with depth, and parameter names do not change.
                block.compile(dynamic=False)
        model._smelt_parallelized = True
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model
