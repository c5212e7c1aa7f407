"""FineWeb's own quality rules (Penedo et al. 2024; datatrove's FineWebQualityFilter), same thresholds/reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from smelt.config import doc
from smelt.data.base import Step
from smelt.data.document import Document
from smelt.data.filters.gopher import find_duplicates
from smelt.data.filters.text import TERMINAL_TUPLE, Words


@dataclass
class FineWebQualityConfig:
    line_punct_thr: float = doc(0.12, "min fraction of lines ending in terminal punctuation")
    line_punct_exclude_zero: bool = doc(False, "do not apply line_punct_thr when no line ends in punctuation")
    short_line_thr: float = doc(0.67, "max fraction of short lines")
    short_line_length: int = doc(30, "a line this long or shorter is short")
    char_duplicates_ratio: float = doc(0.01, "max fraction of characters in duplicated lines")
    new_line_ratio: float = doc(0.3, "max newlines per word (list-like pages)")
    tokenizer: Literal["fast", "spacy"] = doc("fast", "word splitter: fast (regex) or spacy (datatrove parity)")


class FineWebQuality(Step):
    Config = FineWebQualityConfig

    def setup(self) -> None:
        self.words = Words(self.cfg.tokenizer)

    def process(self, d: Document) -> str | None:
        c, text = self.cfg, d.text
        lines = [ln for ln in text.split("\n") if ln.strip() != ""]
        if not lines:
            return "empty"
        ratio = sum(1 for ln in lines if ln.endswith(TERMINAL_TUPLE)) / len(lines)
        if ratio < c.line_punct_thr and not (ratio == 0 and c.line_punct_exclude_zero):
            return "line_punct_ratio"
        if sum(1 for ln in lines if len(ln) <= c.short_line_length) / len(lines) > c.short_line_thr:
            return "short_line_ratio"
        if find_duplicates(lines)[1] / max(1, len(text.replace("\n", ""))) > c.char_duplicates_ratio:
            return "char_dup_ratio"
        words = self.words.words(text)
        if text.count("\n") / max(1, len(words)) > c.new_line_ratio:
            return "list_ratio"
        return None
