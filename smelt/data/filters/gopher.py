"""Gopher repetition and quality rules (Rae et al. 2021, Table A1) with FineWeb's thresholds and reasons.

Rules, order and reason names follow datatrove's GopherRepetitionFilter / GopherQualityFilter (as used for
FineWeb) exactly, so decisions can be compared one to one; only the word splitter differs (see text.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from smelt.config import doc
from smelt.data.base import Step
from smelt.data.document import Document
from smelt.data.filters.text import PUNCTUATION_SET, Words

_PUNCT_CHARS = "".join(sorted(PUNCTUATION_SET))
_ALPHA = re.compile(r"[^\W\d_]")  # str.isalpha() letters (approximately: also counts letter-like marks)
_PARA = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated elements, characters in repeated elements) — an element counts from its 2nd time."""
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for x in items:
        if x in seen:
            dup_n += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup_n, dup_chars


class NGrams:
    """Vectorised n-gram statistics over one document's words.

    Why: datatrove builds every n-gram string (n = 2..10) in Python, which dominates the Gopher repetition
    rule. Here words become integer ids once, n-gram hashes are rolled in NumPy (uint64 arithmetic wraps), and
    character counts come from prefix sums. Only positions whose n-gram occurred before are visited in Python.
    N-grams are compared by word sequence; datatrove compares `"".join(words)` strings, which also equates
    e.g. ("ab", "c") with ("a", "bc") — a difference we accept (it never showed up on real pages)."""

    _P = np.uint64(0x100000001B3)

    def __init__(self, words: list[str]):
        ids: dict[str, int] = {}
        self.ids = np.fromiter((ids.setdefault(w, len(ids)) for w in words), dtype=np.uint64, count=len(words))
        # random 64-bit codes per distinct word make the rolling hash well mixed
        self.codes = np.random.default_rng(len(ids)).integers(1, 2**63, size=max(1, len(ids)),
                                                                dtype=np.uint64)[self.ids.astype(np.int64)]
        self.csum = np.concatenate([[0], np.cumsum(np.fromiter(map(len, words), dtype=np.int64,
                                                                  count=len(words)))])
        self._h: dict[int, np.ndarray] = {1: self.codes}

    def hashes(self, n: int) -> np.ndarray:
        if n not in self._h:
            prev = self.hashes(n - 1)
            with np.errstate(over="ignore"):
                self._h[n] = prev[:-1] * self._P + self.codes[n - 1:]
        return self._h[n]

    def chars(self, n: int) -> np.ndarray:
        """characters of each n-gram's words (no separators)"""
        return self.csum[n:] - self.csum[:-n]

    def top_chars(self, n: int) -> int:
        """len(most frequent n-gram joined with spaces) * its count; ties go to the first seen (as Counter)."""
        if len(self.ids) < n:
            return 0
        h = self.hashes(n)
        uniq, first, counts = np.unique(h, return_index=True, return_counts=True)
        best = counts.max()
        pos = int(first[counts == best].min())
        return int((self.chars(n)[pos] + n - 1) * best)

    def dup_chars(self, n: int) -> int:
        """datatrove's find_all_duplicate: scan left to right, a repeated n-gram adds its characters and the scan
        jumps n words (so overlapping repeats count once); grams inside a jump are never recorded."""
        if len(self.ids) < n:
            return 0
        h = self.hashes(n)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        rep = np.zeros(len(h), dtype=bool)
        rep[order[1:][hs[1:] == hs[:-1]]] = True  # has an equal n-gram at an earlier position
        cand = np.flatnonzero(rep)
        if len(cand) == 0:
            return 0
        chars = self.chars(n)
        occ: dict[int, list[int]] = {}
        for p in order[np.isin(h[order], h[cand])].tolist():
            occ.setdefault(int(h[p]), []).append(p)
        total, nxt = 0, 0
        skipped: list[tuple[int, int]] = []  # [start, end) ranges the scan jumped over
        for k in cand.tolist():
            if k < nxt:
                continue
            earlier = [j for j in occ[int(h[k])] if j < k]
            if any(not any(a <= j < b for a, b in skipped) for j in earlier):
                total += int(chars[k])
                skipped.append((k + 1, k + n))
                nxt = k + n
        return total


@dataclass
class GopherRepetitionConfig:
    dup_line_frac: float = doc(0.3, "max fraction of lines that repeat an earlier line")
    dup_para_frac: float = doc(0.3, "max fraction of paragraphs that repeat an earlier one")
    dup_line_char_frac: float = doc(0.2, "max fraction of characters in repeated lines")
    dup_para_char_frac: float = doc(0.2, "max fraction of characters in repeated paragraphs")
    top_n_grams: list[list[float]] = doc([[2, 0.2], [3, 0.18], [4, 0.16]],
                                         "[n, max char fraction of the most frequent n-gram]")
    dup_n_grams: list[list[float]] = doc([[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]],
                                         "[n, max char fraction in repeated n-grams]")
    tokenizer: Literal["fast", "spacy"] = doc("fast", "word splitter: fast (regex) or spacy (datatrove parity)")


class GopherRepetition(Step):
    Config = GopherRepetitionConfig

    def setup(self) -> None:
        self.words = Words(self.cfg.tokenizer)

    def process(self, d: Document) -> str | None:
        c, text = self.cfg, d.text
        if not text:
            return "empty"
        paras = _PARA.split(text.strip())
        n_dup, dup_chars = find_duplicates(paras)
        if c.dup_para_frac and n_dup / len(paras) > c.dup_para_frac:
            return "dup_para_frac"
        if c.dup_para_char_frac and dup_chars / len(text) > c.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINES.split(text)
        n_dup, dup_chars = find_duplicates(lines)
        if c.dup_line_frac and n_dup / len(lines) > c.dup_line_frac:
            return "dup_line_frac"
        if c.dup_line_char_frac and dup_chars / len(text) > c.dup_line_char_frac:
            return "dup_line_char_frac"
        grams = NGrams(self.words.words(text))
        for n, frac in c.top_n_grams:
            if grams.top_chars(int(n)) / len(text) > frac:
                return f"top_{int(n)}_gram"
        for n, frac in c.dup_n_grams:
            if grams.dup_chars(int(n)) / len(text) > frac:
                return f"duplicated_{int(n)}_n_grams"
        return None


@dataclass
class GopherQualityConfig:
    min_doc_words: int = doc(50, "min non-symbol words")
    max_doc_words: int = doc(100_000, "max non-symbol words")
    min_avg_word_length: float = doc(3, "min mean length of non-symbol words")
    max_avg_word_length: float = doc(10, "max mean length of non-symbol words")
    max_symbol_word_ratio: float = doc(0.1, "max ratio of '#' (and of ellipses) to words")
    max_bullet_lines_ratio: float = doc(0.9, "max fraction of lines starting with a bullet")
    max_ellipsis_lines_ratio: float = doc(0.3, "max fraction of lines ending with an ellipsis")
    max_non_alpha_words_ratio: float = doc(0.8, "min fraction of words with an alphabetic character (sic)")
    min_stop_words: int = doc(2, "min distinct stop words present (the, be, to, of, and, that, have, with)")
    stop_words: list[str] = doc(["the", "be", "to", "of", "and", "that", "have", "with"], "stop word list")
    tokenizer: Literal["fast", "spacy"] = doc("fast", "word splitter: fast (regex) or spacy (datatrove parity)")


class GopherQuality(Step):
    Config = GopherQualityConfig

    def setup(self) -> None:
        self.words = Words(self.cfg.tokenizer)
        self.stop = frozenset(self.cfg.stop_words)

    def process(self, d: Document) -> str | None:
        c, text = self.cfg, d.text
        words = self.words.words(text)
        n_words = len(words)
        # str.strip in C instead of a per-character generator: a word is a symbol iff stripping all
        # punctuation leaves nothing
        non_symbol = [w for w in words if w.strip(_PUNCT_CHARS)]
        n = len(non_symbol)
        if c.min_doc_words and n < c.min_doc_words:
            return "gopher_short_doc"
        if c.max_doc_words and n > c.max_doc_words:
            return "gopher_long_doc"
        avg = sum(len(w) for w in non_symbol) / n if n else float("nan")
        if c.min_avg_word_length and avg < c.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if c.max_avg_word_length and avg > c.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if c.max_symbol_word_ratio and text.count("#") / n_words > c.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if c.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > c.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if c.max_bullet_lines_ratio and sum(
                s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > c.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        if c.max_ellipsis_lines_ratio and sum(
                s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > c.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        if c.max_non_alpha_words_ratio and sum(
                1 for w in words if _ALPHA.search(w)) / n_words < c.max_non_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if c.min_stop_words and len(self.stop.intersection(words)) < c.min_stop_words:
            return "gopher_enough_stop_words"
        return None
