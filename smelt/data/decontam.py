"""Decontamination: drop (or flag) documents sharing a long word n-gram (13 by default, as GPT-3 did) with an
evaluation set, so benchmark scores are not inflated by training on the test items.

Every string in the eval files under `$SMELT_DATA_DIR/eval` (jsonl/jsonl.gz records, CSV cells, lines of
.txt/.bz2) is lower-cased, split into words and turned into n-gram hashes once per worker; a document is
contaminated when any of its n-gram hashes is in that sorted NumPy array (`np.isin`, no per-n-gram Python).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from smelt.config import ConfigError, check, doc
from smelt.data.base import Step
from smelt.data.document import Document

_WORD = re.compile(r"\w+")
_P = np.uint64(0x100000001B3)


def ngram_hashes(text: str, n: int) -> np.ndarray:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    codes = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    m = len(codes) - n + 1
    with np.errstate(over="ignore"):
        h = codes[:m].copy()
        for i in range(1, n):
            h = h * _P + codes[i:i + m]
    return h


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def eval_texts(path: Path) -> Iterator[str]:
    """All strings of one eval file; multiple-choice items also yield query + each choice joined, since a
    contaminated page usually holds the question followed by its answer."""
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else bz2.open if name.endswith(".bz2") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
        if ".jsonl" in name:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                yield from _strings(rec)
                if isinstance(rec, dict) and isinstance(rec.get("query"), str) and isinstance(rec.get("choices"), list):
                    for ch in rec["choices"]:
                        if isinstance(ch, str):
                            yield rec["query"] + " " + ch
        elif name.endswith(".csv"):
            for row in csv.reader(io.StringIO(f.read())):
                yield " ".join(row)
        else:
            yield from f


@dataclass
class DecontamConfig:
    eval_dir: str = doc("", "folder of eval sets (default: $SMELT_DATA_DIR/eval)")
    files: list[str] = doc(["gsm8k_test.jsonl", "HumanEval.jsonl.gz", "hellaswag_val_full.txt.bz2",
                            "mmlu/test/*.csv", "arc_*.jsonl", "piqa.jsonl", "siqa.jsonl", "boolq.jsonl",
                            "winogrande.jsonl", "commonsense_qa.jsonl", "lambada_openai.jsonl", "math.jsonl",
                            "triviaqa_sm_sub.jsonl", "copa.jsonl"],
                           "glob patterns under eval_dir (e.g. [\"*.jsonl\"] for every set)")
    n: int = doc(13, "n-gram length in words")
    mode: str = doc("drop", "drop contaminated documents, or flag them (metadata contaminated = true)")

    def validate(self) -> None:
        check(self.n >= 5, "n", "must be >= 5 (shorter n-grams match ordinary phrases)")
        check(self.mode in ("drop", "flag"), "mode", "must be drop or flag")


_SEP = " qqxsepxqq "  # a made-up word between joined strings: n-grams across it never match real text


def build_index(eval_dir: Path, patterns: list[str], n: int) -> tuple[np.ndarray, list[str]]:
    """Sorted unique n-gram hashes of every matching eval file. Cached under $SMELT_CACHE_DIR/decontam keyed
    by the files' names, sizes and mtimes, so each worker (and each run) does not rebuild it."""
    files = sorted({p for pat in patterns for p in eval_dir.glob(pat) if p.is_file()})
    used = [str(p.relative_to(eval_dir)) for p in files]
    key = zlib.crc32(json.dumps([n] + [[u, p.stat().st_size, int(p.stat().st_mtime)]
                                       for u, p in zip(used, files)]).encode())
    from smelt.datasets import cache_dir
    cache = cache_dir() / "decontam" / f"ngrams{n}-{key:08x}.npy"
    if cache.exists():
        return np.load(cache), used
    parts = []
    for p in files:
        # one joined string per file: a single vectorised pass instead of one per (often tiny) string
        h = ngram_hashes(_SEP.join(eval_texts(p)), n)
        if len(h):
            parts.append(np.unique(h))
    index = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, index)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs the rebuild
    return index, used


class Decontaminate(Step):
    Config = DecontamConfig

    def setup(self) -> None:
        d = self.cfg.eval_dir or (os.path.join(os.environ["SMELT_DATA_DIR"], "eval")
                                  if os.environ.get("SMELT_DATA_DIR") else "")
        if not d or not Path(d).is_dir():
            raise ConfigError(f"eval_dir: {d or '(unset)'} is not a folder; set eval_dir or SMELT_DATA_DIR")
        self.index, self.files = build_index(Path(d), self.cfg.files, self.cfg.n)
        if len(self.index) == 0:
            raise ConfigError(f"files: no eval n-grams found under {d} for {self.cfg.files}")

    def process(self, d: Document) -> str | None:
        h = ngram_hashes(d.text, self.cfg.n)
        if len(h) == 0:
            return None
        hits = int(np.isin(h, self.index, assume_unique=False).sum())
        if hits == 0:
            return None
        self.count("contaminated_ngrams", hits)
        if self.cfg.mode == "flag":
            d.metadata["contaminated"] = True
            self.count("flagged")
            return None
        return "contaminated"
