"""Checkpoints: `checkpoints/step-N/` folders written atomically, plus loading models for every later stage.

A checkpoint folder holds
  model.safetensors   model weights (the Transformer's state dict; adapters or heads add their own files)
  model_config.json   the ModelConfig, so the folder loads on its own
  optimizer.pt        optimizer state (absent in weight-only exports)
  state.json          step, loader state, counters, metrics needed to continue exactly
  rng.pt              torch / numpy / python RNG states
It is first written under a temporary name and renamed when complete; rename within one folder is atomic, so a
run killed mid-write leaves the previous checkpoint intact and at most a `.tmp-*` folder that the next save removes.
`checkpoints/latest` names the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from smelt.model import ModelConfig, Transformer, build_model

HEADS_PREFIX = "heads."  # state-dict prefix of stage-specific heads attached to a Transformer
_STEP_RE = re.compile(r"^step-(\d+)$")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_files(folder: Path, model: Transformer, trainable_only: bool = False) -> None:
    """model.safetensors + model_config.json. `trainable_only` keeps just the parameters with requires_grad
    (e.g. LoRA adapters and heads): frozen weights are recoverable from where the run started, so repeating
    them in every checkpoint only costs disk."""
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if trainable_only:
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in keep}
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "model_config.json").write_text(json.dumps(dataclasses.asdict(model.cfg), indent=2))


def rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: Transformer, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], keep_last: int = 0,
                    write_extra: Callable[[Path], None] | None = None, trainable_only: bool = False) -> Path:
    """Write checkpoints/step-N atomically, point `latest` at it, prune to the newest `keep_last`."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".tmp-step-{step}"
    save_model_files(tmp, model, trainable_only=trainable_only)
    if trainable_only:
        state = {**state, "trainable_only": True}
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    if write_extra is not None:  # stage-specific files (adapters, value heads) land inside the atomic rename
        write_extra(tmp)
    if os.environ.get("SMELT_TEST_CRASH_IN_CHECKPOINT") == str(step):
        os.kill(os.getpid(), 9)  # test hook: die with a half-written checkpoint on disk
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(ckpt_root / "latest", final.name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.exists():
        cand = root / pointer.read_text().strip()
        if (cand / "model.safetensors").exists():
            return cand
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint_state(ckpt: Path, model: Transformer, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore weights, optimizer and RNG from `ckpt` in place; return state.json."""
    state = json.loads((ckpt / "state.json").read_text())
    weights = load_file(str(ckpt / "model.safetensors"), device=str(next(model.parameters()).device))
    if state.get("trainable_only"):
        # Only trainable tensors were saved; the frozen rest must already be in place (same init_from).
        missing, unexpected = model.load_state_dict(weights, strict=False)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if unexpected or set(missing) & trainable:
            raise ValueError(f"{ckpt}: checkpoint does not match the model (missing trainable "
                             f"{sorted(set(missing) & trainable)[:5]}, unexpected {unexpected[:5]})")
    else:
        model.load_state_dict(weights, strict=True)
    if optimizer is not None and (ckpt / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    if (ckpt / "rng.pt").exists():
        set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    return state


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (→ its latest checkpoint), a step-N folder, or any folder with model.safetensors."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run folder or checkpoint")
    if (p / "model.safetensors").exists():
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise FileNotFoundError(f"{p}: no model.safetensors and no complete checkpoint under {p / 'checkpoints'}")
    return ckpt


def find_tokenizer_dir(ckpt: Path) -> Path | None:
    for cand in (ckpt / "tokenizer", ckpt.parent.parent / "tokenizer", ckpt.parent / "tokenizer"):
        if (cand / "tokenizer.json").exists():
            return cand
    return None


def load_pretrained(path: str | Path, device: str | torch.device = "cpu"):
    """Load (model, tokenizer or None) from a run folder, a checkpoint folder, or a Llama-architecture HF folder."""
    p = Path(path)
    if (p / "config.json").exists() and not (p / "model_config.json").exists():
        from smelt.interop.hf import import_hf  # lazy: interop is only needed for HF folders
        return import_hf(p, device=device)
    ckpt = resolve_checkpoint(p)
    if (ckpt / "adapter_config.json").exists():
        # A LoRA run saves adapters only: rebuild its base model and fold the adapters in.
        from smelt.posttrain.lora import load_lora_checkpoint  # lazy: only LoRA runs need it
        return load_lora_checkpoint(ckpt, device=device)
    cfg_file = ckpt / "model_config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{ckpt}: missing model_config.json (not a smelt checkpoint?)")
    cfg = ModelConfig(**json.loads(cfg_file.read_text()))
    model = build_model(cfg, device=device, seed=None)  # fills buffers (RoPE tables); weights are overwritten next
    weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
    # Stage heads (a reward model's score, PPO's value head) live under `heads.`; they are not part of the
    # language model, so a reward or RL checkpoint still loads as a plain Transformer.
    weights = {k: v for k, v in weights.items() if not k.startswith(HEADS_PREFIX)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt / 'model.safetensors'}: weights do not match model_config.json "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    tok = None
    tok_dir = find_tokenizer_dir(ckpt)
    if tok_dir is not None:
        from smelt.tokenizer import Tokenizer
        tok = Tokenizer.load(tok_dir)
    return model.eval(), tok


__all__ = ["save_checkpoint", "load_checkpoint_state", "latest_checkpoint", "list_checkpoints",
           "load_pretrained", "resolve_checkpoint", "save_model_files", "build_model"]
