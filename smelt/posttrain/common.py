"""What every post-training stage shares: config loading (TOML + `--section.key value`), `--help`, model and
tokenizer set-up from `train.init_from`, LoRA wiring, and the run folder's extra files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from smelt.config import ConfigError, check, describe, doc
from smelt.model import build_model
from smelt.posttrain.data import BadRows
from smelt.posttrain.lora import LoraConfig, apply_lora, frozen_bytes, save_adapter
from smelt.train.config import load_config_with_model
from smelt.train.loop import resolve_device

T = TypeVar("T")


@dataclass
class StageData:
    train: str = doc("", "training file(s), comma-separated (.jsonl, .jsonl.gz, .json list)")
    val: str = doc("", "held-out file(s); empty = hold out val_fraction of the training records")
    val_fraction: float = doc(0.05, "fraction of training records held out for validation when data.val is empty")
    max_examples: int = doc(0, "read at most this many training records (0 = all)")
    tokenizer: str = doc("", "tokenizer folder; default: the one saved with the train.init_from run")
    batch_size: int = doc(8, "rows (SFT) or pairs / prompts (preference, RL) per micro-batch")
    seq_len: int = doc(256, "tokens per row; longer examples are skipped and reported")


def validate_common(cfg: Any) -> None:
    """Checks shared by every stage config (model, data, optim, train, optional lora)."""
    cfg.model.validate()
    d, o, t = cfg.data, cfg.optim, cfg.train
    check(d.batch_size > 0, "data.batch_size", f"must be > 0, got {d.batch_size}")
    check(d.seq_len > 1, "data.seq_len", f"must be > 1, got {d.seq_len}")
    check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    check(d.max_examples >= 0, "data.max_examples", "must be >= 0")
    check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    check(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    check(t.steps > 0, "train.steps", f"must be > 0, got {t.steps}")
    check(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
    check(t.log_every > 0, "train.log_every", "must be > 0")
    if hasattr(cfg, "lora"):
        cfg.lora.validate()


def load_stage_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                      base: T | None = None, validate: bool = True) -> T:
    """Like `load_run_config`, with the `--init-from` shorthand understood."""
    return load_config_with_model(cls, path, normalise_aliases(overrides or []), base, validate)


def normalise_aliases(argv: list[str]) -> list[str]:
    """`--init-from X` is shorthand for `--train.init_from X`."""
    return ["--train.init_from" if a == "--init-from" else
            ("--train.init_from=" + a.split("=", 1)[1] if a.startswith("--init-from=") else a) for a in argv]


def stage_main(argv: list[str], cls: type, doc_text: str, run: Callable[[Any], dict[str, Any]],
               summary_keys: tuple[str, ...]) -> int:
    """The shared CLI shape: `smelt <verb> [config.toml] [--section.key value ...]`, `--help` lists fields."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc_text.strip())
        print("\nSettings come from a TOML file and/or `--section.key value` overrides "
              "(`--init-from RUN` = `--train.init_from RUN`). Fields:\n")
        print("\n".join(describe(cls)))
        return 0
    path, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("--") else (None, argv)
    cfg = load_stage_config(cls, path, rest)
    result = run(cfg)
    print(json.dumps({k: result[k] for k in summary_keys if k in result}), file=sys.stderr)
    return 0


def load_tokenizer(cfg: Any, from_ckpt=None):
    """data.tokenizer wins; else the tokenizer saved with the init_from run."""
    if cfg.data.tokenizer:
        from smelt.tokenizer import Tokenizer
        return Tokenizer.load(cfg.data.tokenizer)
    if from_ckpt is not None:
        return from_ckpt
    raise ConfigError("data.tokenizer: no tokenizer found; set data.tokenizer or train.init_from a run that saved "
                      "one (its run folder has tokenizer/)")


def setup_model(cfg: Any, tok=None, model: torch.nn.Module | None = None):
    """(model on the run's device, tokenizer). From `train.init_from` when set, else a fresh random init (tests,
    ablations). cfg.model is updated to the loaded model's shape."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The objectives reach model.heads / model.logits, which a DDP wrapper hides (and whose gradients it
        # would not sync): refuse rather than train each rank separately into the same folder.
        raise ValueError("post-training stages run as one process; launch without torchrun (multi-GPU "
                         "post-training is not supported yet)")
    device = resolve_device(cfg.train.device)
    loaded_tok = None
    if model is None:
        if cfg.train.init_from:
            from smelt.train.checkpoint import load_pretrained
            model, loaded_tok = load_pretrained(cfg.train.init_from, device=device)
        else:
            print("warning: train.init_from is empty; post-training starts from random weights", file=sys.stderr)
            if tok is None:
                tok = load_tokenizer(cfg)
            cfg.model = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
            model = build_model(cfg.model, device=device, seed=cfg.train.seed)
    model.to(device)
    tok = tok if tok is not None else load_tokenizer(cfg, loaded_tok)
    cfg.model = model.cfg
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens but the model only {model.cfg.vocab_size}: "
                         "data.tokenizer does not belong to this model")
    for p in model.parameters():
        p.requires_grad_(True)
    return model.train(), tok


def base_reference(cfg: Any, model: torch.nn.Module) -> str:
    """A path the LoRA base can be rebuilt from: the init_from run, or (random init) a copy saved in the run."""
    from smelt.train.checkpoint import resolve_checkpoint, save_model_files
    if cfg.train.init_from:
        return str(resolve_checkpoint(cfg.train.init_from).resolve())
    dest = Path(cfg.train.out_dir) / "base"
    save_model_files(dest, model)
    return str(dest.resolve())


def maybe_lora(cfg: Any, model: torch.nn.Module, keep_trainable: tuple[str, ...] = ()):
    """Wrap with LoRA when lora.rank > 0. Returns (save_extra hook or None, trainable-only checkpoints?)."""
    lcfg: LoraConfig = cfg.lora
    if lcfg.rank == 0:
        return None, False
    base = base_reference(cfg, model)
    before = frozen_bytes(model)
    wrapped = apply_lora(model, lcfg)
    if lcfg.quantize_base != "none":
        print(f"frozen weights and buffers: {before / 2**20:.2f} MB -> {frozen_bytes(model) / 2**20:.2f} MB with "
              f"{lcfg.quantize_base} base projections", file=sys.stderr)
    for name, p in model.named_parameters():
        if name.startswith(keep_trainable):
            p.requires_grad_(True)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    print(f"LoRA rank {lcfg.rank} on {len(wrapped)} projections: {n_train:,} trainable of {n_all:,} parameters "
          f"({100 * n_train / n_all:.2f}%)", file=sys.stderr)
    return (lambda folder: save_adapter(folder, model, lcfg, base)), True


def save_run_files(out_dir: str | Path, tok, bad: BadRows, extra: dict[str, Any] | None = None) -> None:
    """Tokenizer copy (so later stages find it from the run folder) and the skipped-records report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer")
    (out / "skipped.json").write_text(json.dumps({**bad.as_dict(), **(extra or {})}, indent=2) + "\n")
    if bad.total:
        print(bad.summary(), file=sys.stderr)


def amp_context(cfg: Any, device: torch.device):
    from smelt.train.loop import autocast_dtype
    dt = autocast_dtype(cfg.train.precision, device)
    return torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None)


def copy_tree(src: Path, dst: Path) -> None:
    if Path(src).resolve() != Path(dst).resolve():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def load_pair_fields(cfg: Any, tok, bad: BadRows) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Preference pairs from data.train (and data.val or a held-out fraction) as padded tensors."""
    from smelt.posttrain.data import encode_pairs, holdout, read_pairs
    pairs = read_pairs(cfg.data.train, bad, cfg.data.max_examples)
    if cfg.data.val:
        val_pairs = read_pairs(cfg.data.val, bad)
    else:
        pairs, val_pairs = holdout(pairs, cfg.data.val_fraction, cfg.train.seed)
    train = encode_pairs(tok, pairs, cfg.data.seq_len, bad)
    val = encode_pairs(tok, val_pairs, cfg.data.seq_len, bad) if val_pairs else None
    if val is not None and val["chosen"].shape[0] == 0:
        val = None
    print(f"{train['chosen'].shape[0]} training pairs, {0 if val is None else val['chosen'].shape[0]} held out",
          file=sys.stderr)
    return train, val


def sequence_logps(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of the masked (completion) tokens of each row, and how many there are.
    ids/mask: (B, T) with mask[t] = 1 where token t is a completion token (predicted from position t-1)."""
    logits = model(ids[:, :-1]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    m = mask[:, 1:].to(logp.dtype)
    return (logp * m).sum(-1), m.sum(-1)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off for good (as TRL's disable_dropout): DPO and RL compare the training forward with log-probs
    computed without dropout (the reference, the rollout), so dropout noise would bias the loss and make the PPO
    ratio differ from 1 before any update. The saved model_config records dropout = 0."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        cfg = getattr(m, "cfg", None)
        if dataclasses.is_dataclass(cfg) and getattr(cfg, "dropout", 0.0):
            m.cfg = dataclasses.replace(cfg, dropout=0.0)
