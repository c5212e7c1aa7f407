"""`smelt pretrain [config.toml] [--section.key value ...]`: train a transformer on token shards."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from smelt.config import describe, load_toml, parse_overrides
from smelt.distributed import DistInfo, all_reduce_sum, init_distributed
from smelt.model import build_model
from smelt.objectives import CausalLM, split_batch, token_nll
from smelt.train.config import RunConfig, load_config_with_model
from smelt.train.loop import Trainer, resolve_device


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    base: RunConfig | None = None, validate: bool = True) -> RunConfig:
    """The pre-training config from defaults ← TOML ← overrides, preset resolved and validated."""
    return load_config_with_model(RunConfig, path, overrides, base, validate)


class SyntheticTokens:
    """Uniformly random (B, T+1) token windows for benchmarks; batch i is a pure function of (seed, i), so the
    state is just the index."""

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int = 0, rank: int = 0):
        self.vocab_size, self.batch_size, self.seq_len = vocab_size, batch_size, seq_len
        self.seed, self.rank, self.index = seed, rank, 0

    def next_batch(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7919 + self.index)
        self.index += 1
        return torch.randint(0, self.vocab_size, (self.batch_size, self.seq_len + 1), generator=g)

    def state_dict(self) -> dict:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = int(state["index"])


def shard_meta(shards: str | Path) -> dict[str, Any]:
    meta = Path(shards) / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(f"{meta}: not found; data.shards must be a folder written by `smelt tokenize`")
    return json.loads(meta.read_text())


def tokenizer_dir_for(cfg: RunConfig) -> Path | None:
    if cfg.data.tokenizer:
        return Path(cfg.data.tokenizer)
    if cfg.data.shards:
        tok = shard_meta(cfg.data.shards).get("tokenizer", {})
        path = tok.get("path") if isinstance(tok, dict) else tok
        return Path(path) if path else None
    return None


def make_val_evaluator(cfg: RunConfig, device: torch.device, dist_info: DistInfo, tok_dir: Path | None):
    """Validation loss and bits per byte on the same windows every time: the first `train.eval_batches`
    batches of the val split, or one full pass over it when eval_batches = 0."""
    from smelt.shards import TokenLoader

    try:
        shard_meta(cfg.data.shards)["splits"]["val"]
    except (KeyError, TypeError):
        return None
    token_bytes = None
    if tok_dir is not None and (tok_dir / "tokenizer.json").exists():
        from smelt.tokenizer import Tokenizer
        token_bytes = torch.as_tensor(Tokenizer.load(tok_dir).token_bytes(), device=device)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        loader = TokenLoader(cfg.data.shards, split="val", batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len,
                             seed=0, rank=dist_info.rank, world_size=dist_info.world_size)
        batches = loader.epoch_batches() if cfg.train.eval_batches == 0 else \
            (loader.next_batch() for _ in range(cfg.train.eval_batches))
        was_training = model.training
        model.eval()
        nats = count = nats_text = n_bytes = 0.0
        amp = device.type == "cuda" and cfg.train.precision in ("auto", "bf16")
        with torch.no_grad():
            for batch in batches:
                inputs, targets = split_batch(batch.to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    nll = token_nll(model, inputs, targets, reduction="none")
                nats += float(nll.sum())
                count += targets.numel()
                if token_bytes is not None:
                    # nanochat's convention: special-token targets (0 bytes) carry no text, so they are left out
                    # of both the nats and the bytes.
                    tb = token_bytes[targets.reshape(-1)]
                    nats_text += float((nll * (tb > 0)).sum())
                    n_bytes += float(tb.sum())
        model.train(was_training)
        nats, count = all_reduce_sum(nats, dist_info), all_reduce_sum(count, dist_info)
        nats_text, n_bytes = all_reduce_sum(nats_text, dist_info), all_reduce_sum(n_bytes, dist_info)
        out = {"val_loss": nats / max(count, 1.0)}
        if n_bytes > 0:
            # bits per byte = nats / (ln 2 · bytes): vocabulary-independent, comparable across tokenizers.
            out["val_bpb"] = nats_text / (math.log(2) * n_bytes)
        return out

    return evaluate


def run_pretrain(cfg: RunConfig, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Python API: train per `cfg` and return the final metrics (also in out_dir/metrics.jsonl)."""
    dist_info = init_distributed(cfg.train.device)
    device = dist_info.device if dist_info.world_size > 1 else resolve_device(cfg.train.device)
    tok_dir = None if cfg.data.synthetic else tokenizer_dir_for(cfg)
    if cfg.data.synthetic:
        data = SyntheticTokens(cfg.model.vocab_size, cfg.data.batch_size, cfg.data.seq_len, cfg.train.seed,
                               dist_info.rank)
        evaluate = None
    else:
        from smelt.shards import TokenLoader
        data = TokenLoader(cfg.data.shards, split="train", batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len,
                           seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                           packing=cfg.data.packing)
        evaluate = make_val_evaluator(cfg, device, dist_info, tok_dir)
    if model is None:
        if cfg.train.init_from:
            from smelt.train.checkpoint import load_pretrained
            model, _ = load_pretrained(cfg.train.init_from, device=device)
            cfg.model = model.cfg
        else:
            model = build_model(cfg.model, device=device, seed=cfg.train.seed)
    model.train()
    if dist_info.is_main and tok_dir is not None and (tok_dir / "tokenizer.json").exists():
        dest = Path(cfg.train.out_dir) / "tokenizer"
        if dest.resolve() != tok_dir.resolve():
            shutil.copytree(tok_dir, dest, dirs_exist_ok=True)
    trainer = Trainer(cfg, model, CausalLM(), data, evaluate=evaluate, dist_info=dist_info,
                      tokens_per_batch=lambda b: split_batch(b)[0].numel(), stage="pretrain")
    return trainer.fit()


def apply_tokenizer_vocab(cfg: RunConfig, explicit_vocab: bool) -> RunConfig:
    """Unless model.vocab_size was set explicitly, take it from the shards' tokenizer."""
    if explicit_vocab or cfg.data.synthetic or not cfg.data.shards:
        return cfg
    vocab = shard_meta(cfg.data.shards).get("vocab_size")
    if vocab is None and (tok := tokenizer_dir_for(cfg)) is not None and (tok / "tokenizer.json").exists():
        from smelt.tokenizer import Tokenizer
        vocab = Tokenizer.load(tok).vocab_size
    if vocab:
        cfg.model.vocab_size = int(vocab)
    return cfg


def split_config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    """`[config.toml] [--key value ...]` → (config path or None, overrides)."""
    if argv and not argv[0].startswith("--"):
        return argv[0], argv[1:]
    return None, argv


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("\nTrain a decoder-only transformer. Put settings in a TOML file with [model], [data], [optim], "
              "[train]\nsections and/or override any field on the command line. Fields:\n")
        print("\n".join(describe(RunConfig)))
        return 0
    config_path, rest = split_config_arg(argv)
    cfg = load_run_config(config_path, rest)
    raw_model = {**(load_toml(config_path).get("model", {}) if config_path else {}),
                 **parse_overrides(rest).get("model", {})}
    cfg = apply_tokenizer_vocab(cfg, "vocab_size" in raw_model)
    cfg.validate()
    result = run_pretrain(cfg)
    summary = {k: result[k] for k in ("step", "loss", "val_loss", "val_bpb", "stop_reason") if k in result}
    print(json.dumps(summary), file=sys.stderr)
    return 0
