"""Model-based filters: perplexity band (a small smelt language model, bits per byte), a hashed n-gram linear
quality classifier that users train (DCLM / fastText style), and a word-list toxicity filter.

The perplexity filter is written against `score_fn(texts) -> list[float]` (bits per byte, lower = more
predictable), so any scorer plugs in; `load_scorer(path)` builds one from a smelt checkpoint through
`smelt.train.checkpoint.load_pretrained` (imported lazily: the model stack is only needed when this step runs).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from smelt.config import ConfigError, check, doc
from smelt.data.base import GlobalStep, Step
from smelt.data.document import Document

ScoreFn = Callable[[Sequence[str]], list[float]]


# ------------------------------------------------------------------------------------------ perplexity

def make_score_fn(model: Any, encode: Callable[[str], list[int]] | None = None, max_tokens: int = 512,
                  device: str = "cpu") -> ScoreFn:
    """Bits per byte of each text under `model` (a smelt Transformer). `encode` maps text → token ids; None
    means raw UTF-8 bytes as ids (needs vocab_size ≥ 256), which needs no trained tokenizer.
    Only the first `max_tokens` tokens are scored (bytes are counted over the same span), which bounds cost."""
    import torch
    import torch.nn.functional as F

    enc = encode or (lambda t: list(t.encode("utf-8")))
    limit = min(max_tokens, model.cfg.max_seq_len)

    @torch.no_grad()
    def score(texts: Sequence[str]) -> list[float]:
        out = []
        model.eval()
        for t in texts:
            all_ids = enc(t)
            ids = all_ids[: limit + 1]
            if len(ids) < 2:
                out.append(float("nan"))
                continue
            x = torch.tensor(ids, device=device)[None]
            logits = model(x[:, :-1]).float()
            nll = F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            # bytes covered by the predicted tokens: exact for byte ids, else decoded length of the scored span
            n_bytes = len(ids) - 1 if encode is None else max(
                1, len(t.encode("utf-8")) * (len(ids) - 1) // max(1, len(all_ids) - 1))
            out.append(nll / math.log(2) / n_bytes)
        return out
    return score


def load_scorer(path: str, max_tokens: int = 512, device: str = "cpu") -> ScoreFn:
    """A scorer from a smelt checkpoint folder (model + tokenizer)."""
    from smelt.train.checkpoint import load_pretrained  # lazy: only when the perplexity step runs
    model, tokenizer = load_pretrained(path)
    model.to(device)
    encode = None
    if tokenizer is not None:
        def encode(t: str) -> list[int]:
            r = tokenizer.encode(t)
            return list(getattr(r, "ids", r))  # `tokenizers` returns an Encoding, others a list
    return make_score_fn(model, encode, max_tokens, device)


@dataclass
class PerplexityConfig:
    model_path: str = doc("", "smelt checkpoint folder used to score documents (bits per byte)")
    low_percentile: float = doc(0.0, "drop documents below this percentile of bpb (too predictable: spam, lists)")
    high_percentile: float = doc(95.0, "drop documents above this percentile of bpb (noise, garbled text)")
    max_tokens: int = doc(512, "tokens scored per document (a prefix)")
    device: str = doc("cpu", "torch device for scoring")

    def validate(self) -> None:
        check(0 <= self.low_percentile < self.high_percentile <= 100, "low_percentile",
              "need 0 <= low_percentile < high_percentile <= 100")


class PerplexityFilter(GlobalStep):
    """Scores every document (stored as metadata `bpb`), then keeps the [low, high] percentile band of the
    whole run — a global decision, so it runs like dedup: score in workers, decide in one place."""

    Config = PerplexityConfig
    score_fn: ScoreFn | None = None  # tests and callers may set a scorer directly

    def setup(self) -> None:
        if self.score_fn is None and not self.cfg.model_path:
            raise ConfigError("model_path: the perplexity step needs a smelt checkpoint to score with")

    def collect(self, d: Document) -> Any:
        if self.score_fn is None:
            # loaded on first use in the worker: the deciding process never needs the model (and a parent that
            # imported torch before forking workers is asking for trouble)
            self.score_fn = load_scorer(self.cfg.model_path, self.cfg.max_tokens, self.cfg.device)
        bpb = float(self.score_fn([d.text])[0])
        d.metadata["bpb"] = round(bpb, 4)
        return bpb

    def decide(self, keys: dict[str, list[Any]]) -> tuple[dict[str, dict[int, str]], dict[str, Any]]:
        allv = np.array([v for u in sorted(keys) for v in keys[u]], dtype=float)
        finite = allv[np.isfinite(allv)]
        if len(finite) == 0:
            return {}, {"low_bpb": None, "high_bpb": None}
        lo, hi = np.percentile(finite, [self.cfg.low_percentile, self.cfg.high_percentile])
        drops: dict[str, dict[int, str]] = {}
        for u in keys:
            for p, v in enumerate(keys[u]):
                if not math.isfinite(v):
                    drops.setdefault(u, {})[p] = "unscorable"
                elif v < lo and self.cfg.low_percentile > 0:
                    drops.setdefault(u, {})[p] = "perplexity_low"
                elif v > hi:
                    drops.setdefault(u, {})[p] = "perplexity_high"
        return drops, {"low_bpb": float(lo), "high_bpb": float(hi), "median_bpb": float(np.median(finite))}


# ------------------------------------------------------------------------------------------ quality classifier

_WORD = re.compile(r"\w+")


def hashed_features(text: str, n_buckets: int, ngrams: int = 2) -> np.ndarray:
    """Bucket ids of lower-cased word 1..n-grams (CRC32 of the n-gram: stable across processes and runs)."""
    words = _WORD.findall(text.lower())
    feats = []
    for n in range(1, ngrams + 1):
        for i in range(len(words) - n + 1):
            feats.append(zlib.crc32(" ".join(words[i:i + n]).encode("utf-8")) % n_buckets)
    return np.asarray(feats, dtype=np.int64)


class HashedLinearClassifier:
    """Logistic regression over hashed n-gram counts (averaged per document), trained with plain SGD.
    Small and fast enough to score millions of documents per CPU-hour; saved as one .npz."""

    def __init__(self, n_buckets: int = 1 << 18, ngrams: int = 2):
        self.n_buckets, self.ngrams = n_buckets, ngrams
        self.w = np.zeros(n_buckets, dtype=np.float32)
        self.b = 0.0

    def _score(self, feats: np.ndarray) -> float:
        z = self.b + (float(self.w[feats].mean()) * math.sqrt(len(feats)) if len(feats) else 0.0)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def predict(self, text: str) -> float:
        return self._score(hashed_features(text, self.n_buckets, self.ngrams))

    def fit(self, pos: Sequence[str], neg: Sequence[str], epochs: int = 5, lr: float = 0.5, l2: float = 1e-6,
            seed: int = 0) -> "HashedLinearClassifier":
        data = [(hashed_features(t, self.n_buckets, self.ngrams), 1.0) for t in pos] + \
               [(hashed_features(t, self.n_buckets, self.ngrams), 0.0) for t in neg]
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            for i in rng.permutation(len(data)):
                f, y = data[i]
                if len(f) == 0:
                    continue
                g = self._score(f) - y
                scale = math.sqrt(len(f)) / len(f)
                np.add.at(self.w, f, -lr * g * scale)
                self.w[f] *= (1 - lr * l2)
                self.b -= lr * g * 0.1
        return self

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, w=self.w, b=np.array([self.b]), n_buckets=np.array([self.n_buckets]),
                            ngrams=np.array([self.ngrams]))

    @classmethod
    def load(cls, path: str | Path) -> "HashedLinearClassifier":
        if not Path(path).exists():
            raise ConfigError(f"model_path: {path} does not exist (train one with `smelt curate train-quality`)")
        z = np.load(path)
        m = cls(int(z["n_buckets"][0]), int(z["ngrams"][0]))
        m.w, m.b = z["w"].astype(np.float32), float(z["b"][0])
        return m


@dataclass
class QualityClassifierConfig:
    model_path: str = doc("", "classifier .npz from `smelt curate train-quality`")
    threshold: float = doc(0.5, "keep documents whose quality probability is at least this")


class QualityClassifierFilter(Step):
    Config = QualityClassifierConfig

    def setup(self) -> None:
        self.model = HashedLinearClassifier.load(self.cfg.model_path)

    def process(self, d: Document) -> str | None:
        p = self.model.predict(d.text)
        d.metadata["quality_score"] = round(p, 4)
        return "low_quality" if p < self.cfg.threshold else None


# ------------------------------------------------------------------------------------------ toxicity

@dataclass
class ToxicityConfig:
    words_path: str = doc("", "word list (default: $SMELT_DATA_DIR/lists/badwords_en.txt)")
    max_fraction: float = doc(0.005, "drop when more than this fraction of words are on the list")
    min_hits: int = doc(3, "... and at least this many list words occur (one word is not toxicity)")


class ToxicityFilter(Step):
    Config = ToxicityConfig

    def setup(self) -> None:
        from smelt.data.filters.c4 import find_badwords_list
        words = {ln.strip().lower() for ln in open(find_badwords_list(self.cfg.words_path), encoding="utf-8")
                 if ln.strip()}
        self.single = {w for w in words if " " not in w}
        self.phrases = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words if " " in w) + r")\b") \
            if any(" " in w for w in words) else None

    def process(self, d: Document) -> str | None:
        low = d.text.lower()
        words = _WORD.findall(low)
        if not words:
            return None
        hits = sum(1 for w in words if w in self.single)
        if self.phrases is not None:
            hits += len(self.phrases.findall(low))
        d.metadata["toxic_words"] = hits
        if hits >= self.cfg.min_hits and hits / len(words) > self.cfg.max_fraction:
            return "toxic"
        return None
