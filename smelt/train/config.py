"""Run config: [model], [data], [optim], [train] sections, shared by pre-training and every post-training stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from smelt.config import ConfigError, check, doc, from_dict, load_toml, parse_overrides
from smelt.model.config import ModelConfig, resolve_preset

T = TypeVar("T")


@dataclass
class DataConfig:
    shards: str = doc("", "token shard folder written by `smelt tokenize` (train_*.bin, val_*.bin, meta.json)")
    tokenizer: str = doc("", "tokenizer folder; default: the one recorded in the shards' meta.json")
    batch_size: int = doc(8, "sequences per micro-batch (per process)")
    seq_len: int = doc(256, "tokens per sequence")
    packing: Literal["sequential", "bestfit"] = doc("sequential", "how documents fill rows: a token stream cut "
                                                     "into windows, or BOS-aligned best-fit packing")
    synthetic: bool = doc(False, "train on uniformly random tokens (benchmarks; no shards needed)")


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd", "adafactor"] = doc("adamw", "optimizer")
    lr: float = doc(3e-3, "peak learning rate")
    min_lr_ratio: float = doc(0.1, "final LR as a fraction of the peak")
    weight_decay: float = doc(0.1, "decoupled weight decay on matrices (not on norms)")
    beta1: float = doc(0.9, "Adam beta1 / SGD momentum")
    beta2: float = doc(0.95, "Adam beta2")
    eps: float = doc(1e-8, "Adam epsilon")
    schedule: Literal["cosine", "linear", "wsd", "constant"] = doc("cosine", "LR decay after warmup "
                                                                    "(wsd = warmup-stable-decay)")
    warmup_steps: int = doc(20, "linear warmup steps")
    decay_frac: float = doc(0.2, "wsd only: fraction of steps spent in the final linear decay")
    grad_clip: float = doc(1.0, "clip the global grad norm to this (0 = off)")


@dataclass
class TrainConfig:
    out_dir: str = doc("runs/debug", "run folder: config.toml, metrics.jsonl, checkpoints/")
    steps: int = doc(200, "optimizer steps")
    grad_accum: int = doc(1, "micro-batches per optimizer step")
    seed: int = doc(1337, "seed for init, data order and dropout")
    device: str = doc("auto", "auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = doc("auto", "auto = bf16 autocast on CUDA, fp32 elsewhere; "
                                                              "fp16 uses a GradScaler")
    compile: bool = doc(False, "torch.compile each transformer block")
    activation_checkpointing: bool = doc(False, "recompute block activations in backward to save memory")
    log_every: int = doc(10, "log a metrics line every N steps")
    eval_every: int = doc(100, "validation loss / bits-per-byte every N steps (0 = only at the end)")
    eval_batches: int = doc(8, "validation batches per evaluation (0 = one full pass over the val split)")
    ckpt_every: int = doc(100, "checkpoint every N steps (0 = only at the end)")
    keep_last: int = doc(3, "keep the newest K checkpoints (0 = keep all)")
    resume: Literal["auto", "never", "always"] = doc("auto", "auto: continue from the latest complete checkpoint "
                                                     "in out_dir if one exists; always: fail if none")
    early_stop_patience: int = doc(0, "stop after N evaluations without a new best val loss (0 = off)")
    max_bad_steps: int = doc(5, "stop after this many consecutive NaN/inf losses (each one is skipped)")
    tensorboard: bool = doc(False, "also write TensorBoard events to out_dir/tb (needs the tensorboard extra)")
    progress: bool = doc(True, "progress bar with ETA (only when stderr is a terminal)")
    init_from: str = doc("", "start from these weights (a run folder, checkpoint or HF folder) instead of random")


@dataclass
class RunConfig:
    model: ModelConfig = doc(ModelConfig(preset="debug"), "model shape")
    data: DataConfig = doc(DataConfig(), "training data")
    optim: OptimConfig = doc(OptimConfig(), "optimizer and LR schedule")
    train: TrainConfig = doc(TrainConfig(), "loop, precision, logging, checkpoints")

    def validate(self) -> None:
        self.model.validate()
        d, o, t = self.data, self.optim, self.train
        check(d.batch_size > 0, "data.batch_size", f"must be > 0, got {d.batch_size}")
        check(d.seq_len > 0, "data.seq_len", f"must be > 0, got {d.seq_len}")
        check(d.seq_len <= self.model.max_seq_len, "data.seq_len",
              f"{d.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}")
        check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
        check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
        check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        check(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
        check(0 < o.decay_frac <= 1, "optim.decay_frac", f"must be in (0, 1], got {o.decay_frac}")
        check(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {o.grad_clip}")
        check(t.steps > 0, "train.steps", f"must be > 0, got {t.steps}")
        check(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
        for name in ("log_every", "eval_every", "eval_batches", "ckpt_every", "keep_last", "early_stop_patience"):
            check(getattr(t, name) >= 0, f"train.{name}", f"must be >= 0, got {getattr(t, name)}")
        check(t.log_every > 0, "train.log_every", "must be > 0")
        check(t.max_bad_steps > 0, "train.max_bad_steps", "must be > 0")
        check(bool(d.shards) or d.synthetic, "data.shards", "set a shard folder (from `smelt tokenize`) "
                                                            "or data.synthetic = true")


def load_config_with_model(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                           base: T | None = None, validate: bool = True) -> T:
    """For any config with a [model] section: defaults ← TOML ← `--section.key value` overrides; then the model
    preset fills the fields the user did not set explicitly; then validation (errors name the field, and the file
    when it came from one)."""
    raw: dict[str, Any] = {}
    cfg = base if base is not None else cls()
    try:
        if path is not None:
            raw = load_toml(path)
            cfg = from_dict(cls, raw, base=cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    ov = parse_overrides(overrides or [])
    cfg = from_dict(cls, ov, base=cfg)
    cfg.model = resolve_preset(cfg.model, {**raw.get("model", {}), **ov.get("model", {})})
    if validate:
        cfg.validate()
    return cfg
