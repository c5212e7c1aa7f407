"""Tiny models and tokenizers for the evaluation tests: built in a second, no data mirror needed."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch

from smelt.model import build_model, preset

_WORDS = ("the cat dog sat ran on a mat log red blue green big small fast slow one two three four five six "
          "seven eight nine ten is was and or but if then yes no question answer because so very").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 20))]
        docs.append(" ".join(words).capitalize() + ". " + " ".join(str(rng.randint(0, 99)) for _ in range(3)))
    return docs


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    from smelt.tokenizer import Tokenizer
    return Tokenizer.train(corpus(), vocab_size=400)


def tiny_model(vocab_size: int, seed: int = 0, max_seq_len: int = 128, init_std: float = 0.2, **kw):
    """A 2-layer model with a large init so its distributions are far from uniform (a stricter check)."""
    shape = dict(vocab_size=vocab_size, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, max_seq_len=max_seq_len,
                 init_std=init_std)
    cfg = preset("debug", **{**shape, **kw})
    return build_model(cfg, seed=seed).eval()


def save_tiny(folder: Path, seed: int = 0, **kw) -> Path:
    """A checkpoint folder (weights + config + tokenizer/) that `smelt eval --model` loads."""
    from smelt.train.checkpoint import save_model_files
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, seed=seed, **kw)
    save_model_files(folder, model)
    tok.save(folder / "tokenizer")
    return folder


def set_threads() -> None:
    torch.set_num_threads(2)
