"""C4 line rules (Raffel et al. 2020) and the C4 bad-words rule, as in FineWeb (datatrove's C4QualityFilter and
C4BadWordsFilter). Line rules rewrite the text they keep, so later steps see the cleaned text, as in FineWeb."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smelt.config import ConfigError, doc
from smelt.data.base import Step
from smelt.data.document import Document
from smelt.data.filters.text import Words

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class C4Config:
    remove_citations: bool = doc(True, "strip Wikipedia-style [1] / [edit] / [citation needed] markers")
    filter_no_terminal_punct: bool = doc(True, "drop lines not ending in . ? ! \" ' (or ending in ...)")
    min_num_sentences: int = doc(5, "drop documents with fewer sentences in kept lines (-1 = off)")
    min_words_per_line: int = doc(3, "drop lines with fewer words (-1 = off)")
    max_word_length: int = doc(1000, "drop lines with a longer word (-1 = off)")
    filter_lorem_ipsum: bool = doc(True, "drop documents containing 'lorem ipsum'")
    filter_javascript: bool = doc(True, "drop lines mentioning javascript")
    filter_curly_bracket: bool = doc(True, "drop documents containing '{' in a kept line")
    filter_policy: bool = doc(True, "drop lines about cookies / terms of use / privacy policy")
    tokenizer: Literal["fast", "spacy"] = doc("fast", "sentence splitter: fast (regex) or spacy (datatrove parity)")


class C4Quality(Step):
    Config = C4Config

    def setup(self) -> None:
        self.words = Words(self.cfg.tokenizer)

    def process(self, d: Document) -> str | None:
        c = self.cfg
        n_sent = 0
        kept: list[str] = []
        for line in d.text.splitlines():
            line = line.strip()
            words = line.split()
            if c.max_word_length != -1 and any(len(w) > c.max_word_length for w in words):
                self.count("lines_dropped_too_long_word")
                continue
            if c.remove_citations:
                line = CITATION.sub("", line)
            if c.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                self.count("lines_dropped_no_terminal_punct")
                continue
            if len(words) < c.min_words_per_line:
                self.count("lines_dropped_too_few_words")
                continue
            low = line.lower()
            if c.filter_lorem_ipsum and "lorem ipsum" in low:
                return "lorem_ipsum"
            if c.filter_javascript and "javascript" in low:
                self.count("lines_dropped_javascript")
                continue
            if c.filter_curly_bracket and "{" in line:
                return "curly_bracket"
            if c.filter_policy and any(p in low for p in POLICY):
                self.count("lines_dropped_policy")
                continue
            if c.min_num_sentences != -1:
                n_sent += self.words.sentences(line)
            kept.append(line)
        if n_sent < c.min_num_sentences:
            return "too_few_sentences"
        d.text = "\n".join(kept).strip()
        return None


def find_badwords_list(path: str) -> Path:
    """An explicit path, else `$SMELT_DATA_DIR/lists/badwords_en.txt` (the LDNOOBW list)."""
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"badwords_path: {p} does not exist")
        return p
    root = os.environ.get("SMELT_DATA_DIR")
    p = Path(root) / "lists" / "badwords_en.txt" if root else None
    if p is None or not p.exists():
        raise ConfigError("badwords_path: not set and $SMELT_DATA_DIR/lists/badwords_en.txt not found; "
                          "point it at a LDNOOBW-style list (one word or phrase per line)")
    return p


def badwords_regex(words: set[str]) -> re.Pattern[str]:
    # whole-word match on lower-cased text, as in C4 / datatrove (for space-separated languages)
    return re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(re.escape(w) for w in sorted(words))))


@dataclass
class C4BadWordsConfig:
    badwords_path: str = doc("", "word list file (default: $SMELT_DATA_DIR/lists/badwords_en.txt)")
    keep_fraction: float = doc(0.0, "keep this random fraction of documents that contain a bad word")
    seed: int = doc(0, "seed for keep_fraction")
    languages: list[str] = doc(["en"], "only documents in these languages are checked (the list is English)")
    default_language: str = doc("en", "language assumed when a document has none")


class C4BadWords(Step):
    Config = C4BadWordsConfig

    def setup(self) -> None:
        import numpy as np
        with open(find_badwords_list(self.cfg.badwords_path), encoding="utf-8") as f:
            words = {ln.strip() for ln in f if ln.strip()}
        self.regex = badwords_regex(words)
        self.rng = np.random.default_rng(self.cfg.seed)

    def process(self, d: Document) -> str | None:
        lang = d.metadata.get("language") or self.cfg.default_language
        if lang not in self.cfg.languages:
            self.count(f"not_checked_language_{lang}")
            return None
        if self.regex.search(d.text.lower()) is not None:
            if self.cfg.keep_fraction > 0 and self.rng.uniform() < self.cfg.keep_fraction:
                self.count("kept_with_badwords")
                return None
            return "badwords"
        return None
