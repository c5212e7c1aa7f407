"""Helpers shared by the post-training tests: a tiny tokenizer, a tiny model and synthetic data files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from smelt.model import ModelConfig, build_model
from smelt.tokenizer import Tokenizer

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]


def count_conv(n: int) -> list[dict]:
    return [{"role": "user", "content": f"count to {n}"},
            {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))}]


def corpus() -> list[str]:
    rnd = random.Random(0)
    texts = [" ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(200)]
    texts += [f"count to {n} " + " ".join(str(i) for i in range(1, n + 1)) for n in range(1, 10)] * 5
    texts += ["Human: Assistant: the answer is " + " ".join(str(d) for d in range(10))] * 5
    return texts


def tiny_tokenizer() -> Tokenizer:
    return Tokenizer.train(corpus(), vocab_size=320, min_frequency=2)


def tiny_model_cfg(vocab: int, **kw) -> ModelConfig:
    base = {"vocab_size": vocab, "n_layers": 2, "d_model": 64, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 128}
    base.update(kw)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg


def tiny_model(tok: Tokenizer, seed: int = 0, **kw):
    return build_model(tiny_model_cfg(tok.vocab_size, **kw), seed=seed)


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run several times faster on one thread than on a contended pool (thread hand-off dominates)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def color_pairs(n: int, seed: int) -> list[dict]:
    """Synthetic preferences a tiny model can learn: replies mentioning "blue" beat the same reply with "red"."""
    rnd = random.Random(seed)
    fill = [w for w in WORDS if w not in ("blue", "red")]
    rows = []
    for _ in range(n):
        words = [rnd.choice(fill) for _ in range(4)]
        pos = rnd.randrange(5)
        c, r = list(words), list(words)
        c.insert(pos, "blue")
        r.insert(pos, "red")
        rows.append({"prompt": f"describe the {rnd.choice(fill)}", "chosen": " ".join(c), "rejected": " ".join(r)})
    return rows
