"""The one training loop. Pre-training, SFT, reward modelling and DPO differ only in the `Objective` (how a batch
becomes a summed loss and how many target units it holds) and the `BatchSource`; steps, accumulation, clipping,
precision, NaN handling, logging, evaluation and checkpoints are all here.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from smelt.config import to_toml
from smelt.distributed import DistInfo, all_reduce_sum, parallelize
from smelt.train.checkpoint import latest_checkpoint, load_checkpoint_state, save_checkpoint
from smelt.train.config import RunConfig
from smelt.train.metrics import MetricsLog, flops_per_token, format_line, peak_flops
from smelt.train.optim import build_optimizer, lr_at


class TrainingDiverged(RuntimeError):
    """Raised after `train.max_bad_steps` consecutive non-finite losses."""


class Objective(Protocol):
    def count(self, batch: Any) -> int:
        """Target units in `batch` (tokens for language modelling, pairs for preferences): the loss normaliser."""

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed (not averaged) loss over the batch's target units, plus extra metrics to log (summed too)."""


class BatchSource(Protocol):
    def next_batch(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Trainer:
    def __init__(self, cfg: RunConfig, model: torch.nn.Module, objective: Objective, data: BatchSource,
                 evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
                 save_extra: Callable[[Path], None] | None = None, dist_info: DistInfo | None = None,
                 tokens_per_batch: Callable[[Any], int] | None = None, stage: str = "pretrain",
                 save_trainable_only: bool = False):
        self.cfg, self.objective, self.data, self.evaluate = cfg, objective, data, evaluate
        self.save_extra, self.stage = save_extra, stage
        # Frozen weights (LoRA's base) are not repeated in every checkpoint; resume rebuilds them from init_from.
        self.save_trainable_only = save_trainable_only
        self.dist = dist_info or DistInfo()
        self.device = resolve_device(cfg.train.device) if self.dist.world_size == 1 else self.dist.device
        self.run_dir = Path(cfg.train.out_dir)
        self.model = model  # the plain module: checkpoints and evaluation see this one
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.tokens_per_batch = tokens_per_batch or objective.count
        self.flops_per_token = flops_per_token(model.cfg, cfg.data.seq_len) if hasattr(model, "cfg") else 0.0

    # ------------------------------------------------------------------------------------------------ set-up
    def _write_run_files(self, resumed_from: str | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_text(to_toml(self.cfg))
        info = {
            "stage": self.stage, "seed": self.cfg.train.seed, "world_size": self.dist.world_size,
            "device": str(self.device), "torch": torch.__version__, "python": platform.python_version(),
            # Post-training stages read files rather than shards, so these data fields are optional.
            "data_order": {"loader": type(self.data).__name__, "seed": self.cfg.train.seed,
                           "shards": getattr(self.cfg.data, "shards", None),
                           "packing": getattr(self.cfg.data, "packing", None)},
            "resumed_from": resumed_from, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2))

    def _resume(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        mode = self.cfg.train.resume
        if mode == "never":
            return None
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            if mode == "always":
                raise FileNotFoundError(f"train.resume = always but {self.run_dir / 'checkpoints'} has no "
                                        "complete checkpoint")
            return None
        state = load_checkpoint_state(ckpt, self.model, optimizer)
        self.data.load_state_dict(state["loader"])
        if self.dist.is_main:
            print(f"resuming from {ckpt} (step {state['step']})", file=sys.stderr)
        state["path"] = str(ckpt)
        return state

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed + self.dist.rank)
        optimizer = build_optimizer(self.model, cfg.optim, self.device.type)
        resumed = self._resume(optimizer)
        step = resumed["step"] if resumed else 0
        counters = resumed.get("counters", {}) if resumed else {}
        skipped_total = counters.get("skipped_total", 0)
        bad_in_row = counters.get("bad_in_row", 0)
        best_val = counters.get("best_val", math.inf)
        evals_since_best = counters.get("evals_since_best", 0)
        if self.dist.is_main:
            self._write_run_files(resumed["path"] if resumed else None)
        log = MetricsLog(self.run_dir, t.tensorboard, resume_step=step if resumed else None) \
            if self.dist.is_main else None
        fwd_model = parallelize(self.model, t, self.dist, self.device)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        peak = peak_flops(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(total=t.steps, initial=step, desc=self.stage, dynamic_ncols=True,
                   disable=not (t.progress and sys.stderr.isatty() and self.dist.is_main))
        last: dict[str, Any] = {}
        stop_reason = "completed"
        window_tokens, window_start = 0, time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        while step < t.steps:
            lr = lr_at(step, t.steps, cfg.optim)
            for g in optimizer.param_groups:
                g["lr"] = lr
            fwd_model.train()
            batches = [to_device(self.data.next_batch(), self.device) for _ in range(t.grad_accum)]
            n_units = all_reduce_sum(float(sum(self.objective.count(b) for b in batches)), self.dist)
            window_tokens += sum(self.tokens_per_batch(b) for b in batches) * self.dist.world_size
            loss_sum = torch.zeros((), device=self.device)
            extra: dict[str, float] = {}
            for i, batch in enumerate(batches):
                # Only the last micro-batch syncs gradients across ranks (DDP); the others accumulate locally.
                sync = contextlib.nullcontext() if i == len(batches) - 1 or not hasattr(fwd_model, "no_sync") \
                    else fwd_model.no_sync()
                with sync, torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                          enabled=self.amp_dtype is not None):
                    part, metrics = self.objective.loss(fwd_model, batch)
                    # Normalise by the target units of the whole step (all micro-batches, all ranks), not per
                    # micro-batch, so accumulation gives exactly the gradient of one large batch. DDP averages
                    # gradients over ranks, hence the world_size factor.
                    loss = part * (self.dist.world_size / max(n_units, 1.0))
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
                for k, v in metrics.items():
                    extra[k] = extra.get(k, 0.0) + float(v)
            loss_value = all_reduce_sum(float(loss_sum), self.dist) / self.dist.world_size
            grad_norm = float("nan")
            skipped = not math.isfinite(loss_value)
            if not skipped:
                scaler.unscale_(optimizer)
                max_norm = cfg.optim.grad_clip or float("inf")  # inf: measure the norm, clip nothing
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                skipped = not math.isfinite(grad_norm) and scaler.get_scale() == 1.0
            if skipped:
                skipped_total += 1
                bad_in_row += 1
                if self.dist.is_main:
                    msg = f"step {step + 1}: non-finite loss/grad ({loss_value}); step skipped " \
                          f"({bad_in_row} in a row, {skipped_total} total)"
                    tqdm.write(msg, file=sys.stderr)
                if bad_in_row >= t.max_bad_steps:
                    optimizer.zero_grad(set_to_none=True)
                    raise TrainingDiverged(f"{bad_in_row} consecutive non-finite losses at step {step + 1} "
                                           f"(train.max_bad_steps={t.max_bad_steps}); lower optim.lr or check "
                                           "the data")
            else:
                scaler.step(optimizer)
                bad_in_row = 0
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)

            is_last = step == t.steps
            metrics_out: dict[str, Any] = {}
            if step % t.log_every == 0 or is_last or skipped:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - window_start
                tps = window_tokens / dt if dt > 0 else 0.0
                metrics_out = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                               "tokens_per_s": tps,
                               "mfu": (self.flops_per_token * tps / (peak * self.dist.world_size))
                               if peak else "n/a",
                               "peak_mem_mb": (torch.cuda.max_memory_allocated(self.device) / 2**20)
                               if self.device.type == "cuda" else _rss_mb(),
                               "skipped_total": skipped_total}
                metrics_out.update({k: all_reduce_sum(extra[k], self.dist) / max(n_units, 1.0)
                                    for k in sorted(extra)})
                if skipped:
                    metrics_out["skipped"] = True
                window_tokens, window_start = 0, time.perf_counter()
            if self.evaluate is not None and ((t.eval_every and step % t.eval_every == 0) or is_last):
                val = self.evaluate(self.model)
                metrics_out = {"step": step, **metrics_out, **val}
                if "val_loss" in val:
                    if val["val_loss"] < best_val - 1e-6:
                        best_val, evals_since_best = val["val_loss"], 0
                    else:
                        evals_since_best += 1
                window_start = time.perf_counter()  # evaluation time is not training throughput
            if metrics_out:
                last.update(metrics_out)
                if log is not None:
                    log.log(metrics_out)
                    tqdm.write(format_line(metrics_out))
            early_stop = bool(t.early_stop_patience) and evals_since_best >= t.early_stop_patience
            if (t.ckpt_every and step % t.ckpt_every == 0) or is_last or early_stop:
                self._checkpoint(step, optimizer, {"skipped_total": skipped_total, "bad_in_row": bad_in_row,
                                                   "best_val": best_val, "evals_since_best": evals_since_best})
            if early_stop:
                stop_reason = f"early stop: no val_loss improvement in {evals_since_best} evaluations"
                if self.dist.is_main:
                    tqdm.write(stop_reason, file=sys.stderr)
                break
        bar.close()
        if log is not None:
            log.close()
        return {"step": step, "stop_reason": stop_reason, "best_val_loss": best_val, "skipped_total": skipped_total,
                **last}

    def _checkpoint(self, step: int, optimizer: torch.optim.Optimizer, counters: dict[str, Any]) -> None:
        loader_state = self.data.state_dict()
        if self.dist.is_main:
            save_checkpoint(self.run_dir, step, self.model, optimizer,
                            {"loader": loader_state, "counters": counters, "stage": self.stage},
                            keep_last=self.cfg.train.keep_last, write_extra=self.save_extra,
                            trainable_only=self.save_trainable_only)
        if self.dist.world_size > 1:
            dist.barrier()


def _rss_mb() -> float:
    """Peak resident memory of this process in MB (CPU runs have no allocator statistics)."""
    try:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20
    except ImportError:  # pragma: no cover
        return float("nan")
