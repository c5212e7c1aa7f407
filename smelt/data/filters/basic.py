"""Simple bounds on document length (characters and whitespace words)."""

from __future__ import annotations

from dataclasses import dataclass

from smelt.config import check, doc
from smelt.data.base import Step
from smelt.data.document import Document


@dataclass
class LengthConfig:
    min_chars: int = doc(0, "drop documents shorter than this many characters")
    max_chars: int = doc(-1, "drop documents longer than this many characters (-1 = no bound)")
    min_words: int = doc(0, "drop documents with fewer whitespace-separated words")

    def validate(self) -> None:
        check(self.min_chars >= 0, "min_chars", "must be >= 0")


class LengthFilter(Step):
    Config = LengthConfig

    def process(self, d: Document) -> str | None:
        n = len(d.text)
        if n < self.cfg.min_chars:
            return "too_short"
        if 0 <= self.cfg.max_chars < n:
            return "too_long"
        if self.cfg.min_words and len(d.text.split()) < self.cfg.min_words:
            return "too_few_words"
        return None
