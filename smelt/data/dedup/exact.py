"""Exact deduplication: documents whose normalised text (lower-cased, whitespace collapsed, punctuation removed)
hashes equal; the first in input order is kept."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from smelt.config import doc
from smelt.data.base import GlobalStep
from smelt.data.document import Document

_NON_WORD = re.compile(r"[^\w\s]+")
_WS = re.compile(r"\s+")


def normalize_for_hash(text: str) -> str:
    return _WS.sub(" ", _NON_WORD.sub("", text.lower())).strip()


@dataclass
class ExactDedupConfig:
    normalize: bool = doc(True, "hash the normalised text (lower case, no punctuation, single spaces)")


class ExactDedup(GlobalStep):
    Config = ExactDedupConfig

    def collect(self, d: Document) -> Any:
        t = normalize_for_hash(d.text) if self.cfg.normalize else d.text
        # 8 bytes of blake2b: collisions at 2^-64 per pair are negligible and the keys stay small
        return hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest()

    def decide(self, keys: dict[str, list[Any]]) -> tuple[dict[str, dict[int, str]], dict[str, Any]]:
        first: dict[bytes, tuple[str, int]] = {}
        sizes: dict[bytes, int] = {}
        drops: dict[str, dict[int, str]] = {}
        for unit in sorted(keys):
            for pos, k in enumerate(keys[unit]):
                sizes[k] = sizes.get(k, 0) + 1
                if k in first:
                    drops.setdefault(unit, {})[pos] = "exact_duplicate"
                else:
                    first[k] = (unit, pos)
        hist: dict[str, int] = {}
        for n in sizes.values():
            if n > 1:
                hist[str(n)] = hist.get(str(n), 0) + 1
        return drops, {"clusters_with_duplicates": sum(hist.values()), "cluster_size_histogram": hist,
                       "documents_removed": sum(len(v) for v in drops.values())}
